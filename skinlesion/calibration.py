"""Post-hoc calibration and the operating threshold: pure numpy/scipy.

Temperature scaling (Guo et al., 2017) divides a trained network's logits by one scalar ``T`` fitted
on the validation split, so the predicted probabilities match observed frequencies without changing
the ranking (AUROC and argmax are unchanged). The operating threshold is then chosen on the
calibrated validation ``p_malignant`` to reach a target sensitivity: missing a cancer costs more
than an extra biopsy, so sensitivity is fixed first and specificity is what is left.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.optimize
import scipy.special

#: Search range of ``T``. Outside it the model is badly broken rather than mis-calibrated.
T_MIN, T_MAX = 0.05, 20.0


def _check_logits(logits: object) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (n, n_classes) with n_classes >= 2, got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values")
    return z


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of labels ``y`` under ``softmax(z / temperature)``."""
    log_p = scipy.special.log_softmax(z / temperature, axis=1)
    return float(-log_p[np.arange(len(y)), y].mean())


def fit_temperature(logits: object, y: object) -> float:
    """The temperature ``T > 0`` minimising the NLL of integer labels ``y`` under
    ``softmax(logits / T)``.

    Optimised over ``log T`` (bounded to ``[T_MIN, T_MAX]``) so the search is symmetric between
    sharpening and softening. ``T > 1`` means the network was over-confident. Warns when the optimum
    sits on a bound (the logits barely relate to the labels, or are separated perfectly)."""
    z = _check_logits(logits)
    labels = np.asarray(y)
    if labels.shape != (z.shape[0],):
        raise ValueError(f"y must have shape ({z.shape[0]},) to match the logits, got {labels.shape}")
    if z.shape[0] == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= z.shape[1]:
        raise ValueError(f"y must hold integer class indices 0..{z.shape[1] - 1}")
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    result = scipy.optimize.minimize_scalar(lambda log_t: _nll(z, labels, math.exp(log_t)),
                                            bounds=(lo, hi), method="bounded",
                                            options={"xatol": 1e-6})
    temperature = math.exp(float(result.x))
    if min(result.x - lo, hi - result.x) < 1e-3:
        warnings.warn(f"fitted temperature {temperature:.3g} is at the edge of the search range "
                      f"[{T_MIN}, {T_MAX}]; check that the validation logits and labels belong "
                      "together", RuntimeWarning, stacklevel=2)
    return temperature


def apply_temperature(logits: object, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``, computed stably (max-shifted)."""
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return scipy.special.softmax(_check_logits(logits) / temperature, axis=1)


def binary_scores(is_malignant: object, p_malignant: object) -> tuple[np.ndarray, np.ndarray]:
    """The ground truth and the malignant score as validated arrays: 1-d, same length, boolean
    truth, finite scores (ValueError naming what is wrong otherwise)."""
    truth = np.asarray(is_malignant)
    score = np.asarray(p_malignant, dtype=np.float64)
    if truth.dtype != np.bool_:
        raise ValueError(f"is_malignant must be a boolean array, got dtype {truth.dtype}")
    if truth.ndim != 1 or truth.shape != score.shape:
        raise ValueError(f"is_malignant {truth.shape} and p_malignant {score.shape} must be 1-d arrays "
                         "of the same length")
    if not np.all(np.isfinite(score)):
        raise ValueError("p_malignant contains NaN or infinite values")
    return truth, score


def threshold_for_sensitivity(is_malignant: object, p_malignant: object,
                              target: float = 0.90) -> float:
    """The largest threshold ``t`` at which calling ``p_malignant >= t`` malignant keeps the
    sensitivity (share of malignant cases called) at or above ``target``.

    The result is always one of the malignant cases' scores: the k-th highest, with
    ``k = ceil(target * n_malignant)``. Ties: every case scoring exactly ``t`` is called malignant
    (the comparison is inclusive, as in :mod:`skinlesion.metrics`), so tied malignant cases can lift
    the achieved sensitivity above ``target``; any larger threshold would fall below it. Benign cases
    do not move the threshold; they only decide the specificity that comes with it.
    Raises ValueError without malignant cases (sensitivity is undefined)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target}")
    truth, score = binary_scores(is_malignant, p_malignant)
    positives = np.sort(score[truth])[::-1]
    if positives.size == 0:
        raise ValueError("no malignant case in the data: the sensitivity threshold cannot be chosen; "
                         "use a validation split that contains malignant lesions")
    # round first so that e.g. 0.9 * 10 = 9.000000000000002 asks for 9 cases, not 10
    k = math.ceil(round(target * positives.size, 9))
    return float(positives[k - 1])
