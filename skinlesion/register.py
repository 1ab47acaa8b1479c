"""Register a fitted classifier as a model version: one function shared by every training path
(``skinlesion train``, the reference recipe, the fallback, the demo).

It computes what the version folder must say about its data (content-hash manifest, fingerprint,
class and split counts) and the reference answers monitoring compares production with (the
validation split's answers in the predictions-table columns, with image statistics, the image and
lesion ids and, for a neural version, the monitoring embedding of each image and its OOD texture
distance). The card says what that reference is (``reference``: :func:`describe_reference`) and, for
a neural version, holds its out-of-distribution gate (``ood``: :func:`skinlesion.model.ood.fit_ood_gate`
on the monitoring embeddings, image statistics and texture statistics of the training images, bound
on the validation answers'; the texture check's arrays are a sidecar file of the folder,
``ood_texture.npz``). Monitoring computes the
reference's null distribution of drift on first use and stores it beside it
(``registry.write_drift_null``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from skinlesion import metrics
from skinlesion.calibration import DiagnosisRule
from skinlesion.data.images import file_sha256, image_stats, load_image
from skinlesion.model.base import Classifier
from skinlesion.model.fallback import extract_features, fit_fallback
from skinlesion.model.neural import has_monitoring_embedding
from skinlesion.model.ood import MIN_EMBEDDINGS, OODGate, fit_ood_gate
from skinlesion.registry import ModelCard, build_manifest, data_info, save_version
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, METADATA_FIELDS, class_index, malignant_mask


def with_answers(frame: pd.DataFrame, probs: np.ndarray, *, threshold: float,
                 malignant: tuple[str, ...] = DEFAULT_MALIGNANT,
                 diagnosis: DiagnosisRule | None = None) -> pd.DataFrame:
    """``frame`` (one row per answer, in ``probs`` order) with the answer columns set from
    ``probs``: p_<CLASS>, p_malignant, predicted_class (the ``diagnosis`` rule's; argmax by
    default) and decision at ``threshold``. Everything else (metadata, image statistics,
    embeddings) is kept: how a recalibrated version's reference answers are redone."""
    if probs.shape != (len(frame), len(CLASSES)):
        raise ValueError(f"probs must have shape ({len(frame)}, {len(CLASSES)}), got {probs.shape}")
    out = frame.copy()
    p_mal = probs[:, np.array(malignant_mask(malignant))].sum(1)
    for i, c in enumerate(CLASSES):
        out[f"p_{c}"] = probs[:, i]
    out["p_malignant"] = p_mal
    out["predicted_class"] = [CLASSES[i] for i in (diagnosis or DiagnosisRule()).index(probs)]
    out["decision"] = np.where(p_mal >= threshold, "refer", "no referral")
    return out


def reference_frame(df: pd.DataFrame, probs: np.ndarray, *, threshold: float,
                    malignant: tuple[str, ...] = DEFAULT_MALIGNANT,
                    embed: Callable[[list[Image.Image]], np.ndarray] | None = None,
                    diagnosis: DiagnosisRule | None = None,
                    progress: bool = True, batch_size: int = 64) -> pd.DataFrame:
    """Answers for ``df`` rows in the predictions-table columns (metadata, image statistics,
    p_<CLASS>, p_malignant, predicted_class by the ``diagnosis`` rule, decision at ``threshold``:
    :func:`with_answers`) plus the true ``diagnosis``, the ``image`` and ``lesion_id``
    (monitoring's null splits the reference lesion by lesion), and the monitoring ``embedding`` of
    each image where ``embed`` is given (images are read once, ``batch_size`` at a time)."""
    stats: list[dict] = []
    embeddings: list[np.ndarray] = []
    with tqdm(total=len(df), desc="reference image stats", unit="img", file=sys.stderr,
              disable=not progress) as bar:
        for start in range(0, len(df), batch_size):
            images = [load_image(p) for p in df["path"].iloc[start:start + batch_size]]
            stats += [image_stats(image) for image in images]
            if embed is not None:
                embeddings.append(embed(images))
            bar.update(len(images))
    out = with_answers(pd.concat([df.loc[:, list(METADATA_FIELDS)].reset_index(drop=True),
                                  pd.DataFrame(stats)], axis=1),
                       probs, threshold=threshold, malignant=malignant, diagnosis=diagnosis)
    out["diagnosis"] = df["diagnosis"].to_numpy()
    for column in ("image", "lesion_id"):
        if column in df.columns:
            out[column] = df[column].astype(str).to_numpy()
    if embeddings:
        out["embedding"] = list(np.concatenate(embeddings))
    return out


def monitoring_embedder(classifier: Classifier) -> Callable[[list[Image.Image]], np.ndarray] | None:
    """What computes the monitoring embeddings of ``classifier``'s answers (None when it logs none:
    the rule-based fallback, metadata-only models)."""
    return classifier.monitoring_embed if has_monitoring_embedding(classifier) else None


#: What computes the monitoring embeddings and the texture statistics of images (one forward).
Features = Callable[[list[Image.Image]], tuple[np.ndarray, np.ndarray]]


def gate_features(classifier: Classifier) -> Features | None:
    """What computes the monitoring embeddings and texture statistics the OOD gate is fitted on
    (``NeuralClassifier.upright_features``; None for a classifier without an image network)."""
    return classifier.upright_features if has_monitoring_embedding(classifier) else None


#: Training images the OOD gate is fitted on (a seeded sample: 32 embedding components and 7
#: statistics need no more, and each costs a forward pass at registration).
OOD_TRAIN_IMAGES = 2000


def describe_reference(reference: pd.DataFrame, *, split: str = "val") -> dict:
    """What a version's reference answers are, for its card: the ``split`` they come from, ``rows``,
    ``lesions`` and the ``multi_image_share`` (images from lesions photographed more than once),
    the ``class_mix``, and the ``weighting`` (one row per image, as traffic answers)."""
    out: dict = {"split": split, "rows": len(reference),
                 "weighting": "one row per image (a lesion photographed k times counts k times), "
                              "as traffic answers one photograph at a time"}
    if "lesion_id" in reference.columns and len(reference):
        per_lesion = reference["lesion_id"].value_counts()
        out["lesions"] = int(len(per_lesion))
        out["multi_image_share"] = round(float(per_lesion[per_lesion > 1].sum() / len(reference)), 4)
    if "diagnosis" in reference.columns and len(reference):
        out["class_mix"] = {str(k): round(float(v), 4)
                            for k, v in reference["diagnosis"].value_counts(normalize=True).items()}
    return out


def embed_images(paths: pd.Series, embed: Callable[[list[Image.Image]], np.ndarray], *,
                 progress: bool = True, batch_size: int = 64) -> tuple[np.ndarray, pd.DataFrame]:
    """The monitoring embeddings and the image statistics of the images at ``paths`` (read
    ``batch_size`` at a time)."""
    embeddings, _, stats = image_features(paths, lambda images: (embed(images), None), progress=progress,
                                          batch_size=batch_size)
    return embeddings, stats


def image_features(paths: pd.Series,
                   features: Callable[[list[Image.Image]], tuple[np.ndarray, np.ndarray | None]], *,
                   progress: bool = True, batch_size: int = 64, desc: str = "training images (OOD gate)"
                   ) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame]:
    """The monitoring embeddings, the texture statistics (None where ``features`` gives none) and
    the image statistics of the images at ``paths`` (read ``batch_size`` at a time)."""
    embeddings, textures, stats = [], [], []
    with tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            images = [load_image(p) for p in paths.iloc[start:start + batch_size]]
            embedding, texture = features(images)
            embeddings.append(embedding)
            if texture is not None:
                textures.append(texture)
            stats += [image_stats(image) for image in images]
            bar.update(len(images))
    return ((np.concatenate(embeddings) if embeddings else np.zeros((0, 0))),
            (np.concatenate(textures) if textures else None), pd.DataFrame(stats))


@dataclass(frozen=True)
class OODFit:
    """A version's OOD gate (:func:`ood_section`) and the texture distance of each of its reference
    answers (what the reference table's ``texture_distance`` column holds)."""

    gate: OODGate
    reference_texture_distance: np.ndarray

    def card_section(self) -> dict:
        """The card's ``ood`` key."""
        return {"ood": self.gate.as_dict()}

    def with_distances(self, reference: pd.DataFrame) -> pd.DataFrame:
        """``reference`` with its ``texture_distance`` column."""
        if len(reference) != len(self.reference_texture_distance):
            raise ValueError(f"{len(self.reference_texture_distance)} texture distances for "
                             f"{len(reference)} reference answers")
        return reference.assign(texture_distance=self.reference_texture_distance.astype(np.float64))

    def save(self, version_dir: Path) -> None:
        """Write the gate's arrays (the texture check's sidecar) into the saved version's folder."""
        self.gate.save_arrays(version_dir)


def ood_section(train: pd.DataFrame, reference: pd.DataFrame, reference_paths: pd.Series,
                features: Features | None, *, progress: bool = True) -> OODFit | None:
    """The version's OOD gate fitted on the monitoring embeddings, image statistics and texture
    statistics of (a seeded sample of at most :data:`OOD_TRAIN_IMAGES`) training images and bound on
    the reference (validation) answers' — their logged embeddings and statistics, and the texture
    statistics of their images (``reference_paths``, in the reference's order: one more upright
    forward each); None for a version without embeddings or with fewer than ``MIN_EMBEDDINGS``
    images on either side (nothing to fit a gate on)."""
    if (features is None or "embedding" not in reference.columns
            or min(len(train), len(reference)) < MIN_EMBEDDINGS):
        return None
    if len(reference_paths) != len(reference):
        raise ValueError(f"{len(reference_paths)} image paths for {len(reference)} reference answers")
    train = train.sample(n=min(OOD_TRAIN_IMAGES, len(train)), random_state=0)
    embeddings, texture, stats = image_features(train["path"], features, progress=progress)
    _, reference_texture, _ = image_features(reference_paths, features, progress=progress,
                                             desc="reference images (OOD gate)")
    gate = fit_ood_gate(embeddings, stats, np.stack(reference["embedding"].to_list()), reference,
                        train_texture=texture, validation_texture=reference_texture)
    return OODFit(gate, gate.texture_distance(reference_texture))


def split_metrics(df: pd.DataFrame, probs: np.ndarray, *, threshold: float,
                  malignant: tuple[str, ...] = DEFAULT_MALIGNANT,
                  diagnosis: DiagnosisRule | None = None) -> dict:
    """The headline metrics of one split, for the model card: :func:`metrics.summary` (its
    ``balanced_accuracy`` is of the probabilities' argmax, as the challenge scorer reads a
    probability file) and ``balanced_accuracy_shown``, of the diagnosis the version shows (its
    ``diagnosis`` rule)."""
    y = np.array([class_index(d) for d in df["diagnosis"]])
    return shown_summary(y, probs, threshold=threshold, malignant=malignant, diagnosis=diagnosis)


def shown_summary(y: np.ndarray, probs: np.ndarray, *, threshold: float,
                  malignant: tuple[str, ...] = DEFAULT_MALIGNANT,
                  diagnosis: DiagnosisRule | None = None) -> dict:
    """:func:`metrics.summary` plus ``balanced_accuracy_shown`` (of the ``diagnosis`` rule)."""
    rule = diagnosis or DiagnosisRule()
    return {**metrics.summary(y, probs, threshold=threshold, malignant=malignant),
            "balanced_accuracy_shown": metrics.balanced_accuracy(y, rule.scores(probs))}


def register(models_dir: Path, classifier: Classifier, df: pd.DataFrame, split: pd.Series, *,
             threshold: float, val_probs: np.ndarray, data_name: str,
             test_probs: np.ndarray | None = None, licence: str | None = None,
             history: list[dict] | None = None, training: dict | None = None,
             parent: str | None = None, target_sensitivity: float | None = None,
             notes: str | None = None, version_id: str | None = None, extra: dict | None = None,
             malignant: tuple[str, ...] = DEFAULT_MALIGNANT,
             diagnosis: DiagnosisRule | None = None, progress: bool = True) -> ModelCard:
    """Save ``classifier`` as a new version of ``models_dir``; ``val_probs`` (and ``test_probs``)
    are its calibrated answers on the ``val`` (``test``) rows of ``df``, in row order.
    ``diagnosis``: how the version names its diagnosis from them (the card's ``diagnosis_rule``;
    argmax when None)."""
    split = split.reindex(df.index)
    shas = pd.Series([file_sha256(p) for p in df["path"]], index=df.index)
    manifest = build_manifest(df, split, shas)
    val = df[split == "val"]
    scores = {"val": split_metrics(val, val_probs, threshold=threshold, malignant=malignant,
                                   diagnosis=diagnosis)}
    if test_probs is not None:
        scores["test"] = split_metrics(df[split == "test"], test_probs, threshold=threshold,
                                       malignant=malignant, diagnosis=diagnosis)
    reference = reference_frame(val, val_probs, threshold=threshold, malignant=malignant,
                                embed=monitoring_embedder(classifier), diagnosis=diagnosis, progress=progress)
    ood = ood_section(df[split == "train"], reference, val["path"], gate_features(classifier),
                      progress=progress)
    if ood is not None:
        reference = ood.with_distances(reference)
    extra = {**({"diagnosis_rule": diagnosis.to_dict(CLASSES)} if diagnosis is not None else {}),
             **(extra or {}), "reference": describe_reference(reference),
             **(ood.card_section() if ood is not None else {})}
    card = save_version(
        models_dir, classifier, threshold=threshold,
        data=data_info(manifest, name=data_name, licence=licence), manifest=manifest,
        metrics=scores, history=history, training=training, parent=parent,
        target_sensitivity=target_sensitivity, malignant=malignant, notes=notes,
        version_id=version_id, extra=extra, reference=reference)
    if ood is not None:
        ood.save(Path(models_dir) / card.id)
    return card


def register_fallback(models_dir: Path, df: pd.DataFrame, split: pd.Series, *, data_name: str,
                      seed: int = 0, target_sensitivity: float = 0.95, n_jobs: int = 1,
                      licence: str | None = None, notes: str | None = None,
                      version_id: str | None = None, progress: bool = True) -> ModelCard:
    """Fit the rule-based fallback (ABCD rule + metadata) on the ``train`` rows of ``df``, calibrate
    it and choose its threshold for ``target_sensitivity`` on the ``val`` rows
    (:func:`skinlesion.model.fallback.fit_fallback`), score it on the ``test`` rows and register it
    as a version of ``models_dir`` (its card's ``training`` holds the fit's sizes and timings)."""
    rules, info = fit_fallback(df, split, seed=seed, target_sensitivity=target_sensitivity,
                               progress=progress, n_jobs=n_jobs)
    test = df[split == "test"]
    test_features = extract_features(test["path"].tolist(), n_jobs=n_jobs, progress=progress)
    return register(models_dir, rules, df, split, threshold=rules.threshold_,
                    val_probs=info["val_probs"],
                    test_probs=rules.predict_proba_features(test_features, test),
                    data_name=data_name, licence=licence,
                    training={"mode": "rules"} | {k: v for k, v in info.items()
                                                  if k not in ("val", "val_probs")},
                    target_sensitivity=target_sensitivity, notes=notes, version_id=version_id,
                    progress=progress)
