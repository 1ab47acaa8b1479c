"""The champion/challenger gate: a candidate and the active version it would replace, side by side.

:func:`compare_split` scores both on one evaluation split (the recent hold-out, the original test
split), each at its own operating threshold, with a paired, stratified bootstrap confidence interval
for the difference in AUROC and sensitivity (:func:`paired_bootstrap`). The :class:`GateReport` goes
into the candidate's card (``gate``) and the job's result; :func:`gate_table` lays it out for the
Models page and ``skinlesion jobs show``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import rankdata

from skinlesion import metrics
from skinlesion.errors import DataError
from skinlesion.schema import DEFAULT_MALIGNANT, class_index, malignant_mask

HOLDOUT = "recent hold-out"
ORIGINAL_TEST = "original test"
#: metrics shown side by side in the gate (the card's headline metrics)
GATE_METRICS: tuple[str, ...] = ("auroc", "recall", "specificity", "precision", "balanced_accuracy",
                                 "log_loss", "ece")
#: metrics whose candidate-minus-active difference gets a bootstrap confidence interval
GATE_DIFFERENCES: tuple[str, ...] = ("auroc", "recall")


class MetricDelta(BaseModel):
    """Candidate minus active on one metric, with its bootstrap confidence interval and a verdict:
    ``better`` / ``worse`` when the interval excludes 0, ``no clear difference`` otherwise,
    ``undefined`` when the split cannot give the metric (one class only)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    candidate: float | None
    active: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: Literal["better", "worse", "no clear difference", "undefined"]


class SplitComparison(BaseModel):
    """Both models on one evaluation split: headline metrics side by side and the differences."""

    model_config = ConfigDict(frozen=True)

    split: str
    n: int
    n_malignant: int
    candidate: dict[str, float | None]
    active: dict[str, float | None]
    deltas: list[MetricDelta]
    note: str = ""


class GateReport(BaseModel):
    """The champion/challenger comparison of a candidate with the active model it would replace."""

    model_config = ConfigDict(frozen=True)

    candidate: str
    active: str
    resamples: int
    seed: int
    confidence: float = 0.95
    splits: list[SplitComparison]
    holdout_fingerprint: str | None = None
    #: the operating thresholds compared: the candidate's own, and the active version's as served
    #: (its tuned threshold where the route sets one, else its card's)
    thresholds: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> str:
        """One line per split and difference, e.g. ``recent hold-out: AUROC +0.031 [−0.004,
        +0.066] no clear difference``."""
        lines = []
        for split in self.splits:
            if split.note:
                lines.append(f"{split.split} (n={split.n}): {split.note}")
            for d in split.deltas:
                if d.difference is None:
                    continue
                lines.append(f"{split.split} (n={split.n}): {d.metric} {d.difference:+.3f} "
                             f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] {d.verdict}")
        return "\n".join(lines)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _auroc_rows(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """AUROC of each row of ``scores`` whose first ``n_pos`` columns are the positives
    (Mann-Whitney U from mid-ranks, so ties count one half)."""
    ranks = rankdata(scores, axis=-1)
    n_neg = scores.shape[-1] - n_pos
    return (ranks[..., :n_pos].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def paired_bootstrap(truth: np.ndarray, candidate: np.ndarray, active: np.ndarray, *,
                     thresholds: tuple[float, float], resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{metric: (difference, ci_low, ci_high)}`` of candidate minus active for ``auroc`` and
    ``recall`` (sensitivity at each model's threshold) on the same cases.

    Paired: each resample draws the same cases for both models. Stratified: malignant and benign
    cases are resampled separately (as pROC's default bootstrap), so every resample has both
    classes and the AUROC is always defined. Percentile interval; seeded, so repeatable. Needs
    at least one malignant and one benign case (DataError otherwise)."""
    truth = np.asarray(truth, dtype=bool)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    if len(pos) == 0 or len(neg) == 0:
        raise DataError("a bootstrap of AUROC and sensitivity needs malignant and benign cases",
                        field="truth")
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(pos, size=(resamples, len(pos))),
                           rng.choice(neg, size=(resamples, len(neg)))], axis=1)
    original = np.concatenate([pos, neg])
    out: dict[str, tuple[float, float, float]] = {}
    tail = (1 - confidence) / 2 * 100
    for metric in GATE_DIFFERENCES:
        values = []
        for scores, threshold in zip((candidate, active), thresholds, strict=True):
            scores = np.asarray(scores, dtype=float)
            if metric == "auroc":
                values.append((_auroc_rows(scores[original], len(pos)),
                               _auroc_rows(scores[rows], len(pos))))
            else:
                values.append(((scores[pos] >= threshold).mean(),
                               (scores[rows[:, :len(pos)]] >= threshold).mean(axis=1)))
        point = float(values[0][0] - values[1][0])
        low, high = np.percentile(values[0][1] - values[1][1], [tail, 100 - tail])
        out[metric] = (point, float(low), float(high))
    return out


def _verdict(low: float, high: float) -> Literal["better", "worse", "no clear difference"]:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no clear difference"


def compare_split(name: str, diagnoses: pd.Series, candidate: np.ndarray, active: np.ndarray, *,
                  thresholds: tuple[float, float], resamples: int = 1000, seed: int = 0,
                  malignant: tuple[str, ...] = DEFAULT_MALIGNANT) -> SplitComparison:
    """Candidate and active (class probabilities of the same cases, each at its own threshold) on
    one split: :data:`GATE_METRICS` side by side and :func:`paired_bootstrap` differences."""
    y = np.array([class_index(d) for d in diagnoses], dtype=int)
    truth = np.asarray(malignant_mask(malignant))[y] if len(y) else np.zeros(0, dtype=bool)
    n_mal = int(truth.sum())
    if len(y) == 0:
        return SplitComparison(split=name, n=0, n_malignant=0, candidate={}, active={}, deltas=[],
                               note="no cases: nothing to compare on")
    sides = [{m: _finite(v) for m, v in metrics.summary(
        y, probs, threshold=t, malignant=malignant).items() if m in GATE_METRICS}
        for probs, t in zip((candidate, active), thresholds, strict=True)]
    p_mal = [metrics.p_malignant(probs, malignant) for probs in (candidate, active)]
    if n_mal == 0 or n_mal == len(y):
        deltas = [MetricDelta(metric=m, candidate=sides[0].get(m), active=sides[1].get(m),
                              difference=None, ci_low=None, ci_high=None, verdict="undefined")
                  for m in GATE_DIFFERENCES]
        return SplitComparison(split=name, n=len(y), n_malignant=n_mal, candidate=sides[0],
                               active=sides[1], deltas=deltas,
                               note="needs malignant and benign cases to compare AUROC and "
                                    "sensitivity")
    boot = paired_bootstrap(truth, p_mal[0], p_mal[1], thresholds=thresholds, resamples=resamples,
                            seed=seed)
    deltas = [MetricDelta(metric=m, candidate=sides[0].get(m), active=sides[1].get(m),
                          difference=diff, ci_low=low, ci_high=high, verdict=_verdict(low, high))
              for m, (diff, low, high) in boot.items()]
    return SplitComparison(split=name, n=len(y), n_malignant=n_mal, candidate=sides[0],
                           active=sides[1], deltas=deltas)


def not_compared(name: str, note: str) -> SplitComparison:
    """A split the gate could not compare the two models on, saying why (``note``)."""
    return SplitComparison(split=name, n=0, n_malignant=0, candidate={}, active={}, deltas=[],
                           note=note)


def gate_table(report: GateReport | dict) -> pd.DataFrame:
    """The gate as one row per split and metric: ``split, n, metric, candidate, active,
    difference, ci_low, ci_high, verdict`` (difference columns empty for metrics shown without
    an interval) — for the Models page and ``skinlesion jobs show``."""
    report = GateReport.model_validate(report)
    rows = []
    for split in report.splits:
        deltas = {d.metric: d for d in split.deltas}
        for metric in GATE_METRICS:
            if metric not in split.candidate:
                continue
            d = deltas.get(metric)
            rows.append({"split": split.split, "n": split.n, "metric": metric,
                         "candidate": split.candidate.get(metric), "active": split.active.get(metric),
                         "difference": d.difference if d else None, "ci_low": d.ci_low if d else None,
                         "ci_high": d.ci_high if d else None, "verdict": d.verdict if d else ""})
    return pd.DataFrame(rows, columns=["split", "n", "metric", "candidate", "active", "difference",
                                       "ci_low", "ci_high", "verdict"])
