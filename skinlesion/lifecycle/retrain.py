"""One retrain: a candidate version of ``base`` fitted on its original data plus the labelled
production cases, compared with ``base`` (the gate) and registered — never activated.

The data are :func:`skinlesion.lifecycle.data.training_data`'s; the candidate is fitted with
:func:`skinlesion.train.fit` (the base's recipe, with the spec's mode and epochs) and registered with
:func:`skinlesion.register.register`, its card recording the lineage (``retraining``) and the gate
(:mod:`skinlesion.lifecycle.gate`: candidate and base side by side on the recent hold-out and the
original test split). It is a candidate only: nothing here changes the serving route; a person
promotes it. Runs inside a retraining job (:mod:`skinlesion.lifecycle.job_process`), so it imports
the training stack (torch); launching and listing jobs does not import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from skinlesion.errors import SkinLesionError
from skinlesion.evaluate import predict_dataset
from skinlesion.lifecycle.data import TrainingData, training_data
from skinlesion.lifecycle.gate import HOLDOUT, ORIGINAL_TEST, GateReport, compare_split
from skinlesion.lifecycle.spec import Reporter, RetrainSpec
from skinlesion.register import register
from skinlesion.registry import (ModelCard, build_manifest, data_fingerprint, diff_manifests,
                                 load_version, new_version_id, read_card, read_manifest,
                                 resolve_version)
from skinlesion.schema import CLASSES
from skinlesion.store import Store
from skinlesion.train import FitResult, TrainConfig, fit, training_summary


class RetrainResult(BaseModel):
    """What a retrain produced: the candidate version, its parent, the data counts, the data diff
    against the parent (image names) and the gate."""

    model_config = ConfigDict(frozen=True)

    version: str
    parent: str
    fingerprint: str
    parent_fingerprint: str
    data: dict[str, int]
    added_images: list[str]
    removed_images: list[str]
    gate: GateReport


def _holdout_fingerprint(holdout: pd.DataFrame) -> str | None:
    if holdout.empty:
        return None
    return data_fingerprint(build_manifest(holdout, pd.Series("holdout", index=holdout.index),
                                           holdout["image_sha256"]))


def _base_card(models_dir: Path, ref: str) -> ModelCard:
    """The card of the version to retrain; only neural versions are retrained."""
    card = read_card(models_dir / resolve_version(models_dir, ref))
    if card.kind != "neural":
        raise SkinLesionError(f"{card.id} is a {card.kind!r} version; only neural versions are "
                              "retrained (the fallback is refitted with its own recipe)")
    return card


def retrain_config(card: ModelCard, spec: RetrainSpec) -> TrainConfig:
    """The base's training recipe with the spec's mode, epochs, seed, device and overrides."""
    recipe = dict(card.training.get("config", {}))
    return TrainConfig.model_validate({**recipe, "mode": spec.mode, "epochs": spec.epochs,
                                       "seed": spec.seed, "device": spec.device,
                                       **spec.train_overrides})


def _collect(store: Store, card: ModelCard, spec: RetrainSpec, reporter: Reporter) -> TrainingData:
    reporter.progress(0.0, f"collecting the training data of {card.id}")
    data = training_data(store, card, Path(spec.models_dir), data_dir=spec.data_dir,
                         holdout_share=spec.holdout_share,
                         include_review_queue=spec.include_review_queue)
    counts = data.counts()
    reporter.log(f"data: {counts['original']} original images from {data.data_dir}, "
                 f"{counts['production_train']} labelled production cases in training "
                 f"({counts['review_labels']} from the review queue), {counts['holdout']} held out")
    if counts["production_train"] + counts["holdout"] == 0:
        reporter.log(f"no labelled production case has its image kept: retraining on {card.id}'s own "
                     "data only (keep images with SKINLESION_RETAIN_IMAGES=true to add labelled "
                     "production cases)")
    return data


def _fit(data: TrainingData, config: TrainConfig, spec: RetrainSpec, reporter: Reporter) -> FitResult:
    def on_epoch(row: dict) -> None:
        reporter.progress(0.05 + 0.70 * row["epoch"] / row["epochs"],
                          f"epoch {row['epoch']}/{row['epochs']}: val AUROC {row['val_auroc']:.3f}, "
                          f"balanced accuracy {row['val_balanced_accuracy']:.3f}")

    reporter.progress(0.05, f"training ({config.mode}, {config.epochs} epochs)")
    return fit(data.df, data.split, config, spec.cache_dir, progress=False, on_epoch=on_epoch)


def _answers(predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame) -> np.ndarray:
    """``predict(rows)``, or an empty (0, 8) array for no rows."""
    return predict(rows) if len(rows) else np.zeros((0, len(CLASSES)))


def _gate(store: Store, card: ModelCard, data: TrainingData, fitted: FitResult,
          test_probs: np.ndarray, spec: RetrainSpec, candidate: str) -> GateReport:
    """The candidate against the base as it serves (at its tuned threshold where the route sets
    one, else its card's) on the recent hold-out and the original test split."""
    active = load_version(card.id, Path(spec.models_dir), device=spec.device)
    served = store.get_route().threshold_for(card.id)
    thresholds = (fitted.threshold, active.card.threshold if served is None else served)
    test = data.df[data.split == "test"]
    splits = [compare_split(name, rows["diagnosis"], candidate_probs,
                            _answers(lambda r: predict_dataset(active, r, progress=False), rows),
                            thresholds=thresholds, resamples=spec.bootstrap_resamples,
                            seed=spec.seed, malignant=tuple(card.malignant))
              for name, rows, candidate_probs in (
                  (HOLDOUT, data.holdout, _answers(fitted.predict_proba, data.holdout)),
                  (ORIGINAL_TEST, test, test_probs))]
    return GateReport(candidate=candidate, active=card.id, resamples=spec.bootstrap_resamples,
                      seed=spec.seed, splits=splits,
                      holdout_fingerprint=_holdout_fingerprint(data.holdout),
                      thresholds={"candidate": thresholds[0], "active": thresholds[1]})


def _register(card: ModelCard, data: TrainingData, fitted: FitResult, test_probs: np.ndarray,
              spec: RetrainSpec, gate: GateReport) -> ModelCard:
    """Register the candidate under ``gate.candidate``, its card naming its lineage and gate."""
    counts = data.counts()
    lineage = {"base": card.id, "data_dir": data.data_dir, "data_name": data.data_name,
               "counts": counts, "holdout_share": spec.holdout_share}
    return register(
        Path(spec.models_dir), fitted.classifier, data.df, data.split, threshold=fitted.threshold,
        val_probs=fitted.val_probs, test_probs=test_probs,
        data_name=f"{data.data_name} + {counts['production_train']} labelled production cases",
        history=fitted.history, training=training_summary(fitted), parent=card.id,
        target_sensitivity=fitted.config.target_sensitivity, malignant=tuple(card.malignant),
        notes=f"Retrained from {card.id}: a candidate, promoted only by a person.",
        version_id=gate.candidate,
        extra={"retraining": lineage, "gate": gate.model_dump(mode="json")}, progress=False)


def retrain(store: Store, spec: RetrainSpec, reporter: Reporter) -> RetrainResult:
    """Retrain ``spec.base_version`` on its original data plus the labelled production cases,
    compare the candidate with it (the gate) and register the candidate (never activated).

    Progress: 0–5 % data, 5–75 % training (per epoch), 75–90 % the gate, 90–100 % registering."""
    models_dir = Path(spec.models_dir)
    card = _base_card(models_dir, spec.base_version)
    data = _collect(store, card, spec, reporter)
    config = retrain_config(card, spec)
    fitted = _fit(data, config, spec, reporter)
    reporter.progress(0.75, f"gate: candidate vs {card.id} on the recent hold-out and the original "
                            "test split")
    test_probs = fitted.predict_proba(data.df[data.split == "test"])
    vid = new_version_id(config.backbone if config.inputs != "metadata" else "metadata")
    gate = _gate(store, card, data, fitted, test_probs, spec, vid)
    reporter.progress(0.90, f"registering the candidate {vid}")
    new = _register(card, data, fitted, test_probs, spec, gate)
    diff = diff_manifests(read_manifest(models_dir, card.id), read_manifest(models_dir, new.id))
    reporter.log(f"candidate {new.id}: {len(diff['added'])} images added, "
                 f"{len(diff['removed'])} removed, {len(diff['relabelled'])} relabelled, "
                 f"{len(diff['resplit'])} resplit against {card.id}")
    for line in gate.summary().splitlines():
        reporter.log(f"gate: {line}")
    return RetrainResult(version=new.id, parent=card.id, fingerprint=new.data.fingerprint,
                         parent_fingerprint=card.data.fingerprint, data=data.counts(),
                         added_images=diff["added"], removed_images=diff["removed"], gate=gate)
