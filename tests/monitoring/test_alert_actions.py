"""What operators do about alerts: acknowledge, silence, assign — each audited, silences hold back
notifications, and an incident's timeline runs opened → actions → resolved. Both store backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from skinlesion.errors import PermissionDeniedError
from skinlesion.lifecycle.operations import OperationError
from skinlesion.monitoring.alerts import (MAX_SILENCE, acknowledge, alert_state, assign,
                                          incident_timeline, notify_pending, silence, unsilence)
from skinlesion.store import Alert, ServingRoute, Store

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Recorder:
    def __init__(self):
        self.sent: list[dict] = []

    def send(self, payload: dict) -> bool:
        self.sent.append(payload)
        return True


@pytest.fixture
def store(store_url) -> Store:
    return Store(store_url)


def _open(store: Store, at: datetime = T0) -> Alert:
    return store.upsert_alert(Alert(metric="recall", scope="24h", status="red", opened_at=at,
                                    last_seen_at=at, last_event_at=at, message="recall 0.61 red"))


def test_acknowledge_silence_assign_are_audited_and_make_the_state(store):
    alert = _open(store)
    acknowledge(store, alert.id, actor="lead", role="ml_lead", note="looking at it")
    silence(store, alert.id, actor="lead", role="ml_lead", duration=timedelta(hours=4),
            reason="known device roll-out", at=datetime.now(UTC))
    assign(store, alert.id, actor="lead", role="ml_lead", assignee="dana")
    audit = store.query_audit()
    assert sorted(audit["action"]) == ["acknowledge_alert", "assign_alert", "silence_alert"]
    assert set(audit["target"]) == {"recall@24h"} and set(audit["actor"]) == {"lead"}
    silenced = audit[audit["action"] == "silence_alert"].iloc[0]
    assert silenced["reason"] == "known device roll-out"
    assert "silenced_until" in silenced["details"]
    assert store.verify_audit().broken_id is None
    state = alert_state(store.alert_actions([alert.id]), datetime.now(UTC))
    assert (state.acknowledged_by, state.acknowledge_note) == ("lead", "looking at it")
    assert state.silenced and state.silence_reason == "known device roll-out"
    assert state.assignee == "dana"
    later = alert_state(store.alert_actions([alert.id]), datetime.now(UTC) + timedelta(hours=5))
    assert not later.silenced and later.assignee == "dana"


def test_unsilence_lifts_the_silence(store):
    alert = _open(store)
    silence(store, alert.id, actor="lead", role="ml_lead", duration=timedelta(hours=4), reason="x")
    unsilence(store, alert.id, actor="lead", role="ml_lead")
    assert not alert_state(store.alert_actions([alert.id]), datetime.now(UTC)).silenced


def test_a_silenced_alert_is_not_notified_until_the_silence_ends(store):
    alert = _open(store)
    now = datetime.now(UTC)
    silence(store, alert.id, actor="lead", role="ml_lead", duration=timedelta(hours=2),
            reason="maintenance", at=now)
    quiet = Recorder()
    assert notify_pending(store, quiet, at=now + timedelta(hours=1)).sent == 0
    assert quiet.sent == []
    loud = Recorder()
    assert notify_pending(store, loud, at=now + timedelta(hours=3)).sent == 1
    assert loud.sent[0]["alert"]["id"] == alert.id


@pytest.mark.parametrize("role", ["viewer", "clinician"])
def test_only_ml_leads_act_on_alerts_and_nothing_is_written_otherwise(store, role):
    alert = _open(store)
    with pytest.raises(PermissionDeniedError):
        acknowledge(store, alert.id, actor="vic", role=role)
    with pytest.raises(PermissionDeniedError):
        silence(store, alert.id, actor="vic", role=role, duration=timedelta(hours=1), reason="x")
    assert store.alert_actions() == [] and store.query_audit().empty


def test_bad_silences_and_resolved_alerts_are_refused(store):
    alert = _open(store)
    for duration, reason in ((timedelta(0), "x"), (MAX_SILENCE + timedelta(seconds=1), "x"),
                             (timedelta(hours=1), "  ")):
        with pytest.raises(OperationError):
            silence(store, alert.id, actor="lead", role="ml_lead", duration=duration, reason=reason)
    store.resolve_alert(alert.id, at=T0 + timedelta(hours=1))
    with pytest.raises(OperationError, match="resolved"):
        acknowledge(store, alert.id, actor="lead", role="ml_lead")
    with pytest.raises(OperationError, match="no alert"):
        assign(store, "nope", actor="lead", role="ml_lead", assignee="dana")
    assert store.alert_actions() == []


def test_incident_timeline_links_the_alert_to_the_actions_taken(store):
    alert = _open(store, at=datetime.now(UTC) - timedelta(minutes=5))
    acknowledge(store, alert.id, actor="lead", role="ml_lead", note="on it")
    store.set_route(ServingRoute(active_version="reference", fallback_version="fb",
                                 fallback_engaged=True), actor="lead", role="ml_lead",
                    reason="recall red", details={"operation": "engage_fallback"})
    resolved = store.resolve_alert(alert.id, at=datetime.now(UTC) + timedelta(seconds=1))
    audit = store.query_audit().to_dict("records")
    events = incident_timeline(resolved, store.alert_actions([alert.id]), audit)
    whats = [e.what for e in events]
    assert whats[0] == "Alert opened (red)" and whats[-1] == "Resolved"
    assert "Acknowledged an alert" in whats
    assert "Switched to the fallback model" in whats
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    fallback = events[whats.index("Switched to the fallback model")]
    assert (fallback.who, fallback.why) == ("lead", "recall red")
    assert not any("set_route" in w or "_alert" in w for w in whats)
