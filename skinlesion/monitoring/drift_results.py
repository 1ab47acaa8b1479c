"""What drift says: a feature's verdict (:class:`FeatureDrift`), a window's result
(:class:`DriftResult`) and a version's null distribution (:class:`DriftNull`), each with its
JSON form for stored snapshots and the version's folder. Plain data: the judging is in
:mod:`skinlesion.monitoring.drift`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skinlesion.monitoring.drift_features import GROUPS, CategoricalSummary, NumericSummary, Summary

#: Below this many answers in a window no feature is judged ("not enough answers").
MIN_ANSWERS = 50
#: Null replicates per window size, and the quantile of the null that bounds a feature's distance.
NULL_REPLICATES = 200
NULL_QUANTILE = 0.99


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict for one feature.

    ``stattest`` names the distance Evidently computed and ``score`` its value; ``null_bound`` is
    the version's null bound at this window's size (NaN without a stored null), ``effect_size`` the
    practical effect size, and ``threshold`` the larger of the two: the feature drifted when its
    score is at or above ``threshold`` (and the window had enough answers to be judged). A feature
    that could not be tested (no values on one side) has ``stattest`` ``""``, NaN score and
    threshold, ``drifted`` False and says why in ``note``. (Results stored by earlier releases may
    hold p-values: names ending in "p_value", drift when below ``threshold``.)
    """

    name: str
    group: str
    kind: str
    stattest: str
    score: float
    threshold: float
    drifted: bool
    reference_summary: Summary | None
    current_summary: Summary | None
    note: str = ""
    null_bound: float = math.nan
    effect_size: float = math.nan

    @property
    def tested(self) -> bool:
        """Whether a test ran (False for a feature without values on one side)."""
        return not math.isnan(self.score)

    @property
    def is_p_value(self) -> bool:
        """Whether ``score`` is a p-value (small = drift) rather than a distance (large = drift)."""
        return self.stattest.endswith("p_value")

    @property
    def severity(self) -> float:
        """How far past its threshold the score is (1 = at the threshold, larger = more drift),
        comparable across tests: ``-log10(p) / -log10(threshold)`` for p-values, ``score /
        threshold`` for distances; NaN when untested."""
        if not self.tested:
            return math.nan
        if self.is_p_value:
            return -math.log10(max(self.score, 1e-300)) / -math.log10(self.threshold)
        return self.score / self.threshold


@dataclass(frozen=True)
class DriftResult:
    """Drift of a window against the reference.

    ``share_drifted`` is the data-drift score of the health policy (share of drifted features among
    the tested ones; NaN when none could be tested, e.g. an empty window, or when the window has
    fewer than ``min_answers`` answers: :attr:`enough_answers` is then False). ``n_reference`` /
    ``n_current`` count the rows given, ``n_reference_used`` / ``n_current_used`` the rows compared
    after sampling (``sampled`` says whether either side was sampled). ``null`` says how the
    features were bounded (the version's null, or the effect size alone). ``notes`` explain what
    was skipped.
    """

    features: tuple[FeatureDrift, ...]
    share_drifted: float
    n_reference: int
    n_current: int
    sampled: bool
    n_reference_used: int = 0
    n_current_used: int = 0
    notes: tuple[str, ...] = ()
    min_answers: int = MIN_ANSWERS
    null: str = ""

    @property
    def enough_answers(self) -> bool:
        """Whether the window had enough answers for its features to be judged."""
        return self.n_current >= self.min_answers

    def drifted_features(self) -> tuple[str, ...]:
        """Names of the drifted features, most drifted first (for the playbook's hints)."""
        drifted = sorted((f for f in self.features if f.drifted), key=lambda f: -f.severity)
        return tuple(f.name for f in drifted)

    def by_group(self) -> dict[str, tuple[FeatureDrift, ...]]:
        """The features of each group present, groups in :data:`GROUPS` order."""
        return {g: tuple(f for f in self.features if f.group == g)
                for g in GROUPS if any(f.group == g for f in self.features)}

    def feature(self, name: str) -> FeatureDrift:
        """The verdict for feature ``name``; KeyError listing the features otherwise."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r} in this drift result; features: "
                       f"{', '.join(f.name for f in self.features)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN as None) for stored health snapshots; :meth:`from_dict` reads it."""
        return nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        """Rebuild a result written by :meth:`as_dict`."""
        features = tuple(FeatureDrift(**{
            **f, "score": none_to_nan(f["score"]), "threshold": none_to_nan(f["threshold"]),
            "null_bound": none_to_nan(f.get("null_bound")),
            "effect_size": none_to_nan(f.get("effect_size")),
            "reference_summary": _summary_from_dict(f["reference_summary"]),
            "current_summary": _summary_from_dict(f["current_summary"])}) for f in data["features"])
        return cls(**{**data, "features": features, "share_drifted": none_to_nan(data["share_drifted"]),
                      "notes": tuple(data.get("notes", ()))})


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    return value


def none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _summary_from_dict(data: Mapping[str, Any] | None) -> Summary | None:
    if data is None:
        return None
    if "shares" in data:
        return CategoricalSummary(shares=dict(data["shares"]), n=data["n"])
    return NumericSummary(edges=tuple(data["edges"]), density=tuple(data["density"]), n=data["n"],
                          missing=data["missing"], mean=none_to_nan(data["mean"]))


@dataclass(frozen=True)
class DriftNull:
    """A version's null distribution of each feature's drift distance: for windows of each of
    ``sizes`` answers drawn from the reference population, the ``quantile`` of the distance between
    such a window and the rest of the reference (``bounds[feature][i]`` for ``sizes[i]``; NaN
    where the feature could not be measured). ``n_reference`` rows were split ``replicates`` times
    per size (seed ``seed``), whole lesions at a time when ``grouped_by`` names the lesion column."""

    sizes: tuple[int, ...]
    bounds: dict[str, tuple[float, ...]]
    n_reference: int
    quantile: float = NULL_QUANTILE
    replicates: int = NULL_REPLICATES
    seed: int = 0
    grouped_by: str = ""

    def __post_init__(self) -> None:
        if not self.sizes or any(b <= a for a, b in zip(self.sizes, self.sizes[1:], strict=False)):
            raise ValueError(f"null sizes must be increasing and not empty, got {self.sizes}")
        if any(s >= self.n_reference for s in self.sizes):
            raise ValueError(f"null sizes {self.sizes} must be below the reference's {self.n_reference} rows")
        for name, bounds in self.bounds.items():
            if len(bounds) != len(self.sizes):
                raise ValueError(f"feature {name!r} has {len(bounds)} null bounds for {len(self.sizes)} sizes")

    def _scale(self, n: float, n_reference: float) -> float:
        return math.sqrt(1 / n + 1 / n_reference)

    def bound(self, feature: str, n: int, n_reference: int | None = None) -> float:
        """The null bound of ``feature`` for a window of ``n`` answers compared with
        ``n_reference`` reference rows (default: the reference the null was computed on): the
        sampling scale ``sqrt(1/n + 1/N)`` times the median, over the computed sizes, of each
        size's bound over its own scale (one quantile per size is noisy; pooling the sizes on
        the scale they share steadies it); NaN for a feature without a null."""
        if feature not in self.bounds or n < 1:
            return math.nan
        scales = np.array([self._scale(s, self.n_reference - s) for s in self.sizes])
        ratios = np.array(self.bounds[feature], dtype=float) / scales
        return float(np.nanmedian(ratios) * self._scale(n, n_reference or self.n_reference)) \
            if np.isfinite(ratios).any() else math.nan

    def describe(self) -> str:
        """One line for the result's notes."""
        return (f"null: {self.quantile:.0%} quantile of {self.replicates} same-population windows "
                f"of {', '.join(map(str, self.sizes))} answers split from {self.n_reference} "
                f"reference answers{' by ' + self.grouped_by if self.grouped_by else ''}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN as None); :meth:`from_dict` reads it."""
        return nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftNull:
        return cls(**{**data, "sizes": tuple(int(s) for s in data["sizes"]),
                      "bounds": {k: tuple(none_to_nan(v) for v in vs) for k, vs in data["bounds"].items()}})
