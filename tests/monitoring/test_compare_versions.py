"""Versions side by side (A/B, shadow): each version's own answers, measured and judged apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from skinlesion.monitoring.cockpit import compare_versions, comparison_versions
from skinlesion.monitoring.policy import load_policy
from skinlesion.store import ServingRoute, Store
from tests.monitoring.traffic import traffic

NOW = datetime.now(UTC).replace(microsecond=0)


def test_comparison_versions_follow_the_route():
    assert comparison_versions(ServingRoute(active_version="a")) == ["a"]
    route = ServingRoute(active_version="a", challenger_version="b", challenger_share=0.2,
                         shadow_version="c")
    assert comparison_versions(route) == ["a", "b", "c"]


def test_a_worse_shadow_shows_worse_beside_the_active(tmp_path):
    store = Store(tmp_path / "db.duckdb")
    start = NOW - timedelta(hours=24)
    good, good_labels = traffic(start, n=120, seed=1, model_version="main")
    bad, bad_labels = traffic(start, n=80, seed=2, agreement=0.55, model_version="cand")
    store.log_predictions([*good, *(p.model_copy(update={"model_role": "shadow", "returned": False})
                                    for p in bad)])
    store.add_labels([*good_labels, *bad_labels])

    table = compare_versions(store, tmp_path / "models", load_policy(tmp_path / "none.toml"),
                             start, NOW, ["main", "cand"]).set_index("measure")
    assert list(table.columns) == ["main", "main status", "cand", "cand status"]
    assert table.loc["answers", "main"] == 120 and table.loc["answers", "cand"] == 80
    assert table.loc["label coverage", "cand"] == pytest.approx(1.0)
    assert table.loc["Recall (sensitivity)", "main"] == pytest.approx(1.0)
    assert table.loc["Recall (sensitivity)", "cand"] < 0.8
    assert table.loc["AUROC", "main status"] == "green" and table.loc["AUROC", "cand status"] == "red"
    # estimated from the scores alone, which look alike: the labels tell the versions apart
    estimated = table.loc["Recall (estimated)", ["main", "cand"]].astype(float)
    assert estimated.between(0.5, 1.0).all() and abs(estimated["main"] - estimated["cand"]) < 0.1
    assert table.loc["Latency p95 (ms)", "main"] > 0
