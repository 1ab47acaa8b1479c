"""Temperature scaling recovers a planted temperature; BCTS and vector scaling recover a planted prior
shift that temperature scaling cannot; the balanced rule; the threshold reaches its sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from skinlesion import metrics
from skinlesion.calibration import (METHODS, Calibrator, DiagnosisRule, apply_temperature,
                                   class_prior, fit_calibrator, fit_temperature, group_balanced_probs,
                                   lesion_folds, out_of_fold_probs, threshold_for_sensitivity,
                                   uniform_prior_probs)
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT


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


# --- prior shift: BCTS and vector scaling ---------------------------------------------------------

#: A planted prior shift: the classes' log-prior offsets a temperature alone cannot undo (class 1,
#: benign, common; the malignant classes 0, 2, 3, 7 rarer than the logits say).
PLANTED_BIAS = np.array([-1.0, 2.0, -1.2, -1.5, 0.5, -0.8, -0.8, -1.5])


def planted_prior_shift(n: int = 6000, seed: int = 3, t_true: float = 1.5,
                        bias: np.ndarray = PLANTED_BIAS) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from ``softmax(logits / t_true + bias)``: the truth is BCTS-shaped,
    as for a network trained with class-balanced weights."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, size=(n, 8))
    probs = scipy.special.softmax(logits / t_true + bias, axis=1)
    y = (probs.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return logits, y


def mean_prob_gap(y: np.ndarray, probs: np.ndarray) -> float:
    """Largest gap between a class's mean predicted probability and its frequency."""
    freq = np.bincount(y, minlength=probs.shape[1]) / y.size
    return float(np.abs(probs.mean(0) - freq).max())


def test_bcts_corrects_a_prior_shift_that_temperature_scaling_cannot() -> None:
    logits, y = planted_prior_shift()
    held_logits, held_y = planted_prior_shift(seed=4)
    temp = fit_calibrator(logits, y, "temperature")
    bcts = fit_calibrator(logits, y, "bcts")
    assert bcts.temperature == pytest.approx(1.5, rel=0.1)
    np.testing.assert_allclose(bcts.bias, PLANTED_BIAS - PLANTED_BIAS.mean(), atol=0.15)
    # on fresh data from the same population: BCTS is calibrated, temperature alone is not
    p_temp, p_bcts = temp.probs(held_logits), bcts.probs(held_logits)
    assert mean_prob_gap(held_y, p_bcts) < 0.02 < 0.08 < mean_prob_gap(held_y, p_temp)
    ece = {name: metrics.expected_calibration_error(held_y, p, n_bins=15)
           for name, p in (("temperature", p_temp), ("bcts", p_bcts))}
    assert ece["bcts"] < 0.03 < 0.06 < ece["temperature"]
    assert metrics.log_loss_multiclass(held_y, p_bcts) < metrics.log_loss_multiclass(held_y, p_temp)


def test_vector_scaling_recovers_per_class_scales() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2.0, size=(8000, 8))
    scale = np.array([0.5, 1.0, 1.5, 0.8, 1.2, 0.6, 1.0, 0.9])
    probs = scipy.special.softmax(logits * scale + PLANTED_BIAS, axis=1)
    y = (probs.cumsum(1) > rng.uniform(size=(8000, 1))).argmax(1)
    vector = fit_calibrator(logits, y, "vector")
    np.testing.assert_allclose(vector.scale, scale, rtol=0.15)
    assert vector.method == "vector" and vector.bias.mean() == pytest.approx(0.0, abs=1e-9)


def test_out_of_fold_scores_prefer_the_right_family() -> None:
    logits, y = planted_prior_shift(n=3000)
    lesions = np.arange(3000) // 2  # two rows per lesion: folds keep them together
    folds = lesion_folds(lesions, 5, seed=0)
    assert all(len(set(folds[lesions == g])) == 1 for g in range(0, 1500, 97))
    nll = {m: metrics.log_loss_multiclass(y, out_of_fold_probs(logits, y, lesions, m))
           for m in METHODS}
    assert nll["bcts"] < nll["temperature"] - 0.02


def test_calibrator_round_trips_and_validates() -> None:
    logits, y = planted_prior_shift(n=2000)
    bcts = fit_calibrator(logits, y, "bcts")
    again = Calibrator.from_dict(bcts.to_dict())
    np.testing.assert_allclose(again.probs(logits), bcts.probs(logits))
    with pytest.raises(ValueError, match="positive"):
        Calibrator("bcts", np.array([1.0, -1.0]), np.zeros(2))
    with pytest.raises(ValueError, match="one of"):
        fit_calibrator(logits, y, "platt")
    with pytest.raises(ValueError, match="missing class"):
        fit_calibrator(logits[y != 5], y[y != 5], "bcts")
    with pytest.raises(ValueError, match="classes"):
        bcts.probs(np.zeros((2, 3)))


def test_the_balanced_rule_raises_balanced_accuracy_of_calibrated_probabilities() -> None:
    logits, y = planted_prior_shift(seed=6)
    calibrated = fit_calibrator(logits, y, "bcts").probs(logits)
    prior = class_prior(y, 8)
    balanced = uniform_prior_probs(calibrated, prior)
    np.testing.assert_allclose(balanced.sum(1), 1.0)
    assert metrics.balanced_accuracy(y, balanced) > metrics.balanced_accuracy(y, calibrated) + 0.05
    with pytest.raises(ValueError, match="never occur"):
        class_prior(np.array([0, 1, 1]), 3)
    with pytest.raises(ValueError, match="positive"):
        uniform_prior_probs(calibrated, np.zeros(8))


def test_a_file_keeps_p_malignant_calibrated_and_its_argmax_nearer_the_balanced_rule() -> None:
    """The file's probabilities (the balanced rule's :meth:`DiagnosisRule.file_probs`): the malignant
    columns sum to the calibrated p_malignant, so its calibration error is unchanged, and the argmax
    of the file scores a higher balanced accuracy than the calibrated probabilities' argmax."""
    logits, y = planted_prior_shift(n=4000, seed=8)
    probs = fit_calibrator(logits, y, "bcts").probs(logits)
    malignant = np.isin(CLASSES, DEFAULT_MALIGNANT)
    rule = DiagnosisRule("balanced", class_prior(y, 8))
    file = rule.file_probs(probs, malignant)
    np.testing.assert_allclose(file.sum(1), 1.0)
    np.testing.assert_allclose(file[:, malignant].sum(1), probs[:, malignant].sum(1))
    assert metrics.expected_calibration_error(y, file) == pytest.approx(
        metrics.expected_calibration_error(y, probs))
    assert metrics.balanced_accuracy(y, file) > metrics.balanced_accuracy(y, probs) + 0.05
    # within each part the order is the balanced rule's
    balanced = uniform_prior_probs(probs, rule.prior)
    for part in (malignant, ~malignant):
        np.testing.assert_array_equal(file[:, part].argmax(1), balanced[:, part].argmax(1))
    np.testing.assert_array_equal(DiagnosisRule().file_probs(probs, malignant), probs)
    empty = group_balanced_probs(np.array([[0.0, 0.0, 0.5, 0.5]]), np.full(4, 0.25), [True, True, False, False])
    np.testing.assert_allclose(empty, [[0.0, 0.0, 0.5, 0.5]])  # a part without mass stays 0
    with pytest.raises(ValueError, match="some but not all"):
        group_balanced_probs(probs, rule.prior, np.ones(8, dtype=bool))


def test_diagnosis_rule_round_trips_and_the_balanced_rule_is_out_of_fold_too() -> None:
    classes = tuple("ABCDEFGH")
    logits, y = planted_prior_shift(n=3000, seed=7)
    prior = class_prior(y, 8)
    rule = DiagnosisRule("balanced", prior)
    again = DiagnosisRule.from_dict(rule.to_dict(classes), classes)
    probs = fit_calibrator(logits, y, "bcts").probs(logits)
    np.testing.assert_array_equal(again.index(probs), uniform_prior_probs(probs, prior).argmax(1))
    assert (DiagnosisRule.from_dict(None, classes).index(probs) == probs.argmax(1)).all()
    # one answer at a time (as the Predictor asks) gives the same diagnosis
    assert [int(rule.index(row)) for row in probs[:50]] == list(rule.index(probs[:50]))
    oof = out_of_fold_probs(logits, y, np.arange(3000), "bcts", balanced=True)
    plain = out_of_fold_probs(logits, y, np.arange(3000), "bcts")
    assert metrics.balanced_accuracy(y, oof) > metrics.balanced_accuracy(y, plain) + 0.05
    with pytest.raises(ValueError, match="needs the class prior"):
        DiagnosisRule("balanced")
    with pytest.raises(ValueError, match="one of"):
        DiagnosisRule("top3")
