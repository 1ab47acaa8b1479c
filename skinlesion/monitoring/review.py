"""The review queue (active learning) and label entry for the dermatologists' review screen.

Which unlabelled answers are worth a dermatologist's time? Those the model is least sure of, by four
signals, each in [0, 1] (1 = most worth a look):

- ``entropy``: the normalised entropy of the 8-class answer (probability spread over classes);
- ``1 - margin``: the top class barely ahead of the runner-up (``margin`` = top-1 minus top-2);
- ``1 - threshold_distance``: ``p_malignant`` close to the operating threshold (the referral could
  flip);
- ``ood``: the image unlike the version's training images: the largest robust z-score of its logged
  image statistics against the model card's ``image_stats_reference`` (the check the Predictor
  runs), over the Predictor's out-of-distribution bound (z = 6 -> 1).

``uncertainty`` is their weighted mean (:class:`RankingWeights`, equal by default). Labelling such
cases teaches the next model the most and checks the riskiest decisions.

The queue is diversified, so one burst of images (the same lesion sent five times, a clinic's busy
hour) cannot fill it: cases are chosen greedily, each time the one with the highest
``uncertainty x (1 - diversity x redundancy)``, where ``redundancy`` is the similarity (1 = the same)
of a case to the closest one already chosen in a feature space of its metadata, image statistics and
class probabilities. On top: one case per image hash, and a cap per hour of arrival.

Ground truth imported from an ISIC-format CSV is joined to the logged answers by image content
(sha256): the store never keeps image names, so the images the CSV names must be hashed (uploaded
with it, or named by their hash in the CSV's ``image`` column).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import entropy

from skinlesion.auth import require
from skinlesion.data.images import bytes_sha256
from skinlesion.data.isic_csv import read_ground_truth_csv
from skinlesion.errors import DataError
from skinlesion.predict import DecisionPolicy, robust_z
from skinlesion.registry import list_versions
from skinlesion.schema import CLASSES
from skinlesion.store import IMAGE_STAT_COLUMNS, PROBABILITY_COLUMNS, LabelRecord, Store

#: label source of a diagnosis entered on the review screen
REVIEW_SOURCE = "review"
_SHA256_CHARS = frozenset("0123456789abcdef")
#: per model version: per image statistic, the training images' median, MAD and 1st percentile
StatsReferences = Mapping[str, Mapping[str, Mapping[str, float]]]
#: columns the diversity features are built from, where present
_NUMERIC_FEATURES = ("age_approx", *IMAGE_STAT_COLUMNS, *PROBABILITY_COLUMNS)
_CATEGORICAL_FEATURES = ("sex", "anatom_site_general")


@dataclass(frozen=True)
class RankingWeights:
    """Weights of the uncertainty signals in the queue's ranking; only their ratios matter."""

    entropy: float = 1.0
    margin: float = 1.0
    threshold: float = 1.0
    ood: float = 1.0

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        if min(values) < 0 or sum(values) <= 0:
            raise DataError(f"weights must be 0 or more with at least one above 0, got {self}",
                            field="weights")


def version_references(models_dir: Path) -> dict[str, dict]:
    """The ``image_stats_reference`` of every version under ``models_dir`` that has one, by id (the
    ``references`` of :func:`uncertainty`; reads the model cards only)."""
    return {card.id: card.image_stats_reference for card in list_versions(models_dir)
            if getattr(card, "image_stats_reference", None)}


def ood_scores(cases: pd.DataFrame, references: StatsReferences | None, *,
               ood_z: float = DecisionPolicy().ood_z) -> np.ndarray:
    """Per case in [0, 1]: the largest robust z-score of its image statistics against its version's
    reference (sharpness left out, as in :func:`skinlesion.predict.quality_issues`), over ``ood_z``;
    1 = as far out as the Predictor flags. 0 for a version without a reference in ``references``."""
    z = np.zeros(len(cases))
    for version, reference in (references or {}).items():
        rows = (cases["model_version"] == version).to_numpy()
        for name, ref in reference.items():
            if name != "sharpness" and name in cases:
                z[rows] = np.fmax(z[rows], robust_z(cases.loc[rows, name].to_numpy(float), ref))
    return np.clip(z / ood_z, 0.0, 1.0)


def uncertainty(cases: pd.DataFrame, *, weights: RankingWeights = RankingWeights(),
                references: StatsReferences | None = None) -> pd.DataFrame:
    """Per case: ``entropy`` (normalised entropy of the class probabilities, 0 = certain,
    1 = uniform), ``margin`` (top-1 minus top-2 probability, 0 = a tie), ``threshold_distance``
    (``|p_malignant - threshold|`` over the largest distance possible on that side's scale,
    0 = on the threshold, 1 = at 0 or 1), ``ood`` (:func:`ood_scores`) and ``uncertainty``, the
    ``weights``-weighted mean of ``entropy``, ``1 - margin``, ``1 - threshold_distance`` and
    ``ood``, in [0, 1].

    ``cases`` needs the ``p_<CLASS>`` columns, ``p_malignant`` and ``threshold``; with
    ``references`` (by model version, see :func:`version_references`) also ``model_version`` and
    the image statistics."""
    missing = [c for c in (*PROBABILITY_COLUMNS, "p_malignant", "threshold") if c not in cases]
    if missing:
        raise DataError(f"the cases lack the column(s) {', '.join(missing)}; pass rows of "
                        "Store.review_cases or Store.query_predictions", field="cases")
    probs = np.clip(cases.loc[:, list(PROBABILITY_COLUMNS)].to_numpy(dtype=float), 1e-12, 1.0)
    h = entropy(probs, axis=1) / math.log(len(CLASSES)) if len(cases) else np.zeros(0)
    top = np.sort(probs, axis=1)
    margin = top[:, -1] - top[:, -2]
    p = cases["p_malignant"].to_numpy(dtype=float)
    t = cases["threshold"].to_numpy(dtype=float)
    span = np.maximum(np.maximum(t, 1.0 - t), 1e-12)
    distance = np.clip(np.abs(p - t) / span, 0.0, 1.0)
    ood = ood_scores(cases, references)
    w = weights
    score = (w.entropy * h + w.margin * (1 - margin) + w.threshold * (1 - distance)
             + w.ood * ood) / (w.entropy + w.margin + w.threshold + w.ood)
    return pd.DataFrame({"entropy": h, "margin": margin, "threshold_distance": distance, "ood": ood,
                         "uncertainty": score}, index=cases.index)


def case_features(cases: pd.DataFrame) -> np.ndarray:
    """The cases in the diversity feature space: age, image statistics and class probabilities,
    sex and site one-hot, each standardised over ``cases`` (missing values at the mean; columns
    without variation left out)."""
    numeric = cases.loc[:, [c for c in _NUMERIC_FEATURES if c in cases]].astype(float)
    categorical = pd.get_dummies(cases.loc[:, [c for c in _CATEGORICAL_FEATURES if c in cases]]
                                 .astype(str), dtype=float)
    frame = pd.concat([numeric, categorical], axis=1)
    x = frame.fillna(frame.mean()).fillna(0.0).to_numpy(dtype=float)
    std = x.std(axis=0)
    varies = std > 1e-9
    return (x[:, varies] - x[:, varies].mean(axis=0)) / std[varies]


def similarity(features: np.ndarray, i: int) -> np.ndarray:
    """Similarity of every case to case ``i``: ``exp(-mean squared feature difference)``; 1 for
    identical cases, about 0.14 for two independent ones (standardised features)."""
    return np.exp(-np.square(features - features[i]).sum(axis=1) / max(features.shape[1], 1))


def select_diverse(score: np.ndarray, features: np.ndarray, groups: np.ndarray, hours: np.ndarray,
                   *, k: int, diversity: float, max_per_image: int,
                   max_per_hour: int | None) -> tuple[list[int], list[float]]:
    """Positions of up to ``k`` cases chosen greedily (see the module docstring) and the redundancy
    of each when chosen. ``groups`` and ``hours`` are integer codes (image hash, hour of arrival):
    at most ``max_per_image`` per group, always; at most ``max_per_hour`` per hour while a case of
    an hour below the cap is left, then the best of the held-back cases. Ties go to the earlier
    position."""
    redundancy = np.zeros(len(score))
    open_ = np.ones(len(score), dtype=bool)
    per_image = np.zeros(groups.max(initial=-1) + 1, dtype=int)
    per_hour = np.zeros(hours.max(initial=-1) + 1, dtype=int)
    chosen: list[int] = []
    chosen_redundancy: list[float] = []
    while len(chosen) < k and open_.any():
        in_cap = open_ if max_per_hour is None else open_ & (per_hour[hours] < max_per_hour)
        pool = in_cap if in_cap.any() else open_
        i = int(np.argmax(np.where(pool, score * (1 - diversity * redundancy), -np.inf)))
        chosen.append(i)
        chosen_redundancy.append(float(redundancy[i]))
        per_image[groups[i]] += 1
        per_hour[hours[i]] += 1
        open_ &= per_image[groups] < max_per_image
        open_[i] = False
        redundancy = np.maximum(redundancy, similarity(features, i))
    return chosen, chosen_redundancy


def review_queue(cases: pd.DataFrame, *, k: int = 20, max_per_image: int = 1,
                 max_per_hour: int | None = 5, weights: RankingWeights = RankingWeights(),
                 diversity: float = 0.8, references: StatsReferences | None = None) -> pd.DataFrame:
    """The ``k`` cases most worth labelling, in the order chosen (see the module docstring):
    highest :func:`uncertainty` discounted by ``diversity`` (0 = none, 1 = a duplicate of a chosen
    case counts nothing) times its ``redundancy`` with the cases chosen before it.

    Always at most ``max_per_image`` cases per image hash; at most ``max_per_hour`` cases per hour
    of ``ts`` (None = no cap) while other hours still have candidates. When the hour cap leaves the
    queue short, the best of the held-back cases fill it, so a quiet period with one burst still
    yields a full queue. Returns the chosen rows of ``cases`` with the :func:`uncertainty` columns,
    ``redundancy`` and ``why`` (a short reason a clinician can read)."""
    if k < 1 or max_per_image < 1 or (max_per_hour is not None and max_per_hour < 1):
        raise DataError(f"k, max_per_image and max_per_hour must be 1 or more, got {k}, "
                        f"{max_per_image}, {max_per_hour}", field="k")
    if not 0.0 <= diversity <= 1.0:
        raise DataError(f"must lie in [0, 1], got {diversity}", field="diversity")
    scored = cases.join(uncertainty(cases, weights=weights, references=references))
    ranked = scored.sort_values(["uncertainty", "ts"], ascending=[False, False], kind="stable")
    chosen, redundancy = select_diverse(
        ranked["uncertainty"].to_numpy(), case_features(ranked),
        pd.factorize(ranked["image_sha256"])[0],
        pd.factorize(pd.to_datetime(ranked["ts"], utc=True).dt.floor("h"))[0],
        k=k, diversity=diversity, max_per_image=max_per_image, max_per_hour=max_per_hour)
    queue = ranked.iloc[chosen].assign(redundancy=redundancy)
    return queue.assign(why=[_why(row) for row in queue.itertuples()])


def _why(row: object) -> str:
    """Why a case is in the queue, in words."""
    parts = []
    if row.entropy >= 0.5:  # type: ignore[attr-defined]
        parts.append(f"spread answer (entropy {row.entropy:.2f})")  # type: ignore[attr-defined]
    if row.margin <= 0.2:  # type: ignore[attr-defined]
        parts.append(f"top two classes {row.margin:.2f} apart")  # type: ignore[attr-defined]
    if row.ood >= 0.5:  # type: ignore[attr-defined]
        parts.append(f"image unlike the training images (OOD {row.ood:.2f})")  # type: ignore[attr-defined]
    parts.append(f"p_malignant {row.p_malignant:.2f} vs threshold {row.threshold:.2f}")  # type: ignore[attr-defined]
    return "; ".join(parts)


def record_label(store: Store, *, request_id: str, diagnosis: str, actor: str, role: str,
                 note: str = "") -> LabelRecord:
    """Store a dermatologist's diagnosis for the answer ``request_id`` (label source ``review``,
    ``labelled_by`` = ``actor``) and audit it. Needs a role allowed to ``label``
    (skinlesion.auth); an unknown request id is a DataError (nothing stored)."""
    require(role, "label")
    if store.get_prediction(request_id) is None:
        raise DataError(f"no logged answer with request id {request_id!r}; pick a case from the "
                        "review list", field="request_id")
    label = LabelRecord(request_id=request_id, diagnosis=diagnosis, source=REVIEW_SOURCE,
                        labelled_by=actor)
    store.add_labels([label])
    store.append_audit(actor, role, "label", target=request_id, reason=note,
                       details={"diagnosis": diagnosis, "label_id": label.id})
    return label


@dataclass(frozen=True)
class GroundTruthImport:
    """Labels built from an ISIC ground-truth CSV, and the image names that could not be hashed."""

    labels: list[LabelRecord]
    unmatched: list[str]


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text.lower()) <= _SHA256_CHARS


def image_hashes(files: Mapping[str, bytes]) -> dict[str, str]:
    """sha256 of each uploaded image, keyed by its file name without extension (the ISIC image id:
    ``ISIC_0024306.jpg`` -> ``ISIC_0024306``)."""
    return {Path(name).stem: bytes_sha256(content) for name, content in files.items()}


def ground_truth_labels(names: Sequence[str], y: Sequence[int], hashes: Mapping[str, str], *,
                        source: str, labelled_by: str) -> GroundTruthImport:
    """One label per CSV row whose image can be identified by content: its ``image`` value is a
    sha256 digest itself, or ``hashes`` (from :func:`image_hashes`) holds it. The others are
    returned as ``unmatched`` (their images must be supplied to be joined)."""
    labels, unmatched = [], []
    for name, k in zip(names, y, strict=True):
        sha = name.lower() if _is_sha256(name) else hashes.get(name)
        if sha is None:
            unmatched.append(name)
            continue
        labels.append(LabelRecord(image_sha256=sha, diagnosis=CLASSES[int(k)], source=source,
                                  labelled_by=labelled_by))
    return GroundTruthImport(labels, unmatched)


def import_ground_truth(store: Store, csv_path: Path, *, hashes: Mapping[str, str], actor: str,
                        role: str, source: str = "import") -> tuple[GroundTruthImport, int]:
    """Read an ISIC ground-truth CSV, store the labels whose images are identified (see
    :func:`ground_truth_labels`) and audit the import; returns the import and how many labels match
    logged answers. Needs a role allowed to ``label``."""
    require(role, "label")
    names, y = read_ground_truth_csv(csv_path)
    found = ground_truth_labels(names, y, hashes, source=source, labelled_by=actor)
    matched = store.add_labels(found.labels) if found.labels else 0
    if found.labels:
        store.append_audit(actor, role, "import_labels", target=Path(csv_path).name,
                           details={"labels": len(found.labels), "matched": matched,
                                    "unmatched": len(found.unmatched), "source": source})
    return found, matched

