"""Alert rule (debounce, dedup, escalation, resolution), its application through the store, and the
webhook notifier (a local HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skinlesion.monitoring.alerts import (
    ActionKind,
    SIMULATED_MARK,
    NotifyOutcome,
    WebhookNotifier,
    alert_payload,
    decide,
    notify_pending,
    update_alerts,
)
from skinlesion.monitoring.policy import Policy
from skinlesion.store import Alert, HealthSnapshot, SnapshotMetric, Store
from skinlesion.thresholds import Status
from tests.monitoring.webhook import Receiver, webhook_receiver

G, Y, R, U = Status.GREEN, Status.YELLOW, Status.RED, Status.UNKNOWN
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def alert(status: str = "yellow") -> Alert:
    return Alert(metric="recall", scope="24h", status=status, opened_at=T0, last_seen_at=T0,
                 last_event_at=T0, message="recall off green")


# --- the pure rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("history", "open_status", "kind", "status"), [
    ([G, Y], None, ActionKind.NONE, None),          # one bad window: debounced
    ([Y, Y], None, ActionKind.OPEN, Y),             # held for `after` windows: open
    ([Y, R], None, ActionKind.OPEN, R),             # opens at the newest status
    ([R, Y], None, ActionKind.OPEN, Y),
    ([Y, R], "yellow", ActionKind.ESCALATE, R),     # yellow alert, red window: escalate
    ([R, R], "red", ActionKind.KEEP, R),            # no duplicate while one is open
    ([Y, Y], "yellow", ActionKind.KEEP, Y),
    ([R, Y], "red", ActionKind.KEEP, R),            # a red alert does not flap back to yellow
    ([R, U], "red", ActionKind.KEEP, R),            # no data is not a recovery
    ([R, G], "red", ActionKind.RESOLVE, None),      # back to green: resolve
    ([Y, G], "yellow", ActionKind.RESOLVE, None),
    ([Y, U], None, ActionKind.NONE, None),          # unknown breaks the streak
    ([U, Y], None, ActionKind.NONE, None),
    ([G, G], None, ActionKind.NONE, None),
    ([], None, ActionKind.NONE, None),
])
def test_decide_with_two_windows(history, open_status, kind, status) -> None:
    action = decide(history, alert(open_status) if open_status else None, after=2)
    assert (action.kind, action.status) == (kind, status)
    assert action.reason


def test_decide_walks_a_degradation_and_recovery() -> None:
    """green, yellow, yellow, red, red, green over consecutive windows: one alert, opened, escalated,
    kept, resolved."""
    sequence = [G, Y, Y, R, R, G]
    open_alert: Alert | None = None
    kinds = []
    for i in range(1, len(sequence) + 1):
        action = decide(sequence[:i], open_alert, after=2)
        kinds.append(action.kind)
        if action.kind in (ActionKind.OPEN, ActionKind.ESCALATE, ActionKind.KEEP):
            open_alert = alert(action.status.value)
        elif action.kind is ActionKind.RESOLVE:
            open_alert = None
    assert kinds == [ActionKind.NONE, ActionKind.NONE, ActionKind.OPEN, ActionKind.ESCALATE,
                     ActionKind.KEEP, ActionKind.RESOLVE]


def test_decide_after_one_and_three_windows() -> None:
    assert decide([G, R], None, after=1).kind is ActionKind.OPEN
    assert decide([G, Y, R], None, after=3).kind is ActionKind.NONE
    assert decide([Y, Y, R], None, after=3).kind is ActionKind.OPEN
    with pytest.raises(ValueError, match="after"):
        decide([R], None, after=0)


# --- applied through the store --------------------------------------------------------------------------


def snapshot(day: int, recall_status: str, value: float, *, window: str = "24h",
             simulated: bool = False) -> HealthSnapshot:
    end = T0 + timedelta(days=day)
    return HealthSnapshot(ts=end, window_name=window, window_start=end - timedelta(days=1),
                          window_end=end, model_version="v1", status=recall_status,
                          simulated=simulated, metrics=[
                              SnapshotMetric(metric="recall", value=value, status=recall_status, n=40),
                              SnapshotMetric(metric="accuracy", value=0.95, status="green", n=40)])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "monitor.duckdb")


def run_days(store: Store, days: list[tuple[str, float]], policy: Policy, *, window: str = "24h",
             simulated: bool = False):
    changes = []
    for day, (status, value) in enumerate(days, start=1):
        snap = snapshot(day, status, value, window=window, simulated=simulated)
        store.save_snapshot(snap)
        changes.append([(c.event, c.alert.metric, c.alert.status)
                        for c in update_alerts(store, snap, policy)])
    return changes


def test_update_alerts_opens_escalates_and_resolves_one_alert(store: Store) -> None:
    changes = run_days(store, [("green", 0.9), ("yellow", 0.8), ("yellow", 0.79), ("red", 0.6),
                               ("red", 0.55), ("green", 0.9)], Policy())
    assert changes == [[], [], [("opened", "recall", "yellow")], [("escalated", "recall", "red")],
                       [], [("resolved", "recall", "red")]]
    alerts = store.query_alerts()
    assert len(alerts) == 1
    row = alerts.iloc[0]
    assert row["key"] == "recall@24h" and row["last_event"] == "resolved"
    assert row["opened_at"] == T0 + timedelta(days=3)
    assert row["last_seen_at"] == T0 + timedelta(days=6)
    assert row["resolved_at"] == T0 + timedelta(days=6)
    assert "0.9" in row["message"]
    assert store.open_alerts() == []


def test_a_new_episode_opens_a_new_alert_and_keep_updates_last_seen(store: Store) -> None:
    run_days(store, [("red", 0.6), ("red", 0.6), ("red", 0.6), ("green", 0.9), ("red", 0.6),
                     ("red", 0.6)], Policy())
    alerts = store.query_alerts().sort_values("opened_at")
    assert list(alerts["opened_at"]) == [T0 + timedelta(days=2), T0 + timedelta(days=6)]
    first, second = alerts.iloc[0], alerts.iloc[1]
    assert first["last_seen_at"] == T0 + timedelta(days=4)  # kept on day 3, resolved on day 4
    assert first["resolved_at"] == T0 + timedelta(days=4)
    assert second["resolved_at"] is None or str(second["resolved_at"]) == "NaT"
    opened = store.open_alerts()
    assert [a.status for a in opened] == ["red"]
    assert opened[0].details["history"] == ["red", "red"]
    assert opened[0].details["threshold"].startswith("green ≥ 0.85")
    assert opened[0].details["playbook"]["title"].startswith("Unhealthy")


def test_estimated_status_counts_while_labels_are_missing(store: Store) -> None:
    """Without enough labels the realised status is unknown: the CBPE estimate drives the alert."""
    for day in (1, 2):
        end = T0 + timedelta(days=day)
        snap = HealthSnapshot(ts=end, window_name="24h", window_start=end - timedelta(days=1),
                              window_end=end, status="red", metrics=[SnapshotMetric(
                                  metric="recall", value=None, status="unknown", n=3,
                                  note="not enough labels (3 of 30)", estimated=0.62,
                                  estimated_status="red")])
        store.save_snapshot(snap)
        changes = update_alerts(store, snap, Policy())
    assert [(c.event, c.alert.status) for c in changes] == [("opened", "red")]
    assert "estimated 0.62 (not enough labels (3 of 30))" in changes[0].alert.message
    history = store.query_snapshots(metric="recall")
    assert list(history["status"]) == ["unknown"] * 2
    assert list(history["effective_status"]) == ["red"] * 2


def test_overlapping_windows_are_not_consecutive(store: Store) -> None:
    """A monitor running every 6 h over a 24 h window: two runs 6 h apart see almost the same
    window, so they do not count as two windows; the alert opens once a whole new window is red."""
    policy = Policy()
    opened = []
    for hours in range(0, 30, 6):
        end = T0 + timedelta(hours=hours)
        snap = HealthSnapshot(ts=end, window_name="24h", window_start=end - timedelta(days=1),
                              window_end=end, status="red", metrics=[SnapshotMetric(
                                  metric="recall", value=0.6, status="red", n=40)])
        store.save_snapshot(snap)
        opened += [hours for c in update_alerts(store, snap, policy) if c.event == "opened"]
    assert opened == [24]


def test_alerts_are_scoped_by_window(store: Store) -> None:
    run_days(store, [("red", 0.6), ("red", 0.6)], Policy(), window="24h")
    run_days(store, [("red", 0.6)], Policy(), window="7d")
    assert [a.key for a in store.open_alerts()] == ["recall@24h"]


def test_opening_is_deduplicated_in_the_store(store: Store) -> None:
    first = store.upsert_alert(alert("yellow"))
    second = store.upsert_alert(alert("red"))
    assert second == first
    assert len(store.query_alerts()) == 1


# --- notification ----------------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def test_webhook_gets_each_event_once_and_failures_are_retried(store: Store,
                                                               webhook: Receiver) -> None:
    notifier = WebhookNotifier(webhook.url)
    run_days(store, [("red", 0.6), ("red", 0.6)], Policy())
    webhook.fail_next = 1
    assert notify_pending(store, notifier) == NotifyOutcome(sent=0, failed=1)  # 503: stays pending
    assert webhook.bodies == []
    assert notify_pending(store, notifier).sent == 1
    assert notify_pending(store, notifier).sent == 0  # delivered once only
    (body,) = webhook.bodies
    assert body["event"] == "opened" and body["alert"]["key"] == "recall@24h"
    assert body["alert"]["status"] == "red" and "recall" in body["text"]
    (opened,) = store.open_alerts()
    assert opened.notified
    store.resolve_alert(opened.id, at=T0 + timedelta(days=9))
    assert notify_pending(store, notifier).sent == 1
    assert [b["event"] for b in webhook.bodies] == ["opened", "resolved"]


def test_unreachable_webhook_is_logged_not_raised(store: Store, caplog) -> None:
    store.upsert_alert(alert())
    notifier = WebhookNotifier("http://127.0.0.1:9/unreachable", timeout_s=1.0)
    assert notify_pending(store, notifier).failed == 1
    assert "retrying on the next run" in caplog.text
    assert len(store.pending_alert_notifications()) == 1


def test_payload_is_json_serialisable() -> None:
    payload = alert_payload(alert())
    assert json.loads(json.dumps(payload))["alert"]["opened_at"].startswith("2025-03-01")


def test_alerts_from_simulated_snapshots_are_marked_in_store_message_and_webhook(
        store: Store, webhook: Receiver) -> None:
    """A simulated snapshot (the demo's) raises an alert marked simulated, from opening through
    escalation to resolution; its webhook JSON says so."""
    run_days(store, [("yellow", 0.8), ("yellow", 0.8), ("red", 0.6), ("green", 0.9)], Policy(),
             simulated=True)
    assert store.get_snapshot(store.latest_snapshot("24h").id).simulated
    (row,) = store.query_alerts().itertuples()
    assert row.details["simulated"] is True and row.message.startswith(SIMULATED_MARK)
    assert row.last_event == "resolved"
    notify_pending(store, WebhookNotifier(webhook.url))
    (body,) = webhook.bodies  # the latest event of the alert: its resolution
    assert body["simulated"] is True and SIMULATED_MARK in body["text"]
    assert body["alert"]["details"]["simulated"] is True


def test_alerts_from_real_snapshots_are_not_marked(store: Store, webhook: Receiver) -> None:
    run_days(store, [("red", 0.6), ("red", 0.6)], Policy())
    (opened,) = store.open_alerts()
    assert opened.details["simulated"] is False and SIMULATED_MARK not in opened.message
    notify_pending(store, WebhookNotifier(webhook.url))
    (body,) = webhook.bodies
    assert body["simulated"] is False and SIMULATED_MARK not in body["text"]


def test_payload_says_whether_the_alert_is_simulated() -> None:
    assert alert_payload(alert())["simulated"] is False
    marked = alert().model_copy(update={"details": {"simulated": True}})
    assert alert_payload(marked)["simulated"] is True


def test_escalation_and_resolution_keep_the_mark_of_the_opening(store: Store) -> None:
    for day, (status, value, simulated) in enumerate(
            [("yellow", 0.8, True), ("yellow", 0.8, True), ("red", 0.6, False),
             ("green", 0.9, False)], start=1):
        snap = snapshot(day, status, value, simulated=simulated)
        store.save_snapshot(snap)
        update_alerts(store, snap, Policy())
    (row,) = store.query_alerts().itertuples()
    assert row.status == "red" and row.details["simulated"] is True
    assert row.message.startswith(SIMULATED_MARK)
