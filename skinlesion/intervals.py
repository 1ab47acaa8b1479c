"""Honest numbers: metrics per image and per lesion, each with a 95 % bootstrap interval clustered by
lesion.

Layer 1 (DESIGN.md): numpy only, on top of :mod:`skinlesion.metrics`.

Images of one lesion are not independent cases: a follow-up series of five images of one naevus is
one patient decision, and its five answers are alike. A plain bootstrap over images would treat
them as five cases and give too narrow an interval. So the bootstrap resamples *lesions* with
replacement and keeps all images of each drawn lesion (a cluster bootstrap); the per-image metric is
computed on that resample. The per-lesion numbers score one answer per lesion (the mean of its
images' probabilities, labelled with its majority diagnosis), which is what a clinician deciding on
the lesion would get; their bootstrap resamples the same lesions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from skinlesion import metrics
from skinlesion.schema import DEFAULT_MALIGNANT

#: Bins of the calibration error the reference targets are stated in.
ECE_BINS = 15
#: Specificity at which the reference's "sensitivity at specificity" target is read.
MIN_SPECIFICITY = 0.80

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A metric's value with a percentile bootstrap interval (``low``..``high`` at ``level``);
    ``n_boot`` resamples, of which ``n_defined`` gave a defined (non-nan) value."""

    value: float
    low: float
    high: float
    level: float
    n_boot: int
    n_defined: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


def cluster_codes(groups: object) -> np.ndarray:
    """Cluster labels (lesion ids, any hashable values) as integer codes 0..k-1 (order of first
    appearance)."""
    values = np.asarray(groups, dtype=object)
    if values.ndim != 1:
        raise ValueError(f"groups must be 1-d (one lesion id per image), got shape {values.shape}")
    _, first, codes = np.unique(values.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber clusters by first appearance
    return order[codes]


def resample_indices(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one cluster-bootstrap resample: as many clusters as there are, drawn with
    replacement, each bringing all of its rows."""
    n_clusters = int(codes.max()) + 1 if codes.size else 0
    drawn = np.bincount(rng.integers(n_clusters, size=n_clusters), minlength=n_clusters)
    return np.repeat(np.arange(codes.size), drawn[codes])


def cluster_bootstrap(metric: Metric, y_true: object, probs: object, groups: object, *,
                      n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """``metric(y, probs)`` on all rows with a percentile interval from ``n_boot`` resamples of the
    clusters ``groups`` (one label per row, e.g. lesion ids). Resamples on which the metric is
    undefined (nan, e.g. no malignant case drawn) are left out and counted in ``n_defined``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    y, p = metrics.check_inputs(y_true, probs)
    codes = cluster_codes(groups)
    if codes.size != y.size:
        raise ValueError(f"groups has {codes.size} labels but there are {y.size} rows")
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        value = float(metric(y, p))
        draws = np.array([metric(y[idx], p[idx]) for idx in
                          (resample_indices(codes, rng) for _ in range(n_boot))], dtype=np.float64)
    defined = draws[~np.isnan(draws)]
    if defined.size == 0:
        low = high = float("nan")
    else:
        low, high = np.quantile(defined, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Interval(value=value, low=float(low), high=float(high), level=level, n_boot=n_boot,
                    n_defined=int(defined.size))


def lesion_answers(y_true: object, probs: object, groups: object) -> tuple[np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """One answer per lesion: ``(y, probs, lesion codes)`` with the mean of its images'
    probabilities and its most frequent true class (ties: the lower class index), lesions in order
    of first appearance."""
    y, p = metrics.check_inputs(y_true, probs)
    codes = cluster_codes(groups)
    if codes.size != y.size:
        raise ValueError(f"groups has {codes.size} labels but there are {y.size} rows")
    k = int(codes.max()) + 1 if codes.size else 0
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    mean = np.stack([np.bincount(codes, weights=p[:, c], minlength=k) for c in range(p.shape[1])],
                    axis=1) / np.maximum(counts, 1)[:, None]
    votes = np.zeros((k, p.shape[1]), dtype=np.int64)
    np.add.at(votes, (codes, y), 1)
    return votes.argmax(axis=1), mean / mean.sum(axis=1, keepdims=True), np.arange(k)


def sensitivity_at_specificity(y_true: object, probs: object, *,
                               malignant: Iterable[str] = DEFAULT_MALIGNANT,
                               min_specificity: float = MIN_SPECIFICITY) -> float:
    """The highest malignant sensitivity any threshold on ``p_malignant`` reaches while keeping
    specificity at least ``min_specificity`` (read off the ROC curve; nan when one outcome is
    missing)."""
    fpr, tpr, _ = metrics.roc_curve_points(y_true, probs, malignant=malignant)
    if fpr.size == 0:
        return float("nan")
    ok = fpr <= 1.0 - min_specificity + 1e-12
    return float(tpr[ok].max())


def report_metrics(threshold: float, malignant: Iterable[str] = DEFAULT_MALIGNANT
                   ) -> dict[str, Metric]:
    """The metrics every reference number is reported with, at the operating ``threshold``."""
    malignant = tuple(malignant)
    kw = {"malignant": malignant}
    return {
        "auroc": lambda y, p: metrics.auroc(y, p, **kw),
        "pauc_80": lambda y, p: metrics.partial_auc(y, p, **kw),
        "balanced_accuracy": metrics.balanced_accuracy,
        "sensitivity": lambda y, p: metrics.recall(y, p, threshold=threshold, **kw),
        "specificity": lambda y, p: metrics.specificity(y, p, threshold=threshold, **kw),
        "sensitivity_at_specificity_80": lambda y, p: sensitivity_at_specificity(y, p, **kw),
        "ece_15": lambda y, p: metrics.expected_calibration_error(y, p, n_bins=ECE_BINS, **kw),
        "log_loss_multiclass": metrics.log_loss_multiclass,
    }


def honest_report(y_true: object, probs: object, groups: object, *, threshold: float,
                  malignant: Iterable[str] = DEFAULT_MALIGNANT, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0, extra: Mapping[str, Metric] | None = None,
                  only: Iterable[str] | None = None) -> dict:
    """Every reported metric (:func:`report_metrics`, plus ``extra`` ones; only those named in
    ``only`` when given) per image and per lesion with its cluster-bootstrap interval:
    ``{"per_image": {metric: Interval dict}, "per_lesion": {...}, "n_images", "n_lesions",
    "interval": "..."}`` (JSON-able)."""
    y, p = metrics.check_inputs(y_true, probs)
    ly, lp, lcodes = lesion_answers(y, p, groups)
    chosen = {**report_metrics(threshold, malignant), **(extra or {})}
    if only is not None:
        wanted = list(only)
        unknown = sorted(set(wanted) - set(chosen))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in wanted}
    out: dict = {"n_images": int(y.size), "n_lesions": int(ly.size),
                 "interval": f"{level:.0%} percentile bootstrap over lesions ({n_boot} resamples, "
                             f"seed {seed}); per lesion = mean probability of its images"}
    for what, (yy, pp, gg) in {"per_image": (y, p, groups), "per_lesion": (ly, lp, lcodes)}.items():
        out[what] = {name: cluster_bootstrap(fn, yy, pp, gg, n_boot=n_boot, level=level,
                                             seed=seed).to_dict() for name, fn in chosen.items()}
    return out


def format_interval(entry: Mapping[str, float]) -> str:
    """``0.912 (0.890-0.931)`` from an :meth:`Interval.to_dict`; ``n/a`` when undefined."""
    if entry["value"] is None or math.isnan(entry["value"]):
        return "n/a"
    return f"{entry['value']:.3f} ({entry['low']:.3f}–{entry['high']:.3f})"
