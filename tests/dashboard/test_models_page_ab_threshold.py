"""The Models page's A/B, shadow and threshold controls: confirmed, reasoned, role-checked, audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.dashboard.clinic import assert_clean, clinic, page  # noqa: F401 (fixture)
from tests.dashboard.test_models_page import act
from tests.monitoring.traffic import traffic


def comparison(at):
    return next(f.value for f in at.dataframe if "measure" in f.value.columns)


def test_lead_starts_a_challenger_and_sees_it_beside_the_active(clinic):
    store = clinic["store"]
    at = page("models", "ml_lead", user="lena")
    assert any("No challenger or shadow" in i.value for i in at.info)
    at.selectbox(key="start_challenger_version").select("v1")
    at.slider(key="start_challenger_share").set_value(0.2)
    at = act(at, "start_challenger", reason="canary of v1")
    assert_clean(at)
    route = store.get_route()
    assert (route.challenger_version, route.challenger_share) == ("v1", 0.2)
    audit = store.query_audit(actor="lena")
    assert audit["details"].iloc[0]["operation"] == "start_challenger"
    assert audit["reason"].iloc[0] == "canary of v1"
    table = comparison(at).set_index("measure")
    assert {"v2", "v1", "v2 status", "v1 status"} <= set(table.columns)
    assert table.loc["answers", "v2"] == 2 and table.loc["answers", "v1"] == 0

    at = act(at, "stop_challenger", reason="enough")
    assert_clean(at)
    assert store.get_route().challenger_version is None


def test_lead_runs_and_stops_a_shadow(clinic):
    store = clinic["store"]
    at = page("models", "ml_lead")
    at.selectbox(key="start_shadow_version").select("v1")
    at = act(at, "start_shadow", reason="watch v1 on live traffic")
    assert_clean(at)
    assert store.get_route().shadow_version == "v1"
    assert any("Shadow **v1**" in m.value for m in at.markdown)
    at = act(at, "stop_shadow", reason="done")
    assert_clean(at)
    assert store.get_route().shadow_version is None


def test_viewer_cannot_start_a_challenger(clinic):
    store = clinic["store"]
    before, n_audit = store.get_route(), len(store.query_audit())
    at = page("models", "viewer")
    assert "start_challenger_submit" not in [b.key for b in at.button]  # not offered
    assert store.get_route() == before and len(store.query_audit()) == n_audit


@pytest.fixture
def labelled_v2(clinic):
    predictions, labels = traffic(datetime.now(UTC) - timedelta(days=3), n=100, seed=4,
                                  agreement=0.85, model_version="v2")
    clinic["store"].log_predictions(predictions)
    clinic["store"].add_labels(labels)
    return clinic


def test_lead_applies_the_proposed_threshold_then_reverts_it(labelled_v2):
    store = labelled_v2["store"]
    at = page("models", "ml_lead", user="lena")
    assert_clean(at)
    at.number_input(key="threshold_target").set_value(0.95)
    at = at.run()
    assert any("labelled answers of v2" in c.value for c in at.caption)
    at = act(at, "apply_threshold", reason="recall below target")
    assert_clean(at)
    rows = store.labelled_predictions(model_version="v2")
    truth = rows["diagnosis"].isin(["MEL", "BCC", "SCC", "AK"]).to_numpy()
    score = rows["p_malignant"].to_numpy()
    tuned = store.get_route().threshold_for("v2")
    assert (score[truth] >= tuned).mean() >= 0.95 > (score[truth] > tuned).mean()
    details = store.query_audit(actor="lena")["details"].iloc[0]
    assert details["operation"] == "set_threshold" and details["target_sensitivity"] == 0.95
    assert any("(tuned)" in m.label for m in at.metric)

    at = act(at, "revert_threshold", reason="too many referrals")
    assert_clean(at)
    assert store.get_route().threshold_overrides == {}


def test_without_labels_the_threshold_is_set_by_hand(clinic):
    store = clinic["store"]
    at = page("models", "ml_lead")
    assert any("label more cases" in i.value for i in at.info)
    at.number_input(key="set_threshold_value").set_value(0.35)
    at = act(at, "set_threshold", reason="clinic asked for more referrals")
    assert_clean(at)
    assert store.get_route().threshold_for("v2") == 0.35
    assert store.get_route().active_version == "v2"
