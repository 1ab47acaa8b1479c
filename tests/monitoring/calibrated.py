"""Seeded answers of a *calibrated* model, with labels drawn from its own probabilities.

Each case gets a hinted class (ISIC-like prior) and class probabilities from a Dirichlet peaked on
that class (``sharpness`` sets how peaked: higher = a better model). Its label is then drawn from
those very probabilities, so the probabilities are calibrated by construction — what confidence-
based performance estimation assumes. ``flip`` plants the opposite: that share of labels is
replaced by a random class of the other group (malignant <-> benign), so labels disagree with the
model (accuracy, recall and AUROC fall; the probabilities are no longer calibrated).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta

import numpy as np

from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT
from skinlesion.store import LabelRecord, PredictionRecord

PRIOR = np.array([0.18, 0.50, 0.13, 0.03, 0.10, 0.01, 0.01, 0.04])  # MEL NV BCC AK BKL DF VASC SCC
MALIGNANT = np.array([c in DEFAULT_MALIGNANT for c in CLASSES])
STATS = dict(width=600.0, height=450.0, brightness=0.5, contrast=0.2, saturation=0.3, mean_r=0.6,
             mean_g=0.5, mean_b=0.4, sharpness=0.1)


def calibrated_traffic(start: datetime, *, n: int, seed: int, span: timedelta = timedelta(hours=24),
                       sharpness: float = 30.0, flip: float = 0.0, label_share: float = 1.0,
                       threshold: float = 0.5, model_version: str = "v1",
                       latency: tuple[float, float] = (4.0, 0.5), label_lag: timedelta = timedelta(hours=6),
                       ) -> tuple[list[PredictionRecord], list[LabelRecord]]:
    """``n`` answers evenly spread over ``[start, start + span)``; the first ``label_share`` of them
    (in a seeded random order) get a label ``label_lag`` after the answer. Latency is lognormal
    with ``(mu, sigma)`` of ``log(ms)``."""
    rng = np.random.default_rng(seed)
    hint = rng.choice(len(CLASSES), size=n, p=PRIOR)
    alpha = np.full((n, len(CLASSES)), 0.2)
    alpha[np.arange(n), hint] += sharpness
    gamma = rng.gamma(alpha)  # Dirichlet(alpha) rows, vectorised
    probs = gamma / gamma.sum(axis=1, keepdims=True)
    truth = (rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(axis=1).clip(max=len(CLASSES) - 1)
    flipped = rng.random(n) < flip
    for i in np.flatnonzero(flipped):
        other = np.flatnonzero(MALIGNANT != MALIGNANT[truth[i]])
        truth[i] = rng.choice(other)
    labelled = rng.permutation(n)[: int(round(label_share * n))]
    latency_ms = rng.lognormal(*latency, size=n)
    tag = f"{seed}/{start.isoformat()}/{model_version}"
    predictions, labels = [], []
    for i in range(n):
        p_mal = float(min(probs[i, MALIGNANT].sum(), 1.0))
        predictions.append(PredictionRecord(
            request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{i}")),
            ts=start + span * (i / n), source="api", model_version=model_version,
            image_sha256=hashlib.sha256(f"{tag}/{i}".encode()).hexdigest(), **STATS,
            probabilities=dict(zip(CLASSES, probs[i].tolist(), strict=True)), p_malignant=p_mal,
            predicted_class=CLASSES[int(probs[i].argmax())],
            decision="refer" if p_mal >= threshold else ("uncertain" if p_mal >= threshold / 2
                                                         else "no referral"),
            threshold=threshold, latency_ms=float(latency_ms[i]), device="cpu"))
    for i in labelled:
        labels.append(LabelRecord(request_id=predictions[i].request_id, diagnosis=CLASSES[truth[i]],
                                  source="histopathology", labelled_by="lab",
                                  ts=predictions[i].ts + label_lag))
    return predictions, labels
