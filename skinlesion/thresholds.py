"""Health statuses and the threshold bands that assign them: plain, validated value objects.

As NannyML's ``thresholds``: a :class:`Threshold` says, for one metric, which way is better and
where green ends and red begins; :func:`status` maps a value to a :class:`Status`; :func:`worst`
folds statuses. :data:`DEFAULT_THRESHOLDS` is the DESIGN.md table. Durations (``"24h"``, ``"7d"``),
in which the monitoring plan writes its windows and retraining schedules, are parsed here too.

Boundaries (DESIGN.md "Health policy"): for a higher-is-better metric a value ``>= green`` is
green, ``< red`` is red and anything between (``red`` itself included) is yellow — accuracy 0.90
is green, 0.85 yellow, 0.8499 red. For a lower-is-better metric a value ``<= green`` is green and
``> red`` is red — log loss 0.30 is green, 0.50 yellow, 0.5001 red. A missing or NaN value is
:attr:`Status.UNKNOWN`.

The bottom layer: numpy and the standard library only. The policy that gathers thresholds with
the other knobs of the monitoring plan is :mod:`skinlesion.monitoring.policy`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import numpy as np


class Status(StrEnum):
    """Health colour of a value, a window or the whole service."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"
    UNKNOWN = "unknown"


#: How bad each status is, for :func:`worst`. UNKNOWN ranks below GREEN: a metric without data
#: (no labels yet, no malignant case in the window) says nothing, so it never hides a known colour;
#: a set of statuses is UNKNOWN only when nothing in it is known.
SEVERITY: dict[Status, int] = {Status.UNKNOWN: 0, Status.GREEN: 1, Status.YELLOW: 2, Status.RED: 3}


def worst(statuses: Iterable[Status | str]) -> Status:
    """The most severe of ``statuses`` (RED > YELLOW > GREEN); UNKNOWN when empty or all unknown."""
    return max((Status(s) for s in statuses), key=SEVERITY.__getitem__, default=Status.UNKNOWN)


def _bound(metric: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"metric {metric!r}: {name} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"metric {metric!r}: {name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Threshold:
    """Where ``metric`` turns yellow and red.

    ``higher_is_better``: green when ``value >= green``, red when ``value < red``.
    Otherwise: green when ``value <= green``, red when ``value > red``. Values in between are
    yellow, so ``green == red`` means there is no yellow band. A yellow band past the red bound
    (``green < red`` for a higher-is-better metric) is rejected with an error naming the metric.
    """

    metric: str
    higher_is_better: bool
    green: float
    red: float

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise ValueError("a threshold needs the name of its metric")
        metric = self.metric.strip()
        if not isinstance(self.higher_is_better, bool | np.bool_):
            raise ValueError(f"metric {metric!r}: higher_is_better must be true or false, "
                             f"got {self.higher_is_better!r}")
        green, red = _bound(metric, "green", self.green), _bound(metric, "red", self.red)
        for name, value in (("metric", metric), ("higher_is_better", bool(self.higher_is_better)),
                            ("green", green), ("red", red)):
            object.__setattr__(self, name, value)
        if self.higher_is_better and green < red:
            raise ValueError(
                f"metric {metric!r} (higher is better): the green bound {green:g} lies below the "
                f"red bound {red:g}, so the yellow band would lie past the red one; set green >= "
                f"red (e.g. green = {red:g}, red = {green:g})")
        if not self.higher_is_better and green > red:
            raise ValueError(
                f"metric {metric!r} (lower is better): the green bound {green:g} lies above the "
                f"red bound {red:g}, so the yellow band would lie past the red one; set green <= "
                f"red (e.g. green = {red:g}, red = {green:g})")

    def describe(self) -> str:
        """The bands in words, for tables and tooltips: ``green ≥ 0.9 · yellow 0.85–0.9 · red < 0.85``."""
        if self.higher_is_better:
            return f"green ≥ {self.green:g} · yellow {self.red:g}–{self.green:g} · red < {self.red:g}"
        return f"green ≤ {self.green:g} · yellow {self.green:g}–{self.red:g} · red > {self.red:g}"


def status(value: float | None, threshold: Threshold) -> Status:
    """The colour of ``value`` under ``threshold``; UNKNOWN for None or NaN (see module docstring)."""
    if value is None or np.isnan(value):
        return Status.UNKNOWN
    if threshold.higher_is_better:
        if value >= threshold.green:
            return Status.GREEN
        return Status.RED if value < threshold.red else Status.YELLOW
    if value <= threshold.green:
        return Status.GREEN
    return Status.RED if value > threshold.red else Status.YELLOW


#: The DESIGN.md table (positive class = malignant), plus the latency bound of the service level.
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    t.metric: t for t in (
        Threshold(metric="accuracy", higher_is_better=True, green=0.90, red=0.85),
        Threshold(metric="precision", higher_is_better=True, green=0.80, red=0.70),
        Threshold(metric="recall", higher_is_better=True, green=0.85, red=0.75),
        Threshold(metric="auroc", higher_is_better=True, green=0.90, red=0.85),
        Threshold(metric="log_loss", higher_is_better=False, green=0.30, red=0.50),
        Threshold(metric="fnr", higher_is_better=False, green=0.10, red=0.15),
        Threshold(metric="drift_score", higher_is_better=False, green=0.10, red=0.20),
        Threshold(metric="latency_p95_ms", higher_is_better=False, green=500.0, red=1000.0),
    )
}
#: Metrics every policy must have a threshold for (others, e.g. ``f1``, may be added).
REQUIRED_METRICS: tuple[str, ...] = tuple(DEFAULT_THRESHOLDS)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$")
_DURATION_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``"90m"``, ``"24h"``, ``"7d"``, ``"2w"`` as a timedelta; ValueError naming the format otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"a duration is a number and a unit m, h, d or w (e.g. '24h', '7d'), "
                         f"got {text!r}")
    value = timedelta(**{_DURATION_UNITS[match.group(2)]: float(match.group(1))})
    if value <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {text!r}")
    return value
