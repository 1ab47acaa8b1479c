"""The Alerts & audit page: open and past alerts, closing one (audited), the filterable audit log."""

from __future__ import annotations

from tests.dashboard.clinic import assert_clean, clinic, frame, page  # noqa: F401 (fixture)


def test_open_and_past_alerts_and_the_audit_log_are_shown(clinic):
    at = page("alerts", "viewer")
    at = at.radio(key="filter_window").set_value("7 d").run()  # the past alert is 2 days old
    assert_clean(at)
    open_alerts, past, audit = frame(at, 0), frame(at, 1), frame(at, -1)
    assert open_alerts["Metric"].tolist() == ["Recall (sensitivity)"]
    assert past["Metric"].tolist() == ["Drift share"]
    assert audit["Why"].tolist() == ["promote v2", "first release"]
    assert audit["What"].tolist() == ["Changed the serving route"] * 2


def test_simulated_alerts_are_marked_and_real_ones_are_not(clinic):
    from datetime import UTC, datetime

    from skinlesion.store import Alert

    at = page("alerts", "viewer")
    assert "Simulated" not in frame(at, 0).columns  # a real deployment: no column of noes
    now = datetime.now(UTC)
    clinic["store"].upsert_alert(Alert(
        metric="accuracy", scope="24h", status="red", opened_at=now, last_seen_at=now,
        last_event_at=now, details={"simulated": True},
        message="[simulated] accuracy red in 2 consecutive 24h windows: 0.5"))
    at = page("alerts", "viewer")
    assert_clean(at)
    shown = frame(at, 0).set_index("Metric")
    accuracy = "Accuracy (malignant vs benign)"
    assert shown.loc[accuracy, "Simulated"] and not shown.loc["Recall (sensitivity)", "Simulated"]
    assert shown.loc[accuracy, "Message"].startswith("[simulated]")


def test_the_audit_log_filters_by_actor_and_action(clinic):
    store = clinic["store"]
    store.append_audit("dr_kim", "clinician", "label", target="x", reason="checked")
    at = page("alerts", "viewer")
    at.selectbox(key="audit_actor").select("dr_kim")
    at = at.run()
    assert frame(at, -1)["What"].tolist() == ["Labelled a case"]
    at.selectbox(key="audit_actor").select("all")
    at.selectbox(key="audit_action").select("set_route")
    at = at.run()
    assert frame(at, -1)["Who"].tolist() == ["setup", "setup"]


def test_viewers_see_why_the_alert_controls_are_not_theirs(clinic):
    at = page("alerts", "viewer")
    assert_clean(at)
    # no form to fill in and be refused afterwards: the only button is signing out
    assert [b.key for b in at.button] == ["sign_out"] and not at.text_area and not at.text_input
    assert any("needs the ml_lead role" in i.value for i in at.info)


def test_acknowledge_silence_assign_are_audited_and_shown(clinic):
    store = clinic["store"]
    at = page("alerts", "ml_lead", user="lead-1")
    at.text_input(key="ack_note").input("on it")
    at = at.button(key="ack_submit").click().run()
    assert_clean(at)
    at.text_input(key="silence_reason").input("device roll-out known")
    at.selectbox(key="silence_for").select("4 hours")
    at = at.button(key="silence_submit").click().run()
    at.text_input(key="assign_to").input("dana")
    at = at.button(key="assign_submit").click().run()
    assert_clean(at)
    audit = store.query_audit()
    assert set(audit["action"]) >= {"acknowledge_alert", "silence_alert", "assign_alert"}
    assert set(audit.loc[audit["action"].str.endswith("_alert"), "actor"]) == {"lead-1"}
    shown = frame(at, 0).iloc[0]
    assert (shown["Acknowledged by"], shown["Assigned to"]) == ("lead-1", "dana")
    assert shown["Silenced until (UTC)"] is not None
    timeline = next(d.value for d in at.dataframe
                    if list(d.value.columns) == ["When (UTC)", "What", "Who", "Why"])
    assert {"Acknowledged an alert", "Assigned an alert to dana"} <= set(timeline["What"])
    assert any(w.startswith("Silenced an alert until") for w in timeline["What"])


def test_closing_an_alert_needs_the_ml_lead_role(clinic):
    store = clinic["store"]

    def close(role: str):
        at = page("alerts", role, user=f"{role}-1")
        at.text_area(key="resolve_alert_reason").input("false alarm: label backlog")
        at.checkbox(key="resolve_alert_confirm").check()
        return at.button(key="resolve_alert_submit").click().run()

    at = close("ml_lead")
    assert_clean(at)
    assert store.open_alerts() == []
    assert store.query_audit(action="resolve_alert")["actor"].tolist() == ["ml_lead-1"]
