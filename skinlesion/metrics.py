"""Evaluation metrics: pure functions of ``(y_true, probs)`` numpy arrays.

Layer 1 (DESIGN.md): numpy/scikit-learn only; no torch, DuckDB or Streamlit.

Conventions shared by every function here:

* ``y_true`` holds integer class indices into :data:`skinlesion.schema.CLASSES`, shape ``(n,)``.
* ``probs`` holds class probabilities in ``CLASSES`` order, shape ``(n, 8)``; rows must sum to 1.
* Binary metrics treat the ``malignant`` set (default :data:`~skinlesion.schema.DEFAULT_MALIGNANT`)
  as the positive class. ``p_malignant`` is the sum of the malignant class probabilities and a case
  is *called* malignant when ``p_malignant >= threshold``.

Shape and value problems (wrong shape, probabilities outside [0, 1] or not summing to 1, labels
outside the classes) raise a ``ValueError`` that names the problem. A metric that is *undefined*
on the given data (an empty window, AUROC with only one class present, precision with no case
called malignant, ...) returns ``nan`` and emits an :class:`UndefinedMetricWarning` instead of
failing: the monitoring dashboard computes these over small windows of labelled answers, where
such windows are normal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
import sklearn.exceptions
import sklearn.metrics

from skinlesion.schema import CLASS_NAMES, CLASSES, DEFAULT_MALIGNANT, class_index, malignant_mask

N_CLASSES = len(CLASSES)
#: Probabilities are clipped to [EPS, 1 - EPS] before taking logs, so a confident mistake costs a
#: large but finite loss.
EPS = 1e-15
#: How far a row of ``probs`` may sum away from 1 (float32 softmax outputs, CSV round trips).
SUM_TOLERANCE = 1e-3


class UndefinedMetricWarning(sklearn.exceptions.UndefinedMetricWarning):
    """A metric is undefined on the given data and was returned as ``nan``.

    Subclasses scikit-learn's warning so one filter silences both."""


# --- validation --------------------------------------------------------------------------------------


def _check_probs(probs: object) -> np.ndarray:
    """Validated ``probs`` as a float64 (n, 8) array; ValueError naming the problem."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != N_CLASSES:
        raise ValueError(f"probs must have shape (n, {N_CLASSES}) with columns in the order "
                         f"{', '.join(CLASSES)}; got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
        raise ValueError(f"probs has NaN or infinite values (rows {bad[:5].tolist()})")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("probs must lie in [0, 1]; pass probabilities (softmax outputs), not logits")
    sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if off.size:
        raise ValueError(f"each row of probs must sum to 1 (softmax over the {N_CLASSES} classes); "
                         f"rows {off[:5].tolist()} sum to {np.round(sums[off[:5]], 4).tolist()}")
    return p


def check_inputs(y_true: object, probs: object) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y, probs)`` as int64 / float64 arrays; ValueError naming the problem.

    Public so that callers (plots, monitoring) validate once, the same way."""
    p = _check_probs(probs)
    y_arr = np.asarray(y_true)
    if y_arr.ndim != 1:
        raise ValueError(f"y_true must be a 1-d array of class indices, got shape {y_arr.shape}")
    if y_arr.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {y_arr.shape[0]} labels but probs has {p.shape[0]} rows")
    integral = np.issubdtype(y_arr.dtype, np.integer) or (
        np.issubdtype(y_arr.dtype, np.floating) and bool(np.all(np.mod(y_arr, 1) == 0)))
    if y_arr.size and not integral:
        raise ValueError("y_true must hold integer class indices 0..7 (use "
                         "skinlesion.schema.class_index to convert diagnosis codes)")
    y = y_arr.astype(np.int64)
    outside = (y < 0) | (y >= N_CLASSES)
    if outside.any():
        raise ValueError(f"y_true must hold class indices 0..{N_CLASSES - 1}; got values "
                         f"{sorted(set(y[outside].tolist()))[:5]}")
    return y, p


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    return float(threshold)


def _undefined(name: str, why: str) -> float:
    warnings.warn(f"{name} is undefined: {why}; returning nan", UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def _binary(y_true: object, probs: object, malignant: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(is_malignant bool (n,), p_malignant (n,))`` after validation."""
    y, p = check_inputs(y_true, probs)
    mask = np.asarray(malignant_mask(malignant))
    return mask[y], p[:, mask].sum(axis=1)


# --- binary: malignant vs benign ---------------------------------------------------------------------


def p_malignant(probs: object, malignant: Iterable[str] = DEFAULT_MALIGNANT) -> np.ndarray:
    """Probability of malignancy per row: the sum of the malignant classes' probabilities."""
    return _check_probs(probs)[:, np.asarray(malignant_mask(malignant))].sum(axis=1)


def binary_confusion(y_true: object, probs: object, *, threshold: float = 0.5,
                     malignant: Iterable[str] = DEFAULT_MALIGNANT) -> dict[str, int]:
    """Counts ``tp, fp, tn, fn`` of malignant-vs-benign calls at ``p_malignant >= threshold``."""
    truth, score = _binary(y_true, probs, malignant)
    called = score >= _check_threshold(threshold)
    return {"tp": int(np.sum(truth & called)), "fp": int(np.sum(~truth & called)),
            "tn": int(np.sum(~truth & ~called)), "fn": int(np.sum(truth & ~called))}


def _ratio(num: int, den: int, name: str, why: str) -> float:
    return num / den if den else _undefined(name, why)


def accuracy(y_true: object, probs: object, *, threshold: float = 0.5,
             malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Share of cases whose malignant/benign call is right."""
    c = binary_confusion(y_true, probs, threshold=threshold, malignant=malignant)
    return _ratio(c["tp"] + c["tn"], sum(c.values()), "accuracy", "no cases")


def precision(y_true: object, probs: object, *, threshold: float = 0.5,
              malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Positive predictive value: share of cases called malignant that are malignant."""
    c = binary_confusion(y_true, probs, threshold=threshold, malignant=malignant)
    return _ratio(c["tp"], c["tp"] + c["fp"], "precision", "no case was called malignant")


def recall(y_true: object, probs: object, *, threshold: float = 0.5,
           malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Sensitivity: share of malignant cases called malignant."""
    c = binary_confusion(y_true, probs, threshold=threshold, malignant=malignant)
    return _ratio(c["tp"], c["tp"] + c["fn"], "recall", "no malignant case")


sensitivity = recall


def specificity(y_true: object, probs: object, *, threshold: float = 0.5,
                malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Share of benign cases called benign."""
    c = binary_confusion(y_true, probs, threshold=threshold, malignant=malignant)
    return _ratio(c["tn"], c["tn"] + c["fp"], "specificity", "no benign case")


def f1(y_true: object, probs: object, *, threshold: float = 0.5,
       malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Harmonic mean of precision and recall, ``2TP / (2TP + FP + FN)``; undefined (nan) only when
    there is no malignant case and none was called malignant."""
    c = binary_confusion(y_true, probs, threshold=threshold, malignant=malignant)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"], "f1",
                  "no malignant case and none called malignant")


def false_negative_rate(y_true: object, probs: object, *, threshold: float = 0.5,
                        malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Share of malignant cases called benign (``1 - recall``): the missed cancers."""
    c = binary_confusion(y_true, probs, threshold=threshold, malignant=malignant)
    return _ratio(c["fn"], c["tp"] + c["fn"], "false_negative_rate", "no malignant case")


def _both_classes(truth: np.ndarray, name: str) -> bool:
    if truth.size == 0:
        _undefined(name, "no cases")
        return False
    if truth.all() or not truth.any():
        _undefined(name, f"only {'positive' if truth.all() else 'negative'} cases present "
                         "(needs both)")
        return False
    return True


def auroc(y_true: object, probs: object, *, malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Area under the malignant-vs-benign ROC curve of ``p_malignant``."""
    truth, score = _binary(y_true, probs, malignant)
    if not _both_classes(truth, "auroc"):
        return float("nan")
    return float(sklearn.metrics.roc_auc_score(truth, score))


def _raw_partial_auc(truth: np.ndarray, score: np.ndarray, min_sensitivity: float) -> float:
    """Partial AUC exactly as ``isic_challenge_scoring.metrics.auc_above_sensitivity`` computes it.

    The full ROC curve (``drop_intermediate=False``) is cut at the first point whose TPR reaches
    ``min_sensitivity`` (a point exactly at that TPR is interpolated in) and the trapezoid area
    under the remaining segment is returned: ``integral of TPR dFPR`` from the FPR where the
    sensitivity is first reached up to FPR = 1, measured down to TPR = 0. No McClish correction and
    no subtraction of the strip below the sensitivity line, so a perfect ranking scores 1.0 and a
    random one 0.18 (at 80%). (The ISIC 2024 Kaggle "pAUC", bounded by 0.2, is a different number.)
    """
    fpr, tpr, _ = sklearn.metrics.roc_curve(truth, score, drop_intermediate=False)
    i = int(tpr.searchsorted(min_sensitivity, side="left"))
    fpr_at = np.interp(min_sensitivity, tpr[i - 1:i + 1], fpr[i - 1:i + 1])
    return float(sklearn.metrics.auc(np.insert(fpr[i:], 0, fpr_at),
                                     np.insert(tpr[i:], 0, min_sensitivity)))


def _check_min_sensitivity(min_sensitivity: float) -> None:
    if not 0.0 < min_sensitivity <= 1.0:
        raise ValueError(f"min_sensitivity must lie in (0, 1], got {min_sensitivity}")


def partial_auc(y_true: object, probs: object, *, malignant: Iterable[str] = DEFAULT_MALIGNANT,
                min_sensitivity: float = 0.80) -> float:
    """Raw partial AUC of ``p_malignant`` above ``min_sensitivity``: the official ISIC scorer's
    ``auc_sens_80`` (see :func:`_raw_partial_auc`; 1.0 perfect, 0.18 random at 80%). It scores only
    the high-sensitivity part of the ROC curve, the operating region that matters for cancer
    triage."""
    _check_min_sensitivity(min_sensitivity)
    truth, score = _binary(y_true, probs, malignant)
    if not _both_classes(truth, "partial_auc"):
        return float("nan")
    return _raw_partial_auc(truth, score, min_sensitivity)


def log_loss_binary(y_true: object, probs: object, *,
                    malignant: Iterable[str] = DEFAULT_MALIGNANT) -> float:
    """Mean negative log-likelihood of the malignant/benign truth under ``p_malignant`` (clipped to
    ``[EPS, 1 - EPS]``). Defined for one-class windows too."""
    truth, score = _binary(y_true, probs, malignant)
    if truth.size == 0:
        return _undefined("log_loss", "no cases")
    return float(sklearn.metrics.log_loss(truth, np.clip(score, EPS, 1 - EPS), labels=[False, True]))


def log_loss_multiclass(y_true: object, probs: object) -> float:
    """Mean negative log-likelihood of the true class over all 8 classes (clipped, renormalised)."""
    y, p = check_inputs(y_true, probs)
    if y.size == 0:
        return _undefined("log_loss_multiclass", "no cases")
    clipped = np.clip(p, EPS, 1.0)
    return float(sklearn.metrics.log_loss(y, clipped / clipped.sum(axis=1, keepdims=True),
                                          labels=list(range(N_CLASSES))))


# --- multiclass ----------------------------------------------------------------------------------------


def confusion_matrix(y_true: object, probs: object) -> np.ndarray:
    """8x8 counts, rows = true class, columns = predicted (argmax) class, both in CLASSES order."""
    y, p = check_inputs(y_true, probs)
    if y.size == 0:  # sklearn rejects empty input; an empty window has an all-zero matrix
        return np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    return sklearn.metrics.confusion_matrix(y, p.argmax(axis=1), labels=list(range(N_CLASSES)))


def balanced_accuracy(y_true: object, probs: object) -> float:
    """Mean per-class recall of the argmax prediction over the classes present in ``y_true`` — the
    ISIC 2019 challenge score. (The official scorer counts an exact tie for the top probability as
    wrong; ``argmax`` picks the first tied class. Ties do not occur with real model outputs.)"""
    y, p = check_inputs(y_true, probs)
    if y.size == 0:
        return _undefined("balanced_accuracy", "no cases")
    cm = confusion_matrix(y, p)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def per_class_metrics(y_true: object, probs: object, *, min_sensitivity: float = 0.80) -> pd.DataFrame:
    """One row per class, one-vs-rest: ``class, name`` (full name), ``n`` (true cases), ``sensitivity``
    and ``specificity`` of the argmax prediction (so balanced accuracy is the mean sensitivity),
    ``auc``, raw ``pauc_80`` (partial AUC above ``min_sensitivity``, as ISIC) and ``ap`` (average
    precision) of that class's probability. Values undefined for a class (absent, or every case in
    it) are nan, with one warning naming those classes."""
    _check_min_sensitivity(min_sensitivity)
    y, p = check_inputs(y_true, probs)
    pred = p.argmax(axis=1)
    rows, undefined = [], []
    for k, code in enumerate(CLASSES):
        truth, called = y == k, pred == k
        n_pos, n_neg = int(truth.sum()), int((~truth).sum())
        ranked = n_pos > 0 and n_neg > 0
        if not ranked:
            undefined.append(code)
        rows.append({
            "class": code,
            "name": CLASS_NAMES[code],
            "n": n_pos,
            "sensitivity": float((called & truth).sum() / n_pos) if n_pos else float("nan"),
            "specificity": float((~called & ~truth).sum() / n_neg) if n_neg else float("nan"),
            "auc": float(sklearn.metrics.roc_auc_score(truth, p[:, k])) if ranked else float("nan"),
            "pauc_80": _raw_partial_auc(truth, p[:, k], min_sensitivity) if ranked else float("nan"),
            "ap": float(sklearn.metrics.average_precision_score(truth, p[:, k])) if ranked
            else float("nan"),
        })
    if undefined:
        warnings.warn(f"per-class AUC/AP undefined (class absent, or the only class present) for "
                      f"{', '.join(undefined)}; returning nan for them", UndefinedMetricWarning,
                      stacklevel=2)
    return pd.DataFrame(rows, columns=["class", "name", "n", "sensitivity", "specificity", "auc",
                                       "pauc_80", "ap"])


# --- calibration ---------------------------------------------------------------------------------------

CALIBRATION_KINDS = ("binary", "top_label")


def _calibration_inputs(y_true: object, probs: object, malignant: Iterable[str],
                        kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(outcome 0/1, predicted probability of that outcome)`` for a reliability analysis."""
    if kind == "binary":
        truth, score = _binary(y_true, probs, malignant)
        return truth.astype(np.float64), score
    if kind == "top_label":
        y, p = check_inputs(y_true, probs)
        return (p.argmax(axis=1) == y).astype(np.float64), p.max(axis=1)
    raise ValueError(f"kind must be one of {', '.join(CALIBRATION_KINDS)}, got {kind!r}")


def reliability_table(y_true: object, probs: object, *, malignant: Iterable[str] = DEFAULT_MALIGNANT,
                      n_bins: int = 10, kind: str = "binary") -> pd.DataFrame:
    """Equal-width bins of the predicted probability with ``bin_lower, bin_upper, count,
    mean_predicted, observed`` (empty bins have count 0 and nan means).

    ``kind="binary"``: predicted = ``p_malignant``, observed = share malignant.
    ``kind="top_label"``: predicted = top-class probability, observed = share where it is right.
    Bin ``i`` holds ``[i/n_bins, (i+1)/n_bins)``; the last bin also holds 1.0."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    outcome, predicted = _calibration_inputs(y_true, probs, malignant, kind)
    bins = np.minimum((predicted * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(bins, weights=predicted, minlength=n_bins) / count
        observed = np.bincount(bins, weights=outcome, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": count,
                         "mean_predicted": mean_pred, "observed": observed})


def expected_calibration_error(y_true: object, probs: object, *,
                               malignant: Iterable[str] = DEFAULT_MALIGNANT, n_bins: int = 10,
                               kind: str = "binary") -> float:
    """Count-weighted mean gap ``|observed - mean_predicted|`` over the bins of
    :func:`reliability_table` (0 = perfectly calibrated)."""
    table = reliability_table(y_true, probs, malignant=malignant, n_bins=n_bins, kind=kind)
    total = int(table["count"].sum())
    if total == 0:
        return _undefined("expected_calibration_error", "no cases")
    filled = table[table["count"] > 0]
    gap = (filled["observed"] - filled["mean_predicted"]).abs()
    return float((gap * filled["count"]).sum() / total)


# --- curves --------------------------------------------------------------------------------------------


def roc_curve_points(y_true: object, probs: object, *, malignant: Iterable[str] = DEFAULT_MALIGNANT,
                     cls: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of the ROC curve: malignant vs benign on ``p_malignant`` by
    default, or class ``cls`` vs the rest on its probability. Empty arrays (and a warning) when the
    curve is undefined because only one outcome is present."""
    if cls is None:
        truth, score = _binary(y_true, probs, malignant)
        name = "ROC curve (malignant vs benign)"
    else:
        k = class_index(cls)
        y, p = check_inputs(y_true, probs)
        truth, score, name = y == k, p[:, k], f"ROC curve ({cls} vs rest)"
    if not _both_classes(truth, name):
        empty = np.array([], dtype=np.float64)
        return empty, empty, empty
    return sklearn.metrics.roc_curve(truth, score)


# --- headline numbers ----------------------------------------------------------------------------------


def summary(y_true: object, probs: object, *, threshold: float = 0.5,
            malignant: Iterable[str] = DEFAULT_MALIGNANT) -> dict[str, float | int]:
    """Every headline number of a window, as plain floats/ints (JSON-able; undefined ones are nan):
    ``accuracy, precision, recall, f1, fnr, specificity`` (at ``threshold``), ``auroc, pauc_80,
    log_loss`` (malignant vs benign), ``log_loss_multiclass, balanced_accuracy, ece`` (binary, 10
    bins), ``n, n_malignant``. Undefined metrics are reported in one warning."""
    malignant = tuple(malignant)
    y, p = check_inputs(y_true, probs)
    _check_threshold(threshold)
    kw = {"threshold": threshold, "malignant": malignant}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        out: dict[str, float | int] = {
            "accuracy": accuracy(y, p, **kw),
            "precision": precision(y, p, **kw),
            "recall": recall(y, p, **kw),
            "f1": f1(y, p, **kw),
            "fnr": false_negative_rate(y, p, **kw),
            "specificity": specificity(y, p, **kw),
            "auroc": auroc(y, p, malignant=malignant),
            "pauc_80": partial_auc(y, p, malignant=malignant),
            "log_loss": log_loss_binary(y, p, malignant=malignant),
            "log_loss_multiclass": log_loss_multiclass(y, p),
            "balanced_accuracy": balanced_accuracy(y, p),
            "ece": expected_calibration_error(y, p, malignant=malignant),
        }
    others = [w for w in caught if not issubclass(w.category, UndefinedMetricWarning)]
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    n_mal = int(np.asarray(malignant_mask(malignant))[y].sum())
    undefined = [k for k, v in out.items() if math.isnan(v)]
    if undefined:
        warnings.warn(f"undefined on this window (n={len(y)}, malignant={n_mal}): "
                      f"{', '.join(undefined)}; reported as nan", UndefinedMetricWarning, stacklevel=2)
    out["n"] = len(y)
    out["n_malignant"] = n_mal
    return out
