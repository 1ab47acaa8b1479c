"""CBPE: the expected confusion matrix and the expected ROC, against hand sums and sklearn; the band
around the estimate covers the realised value on a calibrated simulation, not on a miscalibrated one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics

from skinlesion.monitoring.estimate import (
    ASSUMPTIONS,
    ESTIMATED_METRICS,
    confusion_rates,
    estimate_band,
    estimate_performance,
    expected_roc,
    score_stats,
)


def _realised(y: np.ndarray, p: np.ndarray, t: float) -> dict[str, float]:
    called = p >= t
    return {"accuracy": float(np.mean(called == y)), "recall": float(called[y].mean()),
            "precision": float(y[called].mean()), "auroc": sklearn.metrics.roc_auc_score(y, p),
            "log_loss": sklearn.metrics.log_loss(y, p)}


def test_expected_confusion_is_the_sum_of_probabilities_on_each_side():
    stats = score_stats([0.9, 0.6, 0.2], 0.5)
    assert (stats.tp, stats.fp, stats.fn, stats.tn) == pytest.approx((1.5, 0.5, 0.2, 0.8))
    est = estimate_performance([0.9, 0.6, 0.2], 0.5)
    assert est["accuracy"] == pytest.approx(2.3 / 3)
    assert est["recall"] == pytest.approx(1.5 / 1.7)
    assert est["fnr"] == pytest.approx(0.2 / 1.7)
    assert est["precision"] == pytest.approx(0.75)
    assert est["f1"] == pytest.approx(3.0 / (3.0 + 0.5 + 0.2))


def test_each_case_is_called_at_its_own_threshold():
    stats = score_stats([0.6, 0.6], [0.5, 0.7])
    assert (stats.tp, stats.fp, stats.fn, stats.tn) == pytest.approx((0.6, 0.4, 0.6, 0.4))


def test_estimated_auroc_is_the_auc_of_the_probability_weighted_roc():
    rng = np.random.default_rng(0)
    p = np.round(rng.beta(0.6, 1.4, 3000), 3)  # rounded: many ties
    est = estimate_performance(p, 0.5)["auroc"]
    oracle = sklearn.metrics.roc_auc_score(np.r_[np.ones(p.size), np.zeros(p.size)], np.r_[p, p],
                                           sample_weight=np.r_[p, 1 - p])
    assert est == pytest.approx(oracle, abs=1e-9)
    fpr, tpr = expected_roc(p, p, 1 - p)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == pytest.approx((0, 0, 1, 1))
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_estimates_track_realised_metrics_on_calibrated_scores():
    rng = np.random.default_rng(1)
    p = rng.beta(0.5, 1.2, 5000)
    y = rng.random(p.size) < p  # labels drawn from the probabilities: calibrated
    est, real = estimate_performance(p, 0.4), _realised(y, p, 0.4)
    for name in real:
        assert abs(est[name] - real[name]) < 0.03, name


def test_estimates_diverge_when_calibration_breaks():
    rng = np.random.default_rng(2)
    p = rng.beta(0.5, 1.2, 5000)
    y = rng.random(p.size) < p ** 3  # overconfident model: far fewer malignant than it says
    est, real = estimate_performance(p, 0.4), _realised(y, p, 0.4)
    assert est["precision"] - real["precision"] > 0.2  # expects more cancers among calls than there are
    assert real["recall"] - est["recall"] > 0.2  # and more cancers among the benign calls


def test_separable_scores_estimate_perfect_ranking():
    est = estimate_performance([0.0, 0.0, 1.0, 1.0], 0.5)
    assert est["auroc"] == 1.0 and est["pauc_80"] == pytest.approx(1.0)
    assert est["accuracy"] == 1.0 and est["log_loss"] < 1e-9


def test_undefined_estimates_are_nan():
    empty = estimate_performance([], 0.5)
    assert set(empty) == set(ESTIMATED_METRICS) and all(math.isnan(v) for v in empty.values())
    benign = estimate_performance([0.0, 0.0], 0.5)  # no expected malignant case
    assert math.isnan(benign["recall"]) and math.isnan(benign["auroc"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        score_stats([1.2], 0.5)


def test_assumptions_are_stated():
    assert "calibrated" in ASSUMPTIONS and "concept shift" in ASSUMPTIONS


def _window_metrics(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    called = p >= threshold
    tp, fp = float((y & called).sum()), float((~y & called).sum())
    fn, tn = float((y & ~called).sum()), float((~y & ~called).sum())
    return confusion_rates(tp, fp, tn, fn) | {"auroc": sklearn.metrics.roc_auc_score(y, p)}


def test_the_band_covers_the_realised_value_on_a_calibrated_simulation() -> None:
    """4 versions (each its own 1,000 labelled reference answers) x 10 windows of 300 cases."""
    rng = np.random.default_rng(0)
    metrics = ("accuracy", "precision", "recall", "specificity", "auroc")
    covered = dict.fromkeys(metrics, 0)
    for version in range(4):
        ref_p = rng.beta(0.6, 2.0, 1000)
        ref_y = rng.random(1000) < ref_p
        for window in range(10):
            p = rng.beta(0.6, 2.0, 300)
            y = rng.random(300) < p
            band = estimate_band(p, 0.3, reference_p=ref_p, reference_malignant=ref_y,
                                 seed=10 * version + window, replicates=100)
            realised = _window_metrics(p, y, 0.3)
            for name in metrics:
                low, high = band[name]
                covered[name] += low <= realised[name] <= high
    assert min(covered.values()) >= 36  # a 95% band: at least 90% of 40 windows (the target)


def test_a_miscalibrated_window_falls_outside_the_band() -> None:
    """Labels drawn from much lower probabilities than the model says: precision far below its band."""
    rng = np.random.default_rng(1)
    p = rng.beta(0.6, 2.0, 300)
    y = rng.random(300) < p / 3
    band = estimate_band(p, 0.3, seed=0)
    assert _window_metrics(p, y, 0.3)["precision"] < band["precision"][0]
    assert estimate_band(np.array([]), 0.3)["auroc"] == (pytest.approx(np.nan, nan_ok=True),) * 2
    with pytest.raises(ValueError, match="level"):
        estimate_band(p, 0.3, level=1.5)
