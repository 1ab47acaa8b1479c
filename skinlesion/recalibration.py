"""The calibration step of a version, on its own: ``skinlesion models recalibrate VERSION --data DIR``.

A network trained with class-balanced loss weights over-states the rare classes, and one temperature
cannot undo a prior. This step compares calibrations of the version's raw validation logits
(:data:`skinlesion.calibration.METHODS`: temperature, BCTS, vector scaling) on validation only, out
of fold (folds of whole lesions, so a method with more parameters is not favoured for fitting its own
data); keeps the one with the lowest multiclass NLL; keeps the balanced diagnosis rule when it raises
the out-of-fold balanced accuracy of the shown diagnosis; fits the chosen calibration on the whole
validation split, folds it into the network's last layer, and chooses the threshold for the card's
target sensitivity on validation. The reference recipe runs it after training
(:mod:`skinlesion.reference`); :func:`recalibrate_version` applies it to a trained version without
training again, and rewrites what depends on the probabilities (weights, card metrics, reference
answers; the OOD gate, embeddings and image statistics do not depend on them and are kept).
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import calibration, intervals, metrics
from skinlesion.calibration import Calibrator, DiagnosisRule
from skinlesion.data.images import file_sha256, load_image
from skinlesion.errors import DataError
from skinlesion.evaluate import labelled_report
from skinlesion.fit_calibration import fold_calibrator, threshold_at, unfold_logits
from skinlesion.model.neural import NeuralClassifier
from skinlesion.register import OODFit, gate_features, ood_section, shown_summary, with_answers
from skinlesion.registry import (CARD_FILE, DRIFT_NULL_FILE, REFERENCE_FILE, ModelCard, load_version,
                                 read_manifest, read_reference, resolve_version, save_version)
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, METADATA_FIELDS, class_index
from skinlesion.train import cached_logits

N_FOLDS = 5
FOLD_SEED = 0
SELECTION_RULE = (
    f"on validation only, out of fold ({N_FOLDS} folds of whole lesions, seed {FOLD_SEED}): the "
    "calibration with the fewest parameters whose multiclass NLL is within one standard error "
    "(clustered by lesion) of the lowest; then the balanced diagnosis rule if it raises the "
    "out-of-fold balanced accuracy of the shown diagnosis, else the argmax")
#: Card keys this step rewrites (the rest of a recalibrated version's card is kept).
REWRITTEN = ("calibration", "diagnosis_rule", "calibration_ablation", "test_per_class_recall",
             "test_official", "test_intervals", "weak_recall", "recalibrated", "exports",
             "image_stats_reference", "ood")
#: Test recall of the shown diagnosis below which a class is named in the card's ``weak_recall``.
WEAK_RECALL = 0.6
#: Validation images whose answers through the serving path (images -> the saved classifier) are
#: compared with the calibrated cached answers.
SERVING_CHECK = 16
#: Largest difference in probability allowed between the two (float16 activation cache).
SERVING_ATOL = 5e-3
#: Metrics of the ablation's test intervals (the ones calibration and the diagnosis rule move).
ABLATION_METRICS = ("ece_15", "log_loss_multiclass", "balanced_accuracy", "balanced_accuracy_shown",
                    "auroc", "sensitivity_at_specificity_80")


def _is_malignant(y: np.ndarray) -> np.ndarray:
    return np.isin(y, [class_index(c) for c in DEFAULT_MALIGNANT])


def validation_rows(raw_val: np.ndarray, y_val: np.ndarray, lesions_val: np.ndarray,
                    methods: Sequence[str] = calibration.METHODS) -> list[dict]:
    """One row per calibration method (``methods``: fewest parameters first), scored out of fold on
    the validation split: multiclass NLL and the standard error of its gap to the lowest NLL
    (clustered by lesion), calibration error (15 bins, p_malignant), mean p_malignant against the
    prevalence, and the balanced accuracy of the argmax and of the balanced rule."""
    kw = {"n_folds": N_FOLDS, "seed": FOLD_SEED}
    folds = calibration.lesion_folds(lesions_val, N_FOLDS, FOLD_SEED)
    every_class = all(np.bincount(y_val[folds != f], minlength=len(CLASSES)).min() > 0
                      for f in range(N_FOLDS))
    unfit = [m for m in methods if m != "temperature" and not every_class]
    methods = [m for m in methods if m not in unfit]
    oof = {m: calibration.out_of_fold_probs(raw_val, y_val, lesions_val, m, **kw) for m in methods}
    row_nll = {m: -np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-15, None))
               for m, p in oof.items()}
    best = min(methods, key=lambda m: row_nll[m].mean())
    codes = intervals.cluster_codes(lesions_val)
    rows = []
    for method in methods:
        balanced = (metrics.balanced_accuracy(y_val, calibration.out_of_fold_probs(
            raw_val, y_val, lesions_val, method, balanced=True, **kw)) if every_class
            else float("nan"))  # the balanced rule needs each class's prior
        gap = np.bincount(codes, weights=row_nll[method] - row_nll[best])  # per lesion
        rows.append({
            "calibration": method,
            "val_oof_nll": float(row_nll[method].mean()),
            "val_oof_nll_gap_se": float(gap.std(ddof=1) * math.sqrt(gap.size) / len(y_val)),
            "val_oof_ece_15": metrics.expected_calibration_error(y_val, oof[method],
                                                                 n_bins=intervals.ECE_BINS),
            "val_oof_mean_p_malignant": float(metrics.p_malignant(oof[method]).mean()),
            "val_malignant_prevalence": float(_is_malignant(y_val).mean()),
            "val_oof_balanced_accuracy_argmax": metrics.balanced_accuracy(y_val, oof[method]),
            "val_oof_balanced_accuracy_balanced": balanced,
        })
    return rows + [{"calibration": m, "val_oof_nll": float("nan"),
                    "not_compared": "a class is missing from a training fold (too few validation "
                                    "images of it for a per-class bias)"} for m in unfit]


def choose(rows: list[dict]) -> tuple[str, str]:
    """The (calibration method, diagnosis rule) to ship, from out-of-fold validation rows only (see
    :data:`SELECTION_RULE`; ``rows`` fewest parameters first)."""
    rows = [r for r in rows if "not_compared" not in r]
    lowest = min(r["val_oof_nll"] for r in rows)
    best = next(r for r in rows if r["val_oof_nll"] - lowest <= r["val_oof_nll_gap_se"])
    rule = ("balanced" if best["val_oof_balanced_accuracy_balanced"]
            > best["val_oof_balanced_accuracy_argmax"] else "argmax")
    return best["calibration"], rule


@dataclass(frozen=True)
class CalibrationStep:
    """The chosen calibration fitted on the whole validation split: ``calibrator``, ``diagnosis``
    rule, ``threshold`` (target sensitivity on validation) and the validation ``rows`` it was chosen
    by."""

    calibrator: Calibrator
    diagnosis: DiagnosisRule
    threshold: float
    rows: list[dict]

    def card_section(self) -> dict:
        return {"calibration": {**self.calibrator.to_dict(), "fitted_on": "validation split",
                                "selection": SELECTION_RULE},
                "diagnosis_rule": {**self.diagnosis.to_dict(CLASSES),
                                   "shown_diagnosis": describe_rule(self.diagnosis)}}


def describe_rule(rule: DiagnosisRule) -> str:
    """What the shown diagnosis (``predicted_class``) is, in words, for the card."""
    if rule.rule == "argmax":
        return "the most probable class of the calibrated probabilities"
    return ("the class with the highest probability relative to its prevalence (argmax of "
            "p(class|image) / prior(class), the Bayes rule for balanced accuracy): rare classes "
            "are named more often than their probability alone says; the probabilities and "
            "p_malignant stay calibrated to the population")


def calibration_step(raw_val: np.ndarray, y_val: np.ndarray, lesions_val: np.ndarray, *,
                     target_sensitivity: float, method: str | None = None,
                     rule: str | None = None) -> CalibrationStep:
    """Choose (unless ``method`` / ``rule`` are given) and fit the calibration on validation."""
    rows = validation_rows(raw_val, y_val, lesions_val)
    chosen_method, chosen_rule = choose(rows)
    calibrator = calibration.fit_calibrator(raw_val, y_val, method or chosen_method)
    diagnosis = (DiagnosisRule("balanced", calibration.class_prior(y_val, len(CLASSES)))
                 if (rule or chosen_rule) == "balanced" else DiagnosisRule())
    threshold = threshold_at(y_val, calibrator.probs(raw_val), target_sensitivity)
    return CalibrationStep(calibrator=calibrator, diagnosis=diagnosis, threshold=threshold,
                           rows=rows)


def test_rows(raw_val: np.ndarray, y_val: np.ndarray, raw_test: np.ndarray, y_test: np.ndarray,
              lesions_test: np.ndarray, *, target_sensitivity: float, n_boot: int) -> list[dict]:
    """For the record only (never for choosing): each method fitted on the whole validation split
    (temperature alone when a class is missing from it), with either diagnosis rule, scored on test
    per image and per lesion with 95 % intervals."""
    counts = np.bincount(y_val, minlength=len(CLASSES))
    rule = DiagnosisRule("balanced", np.maximum(counts, 1) / max(counts.sum(), 1))
    shown = {"balanced_accuracy_shown": lambda yy, pp: metrics.balanced_accuracy(yy, rule.scores(pp))}
    rows = []
    every_class = np.bincount(y_val, minlength=len(CLASSES)).min() > 0
    for method in calibration.METHODS if every_class else ("temperature",):
        cal = calibration.fit_calibrator(raw_val, y_val, method)
        threshold = threshold_at(y_val, cal.probs(raw_val), target_sensitivity)
        probs = cal.probs(raw_test)
        rows.append({"calibration": method, "temperature": cal.temperature, "threshold": threshold,
                     "bias": cal.bias.tolist(), "test_mean_p_malignant":
                     float(metrics.p_malignant(probs).mean()),
                     "test_malignant_prevalence": float(_is_malignant(y_test).mean()),
                     "note": "balanced_accuracy: argmax of the probabilities; "
                             "balanced_accuracy_shown: the balanced rule",
                     "test_intervals": intervals.honest_report(
                         y_test, probs, lesions_test, threshold=threshold, n_boot=n_boot,
                         extra=shown, only=ABLATION_METRICS)})
    return rows


# --- an existing version --------------------------------------------------------------------------


def _folded(card: ModelCard) -> Calibrator:
    """The calibration a version's network serves now (its card's ``calibration``; for a version
    saved before calibrators, its temperature alone)."""
    section = card.model_extra.get("calibration")
    if section:
        return Calibrator.from_dict(section)
    t = float(card.model["temperature"])
    return Calibrator("temperature", np.full(len(CLASSES), 1.0 / t), np.zeros(len(CLASSES)))


def version_rows(data_df: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The version's validation and test rows of a dataset table, in manifest order, checked against
    the manifest: every image present with the same content (sha256) and diagnosis."""
    by_image = data_df.set_index(data_df["image"].astype(str))
    out = {}
    for split in ("val", "test"):
        wanted = manifest[manifest["split"] == split]
        missing = sorted(set(wanted["image"]) - set(by_image.index))
        if missing:
            raise DataError(f"{len(missing)} {split} images of the version are not in the data "
                            f"(e.g. {missing[0]}); give the dataset it was trained on")
        rows = by_image.loc[wanted["image"]].reset_index(drop=True)
        changed = [img for img, path, sha in zip(wanted["image"], rows["path"], wanted["sha256"],
                                                 strict=True) if file_sha256(path) != sha]
        if changed or list(rows["diagnosis"]) != list(wanted["diagnosis"]):
            raise DataError(f"the data differ from the version's manifest ({len(changed)} changed "
                            f"{split} images, e.g. {(changed or ['a diagnosis'])[0]})")
        out[split] = rows
    return out


def _labels(df: pd.DataFrame) -> np.ndarray:
    return np.array([class_index(d) for d in df["diagnosis"]], dtype=np.int64)


@dataclass(frozen=True)
class Recalibration:
    """What :func:`recalibrate_version` did: the ``step``, the new ``card``, the test ``report``
    (``labelled_report``), the ablation's ``test_rows`` and ``serving_diff`` (see
    :func:`serving_difference`)."""

    step: CalibrationStep
    card: ModelCard
    report: dict
    test_rows: list[dict]
    serving_diff: float


def serving_difference(classifier: NeuralClassifier, rows: pd.DataFrame, probs: np.ndarray) -> float:
    """Largest difference between ``classifier``'s own answers on the images of ``rows`` (what the
    Predictor serves, the calibration folded into its weights) and ``probs`` (the calibrator on
    the cached logits); raises when it exceeds :data:`SERVING_ATOL`."""
    served = classifier.predict_proba([load_image(p) for p in rows["path"]],
                                      rows.loc[:, list(METADATA_FIELDS)].reset_index(drop=True))
    diff = float(np.abs(served - probs).max())
    if diff > SERVING_ATOL:
        raise RuntimeError(f"the recalibrated weights serve probabilities {diff:.4f} away from the "
                           f"calibrated cached answers (> {SERVING_ATOL}); the fold is wrong")
    return diff


def recalibrate_version(models_dir: Path, ref: str, data_df: pd.DataFrame, cache_dir: Path, *,
                        method: str | None = None, rule: str | None = None, n_boot: int = 1000,
                        card_updates: dict | None = None, progress: bool = True) -> Recalibration:
    """Run the calibration step on the trained version ``ref`` of ``models_dir`` and rewrite it in
    place (same id): the calibration folded into its weights, temperature, threshold, card metrics
    (val, test, per-class recall of the shown diagnosis, official aggregates, intervals,
    weak_recall, the calibration ablation) and its reference answers; its OOD gate is refitted
    through the registration's code path (:func:`skinlesion.register.ood_section`: the gate does
    not depend on the probabilities, but a card must hold it in the current format; a forward
    pass over a sample of training images). ``data_df``: the dataset
    table it was trained on (checked against its manifest); ``card_updates``: card keys to set too
    (e.g. a reworded intended use). A neural version only."""
    vid = resolve_version(models_dir, ref)
    version = load_version(vid, models_dir, device="cpu")
    card = version.card
    if not isinstance(version.classifier, NeuralClassifier):
        raise DataError(f"version {vid!r} is a {card.kind} version; only neural versions are "
                        "recalibrated")
    manifest = read_manifest(models_dir, vid)
    rows = version_rows(data_df, manifest)
    old = _folded(card)
    raw = {s: unfold_logits(cached_logits(version.classifier, rows[s], cache_dir,
                                          progress=progress), old) for s in rows}
    y = {s: _labels(rows[s]) for s in rows}
    lesions = {s: rows[s]["lesion_id"].astype(str).to_numpy() for s in rows}
    target = card.target_sensitivity or 0.90
    step = calibration_step(raw["val"], y["val"], lesions["val"], target_sensitivity=target,
                            method=method, rule=rule)
    fold_calibrator(version.classifier.net, step.calibrator, old)
    version.classifier.temperature = step.calibrator.temperature
    probs = {s: step.calibrator.probs(raw[s]) for s in rows}
    serving_diff = serving_difference(version.classifier, rows["val"].iloc[:SERVING_CHECK],
                                      probs["val"][:SERVING_CHECK])
    malignant = tuple(card.malignant)
    report = labelled_report(y["test"], probs["test"], lesions["test"], threshold=step.threshold,
                             malignant=malignant, diagnosis=step.diagnosis, n_boot=n_boot)
    ablation = test_rows(raw["val"], y["val"], raw["test"], y["test"], lesions["test"],
                         target_sensitivity=target, n_boot=n_boot)
    reference = read_reference(models_dir, vid)
    if reference is None or list(reference["image"]) != list(rows["val"]["image"]):
        raise DataError(f"version {vid!r} has no reference answers for its validation images")
    reference = with_answers(reference, probs["val"], threshold=step.threshold,
                             malignant=malignant, diagnosis=step.diagnosis)
    ood = ood_section(training_rows(data_df, manifest), reference, rows["val"]["path"],
                      gate_features(version.classifier), progress=progress)
    if ood is not None:
        reference = ood.with_distances(reference)
    extra = {k: v for k, v in card.model_extra.items() if k not in REWRITTEN}
    extra |= ood.card_section() if ood is not None else {}
    extra |= step.card_section() | {
        "calibration_ablation": {"validation_out_of_fold": step.rows, "test": ablation},
        "test_per_class_recall": report["per_class_recall"], "test_official": report["official"],
        "test_intervals": report["intervals"],
        "weak_recall": sorted(c for c, v in report["per_class_recall"].items() if v < WEAK_RECALL),
        "recalibrated": {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                         "previous": old.to_dict(), "previous_threshold": card.threshold,
                         "serving_path_max_abs_diff": serving_diff},
    }
    extra |= card_updates or {}
    if "selection" in extra:
        extra["selection"] = {**extra["selection"], "calibration": step.calibrator.method,
                              "diagnosis_rule": step.diagnosis.rule}
    training = {**card.training}
    if "config" in training:
        training["config"] = {**training["config"], "calibration": step.calibrator.method}
    scores = {"val": shown_summary(y["val"], probs["val"], threshold=step.threshold,
                                   malignant=malignant, diagnosis=step.diagnosis),
              "test": report["summary"]}
    new_card = _rewrite(models_dir, vid, version.classifier, card, threshold=step.threshold,
                        metrics=scores, training=training, extra=extra, reference=reference,
                        manifest=manifest, notes=recalibrated_note(card.notes, step))
    if ood is not None:
        ood.save(Path(models_dir) / vid)
    return Recalibration(step=step, card=new_card, report=report, test_rows=ablation,
                         serving_diff=serving_diff)


def training_rows(data_df: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """The version's training rows of a dataset table, in the table's order (the OOD gate's seeded
    training sample is drawn from them)."""
    return data_df[data_df["image"].astype(str).isin(manifest.loc[manifest["split"] == "train", "image"])]


def refit_ood_gate(models_dir: Path, ref: str, data_df: pd.DataFrame, *, progress: bool = True) -> OODFit:
    """Refit the OOD gate of the neural version ``ref`` in place, through the registration's code
    path (:func:`skinlesion.register.ood_section`), and nothing else: the card's ``ood``, the
    texture check's sidecar and the reference answers' ``texture_distance`` column are rewritten;
    weights, probabilities and every other card key stay as they are (a forward pass over the
    training sample and the validation images, no calibration step). Files are replaced
    atomically one by one; the drift null, which compares reference columns, is removed (monitoring
    recomputes it on first use, then with ``texture_distance``)."""
    vid = resolve_version(models_dir, ref)
    version = load_version(vid, models_dir, device="cpu")
    manifest = read_manifest(models_dir, vid)
    rows = version_rows(data_df, manifest)
    reference = read_reference(models_dir, vid)
    if reference is None or list(reference["image"]) != list(rows["val"]["image"]):
        raise DataError(f"version {vid!r} has no reference answers for its validation images")
    ood = ood_section(training_rows(data_df, manifest), reference, rows["val"]["path"],
                      gate_features(version.classifier), progress=progress)
    if ood is None:
        raise DataError(f"version {vid!r} has no image network or too few images for an OOD gate")
    folder = Path(models_dir) / vid
    ood.save(folder)
    _replace(folder / REFERENCE_FILE, lambda path: ood.with_distances(reference).to_parquet(path, index=False))
    card = json.loads((folder / CARD_FILE).read_text()) | ood.card_section()
    _replace(folder / CARD_FILE, lambda path: path.write_text(json.dumps(card, indent=2) + "\n"))
    (folder / DRIFT_NULL_FILE).unlink(missing_ok=True)
    return ood


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file beside it, renamed over it when complete."""
    tmp = path.with_name(f".{path.name}-{secrets.token_hex(3)}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def recalibrated_note(notes: str | None, step: CalibrationStep) -> str:
    """The card's notes with a sentence saying the calibration step ran after training."""
    sentence = (f"Recalibrated after training by the calibration step (skinlesion.recalibration): "
                f"{step.calibrator.method} calibration, the {step.diagnosis.rule} diagnosis rule "
                f"and the threshold refitted on the validation split; the network was not "
                f"trained again.")
    return f"{notes} {sentence}" if notes else sentence


def _rewrite(models_dir: Path, vid: str, classifier: NeuralClassifier, card: ModelCard, *,
             threshold: float, metrics: dict, training: dict, extra: dict, notes: str,
             reference: pd.DataFrame, manifest: pd.DataFrame) -> ModelCard:
    """Save the version again under its id; the old folder is kept aside until the new one is
    complete (restored if saving fails). Files other than the version's own (e.g. results.json)
    are carried over; runtime exports and the drift null, which depend on the old answers, are
    not."""
    folder = Path(models_dir) / vid
    aside = Path(models_dir) / f".{vid}-old-{secrets.token_hex(3)}"
    folder.rename(aside)
    try:
        new = save_version(models_dir, classifier, threshold=threshold, data=card.data,
                           manifest=manifest, metrics=metrics, history=card.history,
                           training=training, parent=card.parent,
                           target_sensitivity=card.target_sensitivity,
                           malignant=tuple(card.malignant), notes=notes, version_id=vid,
                           extra=extra, reference=reference)
    except BaseException:
        if folder.exists():
            shutil.rmtree(folder)
        aside.rename(folder)
        raise
    for kept in KEPT_FILES:
        if (aside / kept).is_file():
            shutil.copy2(aside / kept, folder / kept)
    shutil.rmtree(aside)
    return new


#: Files of a version folder that are not the version's own and survive a recalibration.
KEPT_FILES = ("results.json",)
