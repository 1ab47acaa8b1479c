"""Health windows on a tmp store with planted signals: good vs degraded days, scarce labels,
estimated vs realised performance, latency percentiles, volume spikes and dips."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion import metrics
from skinlesion.errors import DataError
from skinlesion.model.ood import GATE_STATS, OODGate, fit_ood_gate
from skinlesion.monitoring.estimate import estimate_band, estimate_performance
from skinlesion.monitoring.health import (
    HealthReport,
    band_status,
    compute_health,
    compute_window_health,
    flag_volume,
    window_bounds,
)
from skinlesion.monitoring.label_shift import MalignantShare
from skinlesion.monitoring.ood_share import EstimateChecks, estimate_checks, ood_status
from skinlesion.monitoring.policy import Policy, VolumePolicy
from skinlesion.schema import CLASSES
from skinlesion.store import PredictionRecord, Store
from skinlesion.thresholds import Status
from tests.monitoring.calibrated import calibrated_traffic

DAY0 = datetime(2024, 5, 1, tzinfo=UTC)
DAY1, DAY2 = DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)
POLICY = Policy()


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[PredictionRecord], list[PredictionRecord]]:
    """Day 0: a good calibrated model, every answer labelled. Day 1: 30% of labels flipped to the
    other group (malignant <-> benign): the model's answers disagree with the truth."""
    store = Store(tmp_path_factory.mktemp("health") / "store.duckdb")
    good, good_labels = calibrated_traffic(DAY0, n=2000, seed=1)
    bad, bad_labels = calibrated_traffic(DAY1, n=2000, seed=2, flip=0.3)
    store.log_predictions(good + bad)
    store.add_labels(good_labels + bad_labels)
    return store, good, bad


@pytest.fixture(scope="module")
def good_report(two_days) -> HealthReport:
    return compute_health(two_days[0], DAY0, DAY1, policy=POLICY, resources=False)


@pytest.fixture(scope="module")
def bad_report(two_days) -> HealthReport:
    return compute_health(two_days[0], DAY1, DAY2, policy=POLICY)


def test_good_window_is_green(good_report: HealthReport):
    for name in ("accuracy", "recall", "auroc", "fnr", "log_loss", "latency_p95_ms"):
        assert good_report.metrics[name].status is Status.GREEN, name
    assert good_report.status is Status.GREEN
    assert good_report.playbook.status is Status.GREEN and good_report.hints.breaches == ()


def test_degraded_window_turns_recall_and_auroc_red(bad_report: HealthReport, good_report: HealthReport):
    assert bad_report.metrics["recall"].status is Status.RED
    assert bad_report.metrics["auroc"].status is Status.RED
    assert bad_report.status is Status.RED and bad_report.playbook.status is Status.RED
    assert any("fallback" in a for a in bad_report.playbook.actions)
    assert any(h.startswith("recall") and "red" in h for h in bad_report.playbook.hints)
    # the previous window of the same length is the good day
    assert bad_report.previous_start == DAY0
    assert bad_report.metrics["recall"].previous_value == pytest.approx(good_report.metrics["recall"].value)
    assert bad_report.metrics["recall"].change < -0.2
    # the malignant classes lost recall against the good day: named as slipped
    assert {"MEL", "BCC"} <= set(bad_report.hints.slipped_classes)
    assert all(change <= -POLICY.class_slip for change in bad_report.hints.slipped_classes.values())


def test_realised_metrics_equal_skinlesion_metrics(two_days, good_report: HealthReport):
    store = two_days[0]
    rows = store.labelled_scores(DAY0, DAY1)
    y = np.array([CLASSES.index(d) for d in rows["diagnosis"]])
    probs = rows[[f"p_{c}" for c in CLASSES]].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        expected = metrics.summary(y, probs, threshold=0.5)
    for name in ("accuracy", "precision", "recall", "f1", "fnr", "specificity", "auroc", "pauc_80",
                 "log_loss", "balanced_accuracy", "ece"):
        assert good_report.metrics[name].value == pytest.approx(expected[name]), name
        assert good_report.metrics[name].n == 2000


def test_estimates_track_realised_metrics_on_a_calibrated_window(good_report: HealthReport):
    for name in ("accuracy", "recall", "precision", "fnr"):
        m = good_report.metrics[name]
        assert abs(m.estimated - m.value) < 0.05, name
    assert abs(good_report.metrics["auroc"].estimated - good_report.metrics["auroc"].value) < 0.05


def test_estimates_diverge_when_labels_disagree_with_the_probabilities(bad_report: HealthReport):
    for name in ("accuracy", "recall"):
        m = bad_report.metrics[name]
        assert m.estimated - m.value > 0.2, name
        assert m.estimated_status is Status.GREEN and m.status is Status.RED


def test_sql_estimates_equal_the_numpy_estimate(two_days, good_report: HealthReport):
    good = two_days[1]
    direct = estimate_performance([r.p_malignant for r in good], 0.5)
    for name, value in direct.items():
        assert good_report.metrics[name].estimated == pytest.approx(value, abs=2e-3), name


def test_coverage_lag_decisions_and_latency(two_days, bad_report: HealthReport):
    bad = two_days[2]
    assert bad_report.n_predictions == 2000 and bad_report.n_labelled == 2000
    assert bad_report.label_coverage == 1.0
    assert bad_report.label_lag_hours == pytest.approx(6.0)
    assert bad_report.decisions == {d: sum(r.decision == d for r in bad)
                                    for d in ("refer", "no referral", "uncertain")}
    assert bad_report.uncertain_share == pytest.approx(bad_report.decisions["uncertain"] / 2000)
    latency = np.array([r.latency_ms for r in bad])
    expected = np.percentile(latency, [50, 95, 99])
    assert [bad_report.latency_ms[q] for q in ("p50", "p95", "p99")] == pytest.approx(expected.tolist())
    assert bad_report.metrics["latency_p95_ms"].value == pytest.approx(expected[1])
    assert bad_report.resources is not None and bad_report.resources.memory_total_mb > 0


def test_not_enough_labels_shows_a_note_and_keeps_the_estimate(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    answers, labels = calibrated_traffic(DAY0, n=200, seed=5, label_share=0.1)
    store.log_predictions(answers)
    store.add_labels(labels)
    report = compute_health(store, DAY0, DAY1, policy=POLICY, resources=False)
    accuracy = report.metrics["accuracy"]
    assert accuracy.value is None and accuracy.status is Status.UNKNOWN
    assert accuracy.note == "not enough labels (20 of 30)" and accuracy.n == 20
    assert accuracy.estimated is not None and accuracy.estimated_status is Status.GREEN
    assert report.label_coverage == pytest.approx(0.1)
    relaxed = compute_health(store, DAY0, DAY1, policy=Policy(min_labels=20), resources=False)
    assert relaxed.metrics["accuracy"].value is not None


def test_without_labels_the_estimate_sets_the_status(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    answers, _ = calibrated_traffic(DAY0, n=400, seed=6, sharpness=1.0, label_share=0.0)  # a vague model
    store.log_predictions(answers)
    report = compute_health(store, DAY0, DAY1, policy=POLICY, resources=False)
    recall = report.metrics["recall"]
    assert recall.status is Status.UNKNOWN and recall.estimated_status is Status.RED
    assert report.status is Status.RED
    assert any(h.startswith("estimated recall") for h in report.hints.breaches)


def test_empty_window_is_unknown_and_a_reversed_window_is_an_error(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    report = compute_health(store, DAY0, DAY1, policy=POLICY, resources=False)
    assert report.n_predictions == 0 and report.status is Status.UNKNOWN
    assert report.latency_ms["p95"] is None and report.label_coverage is None
    assert report.playbook.status is Status.UNKNOWN
    with pytest.raises(DataError, match="start"):
        compute_health(store, DAY1, DAY0, policy=POLICY)


def test_shadow_answers_do_not_count_unless_their_version_is_asked_for(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    active, _ = calibrated_traffic(DAY0, n=60, seed=7, model_version="v1")
    shadow, _ = calibrated_traffic(DAY0, n=40, seed=8, model_version="v2")
    store.log_predictions(active + [r.model_copy(update={"model_role": "shadow", "returned": False})
                                    for r in shadow])
    assert compute_health(store, DAY0, DAY1, policy=POLICY, resources=False).n_predictions == 60
    assert compute_health(store, DAY0, DAY1, policy=POLICY, model_version="v2",
                          resources=False).n_predictions == 40


def test_drift_joins_the_status_and_the_hints(good_report: HealthReport):
    drifted = good_report.with_drift(0.3, ["brightness", "age_approx"], policy=POLICY)
    assert drifted.metrics["drift_score"].status is Status.RED and drifted.status is Status.RED
    assert drifted.playbook.status is Status.RED
    assert "Drifted features: brightness, age_approx." in drifted.playbook.hints
    calm = good_report.with_drift(0.05, [], policy=POLICY)
    assert calm.status is Status.GREEN


def test_estimates_carry_a_band_and_are_unreliable_while_drift_is_off_green_or_ood_is_red(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    answers, _ = calibrated_traffic(DAY0, n=400, seed=6, sharpness=1.0, label_share=0.0)  # a vague model
    store.log_predictions(answers)
    report = compute_health(store, DAY0, DAY1, policy=POLICY, resources=False)
    current = store.query_predictions(DAY0, DAY1)
    checks = estimate_checks(current, None, None, POLICY.malignant)
    assert checks.ood_share is None and "no OOD gate" in checks.ood_note and checks.malignant_share is None
    bands = checks.bands
    checked = report.with_drift(0.05, [], policy=POLICY).with_estimate_checks(
        EstimateChecks(bands, 0.01), policy=POLICY)
    recall = checked.metrics["recall"]
    assert recall.estimated_low < recall.estimated < recall.estimated_high and not recall.estimate_unreliable
    assert recall.estimated_status is band_status(POLICY, "recall", recall.estimated_low,
                                                  recall.estimated_high, Status.RED)
    assert band_status(POLICY, "recall", 0.5, 0.7, Status.RED) is Status.RED  # wholly red
    assert band_status(POLICY, "recall", 0.7, 0.9, Status.RED) is Status.GREEN  # reaches green
    assert band_status(POLICY, "recall", None, None, Status.YELLOW) is Status.YELLOW
    assert checked.metrics["ood_share"].status is Status.GREEN
    for drift, ood_share, why in ((0.3, 0.01, "drift red"), (0.15, 0.01, "drift yellow"),
                                  (0.05, 0.2, "out-of-distribution share red")):
        flagged = report.with_drift(drift, [], policy=POLICY).with_estimate_checks(
            EstimateChecks(bands, ood_share), policy=POLICY)
        recall = flagged.metrics["recall"]
        assert recall.estimate_unreliable and recall.estimated_status is Status.UNKNOWN
        assert f"estimate unreliable: {why}" in recall.note and recall.estimated_low is not None
        assert not any(h.startswith("estimated") for h in flagged.hints.breaches)  # no colour from it
    moved = MalignantShare(estimate=0.4, reference=0.2, change_low=0.13, change_high=0.27, n=400)
    flagged = report.with_drift(0.05, [], policy=POLICY).with_estimate_checks(
        EstimateChecks(bands, 0.01, malignant_share=moved), policy=POLICY)
    assert flagged.metrics["precision"].estimate_unreliable
    assert ("estimate unreliable: malignant share estimated 40% against 20% in the reference "
            "(change +13 to +27 points)" in flagged.metrics["precision"].note)
    steady = replace(moved, estimate=0.21, change_low=-0.05, change_high=0.07)
    assert not report.with_drift(0.05, [], policy=POLICY).with_estimate_checks(
        EstimateChecks(bands, 0.01, malignant_share=steady), policy=POLICY).metrics["precision"].estimate_unreliable


def test_an_estimate_whose_band_cannot_be_drawn_gives_no_colour(tmp_path: Path):
    """A quiet day's handful of answers, all unlikely malignant: the false-negative rate is
    undefined in most draws, so its band is (nan, nan) and its estimate colours nothing, while an
    estimate with a band keeps its band's colour."""
    band = estimate_band([0.01, 0.02, 0.03, 0.01, 0.05, 0.02, 0.01, 0.04], 0.3)
    assert all(math.isnan(v) for v in band["fnr"]) and not math.isnan(band["accuracy"][0])
    store = Store(tmp_path / "s.duckdb")
    answers, _ = calibrated_traffic(DAY0, n=8, seed=6, sharpness=1.0, label_share=0.0)
    store.log_predictions(answers)
    report = compute_health(store, DAY0, DAY1, policy=POLICY, resources=False)
    assert report.metrics["fnr"].estimated_status is not Status.UNKNOWN  # coloured before the checks
    checked = report.with_estimate_checks(EstimateChecks({"fnr": band["fnr"], "accuracy": (0.0, 0.1)}),
                                          policy=POLICY).metrics
    assert checked["fnr"].estimated_status is Status.UNKNOWN
    assert "estimate without a band (too few cases)" in checked["fnr"].note
    assert checked["accuracy"].estimated_status is Status.RED  # a band wholly red keeps its colour


def test_an_ood_share_of_too_few_answers_is_shown_but_not_judged(tmp_path: Path):
    """3 flagged of 46 answers (6.5 %) is red by the share alone, and happens by chance on healthy
    days; below the minimum window the share is kept, its status unknown, and no estimate loses
    its colour for it."""
    store = Store(tmp_path / "s.duckdb")
    answers, _ = calibrated_traffic(DAY0, n=46, seed=6, sharpness=1.0, label_share=0.0)
    store.log_predictions(answers)
    report = compute_health(store, DAY0, DAY1, policy=POLICY, resources=False).with_drift(0.05, [], policy=POLICY)
    small = report.with_estimate_checks(EstimateChecks(None, 3 / 46), policy=POLICY).metrics
    assert small["ood_share"].value == 3 / 46 and small["ood_share"].status is Status.UNKNOWN
    assert "not enough answers (46 of 50)" in small["ood_share"].note
    assert not any(m.estimate_unreliable for m in small.values())
    assert ood_status(3 / 46, 50) is Status.RED and ood_status(0.02, 50) is Status.GREEN


def _gate_inputs(n: int, seed: int) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Embeddings (n, 6), image statistics and texture statistics (n, 10) of one population."""
    rng = np.random.default_rng(seed)
    stats = pd.DataFrame({name: rng.normal(0.5, 0.05, n) for name in GATE_STATS})
    stats["sharpness"] = rng.lognormal(-4, 0.3, n)
    return rng.normal(3.0, 1.0, (n, 6)), stats, rng.normal(1.0, 0.2, (n, 10))


@pytest.fixture(scope="module")
def texture_gate() -> OODGate:
    train, validation = _gate_inputs(600, seed=1), _gate_inputs(400, seed=2)
    return fit_ood_gate(train[0], train[1], validation[0], validation[1], share=0.01,
                        train_texture=train[2], validation_texture=validation[2])


def test_texture_distances_beyond_the_gates_bound_turn_the_ood_share_red(texture_gate: OODGate):
    """The window's OOD share counts the texture distance each answer logged: 10% of answers
    planted far beyond the texture bound turn it red; answers without a distance, or a gate
    without a texture check, leave it to the other checks (green on this same-population window)."""
    embeddings, stats, texture = _gate_inputs(1000, seed=3)
    window = stats.assign(embedding=list(embeddings), p_malignant=0.2, threshold=0.3,
                          texture_distance=texture_gate.texture_distance(texture))
    checks = estimate_checks(window, None, texture_gate, POLICY.malignant)
    assert ood_status(checks.ood_share, 1000) is Status.GREEN
    assert "1,000 of them with a texture distance" in checks.ood_note
    planted = window.copy()
    planted.loc[planted.index[::10], "texture_distance"] = 10 * texture_gate.texture_bound
    share = estimate_checks(planted, None, texture_gate, POLICY.malignant).ood_share
    assert share >= 0.1 and ood_status(share, 1000) is Status.RED
    unmeasured = planted.assign(texture_distance=None)
    checks = estimate_checks(unmeasured, None, texture_gate, POLICY.malignant)
    assert ood_status(checks.ood_share, 1000) is Status.GREEN and "0 of them with a texture distance" in checks.ood_note
    checks = estimate_checks(planted, None, replace(texture_gate, texture=None), POLICY.malignant)
    assert ood_status(checks.ood_share, 1000) is Status.GREEN and "the gate has no texture check" in checks.ood_note


def test_report_round_trips_through_json(bad_report: HealthReport):
    assert HealthReport.model_validate_json(bad_report.model_dump_json()) == bad_report


def test_named_windows(two_days):
    end = DAY2
    assert window_bounds("7d", POLICY, end) == (end - timedelta(days=7), end)
    report = compute_window_health(two_days[0], "24h", policy=POLICY, end=end, resources=False)
    assert (report.window, report.start, report.end) == ("24h", DAY1, DAY2)
    with pytest.raises(KeyError, match="24h, 7d, 30d"):
        window_bounds("1y", POLICY)


# --- volume ----------------------------------------------------------------------------------------


def test_seasonal_baseline_flags_planted_spike_and_dip_but_not_normal_hours():
    rng = np.random.default_rng(0)
    hours = np.arange(8 * 24)
    busy = np.where((hours % 24 >= 8) & (hours % 24 < 18), 60, 12)  # clinic days vs nights
    counts = rng.poisson(busy)
    spike, dip, night = 7 * 24 + 14, 7 * 24 + 10, 7 * 24 + 2
    counts[spike], counts[dip] = 400, 3
    baseline, flags = flag_volume(counts, VolumePolicy())
    assert flags[spike] == "spike" and flags[dip] == "dip"
    assert flags[night] is None  # a quiet night is compared with past nights, not with days
    assert baseline[night] == pytest.approx(np.median(counts[night - 24 * np.arange(1, 8)]))
    assert [i for i, f in enumerate(flags) if f] == [dip, spike]
    assert all(f is None for f in flags[: 3 * 24])  # under 3 past days: not judged


def test_planted_volume_spike_is_flagged_in_the_report(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    volume = VolumePolicy(period_hours=1, baseline_periods=6, min_baseline_periods=3)
    per_hour = [12, 13, 12, 11, 12, 14, 12, 13, 12, 60, 12, 2]  # spike at hour 9, dip at hour 11
    store.log_predictions([answer for h, n in enumerate(per_hour) for answer in calibrated_traffic(
        DAY0 + timedelta(hours=h), n=n, seed=100 + h, span=timedelta(hours=1), label_share=0.0)[0]])
    policy = Policy(volume=volume)
    report = compute_health(store, DAY0 + timedelta(hours=6), DAY0 + timedelta(hours=12, minutes=30),
                            policy=policy, resources=False)
    flagged = {h.hour.hour: h.anomaly for h in report.volume_anomalies}
    assert flagged == {9: "spike", 11: "dip"}
    assert [h.n for h in report.volume][:6] == per_hour[6:]
    assert report.volume[-1].complete is False  # the cut last hour is shown but never judged
    assert any("spike at 2024-05-01 09:00 UTC: 60 predictions" in a for a in report.hints.volume_anomalies)
    assert report.status is Status.GREEN  # volume anomalies are hints, not a model fault
