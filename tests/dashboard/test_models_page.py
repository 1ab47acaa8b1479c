"""The Models page: versions side by side; route actions confirmed, reasoned, role-checked, audited."""

from __future__ import annotations

from tests.dashboard.clinic import assert_clean, clinic, frame, page  # noqa: F401 (fixture)


def act(at, key: str, *, reason: str = "recall red for two windows", confirm: bool = True):
    at.text_area(key=f"{key}_reason").input(reason)
    if confirm:
        at.checkbox(key=f"{key}_confirm").check()
    return at.button(key=f"{key}_submit").click().run()


def test_versions_are_compared_side_by_side(clinic):
    at = page("models", "viewer")
    assert_clean(at)
    table = frame(at)
    assert set(table["id"]) == {"v1", "v2", "rules"}
    roles = dict(zip(table["id"], table["role"], strict=True))
    assert roles["v2"] == "active" and roles["rules"] == "fallback"
    assert {"fingerprint", "parent", "created"} <= set(table.columns)


def test_ml_lead_engages_the_fallback_with_a_reason(clinic):
    store = clinic["store"]
    at = page("models", "ml_lead", user="lena")
    at = act(at, "engage_fallback")
    assert_clean(at)
    route = store.get_route()
    assert route.fallback_engaged and route.fallback_version == "rules"
    audit = store.query_audit(actor="lena")
    assert audit["action"].tolist() == ["set_route"]
    assert audit["reason"].iloc[0] == "recall red for two windows"
    assert audit["details"].iloc[0]["operation"] == "engage_fallback"
    assert any("done" in s.value for s in at.success)


def test_a_viewer_sees_no_model_action_but_why(clinic):
    store = clinic["store"]
    before, n_audit = store.get_route(), len(store.query_audit())
    at = page("models", "viewer", user="vic")
    assert not at.exception
    assert not [b.key for b in at.button if str(b.key).endswith("_submit")]  # no form at all
    assert any("need the ml_lead role" in i.value for i in at.info)
    assert store.get_route() == before
    assert len(store.query_audit()) == n_audit


def test_an_action_needs_confirmation_and_a_reason(clinic):
    store = clinic["store"]
    at = act(page("models", "ml_lead"), "engage_fallback", confirm=False)
    assert any("confirmation" in e.value for e in at.error)
    at = act(page("models", "ml_lead"), "engage_fallback", reason="   ")
    assert any("reason" in e.value for e in at.error)
    assert not store.get_route().fallback_engaged


def test_rollback_restores_the_previous_active_version_in_one_action(clinic):
    store = clinic["store"]
    n_routes = len(store.route_history())
    at = act(page("models", "ml_lead"), "rollback", reason="v2 misses melanomas")
    assert_clean(at)
    assert store.get_route().active_version == "v1"
    assert len(store.route_history()) == n_routes + 1
    assert store.query_audit(limit=1)["details"].iloc[0]["operation"] == "rollback"


def test_promote_a_candidate_and_switch_back_from_the_fallback(clinic):
    store = clinic["store"]
    at = page("models", "ml_lead")
    at.selectbox(key="activate_version").select("v1")
    at = act(at, "activate", reason="v1 is better on the new camera")
    assert_clean(at)
    assert store.get_route().active_version == "v1"
    at = act(at, "engage_fallback")
    at = act(at, "release_fallback", reason="fixed")
    assert_clean(at)
    assert not store.get_route().fallback_engaged
    assert store.query_audit(limit=1)["details"].iloc[0]["operation"] == "release_fallback"
