"""The clinic's health policy: the monitoring plan, and what to do in each colour.

A :class:`Policy` gathers the :class:`~skinlesion.thresholds.Threshold` of every monitored metric
with the other knobs of the monitoring plan (windows, minimum labels, alerting, volume anomalies,
the retraining policy of :mod:`skinlesion.lifecycle.policy`). It is read from one TOML file
(``thresholds.toml`` at the project home, ``Settings().thresholds_file``) by :func:`load_policy`;
defaults are the DESIGN.md table. :func:`playbook` says what each status calls for.

Pure Python: no SQL, no streamlit.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skinlesion.errors import DataError
from skinlesion.lifecycle.policy import RetrainingPolicy
from skinlesion.schema import CLASS_NAMES, DEFAULT_MALIGNANT, malignant_mask
from skinlesion.thresholds import (DEFAULT_THRESHOLDS, REQUIRED_METRICS, Status, Threshold, parse_duration,
                                   status)


# --- the policy -------------------------------------------------------------------------------------


class VolumePolicy(BaseModel):
    """Spike/dip detection on the hourly inference volume (see ``health.volume_anomalies``).

    An hour's baseline is the median count of the same hour in the ``baseline_periods`` preceding
    periods of ``period_hours`` (24: same hour of the day over the last week, which follows the
    clinic's day/night rhythm; 168: same hour of the week; 1: the plain trailing hours). An hour is
    a *spike* when its count exceeds ``spike_factor`` times ``max(baseline, min_expected)``, and a
    *dip* when the baseline is at least ``min_expected`` and the count falls below ``dip_factor``
    times it. Hours with fewer than ``min_baseline_periods`` past values are not judged.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    spike_factor: float = Field(3.0, gt=1.0)
    dip_factor: float = Field(0.3, gt=0.0, lt=1.0)
    period_hours: int = Field(24, ge=1)
    baseline_periods: int = Field(7, ge=1)
    min_baseline_periods: int = Field(3, ge=1)
    min_expected: float = Field(10.0, ge=0.0)

    @model_validator(mode="after")
    def _enough_periods(self) -> VolumePolicy:
        if self.min_baseline_periods > self.baseline_periods:
            raise ValueError(f"min_baseline_periods ({self.min_baseline_periods}) cannot exceed "
                             f"baseline_periods ({self.baseline_periods})")
        return self

    @property
    def lookback(self) -> timedelta:
        """How much history before a window the baseline of its first hour needs."""
        return timedelta(hours=self.period_hours * self.baseline_periods)


DEFAULT_WINDOWS: dict[str, timedelta] = {
    "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


class Policy(BaseModel):
    """The monitoring plan: thresholds by metric name plus the knobs around them.

    ``thresholds`` must cover :data:`REQUIRED_METRICS`; each key equals its threshold's
    ``metric``. ``windows`` maps a window name to its length (``"24h"``, ``"7d"``, ``"30d"``).
    A label-based metric over fewer than ``min_labels`` labelled cases is shown as "not enough
    labels" instead of a number. An alert needs the same off-green status in
    ``alert_after_windows`` consecutive windows. A class whose recall falls by ``class_slip`` or
    more against the previous window is named in the hints.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    thresholds: dict[str, Threshold] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    windows: dict[str, timedelta] = Field(default_factory=lambda: dict(DEFAULT_WINDOWS))
    min_labels: int = Field(30, ge=1)
    alert_after_windows: int = Field(2, ge=1)
    class_slip: float = Field(0.05, gt=0.0, le=1.0)
    malignant: tuple[str, ...] = DEFAULT_MALIGNANT
    volume: VolumePolicy = Field(default_factory=VolumePolicy)
    retraining: RetrainingPolicy = Field(default_factory=RetrainingPolicy)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _named_thresholds(cls, value: object) -> object:
        """Let a mapping of ``{metric: {green, red[, higher_is_better]}}`` omit ``metric`` (the key)
        and ``higher_is_better`` (taken from the default threshold of a known metric)."""
        if not isinstance(value, Mapping):
            return value
        out: dict[str, object] = {}
        for name, spec in value.items():
            if isinstance(spec, Mapping):
                spec = dict(spec)
                spec.setdefault("metric", name)
                if name in DEFAULT_THRESHOLDS:
                    spec.setdefault("higher_is_better", DEFAULT_THRESHOLDS[name].higher_is_better)
            out[name] = spec
        return out

    @field_validator("thresholds")
    @classmethod
    def _complete(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        for name, threshold in value.items():
            if threshold.metric != name:
                raise ValueError(f"the threshold under {name!r} is for metric {threshold.metric!r}; "
                                 "use the metric's name as its key")
        missing = [m for m in REQUIRED_METRICS if m not in value]
        if missing:
            raise ValueError(f"thresholds missing for {', '.join(missing)}")
        return value

    @field_validator("windows", mode="before")
    @classmethod
    def _parse_windows(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, object] = {}
        for name, length in value.items():
            try:
                out[name] = parse_duration(length) if isinstance(length, str) else length
            except ValueError as err:
                raise ValueError(f"window {name!r}: {err}") from None
        return out

    @field_validator("windows")
    @classmethod
    def _some_windows(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        if not value:
            raise ValueError("name at least one window, e.g. 24h = \"24h\"")
        for name, length in value.items():
            if length <= timedelta(0):
                raise ValueError(f"window {name!r} must have a positive length")
        return value

    @field_validator("malignant")
    @classmethod
    def _malignant(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        malignant_mask(value)
        return tuple(value)

    def threshold(self, metric: str) -> Threshold:
        """The threshold of ``metric``; KeyError listing the known metrics otherwise."""
        try:
            return self.thresholds[metric]
        except KeyError:
            raise KeyError(f"no threshold for {metric!r}; known: {', '.join(self.thresholds)}") from None

    def status(self, metric: str, value: float | None) -> Status:
        """The colour of ``value`` for ``metric``; UNKNOWN for a metric without a threshold."""
        threshold = self.thresholds.get(metric)
        return Status.UNKNOWN if threshold is None else status(value, threshold)

    def window(self, name: str) -> timedelta:
        """The length of the named window; KeyError listing the names otherwise."""
        try:
            return self.windows[name]
        except KeyError:
            raise KeyError(f"unknown window {name!r}; known: {', '.join(self.windows)}") from None


def _error_location(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"])


def _error_message(error: Mapping[str, Any]) -> str:
    original = error.get("ctx", {}).get("error")
    return str(original) if isinstance(original, Exception) else str(error["msg"])


def policy_from_dict(data: Mapping[str, Any], *, source: str | None = None) -> Policy:
    """A :class:`Policy` from the TOML's table layout; DataError naming the first bad key."""
    try:
        return Policy.model_validate(dict(data))
    except ValidationError as err:
        first = err.errors()[0]
        more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
        raise DataError(f"{_error_message(first)}{more}", source=source,
                        field=_error_location(first)) from None


def load_policy(path: Path | str | None = None) -> Policy:
    """The policy in ``path`` (default ``Settings().thresholds_file``), or the defaults when that
    file does not exist. Keys left out keep their defaults (a threshold may give only ``green`` and
    ``red``). A TOML syntax error or a bad value raises a DataError naming the file and the key."""
    if path is None:
        from skinlesion.settings import Settings

        path = Settings().thresholds_file
    path = Path(path)
    if not path.exists():
        return Policy()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise DataError(f"not valid TOML: {err}", source=str(path)) from None
    thresholds = {name: {**asdict(DEFAULT_THRESHOLDS[name]), **spec}
                  if name in DEFAULT_THRESHOLDS and isinstance(spec, Mapping) else spec
                  for name, spec in data.get("thresholds", {}).items()}
    if "thresholds" in data:
        data = {**data, "thresholds": {**DEFAULT_THRESHOLDS, **thresholds}}
    return policy_from_dict(data, source=str(path))


# --- playbooks --------------------------------------------------------------------------------------


class Hints(BaseModel):
    """Concrete root-cause material a playbook fills in.

    ``breaches``: off-green metrics in words (``"recall 0.71 — red (green ≥ 0.85 ...)"``);
    ``drifted_features``: names of the drifted inputs, most drifted first; ``slipped_classes``:
    class code -> change of its recall against the previous window (negative = worse);
    ``label_coverage``: share of predictions with a label; ``label_lag_hours``: median hours until
    a label arrives; ``volume_anomalies``: spikes and dips in words."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    breaches: tuple[str, ...] = ()
    drifted_features: tuple[str, ...] = ()
    slipped_classes: dict[str, float] = Field(default_factory=dict)
    label_coverage: float | None = None
    label_lag_hours: float | None = None
    volume_anomalies: tuple[str, ...] = ()


class Playbook(BaseModel):
    """What to do in a status: a title, the actions in order, and the concrete hints behind them."""

    model_config = ConfigDict(frozen=True)

    status: Status
    title: str
    actions: list[str]
    hints: list[str]


#: Below this label coverage the hints warn that label-based metrics rest on few cases.
LOW_LABEL_COVERAGE = 0.10

_ACTIONS: dict[Status, tuple[str, list[str]]] = {
    Status.GREEN: ("Healthy — keep monitoring", [
        "Keep monitoring: review the health windows at the usual cadence.",
        "Keep labelling the review queue so the label-based metrics stay current.",
    ]),
    Status.YELLOW: ("Warning — find the cause before it turns red", [
        "Read the root-cause hints: which features drifted, which classes slipped, how many "
        "predictions have labels.",
        "Check the operating threshold on recent labelled cases and tune it if the target "
        "sensitivity is no longer met (threshold changes are audited).",
        "Plan retraining on recent labelled data, including the uncertain cases labelled through "
        "the review queue.",
        "If it stays yellow over consecutive windows an alert is raised and retraining is launched.",
    ]),
    Status.RED: ("Unhealthy — act now", [
        "Switch serving to the fallback model, or restrict the model to clear cases so uncertain "
        "ones go to a dermatologist (dashboard Actions, or `skinlesion models fallback` / "
        "`skinlesion models restrict`).",
        "Notify the clinical lead and the ML lead on call, with this report.",
        "Launch retraining on recent labelled data; a person reviews and promotes the candidate.",
        "Read the root-cause hints to brief the retraining: drifted features, slipped classes.",
    ]),
    Status.UNKNOWN: ("Not enough data to judge", [
        "Wait for traffic, or label more cases through the review queue: no metric has enough "
        "data in this window.",
    ]),
}


def _class_label(code: str) -> str:
    return f"{code} ({CLASS_NAMES[code]})" if code in CLASS_NAMES else code


def hint_lines(hints: Hints) -> list[str]:
    """``hints`` in words, most actionable first."""
    lines = list(hints.breaches)
    if hints.drifted_features:
        lines.append(f"Drifted features: {', '.join(hints.drifted_features)}.")
    for code, change in sorted(hints.slipped_classes.items(), key=lambda item: item[1]):
        lines.append(f"Class {_class_label(code)}: recall {change:+.2f} against the previous window.")
    if hints.label_coverage is not None:
        share = f"{hints.label_coverage:.0%} of predictions have a label"
        if hints.label_coverage < LOW_LABEL_COVERAGE:
            lines.append(f"Label coverage is low: {share}; label-based metrics rest on few cases — "
                         "label the review queue.")
        else:
            lines.append(f"Label coverage: {share}.")
    if hints.label_lag_hours is not None:
        lines.append(f"Labels arrive after {hints.label_lag_hours:.0f} h (median).")
    lines.extend(f"Volume: {anomaly}." for anomaly in hints.volume_anomalies)
    return lines


def playbook(status: Status | str, hints: Hints | None = None) -> Playbook:
    """The playbook of ``status`` (DESIGN.md): green keep monitoring; yellow root-cause hints,
    threshold tuning, retraining suggested; red fallback or clear-cases-only, notify, retrain —
    with the concrete ``hints`` in words."""
    status = Status(status)
    title, actions = _ACTIONS[status]
    return Playbook(status=status, title=title, actions=list(actions),
                    hints=hint_lines(hints or Hints()))
