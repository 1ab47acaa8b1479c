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
from skinlesion.lifecycle.data import (PRODUCTION_ONLY, PRODUCTION_PREFIX, TrainingData,
                                       training_data)
from skinlesion.lifecycle.gate import (HOLDOUT, ORIGINAL_TEST, GateReport, SplitComparison,
                                       compare_split, not_compared)
from skinlesion.lifecycle.spec import Reporter, RetrainSpec
from skinlesion.register import register
from skinlesion.registry import (ModelCard, ModelVersion, build_manifest, data_fingerprint, diff_manifests,
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
                         include_review_queue=spec.include_review_queue, seed=spec.seed)
    for line in data_lines(card.id, data):
        reporter.log(line)
    return data


def data_lines(base: str, data: TrainingData) -> list[str]:
    """What a retrain trains on, for its log: where the data came from, the counts, and what the
    gate can fairly compare on."""
    counts = data.counts()
    lesions = data.df.loc[data.df["image"].str.startswith(PRODUCTION_PREFIX), "lesion_id"].nunique()
    if data.kind == PRODUCTION_ONLY:
        n_val = int((data.split == "val").sum())
        lines = [f"{base}'s training data ({data.data_name}) is not on this machine (its card names "
                 "no data folder here; give one with `skinlesion retrain --data DIR`): training on "
                 f"the {counts['production_train'] + counts['holdout']} labelled cases whose "
                 f"images were kept, alone: {counts['production_train'] - n_val} in training, "
                 f"{n_val} in validation ({lesions} lesions), {counts['holdout']} held out (the "
                 f"newest, for the gate; {counts['review_labels']} of the training cases from the "
                 "review queue)"]
        if data.base_test:
            lines.append(f"{data.base_test} of these cases are images of {base}'s own test split "
                         "(the demo's traffic is drawn from it): the candidate trains on some of "
                         f"them, so {base}'s test split is no fair ground for comparing the two; "
                         "the gate compares them on the recent hold-out only, which neither "
                         "trained on")
        return lines
    lines = [f"data: {counts['original']} original images from {data.data_dir}, "
             f"{counts['production_train']} labelled production cases in training "
             f"({counts['review_labels']} from the review queue), {counts['holdout']} held out"]
    if data.test_copies:
        lines.append(f"{data.test_copies} production cases are near-duplicates of images of "
                     f"{base}'s test split (the same lesions): held out, never trained on, so the "
                     "original test split stays a fair comparison")
    if counts["production_train"] + counts["holdout"] == 0:
        lines.append(f"no labelled production case has its image kept: retraining on {base}'s own "
                     "data only (keep images with SKINLESION_RETAIN_IMAGES=true to add labelled "
                     "production cases)")
    return lines


def _fit(data: TrainingData, config: TrainConfig, base: ModelVersion, spec: RetrainSpec,
         reporter: Reporter) -> FitResult:
    """Fit the candidate, starting from the base's backbone (a head retrain trains a new head on
    the base's own image features, fine-tuned ones included)."""
    def on_epoch(row: dict) -> None:
        reporter.progress(0.05 + 0.70 * row["epoch"] / row["epochs"],
                          f"epoch {row['epoch']}/{row['epochs']}: val AUROC {row['val_auroc']:.3f}, "
                          f"balanced accuracy {row['val_balanced_accuracy']:.3f}")

    backbone = getattr(getattr(base.classifier, "net", None), "backbone", None)
    reporter.progress(0.05, f"training ({config.mode}, {config.epochs} epochs"
                            + (f", from {base.card.id}'s backbone)" if backbone else ")"))
    return fit(data.df, data.split, config, spec.cache_dir, progress=False, on_epoch=on_epoch,
               init_backbone=backbone)


def _answers(predict: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame) -> np.ndarray:
    """``predict(rows)``, or an empty (0, 8) array for no rows."""
    return predict(rows) if len(rows) else np.zeros((0, len(CLASSES)))


def _gate(store: Store, base: ModelVersion, data: TrainingData, fitted: FitResult,
          test_probs: np.ndarray, spec: RetrainSpec, candidate: str) -> GateReport:
    """The candidate against the base as it serves (at its tuned threshold where the route sets
    one, else its card's) on the recent hold-out and the original test split (not compared when
    the original data is not on this machine)."""
    card = base.card
    served = store.get_route().threshold_for(card.id)
    thresholds = (fitted.threshold, card.threshold if served is None else served)

    def compare(name: str, rows: pd.DataFrame, candidate_probs: np.ndarray) -> SplitComparison:
        return compare_split(name, rows["diagnosis"], candidate_probs,
                             _answers(lambda r: predict_dataset(base, r, progress=False), rows),
                             thresholds=thresholds, resamples=spec.bootstrap_resamples,
                             seed=spec.seed, malignant=tuple(card.malignant))

    splits = [compare(HOLDOUT, data.holdout, _answers(fitted.predict_proba, data.holdout))]
    if data.kind == PRODUCTION_ONLY:
        splits.append(not_compared(ORIGINAL_TEST, f"not compared: {card.id}'s training data, its "
                                                  "test split with it, is not on this machine"))
    else:
        splits.append(compare(ORIGINAL_TEST, data.df[data.split == "test"], test_probs))
    return GateReport(candidate=candidate, active=card.id, resamples=spec.bootstrap_resamples,
                      seed=spec.seed, splits=splits,
                      holdout_fingerprint=_holdout_fingerprint(data.holdout),
                      thresholds={"candidate": thresholds[0], "active": thresholds[1]})


def _registered(data: TrainingData) -> tuple[pd.DataFrame, pd.Series]:
    """The rows the candidate's manifest records: its training data, and in a production-only
    retrain the recent hold-out as its test split (its card's test metrics are then the
    hold-out's; with the original data, its test split is the original one)."""
    if data.kind != PRODUCTION_ONLY:
        return data.df, data.split
    return (pd.concat([data.df, data.holdout], ignore_index=True),
            pd.concat([data.split, pd.Series("test", index=range(len(data.holdout)))],
                      ignore_index=True).rename("split"))


def _data_name(data: TrainingData) -> str:
    counts = data.counts()
    if data.kind == PRODUCTION_ONLY:
        return (f"{counts['production_train'] + counts['holdout']} labelled production cases with "
                f"kept images, alone ({data.data_name} not on this machine); test split: the "
                f"{counts['holdout']} newest, held out")
    return f"{data.data_name} + {counts['production_train']} labelled production cases"


def _notes(base: str, data: TrainingData) -> str:
    notes = f"Retrained from {base}: a candidate, promoted only by a person."
    if data.kind == PRODUCTION_ONLY:
        notes += (f" Trained without {base}'s original data (not on this machine), on labelled "
                  "production cases alone; its test metrics are those of the recent hold-out, "
                  f"not of {base}'s test split: compare the two with the gate, on the same cases.")
        if data.base_test:
            notes += (f" {data.base_test} of its cases are images of {base}'s test split, so that "
                      "split is no fair test of this version.")
    return notes


def _register(card: ModelCard, data: TrainingData, fitted: FitResult, test_probs: np.ndarray,
              spec: RetrainSpec, gate: GateReport) -> ModelCard:
    """Register the candidate under ``gate.candidate``, its card naming its lineage, its data and
    the gate."""
    lineage = {"base": card.id, "data_dir": data.data_dir, "data_name": data.data_name,
               "data": data.kind, "counts": data.counts(), "holdout_share": spec.holdout_share}
    df, split = _registered(data)
    return register(
        Path(spec.models_dir), fitted.classifier, df, split, threshold=fitted.threshold,
        val_probs=fitted.val_probs, test_probs=test_probs if len(test_probs) else None,
        data_name=_data_name(data),
        history=fitted.history, training=training_summary(fitted), parent=card.id,
        target_sensitivity=fitted.config.target_sensitivity, malignant=tuple(card.malignant),
        notes=_notes(card.id, data), version_id=gate.candidate,
        extra={"retraining": lineage, "gate": gate.model_dump(mode="json")}, progress=False)


def retrain(store: Store, spec: RetrainSpec, reporter: Reporter) -> RetrainResult:
    """Retrain ``spec.base_version`` on its original data plus the labelled production cases (or,
    when its data is not on this machine, on the cases alone), compare the candidate with it (the
    gate) and register the candidate (never activated).

    Progress: 0–5 % data, 5–75 % training (per epoch), 75–90 % the gate, 90–100 % registering."""
    models_dir = Path(spec.models_dir)
    card = _base_card(models_dir, spec.base_version)
    data = _collect(store, card, spec, reporter)
    config = retrain_config(card, spec)
    base = load_version(card.id, models_dir, device=spec.device)
    fitted = _fit(data, config, base, spec, reporter)
    summary = training_summary(fitted)
    reporter.log(f"trained: {summary['epochs_run']} of {config.epochs} epochs run, epoch "
                 f"{summary['best_epoch']} kept (best validation balanced accuracy)")
    # a log line as well as progress: the job writes progress at most once a second, lines all
    reporter.log(f"gate: scoring the candidate and {card.id} on the {len(data.holdout)} held-out "
                 "cases" + (" and the original test split" if data.kind != PRODUCTION_ONLY else ""))
    reporter.progress(0.75, f"gate: candidate vs {card.id} on the recent hold-out"
                            + (" and the original test split" if data.kind != PRODUCTION_ONLY else ""))
    registered, registered_split = _registered(data)
    test_probs = _answers(fitted.predict_proba, registered[registered_split == "test"])
    vid = new_version_id(config.backbone if config.inputs != "metadata" else "metadata")
    gate = _gate(store, base, data, fitted, test_probs, spec, vid)
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
