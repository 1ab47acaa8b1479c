"""What the monitor records: health snapshots with one row per metric, the alerts they raise, and
what operators did about an alert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, model_validator

from skinlesion.errors import DataError
from skinlesion.records.fields import (
    MAX_REASON_CHARS,
    FiniteOrNone,
    JsonDict,
    NonBlank,
    Record,
    UtcDatetime,
    new_id,
    now,
    plain_status,
)

HealthStatus = Literal["green", "yellow", "red", "unknown"]
AlertStatus = Literal["yellow", "red"]
AlertEvent = Literal["opened", "escalated", "resolved"]
HEALTH_STATUSES: tuple[str, ...] = get_args(HealthStatus)
ALERT_STATUSES: tuple[str, ...] = get_args(AlertStatus)
ALERT_EVENTS: tuple[str, ...] = get_args(AlertEvent)
#: A status, given as a plain string or as a status enum member (``monitoring.policy.Status``).
Health = Annotated[HealthStatus, BeforeValidator(plain_status)]
Level = Annotated[AlertStatus, BeforeValidator(plain_status)]


class SnapshotMetric(Record):
    """One metric of a health snapshot (a row of ``health_metrics``).

    ``value`` is the realised (label-based) value with its ``status``; None where the metric is
    undefined in the window (``note`` says why, e.g. "not enough labels"). ``estimated`` is the
    value estimated before labels arrive (CBPE) with its ``estimated_status``; ``n`` the cases
    behind it; ``previous_value`` the realised value in the window before, for the trend."""

    metric: NonBlank
    value: FiniteOrNone = None
    status: Health = "unknown"
    n: int | None = None
    note: str = ""
    estimated: FiniteOrNone = None
    estimated_status: Health = "unknown"
    previous_value: FiniteOrNone = None

    @property
    def effective_status(self) -> str:
        """The realised status, or the estimated one while the realised one is unknown."""
        return self.estimated_status if self.status == "unknown" else self.status


class HealthSnapshot(Record):
    """One monitoring run's verdict on one window: a row of ``health_snapshots``, its metrics (rows of
    ``health_metrics``, one per metric, so each can be plotted over time) and the full report as JSON
    (playbook, hints, drift per feature) for the detail views. ``status`` is the worst status.
    ``simulated`` marks a snapshot of simulated traffic (the embedded demo), as predictions and
    labels are marked; alerts raised from it carry the mark too."""

    id: str = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    window_name: NonBlank
    window_start: UtcDatetime
    window_end: UtcDatetime
    model_version: str | None = None
    source: str | None = None
    status: Health
    metrics: tuple[SnapshotMetric, ...] = ()
    report: JsonDict = Field(default_factory=dict)
    simulated: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> HealthSnapshot:
        if self.window_start >= self.window_end:
            raise DataError(f"window_start ({self.window_start.isoformat()}) must come before "
                            f"window_end ({self.window_end.isoformat()})", field="window_start")
        names = [m.metric for m in self.metrics]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(f"each metric appears once per snapshot; repeated: {', '.join(repeated)}",
                            field="metrics")
        return self

    def metric(self, name: str) -> SnapshotMetric | None:
        """The snapshot's row for metric ``name``, or None."""
        return next((m for m in self.metrics if m.metric == name), None)


def alert_key(metric: str, scope: str) -> str:
    """The deduplication key of an alert: at most one alert per key is open at a time."""
    return f"{metric}@{scope}"


class Alert(Record):
    """An alert on ``metric`` in ``scope`` (e.g. the health window ``24h``): a row of ``alerts``.

    Open while ``resolved_at`` is None. ``last_event`` is its latest change (opened, escalated,
    resolved) at ``last_event_at``; ``notified`` says whether that change has been delivered (to the
    webhook), so an undelivered one is retried on the next run."""

    id: str = Field(default_factory=new_id)
    key: str = ""
    metric: NonBlank
    scope: NonBlank
    status: Level
    opened_at: UtcDatetime
    last_seen_at: UtcDatetime
    resolved_at: UtcDatetime | None = None
    message: NonBlank
    details: JsonDict = Field(default_factory=dict)
    last_event: AlertEvent = "opened"
    last_event_at: UtcDatetime
    notified: bool = False

    @model_validator(mode="before")
    @classmethod
    def _key(cls, data: object) -> object:
        """Fill ``key`` from metric and scope (a given key must match them)."""
        if isinstance(data, Mapping) and "metric" in data and "scope" in data:
            expected = alert_key(str(data["metric"]).strip(), str(data["scope"]).strip())
            if data.get("key") and data["key"] != expected:
                raise DataError(f"an alert's key is metric@scope ({expected!r}), got {data['key']!r}",
                                field="key")
            return {**data, "key": expected}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Alert:
        if (self.resolved_at is None) == (self.last_event == "resolved"):
            raise DataError("an alert is resolved exactly when its last event is 'resolved'",
                            field="resolved_at")
        return self

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


#: The columns of ``alerts``, in the order of the :class:`Alert` fields.
ALERT_COLUMNS: tuple[str, ...] = tuple(Alert.model_fields)
#: The columns of ``health_metrics`` but the snapshot id, in the order of :class:`SnapshotMetric`.
SNAPSHOT_METRIC_COLUMNS: tuple[str, ...] = tuple(SnapshotMetric.model_fields)

AlertActionKind = Literal["acknowledge", "silence", "unsilence", "assign"]


class AlertAction(Record):
    """What an operator did about an alert (a row of ``alert_actions``, audited as ``audit_id``):
    ``acknowledge`` (seen; ``note``), ``silence`` (no notifications until ``silenced_until``;
    ``note`` says why), ``unsilence`` (the silence lifted early), ``assign`` (to ``assignee``)."""

    id: str = Field(default_factory=new_id)
    alert_id: NonBlank
    ts: UtcDatetime = Field(default_factory=now)
    actor: NonBlank
    role: NonBlank
    kind: AlertActionKind
    note: str = Field("", max_length=MAX_REASON_CHARS)
    silenced_until: UtcDatetime | None = None
    assignee: str | None = Field(None, max_length=100)
    audit_id: str = ""

    @model_validator(mode="after")
    def _what_the_kind_needs(self) -> AlertAction:
        if self.kind == "silence" and not self.note.strip():
            raise DataError("a silence needs a reason (it is audited)", field="note")
        if self.kind == "silence" and (self.silenced_until is None or self.silenced_until <= self.ts):
            raise DataError("a silence needs an end after its start", field="silenced_until")
        if self.kind == "assign" and not (self.assignee or "").strip():
            raise DataError("name who the alert is assigned to", field="assignee")
        return self


#: The columns of ``alert_actions``, in the order of the :class:`AlertAction` fields.
ALERT_ACTION_COLUMNS: tuple[str, ...] = tuple(AlertAction.model_fields)
