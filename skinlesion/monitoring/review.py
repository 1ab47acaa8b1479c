"""The review queue (active learning) and label entry for the dermatologists' review screen.

Which unlabelled answers are worth a dermatologist's time? Those the model is least sure of: a high
normalised entropy of the 8-class answer (probability spread over classes) or a ``p_malignant``
close to the operating threshold (the referral decision could flip). Labelling them teaches the next
model the most and checks the riskiest decisions. The queue is diversified, so one burst of images
(the same lesion sent five times, a clinic's busy hour) cannot fill it.

Ground truth imported from an ISIC-format CSV is joined to the logged answers by image content
(sha256): the store never keeps image names, so the images the CSV names must be hashed (uploaded
with it, or named by their hash in the CSV's ``image`` column).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import entropy

from skinlesion.data.images import bytes_sha256
from skinlesion.data.isic_csv import read_ground_truth_csv
from skinlesion.errors import DataError
from skinlesion.operations import require
from skinlesion.schema import CLASSES
from skinlesion.store import PROBABILITY_COLUMNS, LabelRecord, Store

#: label source of a diagnosis entered on the review screen
REVIEW_SOURCE = "review"
_SHA256_CHARS = frozenset("0123456789abcdef")


def uncertainty(cases: pd.DataFrame, *, entropy_weight: float = 0.5) -> pd.DataFrame:
    """Per case: ``entropy`` (normalised entropy of the class probabilities, 0 = certain,
    1 = uniform), ``threshold_distance`` (``|p_malignant - threshold|`` over the largest distance
    possible on that side's scale, 0 = on the threshold, 1 = at 0 or 1) and ``uncertainty``
    ``= w * entropy + (1 - w) * (1 - threshold_distance)`` with ``w = entropy_weight``, in [0, 1].

    ``cases`` needs the ``p_<CLASS>`` columns, ``p_malignant`` and ``threshold``."""
    if not 0.0 <= entropy_weight <= 1.0:
        raise DataError(f"must lie in [0, 1], got {entropy_weight}", field="entropy_weight")
    missing = [c for c in (*PROBABILITY_COLUMNS, "p_malignant", "threshold") if c not in cases]
    if missing:
        raise DataError(f"the cases lack the column(s) {', '.join(missing)}; pass rows of "
                        "Store.review_cases or Store.query_predictions", field="cases")
    probs = np.clip(cases.loc[:, list(PROBABILITY_COLUMNS)].to_numpy(dtype=float), 1e-12, 1.0)
    h = entropy(probs, axis=1) / math.log(len(CLASSES)) if len(cases) else np.zeros(0)
    p = cases["p_malignant"].to_numpy(dtype=float)
    t = cases["threshold"].to_numpy(dtype=float)
    span = np.maximum(np.maximum(t, 1.0 - t), 1e-12)
    distance = np.clip(np.abs(p - t) / span, 0.0, 1.0)
    return pd.DataFrame({"entropy": h, "threshold_distance": distance,
                         "uncertainty": entropy_weight * h + (1 - entropy_weight) * (1 - distance)},
                        index=cases.index)


def review_queue(cases: pd.DataFrame, *, k: int = 20, max_per_image: int = 1,
                 max_per_hour: int | None = 5, entropy_weight: float = 0.5) -> pd.DataFrame:
    """The ``k`` cases most worth labelling, most uncertain first (see :func:`uncertainty`).

    Diversity: at most ``max_per_image`` cases per image hash, always; at most ``max_per_hour``
    cases per hour of ``ts`` (None = no cap) while other hours still have candidates. When the hour
    cap leaves the queue short, the best of the held-back cases fill it, so a quiet period with one
    burst still yields a full queue. Returns the chosen rows of ``cases`` with the
    :func:`uncertainty` columns and ``why`` (a short reason a clinician can read)."""
    if k < 1 or max_per_image < 1 or (max_per_hour is not None and max_per_hour < 1):
        raise DataError(f"k, max_per_image and max_per_hour must be 1 or more, got {k}, "
                        f"{max_per_image}, {max_per_hour}", field="k")
    scored = cases.join(uncertainty(cases, entropy_weight=entropy_weight))
    ranked = scored.sort_values(["uncertainty", "ts"], ascending=[False, False], kind="stable")
    hours = pd.to_datetime(ranked["ts"], utc=True).dt.floor("h")
    per_image: Counter[str] = Counter()
    per_hour: Counter[pd.Timestamp] = Counter()
    chosen: list[object] = []
    held_back: list[object] = []
    for idx, sha, hour in zip(ranked.index, ranked["image_sha256"], hours, strict=True):
        if len(chosen) == k:
            break
        if per_image[sha] >= max_per_image:
            continue
        if max_per_hour is not None and per_hour[hour] >= max_per_hour:
            held_back.append(idx)
            continue
        per_image[sha] += 1
        per_hour[hour] += 1
        chosen.append(idx)
    for idx in held_back:
        if len(chosen) == k:
            break
        sha = ranked.at[idx, "image_sha256"]
        if per_image[sha] < max_per_image:
            per_image[sha] += 1
            chosen.append(idx)
    queue = ranked.loc[chosen].sort_values("uncertainty", ascending=False, kind="stable")
    return queue.assign(why=[_why(row) for row in queue.itertuples()])


def _why(row: object) -> str:
    """Why a case is in the queue, in words."""
    parts = []
    if row.entropy >= 0.5:  # type: ignore[attr-defined]
        parts.append(f"spread answer (entropy {row.entropy:.2f})")  # type: ignore[attr-defined]
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

