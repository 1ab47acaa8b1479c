"""Alerts on the health snapshots: debounced, deduplicated, escalating and resolving.

The rule (:func:`decide`, pure) works on the statuses of one metric in consecutive windows of one
scope (the snapshots of one health window, e.g. ``24h``), newest last, and on the alert open for
that metric and scope, if any:

* **open** — no alert is open and the metric has been off green (yellow or red) in each of the last
  ``after`` windows (``Policy.alert_after_windows``): one bad window is not enough (debounce). The
  alert takes the newest status.
* **escalate** — the open alert is yellow and the newest status is red: the same alert turns red
  at once (the trouble is already confirmed) and is notified again.
* **keep** — an alert is open and the metric is still off green, or unknown (no data says it
  recovered): no second alert for the same key (deduplication); a red alert stays red until it
  resolves, so a wobble between yellow and red does not page anyone twice.
* **resolve** — an alert is open and the newest status is green.

An UNKNOWN window (no labels, no traffic) breaks a streak of bad windows: an alert needs evidence.

:func:`update_alerts` applies the rule to every metric of a stored snapshot through the store;
:func:`notify_pending` delivers each alert's latest change (opened, escalated, resolved) to a
notifier such as :class:`WebhookNotifier` and records it as notified; an undelivered change stays
pending and is retried on the next run.

An alert raised from a simulated snapshot (the embedded demo's) is simulated: ``details.simulated``
is true, its messages start with :data:`SIMULATED_MARK`, and its webhook JSON says
``"simulated": true``, so no one mistakes a demo's alert for a real one. The mark stays for the
alert's life (escalation and resolution included).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import httpx

from skinlesion.auth import require
from skinlesion.display import action_name, audit_action
from skinlesion.lifecycle.operations import OperationError
from skinlesion.monitoring.policy import Policy, playbook
from skinlesion.records import now, utc
from skinlesion.store import (Alert, AlertAction, AlertEvent, HealthSnapshot, SnapshotMetric, Store,
                              alert_key)
from skinlesion.thresholds import Status

logger = logging.getLogger(__name__)

_OFF_GREEN = (Status.YELLOW, Status.RED)
WEBHOOK_TIMEOUT_S = 5.0
#: Leads the message of an alert raised from a simulated snapshot.
SIMULATED_MARK = "[simulated]"


class ActionKind(StrEnum):
    """What to do with the alert of one metric after a window."""

    NONE = "none"
    OPEN = "open"
    ESCALATE = "escalate"
    KEEP = "keep"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Action:
    """The decision for one metric: ``kind``, the alert's status after it (None when no alert is
    open afterwards) and the reason in words."""

    kind: ActionKind
    status: Status | None
    reason: str


def decide(history: Sequence[Status | str], open_alert: Alert | None, *, after: int) -> Action:
    """The alert action for a metric whose statuses in consecutive windows are ``history`` (newest
    last) given the alert open for its key (or None). See the module docstring for the rule."""
    if after < 1:
        raise ValueError(f"after must be 1 or more windows, got {after}")
    statuses = [Status(s) for s in history]
    current = statuses[-1] if statuses else Status.UNKNOWN
    if open_alert is not None:
        held = Status(open_alert.status)
        if current is Status.GREEN:
            return Action(ActionKind.RESOLVE, None, "back to green")
        if current is Status.RED and held is Status.YELLOW:
            return Action(ActionKind.ESCALATE, Status.RED, "yellow turned red")
        return Action(ActionKind.KEEP, held, f"still {current.value}; alert already open")
    recent = statuses[-after:]
    if len(recent) == after and all(s in _OFF_GREEN for s in recent):
        return Action(ActionKind.OPEN, current,
                      f"off green in {after} consecutive window{'s' if after > 1 else ''}")
    streak = next((i for i, s in enumerate(reversed(statuses)) if s not in _OFF_GREEN), len(statuses))
    return Action(ActionKind.NONE, None, f"off green in {streak} of the {after} windows needed"
                  if streak else f"{current.value}: nothing to alert")


# --- applying the rule through the store ------------------------------------------------------------


@dataclass(frozen=True)
class AlertChange:
    """An alert event of one run: ``event`` (opened, escalated, resolved) and the alert after it."""

    event: AlertEvent
    alert: Alert

    def describe(self) -> str:
        """``recall@24h opened (red)`` — for the monitor's one-line summary."""
        return f"{self.alert.key} {self.event} ({self.alert.status})"


def _value_text(row: SnapshotMetric | None) -> str:
    """``0.712``, ``estimated 0.712 (not enough labels (3 of 30))`` or ``no value (...)``."""
    if row is not None and row.value is not None:
        return f"{row.value:.3g}"
    note = f" ({row.note})" if row is not None and row.note else ""
    if row is not None and row.estimated is not None:
        return f"estimated {row.estimated:.3g}{note}"
    return f"no value{note}"


def _details(snapshot: HealthSnapshot, row: SnapshotMetric | None, policy: Policy,
             history: Sequence[str], status: Status | None, *, simulated: bool) -> dict[str, Any]:
    """What an alert carries for the dashboard and the webhook: the evidence and the playbook, and
    whether it rests on simulated data."""
    details: dict[str, Any] = {
        "snapshot_id": snapshot.id, "simulated": simulated, "window": snapshot.window_name,
        "window_start": snapshot.window_start.isoformat(), "window_end": snapshot.window_end.isoformat(),
        "model_version": snapshot.model_version, "history": list(history),
        **({} if row is None else row.model_dump(exclude={"metric", "previous_value"})),
    }
    if row is not None and row.metric in policy.thresholds:
        details["threshold"] = policy.thresholds[row.metric].describe()
    if status is not None:
        book = playbook(status)
        details["playbook"] = {"title": book.title, "actions": book.actions}
    return details


def _with_threshold(text: str, details: dict[str, Any]) -> str:
    return text + (f" ({details['threshold']})" if "threshold" in details else "")


def _marked(text: str, details: dict[str, Any]) -> str:
    """``text`` led by :data:`SIMULATED_MARK` when the alert rests on simulated data."""
    return f"{SIMULATED_MARK} {text}" if details.get("simulated") else text


def _apply(store: Store, action: Action, current: Alert | None, *, metric: str, scope: str,
           after: int, snapshot: HealthSnapshot, details: dict[str, Any],
           off_green_now: bool) -> AlertChange | None:
    """Carry out ``action`` for ``metric`` in ``scope`` through the store; the change, if any."""
    now = snapshot.ts
    value = _value_text(snapshot.metric(metric))
    if current is None:
        if action.kind is not ActionKind.OPEN or action.status is None:
            return None
        alert = Alert(metric=metric, scope=scope, status=action.status, opened_at=now,
                      last_seen_at=now, last_event_at=now, details=details,
                      message=_marked(_with_threshold(
                          f"{metric} {action.status.value} in {after} consecutive {scope} "
                          f"window{'s' if after > 1 else ''}: {value}", details), details))
        stored = store.upsert_alert(alert)
        # Another monitor may have opened the alert for this key meanwhile: that one stands.
        return AlertChange("opened", stored) if stored.id == alert.id else None
    if action.kind is ActionKind.ESCALATE:
        return AlertChange("escalated", store.upsert_alert(current.model_copy(update=dict(
            status=Status.RED.value, last_seen_at=now, last_event="escalated", last_event_at=now,
            notified=False, details=details,
            message=_marked(_with_threshold(f"{metric} escalated to red in the {scope} window: "
                                            f"{value}", details), details)))))
    if action.kind is ActionKind.RESOLVE:
        return AlertChange("resolved", store.resolve_alert(
            current.id, at=now, message=_marked(f"{metric} back to green in the {scope} window: "
                                                f"{value}", details)))
    if off_green_now:
        store.upsert_alert(current.model_copy(update=dict(last_seen_at=now)))
    return None


def update_alerts(store: Store, snapshot: HealthSnapshot, policy: Policy) -> list[AlertChange]:
    """Apply :func:`decide` to every metric with a threshold in ``policy`` (and every metric with an
    open alert) over consecutive (non-overlapping) snapshots of ``snapshot``'s window, ending
    with ``snapshot`` (which must be stored already). Alerts are scoped by the window name.
    Returns the changes."""
    scope = snapshot.window_name
    after = policy.alert_after_windows
    histories = store.metric_status_history(scope, last=after, until=snapshot.ts)
    open_by_key = {a.key: a for a in store.open_alerts(scope=scope)}
    metrics = list(policy.thresholds) + sorted(
        a.metric for a in open_by_key.values() if a.metric not in policy.thresholds)
    changes: list[AlertChange] = []
    for metric in metrics:
        history = histories.get(metric, [Status.UNKNOWN.value])
        current = open_by_key.get(alert_key(metric, scope))
        action = decide(history, current, after=after)
        # simulated once, simulated for the alert's life
        simulated = snapshot.simulated or bool(current is not None
                                               and current.details.get("simulated"))
        details = _details(snapshot, snapshot.metric(metric), policy, history, action.status,
                           simulated=simulated)
        change = _apply(store, action, current, metric=metric, scope=scope, after=after,
                        snapshot=snapshot, details=details,
                        off_green_now=Status(history[-1]) in _OFF_GREEN)
        if change is not None:
            changes.append(change)
    return changes


# --- notification -----------------------------------------------------------------------------------


class Notifier(Protocol):
    """Delivers one alert event; returns whether it was delivered (never raises for a failed try)."""

    def send(self, payload: dict[str, Any]) -> bool: ...


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body announcing ``alert``'s latest change: ``event`` (opened, escalated, resolved),
    ``simulated`` (true for an alert on simulated data, e.g. the demo's), a one-line ``text`` (chat
    webhooks show it as is; a simulated alert's message starts with :data:`SIMULATED_MARK`) and the
    ``alert`` itself."""
    return {"service": "skinlesion", "event": alert.last_event,
            "simulated": bool(alert.details.get("simulated", False)),
            "text": f"[{alert.status.upper()}] {alert.last_event}: {alert.message}",
            "alert": alert.model_dump(mode="json")}


class WebhookNotifier:
    """POSTs each alert event as JSON to ``url`` (``timeout_s`` per try). A failure (connection
    error, timeout, non-2xx answer) is logged and reported as not delivered, so the store keeps the
    event pending for the next run."""

    def __init__(self, url: str, *, timeout_s: float = WEBHOOK_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self._transport = transport

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"

    def send(self, payload: dict[str, Any]) -> bool:
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self._transport) as client:
                client.post(self.url, json=payload).raise_for_status()
        except httpx.HTTPError as err:
            logger.warning("webhook %s failed for %s (%s); retrying on the next run", self.url,
                           payload.get("alert", {}).get("key"), err)
            return False
        return True


@dataclass(frozen=True)
class NotifyOutcome:
    """How many pending alert events were delivered and how many stay pending."""

    sent: int
    failed: int


def notify_pending(store: Store, notifier: Notifier, *, at: datetime | None = None) -> NotifyOutcome:
    """Send every alert event not yet delivered (oldest first) and mark the delivered ones. An
    alert silenced at ``at`` (default now) is not sent: its event stays pending until the silence
    ends."""
    sent = failed = 0
    pending = store.pending_alert_notifications()
    states = alert_states(store.alert_actions([a.id for a in pending]), at or now())
    for alert in pending:
        if alert.id in states and states[alert.id].silenced:
            continue
        if notifier.send(alert_payload(alert)):
            store.mark_alert_notified(alert.id, alert.last_event_at)
            sent += 1
        else:
            failed += 1
    return NotifyOutcome(sent=sent, failed=failed)


# --- what operators do about an alert ---------------------------------------------------------------

#: The longest an alert may be silenced at once.
MAX_SILENCE = timedelta(days=30)


@dataclass(frozen=True)
class AlertState:
    """Where operators left an alert at a time: who acknowledged it (when, with what note), whether
    it is silenced (until when, why) and who it is assigned to."""

    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    acknowledge_note: str = ""
    silenced_until: datetime | None = None
    silence_reason: str = ""
    assignee: str | None = None

    @property
    def silenced(self) -> bool:
        return self.silenced_until is not None


def alert_state(actions: Sequence[AlertAction], at: datetime) -> AlertState:
    """The state ``actions`` (of one alert, any order) leave at ``at``: the latest acknowledgement
    and assignment made by then; the latest silence if it still runs at ``at`` and was not lifted."""
    state: dict[str, Any] = {}
    for action in sorted((a for a in actions if a.ts <= utc(at)), key=lambda a: a.ts):
        if action.kind == "acknowledge":
            state.update(acknowledged_by=action.actor, acknowledged_at=action.ts,
                         acknowledge_note=action.note)
        elif action.kind == "silence":
            state.update(silenced_until=action.silenced_until, silence_reason=action.note)
        elif action.kind == "unsilence":
            state.update(silenced_until=None, silence_reason="")
        else:
            state.update(assignee=action.assignee)
    if state.get("silenced_until") is not None and state["silenced_until"] <= utc(at):
        state.update(silenced_until=None, silence_reason="")
    return AlertState(**state)


def alert_states(actions: Sequence[AlertAction], at: datetime) -> dict[str, AlertState]:
    """:func:`alert_state` of every alert that ``actions`` touch, by alert id."""
    by_alert: dict[str, list[AlertAction]] = {}
    for action in actions:
        by_alert.setdefault(action.alert_id, []).append(action)
    return {alert_id: alert_state(group, at) for alert_id, group in by_alert.items()}


def _open_alert(store: Store, alert_id: str) -> Alert:
    alert = store.get_alert(alert_id)
    if alert is None:
        raise OperationError(f"no alert with id {alert_id!r}")
    if not alert.is_open:
        raise OperationError(f"the alert {alert.key} is resolved already")
    return alert


def acknowledge(store: Store, alert_id: str, *, actor: str, role: str, note: str = "") -> AlertAction:
    """Record that ``actor`` has seen the open alert (with an optional ``note``); audited."""
    require(role, "manage_alerts")
    _open_alert(store, alert_id)
    return store.add_alert_action(AlertAction(alert_id=alert_id, actor=actor, role=role,
                                              kind="acknowledge", note=note.strip()))


def silence(store: Store, alert_id: str, *, actor: str, role: str, duration: timedelta,
            reason: str, at: datetime | None = None) -> AlertAction:
    """Silence the open alert's notifications for ``duration`` (at most :data:`MAX_SILENCE`) from
    ``at`` (default now), saying why; audited. The alert stays open and shown."""
    require(role, "manage_alerts")
    if not timedelta(0) < duration <= MAX_SILENCE:
        raise OperationError(f"a silence lasts more than 0 and at most {MAX_SILENCE.days} days, "
                             f"got {duration}")
    if not reason.strip():
        raise OperationError("give a reason: silencing an alert is audited with why")
    _open_alert(store, alert_id)
    start = utc(at or now())
    return store.add_alert_action(AlertAction(alert_id=alert_id, actor=actor, role=role, ts=start,
                                              kind="silence", note=reason.strip(),
                                              silenced_until=start + duration))


def unsilence(store: Store, alert_id: str, *, actor: str, role: str, note: str = "") -> AlertAction:
    """Lift the alert's silence before it ends; audited."""
    require(role, "manage_alerts")
    _open_alert(store, alert_id)
    return store.add_alert_action(AlertAction(alert_id=alert_id, actor=actor, role=role,
                                              kind="unsilence", note=note.strip()))


def assign(store: Store, alert_id: str, *, actor: str, role: str, assignee: str,
           note: str = "") -> AlertAction:
    """Assign the open alert to ``assignee`` (a user name); audited."""
    require(role, "manage_alerts")
    if not assignee.strip():
        raise OperationError("name who the alert is assigned to")
    _open_alert(store, alert_id)
    return store.add_alert_action(AlertAction(alert_id=alert_id, actor=actor, role=role,
                                              kind="assign", assignee=assignee.strip(),
                                              note=note.strip()))


@dataclass(frozen=True)
class TimelineEvent:
    """One step of an incident: when, what (in words), who (None for the monitor) and why."""

    ts: datetime
    what: str
    who: str | None = None
    why: str = ""


def incident_timeline(alert: Alert, actions: Sequence[AlertAction],
                      operator_actions: Sequence[Mapping[str, Any]]) -> list[TimelineEvent]:
    """An incident in time order: the alert opened (and escalated), what operators did about it
    (``actions``), the operator actions taken while it was open (``operator_actions``: audit
    entries with ``ts, actor, action, reason, details``; those on alerts themselves are left out,
    they are in ``actions``), and its resolution."""
    end = alert.resolved_at
    opened_as = "yellow" if alert.last_event == "escalated" else alert.status
    events = [TimelineEvent(alert.opened_at, f"Alert opened ({opened_as})", None, alert.message)]
    if alert.last_event == "escalated":
        events.append(TimelineEvent(alert.last_event_at, "Escalated to red", None, alert.message))
    for action in actions:
        what = action_name(f"{action.kind}_alert")
        if action.kind == "silence" and action.silenced_until is not None:
            what += f" until {action.silenced_until:%Y-%m-%d %H:%M} UTC"
        if action.kind == "assign":
            what += f" to {action.assignee}"
        events.append(TimelineEvent(action.ts, what, action.actor, action.note))
    for entry in operator_actions:
        ts = utc(entry["ts"])
        if str(entry["action"]).endswith("_alert") or ts < alert.opened_at or (end and ts > end):
            continue
        events.append(TimelineEvent(ts, audit_action(str(entry["action"]), entry.get("details")),
                                    str(entry["actor"]), str(entry.get("reason") or "")))
    if end is not None:
        events.append(TimelineEvent(end, "Resolved", None, alert.message))
    return sorted(events, key=lambda e: e.ts)
