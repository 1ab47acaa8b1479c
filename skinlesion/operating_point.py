"""The operating point of the referral decision: the sensitivity/specificity trade-off of
``p_malignant`` over thresholds, and the threshold that reaches a target sensitivity.

Pure functions of numpy arrays: ``is_malignant`` (bool, the ground truth) and ``p_malignant`` (the
logged score). A case is called malignant when ``p_malignant >= threshold`` (inclusive, as in
:mod:`skinlesion.metrics`). The curve comes from scikit-learn's ``roc_curve``; the threshold for a
target sensitivity from :func:`skinlesion.calibration.threshold_for_sensitivity`, the rule training
uses to set a version's first threshold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sklearn.metrics
from pydantic import BaseModel, ConfigDict, Field

from skinlesion.calibration import binary_scores, threshold_for_sensitivity


class OperatingPoint(BaseModel):
    """Sensitivity and specificity at one threshold, with the cases behind them."""

    model_config = ConfigDict(frozen=True)

    threshold: float = Field(ge=0.0, le=1.0)
    sensitivity: float
    specificity: float
    n_malignant: int
    n_benign: int


def _check(is_malignant: object, p_malignant: object) -> tuple[np.ndarray, np.ndarray]:
    """The two arrays, validated: 1-d, same length, boolean truth, finite scores in [0, 1], and
    both outcomes present (sensitivity and specificity need both)."""
    truth, score = binary_scores(is_malignant, p_malignant)
    if score.min(initial=0.0) < 0 or score.max(initial=0.0) > 1:
        raise ValueError("p_malignant must hold probabilities in [0, 1]")
    n_malignant = int(truth.sum())
    if n_malignant == 0 or n_malignant == truth.size:
        raise ValueError(f"the trade-off needs malignant and benign cases; got {n_malignant} "
                         f"malignant of {truth.size}")
    return truth, score


def tradeoff(is_malignant: object, p_malignant: object) -> pd.DataFrame:
    """The sensitivity/specificity trade-off: one row per distinct score used as threshold
    (``threshold, sensitivity, specificity``), highest threshold first, from scikit-learn's
    ``roc_curve`` (every point kept, so the steps are exact)."""
    truth, score = _check(is_malignant, p_malignant)
    fpr, tpr, thresholds = sklearn.metrics.roc_curve(truth, score, drop_intermediate=False)
    keep = np.isfinite(thresholds)  # roc_curve's first point (+inf) calls nothing
    return pd.DataFrame({"threshold": np.clip(thresholds[keep], 0.0, 1.0),
                         "sensitivity": tpr[keep], "specificity": 1.0 - fpr[keep]})


def operating_point(is_malignant: object, p_malignant: object, threshold: float) -> OperatingPoint:
    """Sensitivity and specificity of calling ``p_malignant >= threshold`` malignant."""
    truth, score = _check(is_malignant, p_malignant)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    called = score >= threshold
    return OperatingPoint(threshold=float(threshold), sensitivity=float(called[truth].mean()),
                          specificity=float((~called[~truth]).mean()),
                          n_malignant=int(truth.sum()), n_benign=int((~truth).sum()))


def threshold_for_target(is_malignant: object, p_malignant: object,
                         target_sensitivity: float) -> OperatingPoint:
    """The operating point of the largest threshold whose sensitivity is at least
    ``target_sensitivity`` on these cases (so specificity is as high as that target allows)."""
    truth, score = _check(is_malignant, p_malignant)
    threshold = threshold_for_sensitivity(truth, score, target_sensitivity)
    return operating_point(truth, score, threshold)
