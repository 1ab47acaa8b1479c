"""Temperature scaling recovers a planted temperature; the threshold reaches its sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from skinlesion import metrics
from skinlesion.calibration import apply_temperature, fit_temperature, threshold_for_sensitivity


def planted(t_true: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from ``softmax(logits / t_true)``: the right temperature is t_true."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 8))
    probs = scipy.special.softmax(logits / t_true, axis=1)
    y = (probs.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return logits, y


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_planted_temperature(t_true: float) -> None:
    logits, y = planted(t_true)
    assert fit_temperature(logits, y) == pytest.approx(t_true, rel=0.1)


def test_temperature_improves_nll_and_keeps_the_ranking() -> None:
    logits, y = planted(2.0, seed=1)
    t = fit_temperature(logits, y)
    raw, calibrated = apply_temperature(logits, 1.0), apply_temperature(logits, t)
    assert metrics.log_loss_multiclass(y, calibrated) < metrics.log_loss_multiclass(y, raw)
    assert metrics.expected_calibration_error(y, calibrated, kind="top_label") < \
        metrics.expected_calibration_error(y, raw, kind="top_label")
    assert (calibrated.argmax(1) == raw.argmax(1)).all()


def test_apply_temperature_is_stable_and_validated() -> None:
    probs = apply_temperature(np.array([[1000.0, 0.0], [-1000.0, -1000.0]]), 1.0)
    assert np.allclose(probs, [[1.0, 0.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(np.zeros((1, 8)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        apply_temperature(np.zeros(8), 1.0)


def test_fit_temperature_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(np.zeros((3, 8)), np.array([0, 1, 8]))
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(np.zeros((3, 8)), np.array([0, 1]))


def test_threshold_reaches_target_sensitivity_on_validation() -> None:
    rng = np.random.default_rng(2)
    is_mal = rng.uniform(size=500) < 0.3
    p_mal = np.clip(0.35 * is_mal + rng.uniform(0, 0.65, 500), 0, 1)
    t = threshold_for_sensitivity(is_mal, p_mal, target=0.90)
    sens = (p_mal[is_mal] >= t).mean()
    assert sens >= 0.90
    # the largest such threshold: any higher cut falls below the target
    assert (p_mal[is_mal] >= np.nextafter(t, 1.0)).mean() < 0.90
    # a stricter target needs a lower threshold
    assert threshold_for_sensitivity(is_mal, p_mal, target=0.99) < t


def test_threshold_hand_example_and_ties() -> None:
    is_mal = np.array([True] * 10 + [False] * 3)
    p_mal = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.99, 0.1, 0.45])
    assert threshold_for_sensitivity(is_mal, p_mal, target=0.9) == 0.3  # 9 of 10 (no float slip)
    assert threshold_for_sensitivity(is_mal, p_mal, target=1.0) == 0.2
    tied = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert threshold_for_sensitivity(np.ones(5, bool), tied, target=0.4) == 0.5  # reaches 0.8


def test_threshold_without_malignant_cases_is_an_error() -> None:
    with pytest.raises(ValueError, match="no malignant case"):
        threshold_for_sensitivity(np.zeros(4, bool), np.full(4, 0.3))
    with pytest.raises(ValueError, match="boolean"):
        threshold_for_sensitivity(np.array([0, 1]), np.array([0.1, 0.9]))
    with pytest.raises(ValueError, match="target"):
        threshold_for_sensitivity(np.array([True]), np.array([0.5]), target=0.0)
