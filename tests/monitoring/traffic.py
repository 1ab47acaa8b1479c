"""Seeded synthetic service traffic for monitoring tests: logged answers with their labels.

The planted signal: the model calls malignant cases with ``p_malignant`` in [0.75, 0.97] and benign
ones in [0.03, 0.25], so with ``agreement=1.0`` every label agrees with the call (all health
metrics green). ``agreement`` below 1 replaces that share of labels by a diagnosis from the other
group (malignant <-> benign): the window's accuracy, recall and AUROC fall, log loss rises.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT
from skinlesion.store import IMAGE_STAT_COLUMNS, LabelRecord, PredictionRecord

MALIGNANT = list(DEFAULT_MALIGNANT)
BENIGN = [c for c in CLASSES if c not in DEFAULT_MALIGNANT]
SITES = ["anterior torso", "posterior torso", "lower extremity", "upper extremity", "head/neck"]
#: Mean and spread of each image statistic in the reference distribution.
STAT_CENTRES: dict[str, tuple[float, float]] = {
    "width": (600.0, 1.0), "height": (450.0, 1.0), "brightness": (0.55, 0.05),
    "contrast": (0.20, 0.03), "saturation": (0.35, 0.05), "mean_r": (0.62, 0.05),
    "mean_g": (0.48, 0.05), "mean_b": (0.45, 0.05), "sharpness": (0.08, 0.01)}


def _ids(tag: str, n: int) -> tuple[list[str], list[str]]:
    request_ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{i}")) for i in range(n)]
    shas = [hashlib.sha256(f"{tag}/{i}".encode()).hexdigest() for i in range(n)]
    return request_ids, shas


def traffic(start: datetime, *, n: int, seed: int, span: timedelta = timedelta(hours=24),
            agreement: float = 1.0, model_version: str = "reference",
            shift: Mapping[str, float] | None = None,
            ) -> tuple[list[PredictionRecord], list[LabelRecord]]:
    """``n`` answers spread over ``[start, start + span)`` and one label each (see module doc);
    ``shift`` adds a constant to image statistics (planted input drift, e.g. a new camera)."""
    rng = np.random.default_rng(seed)
    request_ids, shas = _ids(f"{seed}-{start.isoformat()}", n)
    offsets = np.sort(rng.uniform(0, span.total_seconds() - 1, n))
    malignant = rng.random(n) < 0.35
    predictions, labels = [], []
    for i in range(n):
        p_mal = float(rng.uniform(0.75, 0.97) if malignant[i] else rng.uniform(0.03, 0.25))
        truth = str(rng.choice(MALIGNANT if malignant[i] else BENIGN))
        probs = dict.fromkeys(CLASSES, 0.0)
        if malignant[i]:
            probs[truth], probs["NV"] = p_mal, 1.0 - p_mal
        else:
            probs[truth], probs["MEL"] = 1.0 - p_mal, p_mal
        stats = {name: float(rng.normal(mu, sd)) for name, (mu, sd) in STAT_CENTRES.items()}
        for name, delta in (shift or {}).items():
            stats[name] += delta
        ts = start + timedelta(seconds=float(offsets[i]))
        predictions.append(PredictionRecord(
            request_id=request_ids[i], ts=ts, source="api", model_version=model_version,
            age_approx=float(rng.integers(4, 17) * 5), sex=str(rng.choice(["male", "female"])),
            anatom_site_general=str(rng.choice(SITES)), image_sha256=shas[i], **stats,
            probabilities=probs, p_malignant=p_mal, predicted_class=max(probs, key=probs.get),
            decision="refer" if p_mal >= 0.5 else "no referral", threshold=0.5,
            latency_ms=float(rng.uniform(20, 80)), device="cpu"))
        diagnosis = truth if rng.random() < agreement else str(
            rng.choice(BENIGN if malignant[i] else MALIGNANT))
        labels.append(LabelRecord(request_id=request_ids[i], diagnosis=diagnosis,
                                  source="histopathology", labelled_by="pathology-lab",
                                  ts=ts + timedelta(hours=1)))
    return predictions, labels


def reference_frame(*, n: int = 300, seed: int = 123) -> pd.DataFrame:
    """A version's reference answers (the predictions columns plus ``diagnosis``) drawn from the
    same distribution as :func:`traffic` with ``agreement=1``."""
    predictions, labels = traffic(datetime(2024, 1, 1), n=n, seed=seed)
    frame = pd.DataFrame([p.to_row() for p in predictions])
    frame["diagnosis"] = [lab.diagnosis for lab in labels]
    return frame.drop(columns=["embedding"]).astype({c: float for c in IMAGE_STAT_COLUMNS})
