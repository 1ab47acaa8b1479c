"""The Overview's verdict in words: what drives the window's status (its top reasons), and whether a
mitigation is in place (the fallback serving, or answers restricted to clear cases) — since when, by
whom — in which case the verdict is "mitigated" and the playbook moves on from "switch to the
fallback" to investigating, reviewing and retraining. Pure: a health report and the route history
in, a :class:`Verdict` out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from skinlesion.display import DATE_FORMAT, metric_name
from skinlesion.monitoring.health import HealthReport, MetricValue
from skinlesion.records import ServingRoute
from skinlesion.thresholds import Status

_SEVERITY = {Status.RED: 0, Status.YELLOW: 1}
MITIGATED = "mitigated"
#: The playbook once a mitigation is in place: what is left to do.
MITIGATED_ACTIONS: tuple[str, ...] = (
    "Investigate the cause: read what the data says below (drifted features, slipped classes) and "
    "the Drift page.",
    "Review the uncertain and referred cases in Review & labels so the label-based metrics and the "
    "next training set catch up.",
    "Retrain on recent labelled data (Models → Retraining); a person reviews and promotes the "
    "candidate.",
    "Release the mitigation (Models → Serving route) once a healthy version serves again; the "
    "release is audited.",
)


@dataclass(frozen=True)
class Reason:
    """A metric off green: its words, the number shown, its status and whether that number is an
    estimate (no labels yet)."""

    metric: str
    status: Status
    value: float | None
    estimated: bool

    @property
    def text(self) -> str:
        number = "—" if self.value is None else f"{self.value:.3g}"
        return (f"{metric_name(self.metric)} {'estimated ' if self.estimated else ''}{number} "
                f"({self.status.value})")


@dataclass(frozen=True)
class Mitigation:
    """The fallback serving (``kind`` "fallback", ``version`` it) or answers restricted to clear
    cases (``kind`` "restricted"), in place ``since`` when, set ``by`` whom, and ``why``."""

    kind: str
    version: str | None
    since: datetime | None
    by: str | None
    why: str

    @property
    def text(self) -> str:
        what = (f"the fallback {self.version} answers every request" if self.kind == "fallback"
                else "answers are restricted to clear cases (others are referred)")
        when = f" since {self.since.strftime(DATE_FORMAT)}" if self.since else ""
        who = f" (set by {self.by}{f': {self.why}' if self.why else ''})" if self.by else ""
        return f"{what}{when}{who}"


@dataclass(frozen=True)
class Verdict:
    """``status`` (green, yellow, red, unknown or mitigated), the ``title``, the ``reasons`` that
    drive it (worst first), the playbook ``actions`` and the ``mitigation`` in place, if any."""

    status: str
    title: str
    reasons: tuple[Reason, ...]
    actions: tuple[str, ...]
    mitigation: Mitigation | None


def top_reasons(metrics: dict[str, MetricValue], n: int = 3) -> tuple[Reason, ...]:
    """The ``n`` metrics furthest off green: red before yellow, realised before estimated."""
    off = [m for m in metrics.values() if m.effective_status in _SEVERITY]
    off.sort(key=lambda m: (_SEVERITY[m.effective_status], m.value is None, m.name))
    return tuple(Reason(m.name, m.effective_status, m.value if m.value is not None else m.estimated,
                        m.value is None) for m in off[:n])


def mitigation(route: ServingRoute, history: pd.DataFrame) -> Mitigation | None:
    """The mitigation ``route`` has in place, dated from ``history`` (the route history, newest
    first, with ``fallback_engaged``, ``restricted_to_clear_cases``, ``ts``, ``actor``,
    ``reason``): the oldest route of the unbroken run of routes, ending with the newest, that
    have it in place."""
    kind = "fallback" if route.fallback_engaged else \
        "restricted" if route.restricted_to_clear_cases else None
    if kind is None:
        return None
    column = "fallback_engaged" if kind == "fallback" else "restricted_to_clear_cases"
    first = None
    for _, row in history.iterrows():
        if not bool(row[column]):
            break
        first = row
    if first is None:
        return Mitigation(kind, route.fallback_version, None, None, "")
    return Mitigation(kind, route.fallback_version, pd.Timestamp(first["ts"]).to_pydatetime(),
                      str(first["actor"]), str(first.get("reason") or ""))


def verdict(report: HealthReport, route: ServingRoute, history: pd.DataFrame,
            n_reasons: int = 3) -> Verdict:
    """The window's verdict: its status and playbook, or — when off green and a mitigation is in
    place — "mitigated" with the playbook's next steps (:data:`MITIGATED_ACTIONS`)."""
    reasons = top_reasons(report.metrics, n_reasons)
    mitigated = mitigation(route, history)
    if mitigated is not None and report.status in _SEVERITY:
        return Verdict(MITIGATED, mitigated.text[:1].upper() + mitigated.text[1:], reasons,
                       MITIGATED_ACTIONS,
                       mitigated)
    return Verdict(report.status.value, report.playbook.title, reasons,
                   tuple(report.playbook.actions), mitigated)


def reasons_sentence(reasons: Sequence[Reason]) -> str:
    """"Driven by: Recall (sensitivity) 0.61 (red), …" — or nothing when no metric is off green."""
    return "Driven by: " + "; ".join(r.text for r in reasons) + "." if reasons else ""
