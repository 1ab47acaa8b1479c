"""skinlesion.monitoring.cockpit: what the dashboard's monitoring pages show, without streamlit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from skinlesion import registry
from skinlesion.monitoring import cockpit
from skinlesion.monitoring.cockpit import active_model, chart_range, is_demo, is_synthetic, threshold_bands
from skinlesion.monitoring.policy import Policy
from skinlesion.store import ServingRoute, Store
from skinlesion.thresholds import DEFAULT_THRESHOLDS
from tests.monitoring.traffic import reference_frame, traffic
from tests.standins import save_standin

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_bands_of_a_higher_is_better_metric_cover_the_range_in_order():
    bands = threshold_bands(DEFAULT_THRESHOLDS["recall"], 0.6, 1.0)  # green >= 0.85, red < 0.75
    assert bands.to_dict("records") == [{"status": "red", "y0": 0.6, "y1": 0.75},
                                        {"status": "yellow", "y0": 0.75, "y1": 0.85},
                                        {"status": "green", "y0": 0.85, "y1": 1.0}]


def test_bands_of_a_lower_is_better_metric_are_clipped_to_the_range():
    bands = threshold_bands(DEFAULT_THRESHOLDS["log_loss"], 0.0, 0.4)  # green <= 0.3, red > 0.5
    assert bands["status"].tolist() == ["green", "yellow"]
    assert bands["y1"].tolist() == [0.3, 0.4]


def test_chart_range_holds_the_values_and_both_bounds():
    low, high = chart_range(pd.Series([0.95, 0.97, None]), DEFAULT_THRESHOLDS["recall"], ratio=True)
    assert low < 0.75 and 0.97 < high <= 1.0
    assert chart_range(pd.Series([], dtype=float), None, ratio=True) == (0.0, 1.0)


@pytest.mark.parametrize(("name", "notes", "extra", "synthetic", "demo"), [
    ("synthetic demo data (simulated)", None, {}, True, True),
    ("ISIC 2019 training", "DEMO MODEL trained on Synthetic images", {}, True, True),
    ("ISIC 2019 training", None, {"synthetic": True}, True, True),
    # the demo built on real images: its fallback was fitted on them, only the traffic is simulated
    ("/data/isic2019 (traffic simulated)", "Rule-based fallback of the demo (ABCD rule).", {}, False,
     True),
    ("ISIC 2019 training", "validated on HAM10000", {}, False, False),
])
def test_a_card_trained_on_synthetic_data_is_recognised(name, notes, extra, synthetic, demo):
    manifest = registry.build_manifest(pd.DataFrame({"image": ["a"], "lesion_id": ["a"],
                                                     "diagnosis": ["MEL"]}),
                                       pd.Series(["train"]), pd.Series(["0" * 64]))
    card = registry.ModelCard(id="v", kind="x", created="2024-01-01", threshold=0.5, model={},
                              data=registry.data_info(manifest, name=name), notes=notes, **extra)
    assert is_synthetic(card) is synthetic
    assert is_demo(card) is demo


def test_active_model_follows_the_route_to_the_engaged_fallback(tmp_path: Path):
    models = tmp_path / "models"
    save_standin(models, "v1")
    save_standin(models, "rules")
    store = Store(tmp_path / "db.duckdb")
    missing = active_model(store, models)  # the default route names 'reference', absent here
    assert missing.card is None and "reference" in missing.problem
    store.set_route(ServingRoute(active_version="v1", fallback_version="rules"), actor="t", role="ml_lead",
                    reason="test")
    assert active_model(store, models).serving_version == "v1"
    store.set_route(ServingRoute(active_version="v1", fallback_version="rules", fallback_engaged=True),
                    actor="t", role="ml_lead", reason="test")
    active = active_model(store, models)
    assert active.serving_version == "rules" and active.card.id == "rules" and active.fallback_engaged
    assert not active.synthetic  # the stand-in's data is named "standin"


@pytest.fixture
def labelled_window(tmp_path: Path) -> tuple[Store, Path]:
    """A version ``reference`` with reference answers and one day of 60 answers, every other one
    labelled three days after it was answered."""
    save_standin(tmp_path / "models", "reference", reference=reference_frame())
    store = Store(tmp_path / "db.duckdb")
    predictions, labels = traffic(T0, n=60, seed=0, agreement=0.8)
    store.log_predictions(predictions)
    store.add_labels([lab.model_copy(update={"ts": lab.ts + timedelta(hours=71)})  # 1 h + 71 h
                      for lab in labels[::2]])
    return store, tmp_path / "models"


def test_label_based_tiles_show_label_coverage_and_lag(labelled_window):
    store, models = labelled_window
    health = cockpit.window_health(store, models, Policy(), T0, T0 + DAY, drift=False)
    by_metric = {t.metric: t for t in cockpit.tiles(health, Policy())}
    recall = by_metric["recall"]
    assert recall.coverage == 0.5 and recall.n == 30 and recall.lag_hours == pytest.approx(72.0)
    assert cockpit.lag_text(recall.lag_hours) == "3.0 d" and cockpit.lag_text(5.0) == "5.0 h"
    assert by_metric["latency_p95_ms"].lag_hours is None and by_metric["volume"].lag_hours is None


def test_drift_input_is_sampled_in_the_store_and_health_counts_the_whole_window(
        labelled_window, monkeypatch: pytest.MonkeyPatch):
    from skinlesion.monitoring.drift import compute_drift

    store, models = labelled_window
    whole = store.query_predictions(T0, T0 + DAY, returned=True, include_embedding=True)
    full = cockpit.window_health(store, models, Policy(), T0, T0 + DAY)
    # a window within the sample size: drift over every answer, as before
    assert full.drift.n_current_used == 60
    direct = compute_drift(reference_frame(), whole)
    assert [f.score for f in full.drift.features] == [f.score for f in direct.features]
    assert full.drift.enough_answers and "null: 99% quantile" in full.drift.null  # the version's null
    assert full.report.metrics["drift_score"].value == full.drift.share_drifted
    monkeypatch.setattr(cockpit, "DRIFT_SAMPLE_SIZE", 25)
    monkeypatch.setattr(Store, "query_predictions",
                        lambda *a, **k: pytest.fail("the whole window was loaded"))
    sampled = cockpit.window_health(store, models, Policy(), T0, T0 + DAY)
    assert sampled.drift.n_current == sampled.drift.n_current_used == 25
    assert sampled.report.n_predictions == 60 and sampled.report.n_labelled == 30
    assert sampled.report.metrics["recall"].value == full.report.metrics["recall"].value
