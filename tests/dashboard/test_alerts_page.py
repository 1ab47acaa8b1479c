"""The Alerts & audit page: open and past alerts, closing one (audited), the filterable audit log."""

from __future__ import annotations

from tests.dashboard.clinic import assert_clean, clinic, frame, page  # noqa: F401 (fixture)


def test_open_and_past_alerts_and_the_audit_log_are_shown(clinic):
    at = page("alerts", "viewer")
    at = at.radio(key="filter_window").set_value("7 d").run()  # the past alert is 2 days old
    assert_clean(at)
    open_alerts, past, audit = frame(at, 0), frame(at, 1), frame(at, 2)
    assert open_alerts["metric"].tolist() == ["recall"]
    assert past["metric"].tolist() == ["drift_share"]
    assert audit["reason"].tolist() == ["promote v2", "first release"]


def test_simulated_alerts_are_marked_and_real_ones_are_not(clinic):
    from datetime import UTC, datetime

    from skinlesion.store import Alert

    at = page("alerts", "viewer")
    assert "simulated" not in frame(at, 0).columns  # a real deployment: no column of noes
    now = datetime.now(UTC)
    clinic["store"].upsert_alert(Alert(
        metric="accuracy", scope="24h", status="red", opened_at=now, last_seen_at=now,
        last_event_at=now, details={"simulated": True},
        message="[simulated] accuracy red in 2 consecutive 24h windows: 0.5"))
    at = page("alerts", "viewer")
    assert_clean(at)
    shown = frame(at, 0).set_index("metric")
    assert shown.loc["accuracy", "simulated"] and not shown.loc["recall", "simulated"]
    assert shown.loc["accuracy", "message"].startswith("[simulated]")


def test_the_audit_log_filters_by_actor_and_action(clinic):
    store = clinic["store"]
    store.append_audit("dr_kim", "clinician", "label", target="x", reason="checked")
    at = page("alerts", "viewer")
    at.selectbox(key="audit_actor").select("dr_kim")
    at = at.run()
    assert frame(at, -1)["action"].tolist() == ["label"]
    at.selectbox(key="audit_actor").select("all")
    at.selectbox(key="audit_action").select("set_route")
    at = at.run()
    assert frame(at, -1)["actor"].tolist() == ["setup", "setup"]


def test_closing_an_alert_needs_the_ml_lead_role(clinic):
    store = clinic["store"]

    def close(role: str):
        at = page("alerts", role, user=f"{role}-1")
        at.text_area(key="resolve_alert_reason").input("false alarm: label backlog")
        at.checkbox(key="resolve_alert_confirm").check()
        return at.button(key="resolve_alert_submit").click().run()

    at = close("viewer")
    assert any("ml_lead" in e.value for e in at.error)
    assert len(store.open_alerts()) == 1
    at = close("ml_lead")
    assert_clean(at)
    assert store.open_alerts() == []
    assert store.query_audit(action="resolve_alert")["actor"].tolist() == ["ml_lead-1"]
