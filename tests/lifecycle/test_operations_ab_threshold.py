"""Operations for A/B, shadow and the operating threshold: role-checked, audited, reversible."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from PIL import Image

from skinlesion import registry
from skinlesion.errors import PermissionDeniedError
from skinlesion.lifecycle import operations
from skinlesion.lifecycle.operations import OperationError
from skinlesion.predict import Predictor
from skinlesion.schema import Metadata
from skinlesion.store import ServingRoute
from tests.monitoring.traffic import traffic
from tests.standins import STANDIN_KIND, STANDIN_PATH
from tests.lifecycle.test_operations import LEAD, models_dir, store  # noqa: F401 (fixtures)

NOW = datetime.now(UTC)


def last_audit(store):
    return store.query_audit(limit=1).iloc[0]


def test_challenger_and_shadow_are_set_changed_and_stopped_with_audit(store, models_dir):
    operations.start_challenger(store, models_dir, "v2", 0.1, reason="canary", **LEAD)
    route = store.get_route()
    assert (route.challenger_version, route.challenger_share) == ("v2", 0.1)
    assert last_audit(store)["details"]["operation"] == "start_challenger"
    operations.start_challenger(store, models_dir, "v2", 0.3, reason="widen", **LEAD)
    assert store.get_route().challenger_share == 0.3
    details = last_audit(store)["details"]
    assert (details["operation"], details["share"]) == ("set_challenger_share", 0.3)

    operations.start_shadow(store, models_dir, "v3", reason="watch v3", **LEAD)
    assert store.get_route().shadow_version == "v3"
    assert last_audit(store)["reason"] == "watch v3"
    assert operations.route_roles(store.get_route())["v3"] == ["shadow"]

    operations.stop_challenger(store, reason="enough data", **LEAD)
    operations.stop_shadow(store, reason="done", **LEAD)
    route = store.get_route()
    assert route.challenger_version is None and route.challenger_share == 0
    assert route.shadow_version is None and route.active_version == "v1"
    ops = [d["operation"] for d in store.query_audit(actor="ana")["details"]]
    assert ops == ["stop_shadow", "stop_challenger", "start_shadow", "set_challenger_share",
                   "start_challenger"]


@pytest.mark.parametrize(("call", "match"), [
    (lambda s, m: operations.start_challenger(s, m, "v1", 0.1, reason="x", **LEAD), "active version"),
    (lambda s, m: operations.start_challenger(s, m, "v2", 1.0, reason="x", **LEAD), "activate it"),
    (lambda s, m: operations.start_challenger(s, m, "v2", 0.0, reason="x", **LEAD), "between 0 and 1"),
    (lambda s, m: operations.stop_challenger(s, reason="x", **LEAD), "no challenger"),
    (lambda s, m: operations.stop_shadow(s, reason="x", **LEAD), "no shadow"),
    (lambda s, m: operations.start_shadow(s, m, "v2", reason=" ", **LEAD), "reason"),
])
def test_impossible_changes_are_refused_clearly(store, models_dir, call, match):
    n_routes = len(store.route_history())
    with pytest.raises(OperationError, match=match):
        call(store, models_dir)
    assert len(store.route_history()) == n_routes


def test_a_version_cannot_be_challenger_and_shadow_at_once(store, models_dir):
    operations.start_shadow(store, models_dir, "v2", reason="watch", **LEAD)
    with pytest.raises(OperationError, match="already the shadow"):
        operations.start_challenger(store, models_dir, "v2", 0.2, reason="x", **LEAD)


# --- threshold tuning -----------------------------------------------------------------------------


@pytest.fixture
def labelled(store):
    """120 labelled answers of v1 with overlapping scores (15% of labels contradict the call)."""
    predictions, labels = traffic(NOW - timedelta(days=2), n=120, seed=5, agreement=0.85,
                                  model_version="v1")
    store.log_predictions(predictions)
    store.add_labels(labels)
    return store


def brute_force(store, target):
    rows = store.labelled_predictions(model_version="v1")
    truth = rows["diagnosis"].isin(["MEL", "BCC", "SCC", "AK"]).to_numpy()
    score = rows["p_malignant"].to_numpy()
    return max(t for t in np.unique(score) if (score[truth] >= t).mean() >= target), truth, score


def test_study_proposes_the_threshold_that_hits_the_target(labelled, models_dir):
    study = operations.threshold_study(labelled, models_dir, "v1", NOW - timedelta(days=7), NOW,
                                       target_sensitivity=0.95)
    expected, truth, score = brute_force(labelled, 0.95)
    assert study.n == 120 and not study.tuned and study.card_threshold == 0.5
    assert study.proposed.threshold == pytest.approx(expected)
    assert study.proposed.sensitivity >= 0.95
    assert study.current.threshold == 0.5
    assert study.current.sensitivity == pytest.approx((score[truth] >= 0.5).mean())
    assert study.proposed.threshold < 0.5 and study.proposed.specificity < study.current.specificity
    assert len(study.curve) > 10


def test_threshold_override_changes_decisions_is_audited_and_reverts(labelled, models_dir,
                                                                    monkeypatch):
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    study = operations.threshold_study(labelled, models_dir, "v1", target_sensitivity=0.95)
    new = study.proposed.threshold
    entry = operations.set_threshold(labelled, models_dir, "v1", new, reason="sensitivity 0.95",
                                     evidence=study.evidence(), **LEAD)
    assert labelled.get_route().threshold_for("v1") == new
    details = last_audit(labelled)["details"]
    assert last_audit(labelled)["id"] == entry.id
    assert details["operation"] == "set_threshold" and details["previous_threshold"] is None
    assert details["threshold"] == new and details["target_sensitivity"] == 0.95
    assert details["after"]["sensitivity"] >= 0.95

    # the Predictor decides at the override: a case between the two thresholds is now referred
    predictor = Predictor.from_registry("v1", models_dir)
    p_between = (new + 0.5) / 2
    grey = round(255 * (1 - p_between))  # the stand-in answers p_malignant = darkness
    image = Image.new("RGB", (32, 32), (grey, grey, grey))
    meta = Metadata.from_raw(None, None, None)
    assert predictor.predict(image, meta).decision == "no referral"
    tuned = predictor.predict(image, meta, threshold=labelled.get_route().threshold_for("v1"))
    assert tuned.decision == "refer" and tuned.threshold == new
    assert operations.threshold_study(labelled, models_dir, "v1").tuned

    operations.set_threshold(labelled, models_dir, "v1", 0.3, reason="try 0.3", **LEAD)
    history = operations.threshold_history(labelled, "v1")
    assert history["threshold"].tolist() == [0.3, new]
    operations.revert_threshold(labelled, models_dir, "v1", reason="0.3 misses too many", **LEAD)
    assert labelled.get_route().threshold_for("v1") == new
    assert last_audit(labelled)["details"]["operation"] == "revert_threshold"
    operations.set_threshold(labelled, models_dir, "v1", None, reason="back to the card", **LEAD)
    assert labelled.get_route().threshold_overrides == {}
    assert operations.threshold_history(labelled, "v1")["threshold"].tolist() == [None, new, 0.3, new]


def test_revert_of_the_first_tuning_restores_the_card_threshold(store, models_dir):
    with pytest.raises(OperationError, match="never tuned"):
        operations.revert_threshold(store, models_dir, "v2", reason="x", **LEAD)
    operations.set_threshold(store, models_dir, "v2", 0.4, reason="tune", **LEAD)
    operations.revert_threshold(store, models_dir, "v2", reason="undo", **LEAD)
    assert store.get_route().threshold_for("v2") is None
    assert store.get_route().active_version == "v1"  # nothing else in the route moved


def test_too_few_labels_are_refused_naming_the_fix(store, models_dir):
    with pytest.raises(OperationError, match="0 labelled answers.*label more cases"):
        operations.threshold_study(store, models_dir, "v1", target_sensitivity=0.9)


@pytest.mark.parametrize("role", ["viewer", "clinician"])
def test_non_leads_are_refused_and_nothing_changes(store, models_dir, role):
    store.set_route(ServingRoute(active_version="v1", threshold_overrides={"v1": 0.4}),
                    actor="setup", role="ml_lead", reason="tuned")
    before, n_audit = store.get_route(), len(store.query_audit())
    who = {"actor": "eve", "role": role, "reason": "try"}
    for call in (lambda: operations.set_threshold(store, models_dir, "v1", 0.2, **who),
                 lambda: operations.revert_threshold(store, models_dir, "v1", **who),
                 lambda: operations.start_challenger(store, models_dir, "v2", 0.1, **who),
                 lambda: operations.start_shadow(store, models_dir, "v2", **who)):
        with pytest.raises(PermissionDeniedError, match="ml_lead"):
            call()
    assert store.get_route() == before and len(store.query_audit()) == n_audit
