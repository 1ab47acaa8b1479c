"""The Predictor: one loaded model version answering ``predict(image, metadata) -> Prediction``.

An answer carries the calibrated class probabilities, p_malignant, the decision at the version's
threshold (``refer`` / ``no referral`` / ``uncertain``) with its reason, and the image statistics drift
monitoring needs. The decision rules are small pure functions so they can be tested and audited alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from skinlesion.calibration import DiagnosisRule
from skinlesion.data.images import bytes_sha256, image_caveats, image_stats, load_image
from skinlesion.model.base import Classifier
from skinlesion.model.ood import OODGate, card_gate
from skinlesion.model.neural import has_monitoring_embedding
from skinlesion.model.runtime import BatchingEngine, ExportSettings, use_runtime
from skinlesion.registry import ModelVersion, load_version
from skinlesion.schema import CLASSES, Metadata, malignant_mask

REFER, NO_REFERRAL, UNCERTAIN = "refer", "no referral", "uncertain"


class DecisionPolicy(BaseModel):
    """When an answer is trusted. Validated on creation (a bound in the wrong order is an error)."""

    model_config = ConfigDict(frozen=True)

    #: normalised entropy (0 = certain, 1 = uniform) of the 8-class answer above which it is "uncertain"
    max_entropy: float = Field(0.80, gt=0, le=1)
    #: restricted mode ("clear cases only"): "no referral" only when p_malignant < ratio * threshold
    clear_benign_ratio: float = Field(0.5, gt=0, le=1)
    #: image quality: mean luminance bounds (0-1) and the minimum sharpness relative to the version's
    #: training images (a share of their 1st-percentile sharpness)
    min_brightness: float = Field(0.12, ge=0, lt=1)
    max_brightness: float = Field(0.95, gt=0, le=1)
    min_relative_sharpness: float = Field(0.5, gt=0)
    #: out of distribution: an image statistic this many robust z-scores from the training images
    ood_z: float = Field(6.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> DecisionPolicy:
        if self.min_brightness >= self.max_brightness:
            raise ValueError(f"min_brightness {self.min_brightness} must be below max_brightness "
                             f"{self.max_brightness}")
        return self


def image_sha256(image: bytes | Image.Image) -> str:
    """The content hash an answer is logged (and labelled, and routed) under: sha256 of the file's
    bytes, or of the pixels of an already decoded image."""
    return bytes_sha256(image if isinstance(image, bytes) else image.tobytes())


def normalised_entropy(probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, dtype=float), 1e-12, 1.0)
    return float(-(p * np.log(p)).sum() / math.log(len(p)))


def robust_z(value: float | np.ndarray, reference: dict[str, float]) -> float | np.ndarray:
    """How many robust standard deviations ``value`` (a number or an array) lies from the training
    images' ``median``, the scale being 1.4826 x their median absolute deviation ``mad``."""
    return np.abs(value - reference["median"]) / max(1.4826 * reference["mad"], 1e-9)


def quality_issues(stats: dict[str, float], policy: DecisionPolicy,
                   reference: dict[str, dict[str, float]] | None = None) -> list[str]:
    """Reasons an image is unfit or unlike the training images (empty list: fine).

    ``reference`` holds, per statistic, the training images' ``median``, ``mad`` (median absolute
    deviation) and ``p01`` (1st percentile), as stored in the model card."""
    issues = []
    if stats["brightness"] < policy.min_brightness:
        issues.append(f"image too dark (brightness {stats['brightness']:.2f} < "
                      f"{policy.min_brightness:.2f})")
    if stats["brightness"] > policy.max_brightness:
        issues.append(f"image overexposed (brightness {stats['brightness']:.2f} > "
                      f"{policy.max_brightness:.2f})")
    if reference:
        sharp = reference.get("sharpness")
        if sharp and stats["sharpness"] < policy.min_relative_sharpness * sharp["p01"]:
            issues.append("image blurred (sharpness far below the training images)")
        for name, ref in reference.items():
            z = robust_z(stats[name], ref)
            if name != "sharpness" and z > policy.ood_z:
                issues.append(f"out of distribution: {name} {stats[name]:.3g} is unlike the training "
                              f"images (median {ref['median']:.3g})")
    return issues


def ood_issues(embedding: Sequence[float] | None, stats: dict[str, float], gate: OODGate | None,
               texture_distance: float | None = None) -> list[str]:
    """The gate's reasons when an answer's monitoring embedding, image statistics or texture
    distance lie beyond the version's OOD gate (an image unlike the training images); empty
    without a gate or an embedding."""
    if gate is None or embedding is None:
        return []
    return gate.reasons(embedding, stats, texture_distance)


def decide(probs: np.ndarray, p_malignant: float, threshold: float, issues: Sequence[str],
           policy: DecisionPolicy, *, restricted: bool = False) -> tuple[str, str]:
    """The decision and a one-line reason a clinician can read.

    Poor-quality or out-of-distribution images and low-confidence answers are ``uncertain``. In
    restricted mode (the monitoring plan's measure for red) only clear cases are answered: anything
    not clearly benign is referred."""
    if issues:
        decision, reason = UNCERTAIN, "; ".join(issues)
    elif normalised_entropy(probs) > policy.max_entropy:
        decision, reason = UNCERTAIN, "the model is not confident (probabilities spread over classes)"
    elif p_malignant >= threshold:
        decision, reason = REFER, f"p_malignant {p_malignant:.2f} ≥ threshold {threshold:.2f}"
    else:
        decision, reason = NO_REFERRAL, f"p_malignant {p_malignant:.2f} < threshold {threshold:.2f}"
    if restricted and decision != REFER:
        if decision == NO_REFERRAL and p_malignant < policy.clear_benign_ratio * threshold:
            return decision, reason + " (clear case)"
        return REFER, f"restricted to clear cases: {reason} → refer"
    return decision, reason


@dataclass(frozen=True)
class Prediction:
    """One answer (``serving.prediction_record`` turns it into the store's row)."""

    probabilities: dict[str, float]
    p_malignant: float
    predicted_class: str
    decision: str
    decision_reason: str
    threshold: float
    model_version: str
    model_role: str
    latency_ms: float
    device: str
    image_sha256: str
    image_stats: dict[str, float]
    embedding: list[float] | None = field(default=None, repr=False)
    #: what ran the network: torch (eager) or an exported runtime (skinlesion.model.runtime)
    runtime: str = "torch"
    #: the OOD gate's texture check: Mahalanobis distance of this image's early-block activation
    #: statistics to the training images' (skinlesion.model.ood); None when the version's gate has
    #: no texture check
    texture_distance: float | None = None


class Predictor:
    """One model version, loaded once, answering single images or batches, its network run by the
    ``runtime`` asked for (``torch``, ``openvino``, ``onnxruntime`` or ``auto``; eager torch with a
    warning where the runtime's export is missing or refused: skinlesion.model.runtime)."""

    def __init__(self, version: ModelVersion, *, role: str = "active",
                 policy: DecisionPolicy | None = None, runtime: str = "torch",
                 export_settings: ExportSettings | None = None):
        self.version = version
        self.runtime = use_runtime(version.classifier, version.id, version.path, runtime,
                                   settings=export_settings).runtime
        self.role = role
        self.policy = policy or DecisionPolicy()
        self._mask = np.array(malignant_mask(version.card.malignant))
        self._reference = getattr(version.card, "image_stats_reference", None)
        self._ood = card_gate(version.card.model_extra, version.path)
        self._diagnosis = DiagnosisRule.from_dict(version.card.model_extra.get("diagnosis_rule"),
                                                  CLASSES)

    @classmethod
    def from_registry(cls, ref: str, models_dir: Path, *, device: str = "auto",
                      role: str = "active", policy: DecisionPolicy | None = None,
                      runtime: str = "torch") -> Predictor:
        return cls(load_version(ref, models_dir, device=device), role=role, policy=policy,
                   runtime=runtime)

    @property
    def device(self) -> str:
        """Where the network runs, with the runtime when it is not eager torch (``cpu/openvino``):
        what every answer records."""
        device = str(getattr(self.version.classifier, "device", "cpu"))
        return device if self.runtime == "torch" else f"{device}/{self.runtime}"

    def batching(self) -> tuple[int, int]:
        """Forwards the network has run and the images they carried (concurrent requests share
        forwards: :class:`~skinlesion.model.runtime.BatchingEngine`); (0, 0) for a version that
        answers in its own code (rule-based fallback, metadata-only)."""
        classifier = self.version.classifier
        engine = classifier.engine() if has_monitoring_embedding(classifier) else None
        if not isinstance(engine, BatchingEngine):
            return 0, 0
        return engine.forwards, engine.images

    @property
    def threshold(self) -> float:
        """The operating threshold of the model card (a serving configuration may override it:
        the ``threshold`` argument of :meth:`predict`)."""
        return self.version.card.threshold

    def predict(self, image: bytes | Image.Image, metadata: Metadata, *,
                restricted: bool = False, threshold: float | None = None) -> Prediction:
        return self.predict_batch([image], [metadata], restricted=restricted,
                                  threshold=threshold)[0]

    def predict_batch(self, images: Sequence[bytes | Image.Image], metadata: Sequence[Metadata], *,
                      restricted: bool = False, threshold: float | None = None) -> list[Prediction]:
        """Answer a batch in one model call; latency is the batch's wall time per image. Decisions
        are taken at ``threshold`` (the route's override for this version) or else the card's."""
        if len(images) != len(metadata):
            raise ValueError(f"{len(images)} images but {len(metadata)} metadata rows")
        start = time.perf_counter()
        hashes = [image_sha256(image) for image in images]
        decoded = [load_image(image, name="uploaded image") if isinstance(image, bytes)
                   else image.convert("RGB") for image in images]
        meta = pd.DataFrame([m.as_dict() for m in metadata]).astype({"age_approx": float})
        probs, embeddings, texture = answer_with_features(self.version.classifier, decoded, meta)
        distances = (self._ood.texture_distance(texture)
                     if texture is not None and self._ood is not None and self._ood.texture is not None
                     else None)
        latency_ms = (time.perf_counter() - start) * 1000 / max(len(images), 1)
        at = self.threshold if threshold is None else threshold
        return [self._answer(p, img, sha, latency_ms, restricted, at,
                             None if embeddings is None else embeddings[i].tolist(),
                             None if distances is None else float(distances[i]))
                for i, (p, img, sha) in enumerate(zip(probs, decoded, hashes, strict=True))]

    def _answer(self, probs: np.ndarray, image: Image.Image, sha: str, latency_ms: float,
                restricted: bool, threshold: float, embedding: list[float] | None,
                texture_distance: float | None) -> Prediction:
        stats = image_stats(image)
        p_mal = float(probs[self._mask].sum())
        decision, reason = decide(probs, p_mal, threshold,
                                  image_caveats(image)
                                  + quality_issues(stats, self.policy, self._reference)
                                  + ood_issues(embedding, stats, self._ood, texture_distance),
                                  self.policy, restricted=restricted)
        return Prediction(
            probabilities={c: float(p) for c, p in zip(CLASSES, probs, strict=True)},
            p_malignant=min(max(p_mal, 0.0), 1.0),
            predicted_class=CLASSES[int(self._diagnosis.index(probs))],
            decision=decision, decision_reason=reason, threshold=threshold,
            model_version=self.version.id, model_role=self.role, latency_ms=latency_ms,
            device=self.device, image_sha256=sha, image_stats={k: float(v) for k, v in stats.items()},
            embedding=embedding, runtime=self.runtime, texture_distance=texture_distance)


def answer_with_features(classifier: Classifier, images: Sequence[Image.Image], metadata: pd.DataFrame
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Calibrated probabilities and, where the classifier has an image network, the monitoring
    embeddings logged for drift (``NeuralClassifier.monitoring_embed``) and the texture statistics
    the OOD gate reads, from the same forward; None for the rule-based fallback and metadata-only
    models."""
    if has_monitoring_embedding(classifier):
        return classifier.predict_with_features(images, metadata)
    return classifier.predict_proba(images, metadata), None, None
