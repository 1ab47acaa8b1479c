"""Performance estimated before labels arrive: confidence-based performance estimation (CBPE).

Biopsy results arrive days or weeks after an answer, so the label-based metrics of a recent
window rest on few cases or none. CBPE (as in NannyML) estimates them from the model's own
probabilities instead: if ``p_malignant`` is calibrated, a case answered with ``p`` is malignant
with probability ``p``, so at the operating threshold ``t`` the *expected* confusion matrix is

* ``E[TP] = sum of p`` over cases called malignant (``p >= t``), ``E[FP] = sum of (1 - p)`` there;
* ``E[FN] = sum of p`` over cases called benign (``p < t``), ``E[TN] = sum of (1 - p)`` there;

and accuracy, precision, recall, FNR, F1 and specificity follow from it with the usual formulas
(NannyML's plug-in estimate: a ratio of expectations). The expected binary log loss is the mean
binary entropy ``-p log p - (1 - p) log(1 - p)``.

Estimated AUROC (NannyML's approach): sweeping the threshold down the distinct scores in
decreasing order, the expected true positives gained at a score ``s`` are the sum of ``p`` over
the cases scored ``s`` and the expected false positives the sum of ``1 - p``; normalising their
running sums by ``sum p`` and ``sum (1 - p)`` gives the expected ROC curve (TPR against FPR, tied
scores forming one diagonal segment, as in scikit-learn), and the trapezoid area under it is the
estimated AUROC. The raw partial AUC above 80% sensitivity (the ISIC form) is read off the same
curve.

Everything here works on *sufficient statistics* (:class:`ScoreStats`): the expected confusion
sums and, per distinct score, the expected positives and negatives. :func:`score_stats` builds
them from arrays; the store builds the same sums in SQL (scores rounded to a fixed number of
decimals), so estimating over a million predictions never loads them into memory.

Pure numpy: no SQL, no streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

#: The assumptions behind every estimated number, in words the dashboard can show next to them.
ASSUMPTIONS = (
    "Estimated performance (CBPE) assumes (1) the model's probability of malignancy is "
    "calibrated on the current cases — among cases answered with p = 0.3, 30% are malignant — "
    "and (2) no concept shift: the relation between a lesion and its diagnosis, P(diagnosis | "
    "image, metadata), is unchanged since the model was calibrated. Covariate shift (different "
    "patients, cameras or sites) is allowed as long as the probabilities stay calibrated on it. "
    "When either assumption breaks, the estimate can be wrong while looking healthy: trust the "
    "label-based numbers once enough labels have arrived, and compare both.")

#: Probabilities are clipped to [EPS, 1 - EPS] inside logs (as skinlesion.metrics does).
EPS = 1e-15
#: Decimals the store rounds scores to when it groups them for the expected ROC curve.
SCORE_DECIMALS = 4
#: The estimated metrics, in display order.
ESTIMATED_METRICS: tuple[str, ...] = (
    "accuracy", "precision", "recall", "f1", "fnr", "specificity", "auroc", "pauc_80", "log_loss")


@dataclass(frozen=True)
class ScoreStats:
    """Sufficient statistics of a window's calibrated ``p_malignant`` for CBPE.

    ``tp, fp, tn, fn``: the expected confusion matrix at each case's threshold; ``entropy``: the sum
    of the cases' binary entropies (nats); ``scores``: distinct scores, ascending; ``pos`` and
    ``neg``: per score, the sum of ``p`` and of ``1 - p`` over the cases with that score."""

    n: int
    tp: float
    fp: float
    tn: float
    fn: float
    entropy: float
    scores: np.ndarray
    pos: np.ndarray
    neg: np.ndarray


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


def score_stats(p_malignant: object, threshold: float | object) -> ScoreStats:
    """:class:`ScoreStats` of the scores ``p_malignant`` (n,) called malignant at ``p >= threshold``
    (a scalar, or one threshold per case, as logged). ValueError for probabilities outside [0, 1]."""
    p = np.asarray(p_malignant, dtype=np.float64).ravel()
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), p.shape)
    if not np.all(np.isfinite(p)) or (p.size and (p.min() < 0 or p.max() > 1)):
        raise ValueError("p_malignant must hold probabilities in [0, 1]")
    called = p >= t
    scores, inverse = np.unique(p, return_inverse=True)
    pos = np.bincount(inverse, weights=p, minlength=scores.size)
    neg = np.bincount(inverse, weights=1 - p, minlength=scores.size)
    return ScoreStats(n=int(p.size), tp=float(p[called].sum()), fp=float((1 - p[called]).sum()),
                      tn=float((1 - p[~called]).sum()), fn=float(p[~called].sum()),
                      entropy=float(_binary_entropy(p).sum()), scores=scores, pos=pos, neg=neg)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def confusion_rates(tp: float, fp: float, tn: float, fn: float) -> dict[str, float]:
    """``accuracy, precision, recall, f1, fnr, specificity`` of a (possibly expected) confusion
    matrix, with the formulas of :mod:`skinlesion.metrics`; nan where a denominator is 0."""
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fnr": _ratio(fn, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def expected_roc(scores: object, pos: object, neg: object) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of the expected ROC curve from per-score expected positives ``pos`` and
    negatives ``neg`` (any order of ``scores``; equal scores are merged). Starts at (0, 0), ends at
    (1, 1); empty arrays when either total is 0 (no expected positive or negative)."""
    s = np.asarray(scores, dtype=np.float64)
    distinct, inverse = np.unique(s, return_inverse=True)
    pos_by = np.bincount(inverse, weights=np.asarray(pos, dtype=np.float64), minlength=distinct.size)
    neg_by = np.bincount(inverse, weights=np.asarray(neg, dtype=np.float64), minlength=distinct.size)
    total_pos, total_neg = pos_by.sum(), neg_by.sum()
    if total_pos <= 0 or total_neg <= 0:
        empty = np.array([], dtype=np.float64)
        return empty, empty
    # descending scores: lowering the threshold past a score calls all its cases malignant
    tpr = np.concatenate([[0.0], np.cumsum(pos_by[::-1]) / total_pos])
    fpr = np.concatenate([[0.0], np.cumsum(neg_by[::-1]) / total_neg])
    return np.minimum(fpr, 1.0), np.minimum(tpr, 1.0)


def _partial_auc(fpr: np.ndarray, tpr: np.ndarray, min_sensitivity: float) -> float:
    """Raw partial AUC above ``min_sensitivity`` of a curve, as ``metrics.partial_auc`` cuts it:
    the area under TPR from the FPR where TPR first reaches the bound up to FPR = 1."""
    i = int(np.searchsorted(tpr, min_sensitivity, side="left"))
    fpr_at = float(np.interp(min_sensitivity, tpr[i - 1:i + 1], fpr[i - 1:i + 1]))  # tpr[0] = 0
    return float(np.trapezoid(np.insert(tpr[i:], 0, min_sensitivity), np.insert(fpr[i:], 0, fpr_at)))


def estimate(stats: ScoreStats, *, min_sensitivity: float = 0.80) -> dict[str, float]:
    """Estimated :data:`ESTIMATED_METRICS` from ``stats`` (nan where undefined, e.g. an empty
    window, or AUROC when every case has p = 0 or p = 1 on the same side)."""
    out = confusion_rates(stats.tp, stats.fp, stats.tn, stats.fn)
    fpr, tpr = expected_roc(stats.scores, stats.pos, stats.neg)
    out["auroc"] = float(np.trapezoid(tpr, fpr)) if fpr.size else math.nan
    out["pauc_80"] = _partial_auc(fpr, tpr, min_sensitivity) if fpr.size else math.nan
    out["log_loss"] = _ratio(stats.entropy, stats.n)
    return {name: out[name] for name in ESTIMATED_METRICS}


def estimate_performance(p_malignant: object, threshold: float | object) -> dict[str, float]:
    """CBPE estimate of the binary metrics of the cases ``p_malignant`` at ``threshold`` (scalar or
    per case): :func:`estimate` of :func:`score_stats`."""
    return estimate(score_stats(p_malignant, threshold))


# --- how sure the estimate is -------------------------------------------------------------------------

#: Replicates and central level of :func:`estimate_band`. The level is 95% so that the band covers
#: the realised value in at least 90% of healthy windows (the monitoring plan's target) when the
#: validation split's calibration carries over to traffic a little imperfectly (a nominal 90% band
#: covered specificity in 83% of the replayed healthy windows; README, monitoring validation).
BAND_REPLICATES = 200
BAND_LEVEL = 0.95
#: Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before Platt scaling, so a handful of
#: near-certain answers do not set its slope.
LOGIT_EPS = 1e-3


@dataclass(frozen=True)
class Recalibration:
    """Platt recalibration of ``p_malignant``: ``sigmoid(slope * logit(p) + intercept)``."""

    slope: float
    intercept: float

    def apply(self, p: np.ndarray) -> np.ndarray:
        q = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
        return 1.0 / (1.0 + np.exp(-(self.slope * np.log(q / (1 - q)) + self.intercept)))


def fit_recalibration(p_malignant: np.ndarray, malignant: np.ndarray, *, steps: int = 50) -> Recalibration:
    """Platt's two parameters fitted to labelled answers by Newton steps on the binary log loss
    (identity when the answers are calibrated; a light ridge keeps a tiny sample finite)."""
    q = np.clip(np.asarray(p_malignant, dtype=np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    x = np.stack([np.log(q / (1 - q)), np.ones_like(q)], axis=1)
    y = np.asarray(malignant, dtype=np.float64)
    w = np.array([1.0, 0.0])
    ridge = np.diag([1e-3, 1e-3])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        grad = x.T @ (p - y) + ridge @ (w - np.array([1.0, 0.0]))
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Recalibration(slope=float(w[0]), intercept=float(w[1]))


def _realised_binary(p: np.ndarray, called: np.ndarray, y: np.ndarray, min_sensitivity: float) -> np.ndarray:
    """Realised :data:`ESTIMATED_METRICS` of each row of outcomes ``y`` (replicates, n) for scores
    ``p`` called malignant where ``called``; nan where undefined."""
    y = y.astype(bool)
    tp = (y & called).sum(1).astype(float)
    fp = (~y & called).sum(1).astype(float)
    fn = (y & ~called).sum(1).astype(float)
    tn = (~y & ~called).sum(1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_replicate = [confusion_rates(*counts) for counts in zip(tp, fp, tn, fn, strict=True)]
        rates = {name: np.array([r[name] for r in per_replicate]) for name in per_replicate[0]}
        pos = y.sum(1)
        neg = y.shape[1] - pos
        auroc = ((rankdata(p)[None, :] * y).sum(1) - pos * (pos + 1) / 2) / (pos * neg)
    q = np.clip(p, EPS, 1 - EPS)
    log_loss = -(y * np.log(q) + (~y) * np.log(1 - q)).mean(1)
    pauc = np.array([_realised_pauc(p, row, min_sensitivity) for row in y])
    out = {**rates, "auroc": np.where(
        (pos > 0) & (neg > 0), auroc, np.nan), "pauc_80": pauc, "log_loss": log_loss}
    return np.stack([out[name] for name in ESTIMATED_METRICS], axis=1)


def _realised_pauc(p: np.ndarray, y: np.ndarray, min_sensitivity: float) -> float:
    if y.all() or not y.any():
        return math.nan
    fpr, tpr = expected_roc(p, y.astype(float), (~y).astype(float))
    return _partial_auc(fpr, tpr, min_sensitivity)


def estimate_band(p_malignant: object, threshold: float | object, *,
                  reference_p: object | None = None, reference_malignant: object | None = None,
                  replicates: int = BAND_REPLICATES, level: float = BAND_LEVEL, seed: int = 0,
                  min_sensitivity: float = 0.80) -> dict[str, tuple[float, float]]:
    """A ``level`` band around each estimated metric of the cases ``p_malignant`` called at
    ``threshold``: where the *realised* metric of these cases should fall once their labels arrive.

    Each of ``replicates`` replicates (seeded) draws every case's outcome from its probability and
    computes the realised metrics. With the version's labelled reference answers (``reference_p``,
    ``reference_malignant``) each replicate first recalibrates the probabilities by Platt scaling
    fitted on a bootstrap resample of them, so the band follows the calibration the reference
    shows (where the version's probabilities are a little over- or under-confident near its
    threshold, the band moves off CBPE's point, which takes them at face value) and carries how
    well the reference pins it down. The band is the central ``level`` of the replicates
    (``(nan, nan)`` where a metric is undefined in most replicates, or without cases)."""
    p = np.asarray(p_malignant, dtype=np.float64).ravel()
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), p.shape)
    if not 0 < level < 1 or replicates < 20:
        raise ValueError(f"a band needs a level in (0, 1) and at least 20 replicates, got {level}, {replicates}")
    if p.size == 0:
        return {name: (math.nan, math.nan) for name in ESTIMATED_METRICS}
    rng = np.random.default_rng(seed)
    if reference_p is not None and reference_malignant is not None:
        ref_p = np.asarray(reference_p, dtype=np.float64).ravel()
        ref_y = np.asarray(reference_malignant, dtype=bool).ravel()
        if ref_p.shape != ref_y.shape or ref_p.size < 20:
            raise ValueError("the reference needs at least 20 labelled answers, one label per answer")
        probs = np.empty((replicates, p.size))
        for b in range(replicates):
            rows = rng.integers(0, ref_p.size, ref_p.size)
            probs[b] = fit_recalibration(ref_p[rows], ref_y[rows]).apply(p)
    else:
        probs = np.broadcast_to(p, (replicates, p.size))
    outcomes = rng.random((replicates, p.size)) < probs
    realised = _realised_binary(p, p >= t, outcomes, min_sensitivity)
    alpha = (1 - level) / 2
    out = {}
    for k, name in enumerate(ESTIMATED_METRICS):
        column = realised[:, k]
        finite = column[np.isfinite(column)]
        out[name] = ((float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
                     if finite.size >= replicates / 2 else (math.nan, math.nan))
    return out
