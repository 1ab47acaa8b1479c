"""skinlesion.intervals: per-lesion answers and bootstrap intervals clustered by lesion."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion import metrics
from skinlesion.intervals import (cluster_bootstrap, cluster_codes, honest_report, lesion_answers,
                                  resample_indices, sensitivity_at_specificity)
from skinlesion.schema import CLASSES, class_index

MEL, NV = class_index("MEL"), class_index("NV")


def _lesions(n_lesions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One image per lesion: half melanoma, p_malignant noisy around the truth (planted signal)."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n_lesions) < 0.5, MEL, NV)
    p_mel = np.clip(0.5 + 0.25 * np.where(y == MEL, 1, -1) + rng.normal(0, 0.25, n_lesions),
                    0.01, 0.99)
    probs = np.zeros((n_lesions, len(CLASSES)))
    probs[:, MEL], probs[:, NV] = p_mel, 1 - p_mel
    return y, probs


def test_codes_number_clusters_by_first_appearance():
    assert cluster_codes(["b", "a", "b", "c"]).tolist() == [0, 1, 0, 2]


def test_a_resample_keeps_whole_clusters():
    codes = np.repeat(np.arange(20), 3)
    idx = resample_indices(codes, np.random.default_rng(0))
    assert idx.size == codes.size
    drawn = np.bincount(codes[idx], minlength=20)
    assert np.all(drawn % 3 == 0) and (drawn == 0).any()  # whole lesions, some left out


def test_copies_of_a_lesion_do_not_narrow_the_clustered_interval():
    y, probs = _lesions(120)
    auroc = lambda yy, pp: metrics.auroc(yy, pp)  # noqa: E731
    single = cluster_bootstrap(auroc, y, probs, np.arange(120), n_boot=400)
    # Five identical images per lesion: same lesions, five times the images.
    y5, p5, lesion5 = np.repeat(y, 5), np.repeat(probs, 5, axis=0), np.repeat(np.arange(120), 5)
    clustered = cluster_bootstrap(auroc, y5, p5, lesion5, n_boot=400)
    naive = cluster_bootstrap(auroc, y5, p5, np.arange(600), n_boot=400)
    assert clustered.value == pytest.approx(single.value)
    width = lambda iv: iv.high - iv.low  # noqa: E731
    assert width(clustered) == pytest.approx(width(single), rel=0.25)
    assert width(naive) < 0.7 * width(clustered)  # treating copies as cases is overconfident
    assert clustered.low < clustered.value < clustered.high and clustered.n_defined == 400


def test_undefined_resamples_are_left_out_and_counted():
    y = np.array([MEL] + [NV] * 9)
    probs = np.tile(np.eye(len(CLASSES))[NV] * 0.9 + 0.1 / len(CLASSES), (10, 1))
    interval = cluster_bootstrap(lambda yy, pp: metrics.auroc(yy, pp), y, probs, np.arange(10),
                                 n_boot=200, seed=1)
    assert 0 < interval.n_defined < 200  # resamples without the one melanoma have no AUROC


def test_lesion_answers_average_probabilities_and_take_the_majority_label():
    probs = np.zeros((3, len(CLASSES)))
    probs[0, MEL], probs[0, NV] = 0.8, 0.2
    probs[1, MEL], probs[1, NV] = 0.4, 0.6
    probs[2, NV] = 1.0
    y, p, codes = lesion_answers(np.array([MEL, MEL, NV]), probs, ["L1", "L1", "L2"])
    assert y.tolist() == [MEL, NV] and codes.tolist() == [0, 1]
    assert p[0, MEL] == pytest.approx(0.6) and p[1, NV] == pytest.approx(1.0)


def test_sensitivity_at_specificity_reads_the_roc_curve():
    # 10 benign at scores 0..0.9, 10 malignant at 0.55..1.0 (step 0.05): specificity 0.8 allows two
    # benign above the threshold (0.8, 0.9), so the threshold is 0.75 and 6 malignant are above it.
    benign, malignant = np.linspace(0, 0.9, 10), np.linspace(0.55, 1.0, 10)
    score = np.concatenate([benign, malignant])
    y = np.array([NV] * 10 + [MEL] * 10)
    probs = np.zeros((20, len(CLASSES)))
    probs[:, MEL], probs[:, NV] = score, 1 - score
    assert sensitivity_at_specificity(y, probs, min_specificity=0.8) == pytest.approx(0.6)
    assert sensitivity_at_specificity(y, probs, min_specificity=0.9) == pytest.approx(0.4)
    assert sensitivity_at_specificity(y, probs, min_specificity=0.0) == 1.0


def test_honest_report_has_every_metric_per_image_and_per_lesion():
    y, probs = _lesions(30, seed=2)
    groups = np.repeat(np.arange(30), 2)  # two images per lesion, same truth
    y, probs = y[groups], probs[groups]
    report = honest_report(y, probs, groups, threshold=0.5, n_boot=50)
    assert report["n_images"] == 60 and report["n_lesions"] == 30
    assert set(report["per_image"]) == set(report["per_lesion"]) >= {
        "auroc", "balanced_accuracy", "ece_15", "sensitivity", "specificity",
        "sensitivity_at_specificity_80"}
    auroc = report["per_image"]["auroc"]
    assert 0.5 < auroc["value"] <= 1.0 and auroc["low"] <= auroc["value"] <= auroc["high"]
