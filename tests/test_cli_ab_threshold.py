"""CLI: models challenger / shadow / threshold change the route, audited; refusals exit 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skinlesion.store import Store
from tests.monitoring.traffic import traffic
from tests.test_cli_serving import home, run  # noqa: F401 (fixture)


def test_challenger_and_shadow_on_and_off(home):
    assert run("models", "activate", "main-v1", "--reason", "deploy")[0] == 0
    code, out = run("models", "challenger", "rules-v1", "--share", "0.2", "--reason", "canary")
    assert code == 0, out
    route = Store(home.db_path).get_route()
    assert (route.challenger_version, route.challenger_share) == ("rules-v1", 0.2)
    code, out = run("models", "shadow", "rules-v1", "--reason", "both")
    assert code == 2 and "already the challenger" in out
    assert run("models", "challenger", "off", "--reason", "done")[0] == 0
    assert run("models", "shadow", "rules-v1", "--reason", "watch")[0] == 0
    assert Store(home.db_path).get_route().shadow_version == "rules-v1"
    assert run("models", "shadow", "off", "--reason", "done")[0] == 0
    ops = [d["operation"] for d in Store(home.db_path).query_audit()["details"]]
    assert ops[:4] == ["stop_shadow", "start_shadow", "stop_challenger", "start_challenger"]
    code, out = run("models", "challenger", "rules-v1", "--reason", "no share")
    assert code == 2 and "--share" in out


def test_threshold_for_a_target_sensitivity_then_revert(home):
    store = Store(home.db_path)
    predictions, labels = traffic(datetime.now(UTC) - timedelta(days=3), n=100, seed=3,
                                  agreement=0.85, model_version="main-v1")
    store.log_predictions(predictions)
    store.add_labels(labels)
    code, out = run("models", "threshold", "main-v1", "--sensitivity", "0.95", "--dry-run")
    assert code == 0, out
    assert "100 labelled answers" in out and "proposed for sensitivity ≥ 0.95" in out
    assert store.get_route().threshold_overrides == {}

    code, out = run("models", "threshold", "main-v1", "--sensitivity", "0.95", "--reason", "recall")
    assert code == 0, out
    tuned = store.get_route().threshold_for("main-v1")
    assert tuned is not None and tuned < 0.5
    assert store.query_audit(limit=1)["details"].iloc[0]["after"]["sensitivity"] >= 0.95

    assert run("models", "threshold", "main-v1", "--value", "0.4", "--reason", "manual")[0] == 0
    assert store.get_route().threshold_for("main-v1") == 0.4
    assert run("models", "threshold", "main-v1", "--revert", "--reason", "undo")[0] == 0
    assert store.get_route().threshold_for("main-v1") == tuned
    assert run("models", "threshold", "main-v1", "--card", "--reason", "as trained")[0] == 0
    assert store.get_route().threshold_overrides == {}


def test_threshold_needs_one_choice_and_a_reason(home):
    code, out = run("models", "threshold", "main-v1", "--value", "0.3")
    assert code == 2 and "--reason" in out
    code, out = run("models", "threshold", "main-v1", "--value", "0.3", "--revert", "--reason", "x")
    assert code == 2 and "one of" in out
    code, out = run("models", "threshold", "main-v1", "--sensitivity", "0.9", "--reason", "x")
    assert code == 2 and "label more cases" in out
