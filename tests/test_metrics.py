"""Metrics on tiny seeded data with planted signals."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from skinlesion import metrics as m
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, malignant_mask

MAL = np.array(malignant_mask(DEFAULT_MALIGNANT))
MEL, NV, BCC, BKL = (CLASSES.index(c) for c in ("MEL", "NV", "BCC", "BKL"))


def one_hot_probs(pred: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    """Probability rows putting ``confidence`` on ``pred`` and the rest evenly elsewhere."""
    p = np.full((len(pred), len(CLASSES)), (1 - confidence) / (len(CLASSES) - 1))
    p[np.arange(len(pred)), pred] = confidence
    return p


def informative(n: int, seed: int = 0, signal: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities whose logits favour the true class by ``signal``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += signal
    e = np.exp(logits - logits.max(1, keepdims=True))
    return y, e / e.sum(1, keepdims=True)


def test_perfect_classifier_scores_perfectly() -> None:
    y = np.arange(len(CLASSES)).repeat(5)
    probs = one_hot_probs(y, 0.93)
    s = m.summary(y, probs)
    assert s["auroc"] == 1.0 and s["pauc_80"] == pytest.approx(1.0)
    assert s["fnr"] == 0.0 and s["recall"] == 1.0 and s["specificity"] == 1.0
    assert s["accuracy"] == 1.0 and s["balanced_accuracy"] == 1.0 and s["f1"] == 1.0
    assert s["n"] == 40 and s["n_malignant"] == 20
    assert (m.confusion_matrix(y, probs) == np.diag(np.full(8, 5))).all()


def test_flipped_malignant_probabilities_give_auroc_zero() -> None:
    y = np.array([MEL, BCC, NV, BKL, MEL, NV])
    # every malignant case gets a lower p_malignant than every benign one
    flipped = one_hot_probs(np.where(MAL[y], NV, MEL), 0.9)
    assert m.auroc(y, flipped) == 0.0
    assert m.false_negative_rate(y, flipped) == 1.0
    assert m.partial_auc(y, flipped) == pytest.approx(0.0)


def test_hand_computed_binary_confusion() -> None:
    # p_malignant: 0.9 (MEL), 0.6 (BCC), 0.2 (MEL), 0.7 (NV), 0.1 (NV), 0.3 (BKL)
    y = np.array([MEL, BCC, MEL, NV, NV, BKL])
    p_mal = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3])
    probs = np.zeros((6, 8))
    probs[:, MEL] = p_mal
    probs[:, NV] = 1 - p_mal
    assert m.p_malignant(probs) == pytest.approx(p_mal)
    c = m.binary_confusion(y, probs, threshold=0.5)
    assert c == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    assert m.accuracy(y, probs) == pytest.approx(4 / 6)
    assert m.precision(y, probs) == pytest.approx(2 / 3)
    assert m.recall(y, probs) == pytest.approx(2 / 3)
    assert m.specificity(y, probs) == pytest.approx(2 / 3)
    assert m.f1(y, probs) == pytest.approx(2 / 3)
    assert m.false_negative_rate(y, probs) == pytest.approx(1 / 3)
    # 9 malignant/benign pairs ranked right: 0.9 beats 3, 0.6 beats 2 (not 0.7), 0.2 beats 1 (0.1)
    assert m.auroc(y, probs) == pytest.approx(6 / 9)
    # threshold is inclusive: a case at exactly the threshold is called malignant
    assert m.binary_confusion(y, probs, threshold=0.6)["tp"] == 2


def test_malignant_set_is_configurable_and_validated() -> None:
    y = np.array([MEL, BCC])
    probs = one_hot_probs(y)
    assert m.recall(y, probs, malignant=("MEL",)) == 1.0
    assert m.binary_confusion(y, probs, malignant=("MEL",)) == {"tp": 1, "fp": 0, "tn": 1, "fn": 0}
    with pytest.raises(ValueError, match="unknown malignant classes"):
        m.auroc(y, probs, malignant=("MELANOMA",))


def test_threshold_moves_precision_and_recall_the_right_way() -> None:
    y, probs = informative(400, seed=1, signal=1.0)
    low = m.summary(y, probs, threshold=0.2)
    high = m.summary(y, probs, threshold=0.8)
    assert low["recall"] > high["recall"]
    assert low["fnr"] < high["fnr"]
    assert low["precision"] < high["precision"]
    assert low["specificity"] < high["specificity"]
    # threshold-free metrics do not move
    assert low["auroc"] == high["auroc"] and low["log_loss"] == high["log_loss"]


def test_balanced_accuracy_is_mean_recall_over_present_classes() -> None:
    # MEL: 3 cases, 2 right; NV: 1 case, 1 right; other classes absent
    y = np.array([MEL, MEL, MEL, NV])
    probs = one_hot_probs(np.array([MEL, MEL, NV, NV]))
    assert m.balanced_accuracy(y, probs) == pytest.approx((2 / 3 + 1) / 2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        table = m.per_class_metrics(y, probs)
    assert table.loc[table["class"] == "MEL", "sensitivity"].item() == pytest.approx(2 / 3)
    assert table["sensitivity"].mean() == pytest.approx(m.balanced_accuracy(y, probs))
    assert table.loc[table["class"] == "BCC", "n"].item() == 0
    assert math.isnan(table.loc[table["class"] == "BCC", "auc"].item())


def test_per_class_metrics_on_informative_data() -> None:
    y, probs = informative(300, seed=2, signal=3.0)
    table = m.per_class_metrics(y, probs)
    assert list(table["class"]) == list(CLASSES)
    assert table["n"].sum() == 300
    assert (table["auc"] > 0.85).all() and (table["ap"] > 0.5).all()
    # the raw ISIC partial AUC: above the random-ranking value 0.18, never above the full AUC
    assert ((table["pauc_80"] > 0.18) & (table["pauc_80"] <= table["auc"] + 1e-12)).all()


def test_log_losses_reward_confident_right_answers() -> None:
    y = np.arange(len(CLASSES)).repeat(3)
    right, wrong = one_hot_probs(y, 0.95), one_hot_probs((y + 1) % 8, 0.95)
    assert m.log_loss_multiclass(y, right) < 0.1 < 2.0 < m.log_loss_multiclass(y, wrong)
    assert m.log_loss_binary(y, right) < 0.1
    # certainty in the wrong answer is costly but finite (clipped)
    certain_wrong = one_hot_probs(np.where(MAL[y], NV, MEL), 1.0)
    assert 10 < m.log_loss_binary(y, certain_wrong) < 40


def test_ece_near_zero_when_labels_follow_the_probabilities() -> None:
    rng = np.random.default_rng(3)
    n = 20000
    p_mal = rng.uniform(0, 1, n)
    malignant_outcome = rng.uniform(0, 1, n) < p_mal
    y = np.where(malignant_outcome, MEL, NV)
    probs = np.zeros((n, 8))
    probs[:, MEL], probs[:, NV] = p_mal, 1 - p_mal
    assert m.expected_calibration_error(y, probs) < 0.02
    # the same labels under over-confident probabilities (pushed towards 0 and 1)
    sharp = np.clip((p_mal - 0.5) * 4 + 0.5, 0, 1)
    probs[:, MEL], probs[:, NV] = sharp, 1 - sharp
    assert m.expected_calibration_error(y, probs) > 0.15


def test_top_label_ece_and_reliability_table() -> None:
    y = np.arange(len(CLASSES)).repeat(10)
    pred = y.copy()
    pred[::2] = (y[::2] + 1) % 8  # half wrong, all with 0.95 confidence
    probs = one_hot_probs(pred, 0.95)
    assert m.expected_calibration_error(y, probs, kind="top_label") == pytest.approx(0.45)
    table = m.reliability_table(y, probs, kind="top_label", n_bins=5)
    assert len(table) == 5 and table["count"].sum() == 80
    assert table["count"].iloc[-1] == 80 and table["observed"].iloc[-1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        m.expected_calibration_error(y, probs, kind="multiclass")


def test_roc_curve_points_binary_and_per_class() -> None:
    y, probs = informative(200, seed=4)
    fpr, tpr, thr = m.roc_curve_points(y, probs)
    assert fpr[0] == 0 and tpr[-1] == 1 and len(fpr) == len(tpr) == len(thr)
    fpr_c, tpr_c, _ = m.roc_curve_points(y, probs, cls="DF")
    assert np.trapezoid(tpr_c, fpr_c) == pytest.approx(
        m.per_class_metrics(y, probs).set_index("class").loc["DF", "auc"])
    with pytest.raises(ValueError, match="unknown diagnosis"):
        m.roc_curve_points(y, probs, cls="XYZ")


def test_one_class_window_gives_nan_and_warning() -> None:
    y = np.array([NV, NV, BKL])
    probs = one_hot_probs(y)
    with pytest.warns(m.UndefinedMetricWarning, match="auroc"):
        assert math.isnan(m.auroc(y, probs))
    with pytest.warns(m.UndefinedMetricWarning):
        assert math.isnan(m.recall(y, probs))
    with pytest.warns(m.UndefinedMetricWarning, match="precision, recall, f1, fnr, auroc, pauc_80;"):
        s = m.summary(y, probs)
    assert s["specificity"] == 1.0 and s["accuracy"] == 1.0 and s["n_malignant"] == 0
    assert math.isnan(s["fnr"]) and math.isnan(s["pauc_80"])
    with pytest.warns(m.UndefinedMetricWarning, match="no case was called malignant"):
        assert math.isnan(m.precision(y, probs))


def test_empty_window_gives_all_nan_not_a_crash() -> None:
    with pytest.warns(m.UndefinedMetricWarning):
        s = m.summary(np.array([], dtype=int), np.zeros((0, 8)))
    assert s["n"] == 0
    assert all(math.isnan(v) for k, v in s.items() if k not in ("n", "n_malignant"))
    assert m.confusion_matrix(np.array([], dtype=int), np.zeros((0, 8))).sum() == 0


@pytest.mark.parametrize(("y", "probs", "match"), [
    (np.array([0, 1]), np.full((2, 7), 1 / 7), r"shape \(n, 8\)"),
    (np.array([0, 1, 2]), np.full((2, 8), 1 / 8), "3 labels but probs has 2 rows"),
    (np.array([0, 1]), np.full((2, 8), 0.5), "must sum to 1"),
    (np.array([0, 9]), np.full((2, 8), 1 / 8), r"indices 0\.\.7"),
    (np.array(["MEL", "NV"]), np.full((2, 8), 1 / 8), "integer class indices"),
    (np.array([0, 1]), np.full((2, 8), np.nan), "NaN"),
    (np.array([[0, 1]]), np.full((2, 8), 1 / 8), "1-d array"),
])
def test_bad_inputs_raise_clear_value_errors(y: np.ndarray, probs: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        m.summary(y, probs)


def test_logits_are_rejected_with_a_hint() -> None:
    logits = np.zeros((2, 8))
    logits[:, 0] = 3.0
    with pytest.raises(ValueError, match="not logits"):
        m.auroc(np.array([0, 1]), logits)
