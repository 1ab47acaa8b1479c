"""The sensitivity/specificity trade-off and the threshold for a target sensitivity, on planted data."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion.operating_point import operating_point, threshold_for_target, tradeoff


def planted(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping scores: malignant ~ Beta(5, 2), benign ~ Beta(2, 5)."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.3
    score = np.where(truth, rng.beta(5, 2, n), rng.beta(2, 5, n))
    return truth, score


@pytest.mark.parametrize("target", [0.80, 0.90, 0.95, 1.0])
def test_threshold_for_target_is_the_largest_that_keeps_the_sensitivity(target):
    truth, score = planted()
    point = threshold_for_target(truth, score, target)
    assert point.sensitivity >= target
    # brute force over every score: no larger threshold keeps the target
    reaching = [t for t in np.unique(score) if (score[truth] >= t).mean() >= target]
    assert point.threshold == pytest.approx(max(reaching))
    assert point.specificity == pytest.approx((score[~truth] < point.threshold).mean())
    assert point.n_malignant == truth.sum() and point.n_benign == (~truth).sum()


def test_tradeoff_follows_the_thresholds_and_matches_single_points():
    truth, score = planted()
    curve = tradeoff(truth, score)
    assert curve["threshold"].is_monotonic_decreasing
    assert curve["sensitivity"].is_monotonic_increasing
    assert curve["specificity"].is_monotonic_decreasing
    assert curve["threshold"].between(0, 1).all()
    for row in curve.iloc[[0, len(curve) // 3, len(curve) // 2, -1]].itertuples():
        point = operating_point(truth, score, row.threshold)
        assert (point.sensitivity, point.specificity) == pytest.approx((row.sensitivity,
                                                                        row.specificity))


def test_higher_target_costs_specificity():
    truth, score = planted()
    low, high = (threshold_for_target(truth, score, t) for t in (0.8, 0.95))
    assert high.threshold < low.threshold and high.specificity < low.specificity


@pytest.mark.parametrize(("truth", "score", "match"), [
    (np.array([True, True]), np.array([0.2, 0.9]), "malignant and benign"),
    (np.array([1, 0]), np.array([0.2, 0.9]), "boolean"),
    (np.array([True, False]), np.array([0.2, 1.5]), r"\[0, 1\]"),
    (np.array([True, False]), np.array([0.2]), "same length"),
])
def test_bad_inputs_are_refused_naming_the_problem(truth, score, match):
    with pytest.raises(ValueError, match=match):
        tradeoff(truth, score)
