"""Post-hoc calibration, the balanced diagnosis rule and the operating threshold: pure numpy/scipy.

Temperature scaling (Guo et al., 2017) divides a trained network's logits by one scalar ``T`` fitted
on the validation split, so the predicted probabilities match observed frequencies without changing
the ranking (AUROC and argmax are unchanged). One temperature cannot correct the class priors,
though: a network trained with class-balanced loss weights learns ``p(c|x)`` times the weight of
``c`` and over-states the rare classes. :class:`Calibrator` is the family ``softmax(scale * z +
bias)`` with one (scale, bias) per class, fitted by NLL (:func:`fit_calibrator`):

- ``temperature``: one scale ``1/T``, no bias;
- ``bcts``: bias-corrected temperature scaling (Alexandari et al., 2020): one ``1/T`` and a bias
  per class, which re-learns the class priors;
- ``vector``: vector scaling (Guo et al., 2017): a scale and a bias per class.

:func:`out_of_fold_probs` scores a method on data it was not fitted on (folds of whole lesions), so
methods with more parameters are compared fairly. Probabilities calibrated to the population make
the argmax favour the common classes; the Bayes rule for *balanced* accuracy is the argmax of
``p(c|x) / prior(c)`` (:func:`uniform_prior_probs`: the probabilities the same evidence would give
if every class were equally common). The operating threshold is then chosen on the calibrated
validation ``p_malignant`` to reach a target sensitivity: missing a cancer costs more than an extra
biopsy, so sensitivity is fixed first and specificity is what is left.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

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
    labels = _check_labels(y, z.shape[0], z.shape[1])
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


#: Calibration methods :func:`fit_calibrator` fits (see the module docstring).
METHODS = ("temperature", "bcts", "vector")


def _check_labels(y: object, n: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match the logits, got {labels.shape}")
    if n == 0:
        raise ValueError("cannot fit a calibration on zero samples")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"y must hold integer class indices 0..{n_classes - 1}")
    return labels


@dataclass(frozen=True)
class Calibrator:
    """Calibrated probabilities ``softmax(scale * logits + bias)``, one ``scale`` (> 0) and one
    ``bias`` per class; ``method`` names how it was fitted (for the card)."""

    method: str
    scale: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        scale = np.asarray(self.scale, dtype=np.float64)
        bias = np.asarray(self.bias, dtype=np.float64)
        if scale.ndim != 1 or scale.shape != bias.shape or scale.size < 2:
            raise ValueError(f"scale {scale.shape} and bias {bias.shape} must be 1-d, one entry per "
                             "class (at least 2)")
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(bias)) and np.all(scale > 0)):
            raise ValueError("calibrator scale must be positive and finite, bias finite")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "bias", bias)

    @classmethod
    def identity(cls, n_classes: int) -> Calibrator:
        return cls("identity", np.ones(n_classes), np.zeros(n_classes))

    @property
    def temperature(self) -> float:
        """The temperature this calibrator corresponds to: ``1 / scale`` (geometric mean over the
        classes for vector scaling)."""
        return float(math.exp(-np.log(self.scale).mean()))

    def logits(self, logits: object) -> np.ndarray:
        z = _check_logits(logits)
        if z.shape[1] != self.scale.size:
            raise ValueError(f"logits have {z.shape[1]} classes, the calibrator {self.scale.size}")
        return z * self.scale + self.bias

    def probs(self, logits: object) -> np.ndarray:
        """Calibrated probabilities of ``logits`` (n, n_classes)."""
        return scipy.special.softmax(self.logits(logits), axis=1)

    def to_dict(self) -> dict:
        return {"method": self.method, "temperature": self.temperature,
                "scale": self.scale.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibrator:
        return cls(str(data["method"]), np.asarray(data["scale"]), np.asarray(data["bias"]))


def _nll_and_grad(params: np.ndarray, z: np.ndarray, onehot: np.ndarray, method: str
                  ) -> tuple[float, np.ndarray]:
    """Mean NLL of ``softmax(scale * z + bias)`` and its gradient in the method's parameters:
    ``bcts`` = (log T, bias), ``vector`` = (log scale, bias)."""
    k = z.shape[1]
    if method == "bcts":
        scale = np.full(k, math.exp(-params[0]))
        bias = params[1:]
    else:
        scale = np.exp(params[:k])
        bias = params[k:]
    s = z * scale + bias
    log_p = scipy.special.log_softmax(s, axis=1)
    n = z.shape[0]
    nll = float(-(log_p * onehot).sum() / n)
    d_s = (np.exp(log_p) - onehot) / n
    d_bias = d_s.sum(axis=0)
    d_scale = (d_s * z).sum(axis=0)  # dNLL / d scale_c
    if method == "bcts":
        return nll, np.concatenate([[-(d_scale * scale).sum()], d_bias])
    return nll, np.concatenate([d_scale * scale, d_bias])


def fit_calibrator(logits: object, y: object, method: str = "bcts") -> Calibrator:
    """The :class:`Calibrator` of ``method`` (one of :data:`METHODS`) minimising the NLL of integer
    labels ``y`` under ``softmax(scale * logits + bias)``.

    ``temperature`` is :func:`fit_temperature`. ``bcts`` and ``vector`` start from it and are
    optimised with L-BFGS on the exact gradient; their biases are centred (softmax ignores a common
    offset). A per-class bias needs every class in ``y`` (a class never seen would be pushed to
    probability 0): ValueError naming the missing classes otherwise."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    z = _check_logits(logits)
    labels = _check_labels(y, z.shape[0], z.shape[1])
    temperature = fit_temperature(z, labels)
    k = z.shape[1]
    if method == "temperature":
        return Calibrator(method, np.full(k, 1.0 / temperature), np.zeros(k))
    missing = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
    if missing.size:
        raise ValueError(f"{method} calibration needs every class among the labels; missing class "
                         f"indices {missing.tolist()} (use temperature calibration, or a "
                         "validation split with every class)")
    onehot = np.eye(k)[labels]
    start = (np.concatenate([[math.log(temperature)], np.zeros(k)]) if method == "bcts"
             else np.concatenate([np.full(k, -math.log(temperature)), np.zeros(k)]))
    bounds = [(math.log(T_MIN), math.log(T_MAX))] if method == "bcts" else \
        [(-math.log(T_MAX), -math.log(T_MIN))] * k
    result = scipy.optimize.minimize(_nll_and_grad, start, args=(z, onehot, method), jac=True,
                                     method="L-BFGS-B", bounds=bounds + [(None, None)] * k,
                                     options={"maxiter": 2000, "gtol": 1e-9})
    if method == "bcts":
        scale, bias = np.full(k, math.exp(-result.x[0])), result.x[1:]
    else:
        scale, bias = np.exp(result.x[:k]), result.x[k:]
    return Calibrator(method, scale, bias - bias.mean())


def lesion_folds(groups: object, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """A fold number 0..n_folds-1 per row, whole groups (lesions) to one fold, groups dealt to the
    folds in a seeded random order."""
    values = np.asarray(groups).astype(str)
    if values.ndim != 1:
        raise ValueError(f"groups must be 1-d (one lesion id per row), got shape {values.shape}")
    unique, codes = np.unique(values, return_inverse=True)
    if not 2 <= n_folds <= unique.size:
        raise ValueError(f"n_folds must lie in 2..{unique.size} (the number of groups), "
                         f"got {n_folds}")
    order = np.random.default_rng(seed).permutation(unique.size)
    fold_of_group = np.empty(unique.size, dtype=np.int64)
    fold_of_group[order] = np.arange(unique.size) % n_folds
    return fold_of_group[codes]


def out_of_fold_probs(logits: object, y: object, groups: object, method: str, *,
                      n_folds: int = 5, seed: int = 0, balanced: bool = False) -> np.ndarray:
    """Every row's probabilities under ``method`` fitted on the other folds (:func:`lesion_folds`):
    how the method does on data it was not fitted on, for comparing methods on one split.
    ``balanced``: re-weighted to a uniform prior (:func:`uniform_prior_probs`) with the class prior
    of the other folds, i.e. the scores of the balanced diagnosis rule."""
    z = _check_logits(logits)
    labels = _check_labels(y, z.shape[0], z.shape[1])
    folds = lesion_folds(groups, n_folds, seed)
    if folds.size != labels.size:
        raise ValueError(f"groups has {folds.size} labels but there are {labels.size} rows")
    out = np.empty_like(z)
    for f in range(n_folds):
        held = folds == f
        probs = fit_calibrator(z[~held], labels[~held], method).probs(z[held])
        out[held] = (uniform_prior_probs(probs, class_prior(labels[~held], z.shape[1])) if balanced
                     else probs)
    return out


def class_prior(y: object, n_classes: int) -> np.ndarray:
    """Class frequencies of integer labels ``y`` (every class must occur: a balanced rule divides by
    them)."""
    labels = np.asarray(y)
    labels = _check_labels(labels, labels.shape[0] if labels.ndim else -1, n_classes)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if np.any(counts == 0):
        raise ValueError(f"class indices {np.flatnonzero(counts == 0).tolist()} never occur; a "
                         "class prior needs every class")
    return counts / counts.sum()


def uniform_prior_probs(probs: object, prior: object) -> np.ndarray:
    """``probs`` (calibrated to a population whose class frequencies are ``prior``) re-weighted to
    a uniform prior: ``p(c|x) / prior(c)``, normalised. Its argmax is the Bayes rule for balanced
    accuracy (the mean of per-class recalls)."""
    p = np.asarray(probs, dtype=np.float64)
    pi = np.asarray(prior, dtype=np.float64)
    if p.ndim != 2 or pi.shape != (p.shape[1],):
        raise ValueError(f"probs must be (n, n_classes) and prior (n_classes,), got {p.shape} and "
                         f"{pi.shape}")
    if not (np.all(np.isfinite(pi)) and np.all(pi > 0)):
        raise ValueError("prior must be positive and finite for every class")
    w = p / pi
    return w / w.sum(axis=1, keepdims=True)


def group_balanced_probs(probs: object, prior: object, in_group: object) -> np.ndarray:
    """``probs`` with the probability of a group of classes (``in_group``, a boolean mask: the
    malignant classes) kept and, inside the group and inside the rest, the classes re-weighted to a
    uniform prior (:func:`uniform_prior_probs` within each part). The group's probability stays
    calibrated to the population (its sum, e.g. p_malignant, is unchanged) while the argmax names
    the rarer classes of each part as often as the balanced rule would: the probabilities a file
    read by a balanced-accuracy scorer should carry without giving up the calibration of the group."""
    p = np.asarray(probs, dtype=np.float64)
    pi = np.asarray(prior, dtype=np.float64)
    mask = np.asarray(in_group, dtype=bool)
    if p.ndim != 2 or pi.shape != (p.shape[1],) or not (np.all(np.isfinite(pi)) and np.all(pi > 0)):
        raise ValueError(f"probs must be (n, n_classes) and prior (n_classes,) positive and finite, "
                         f"got {p.shape} and {pi.shape}")
    if mask.shape != (p.shape[1],) or mask.all() or not mask.any():
        raise ValueError(f"in_group must mark some but not all of the {p.shape[1]} classes, got "
                         f"{mask.tolist()}")
    out = np.zeros_like(p)
    for part in (mask, ~mask):
        w = p[:, part] / pi[part]
        total = w.sum(axis=1, keepdims=True)
        mass = p[:, part].sum(axis=1, keepdims=True)
        out[:, part] = np.divide(mass * w, total, out=np.zeros_like(w), where=total > 0)  # no mass: 0
    return out


#: How the shown diagnosis is read off the calibrated probabilities: the most probable class, or the
#: balanced rule (the most probable class under a uniform class prior, :func:`uniform_prior_probs`).
DIAGNOSIS_RULES = ("argmax", "balanced")


@dataclass(frozen=True)
class DiagnosisRule:
    """How a version names its diagnosis from its calibrated probabilities: ``argmax``, or
    ``balanced`` with the ``prior`` (class frequencies) the probabilities are calibrated to."""

    rule: str = "argmax"
    prior: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rule not in DIAGNOSIS_RULES:
            raise ValueError(f"diagnosis rule must be one of {', '.join(DIAGNOSIS_RULES)}, "
                             f"got {self.rule!r}")
        if (self.rule == "balanced") != (self.prior is not None):
            raise ValueError("the balanced rule needs the class prior; argmax takes none")
        if self.prior is not None:
            prior = np.asarray(self.prior, dtype=np.float64)
            if prior.ndim != 1 or not (np.all(np.isfinite(prior)) and np.all(prior > 0)):
                raise ValueError("the class prior must be positive and finite for every class")
            object.__setattr__(self, "prior", prior / prior.sum())

    def scores(self, probs: object) -> np.ndarray:
        """The scores whose argmax is the diagnosis (``probs`` themselves for ``argmax``), of one
        answer (n_classes,) or of several (n, n_classes)."""
        p = np.asarray(probs, dtype=np.float64)
        if self.prior is None:
            return p
        return uniform_prior_probs(p.reshape(-1, p.shape[-1]), self.prior).reshape(p.shape)

    def file_probs(self, probs: object, malignant: object) -> np.ndarray:
        """The probabilities a predictions file carries, (n, n_classes): ``probs`` themselves for
        ``argmax``; for ``balanced``, :func:`group_balanced_probs` with the ``malignant`` mask, so a
        scorer's argmax comes closer to the shown diagnosis while p_malignant (the sum of the
        malignant columns) stays the calibrated one."""
        p = np.asarray(probs, dtype=np.float64)
        if self.prior is None:
            return p
        return group_balanced_probs(p, self.prior, malignant)

    def index(self, probs: object) -> np.ndarray:
        """The diagnosis (class index) of one answer (n_classes,) or of each row of ``probs``
        (n, n_classes)."""
        return self.scores(probs).argmax(axis=-1)

    def to_dict(self, classes: tuple[str, ...] | list[str]) -> dict:
        out: dict = {"rule": self.rule}
        if self.prior is not None:
            out["class_prior"] = dict(zip(classes, self.prior.tolist(), strict=True))
        return out

    @classmethod
    def from_dict(cls, data: Mapping | None, classes: tuple[str, ...] | list[str]) -> DiagnosisRule:
        """The rule a card states (``diagnosis_rule``); ``argmax`` when it states none."""
        if not data:
            return cls()
        prior = data.get("class_prior")
        return cls(str(data["rule"]), None if prior is None else np.array([prior[c] for c in classes]))


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
