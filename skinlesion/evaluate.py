"""Score a model version on a dataset: batch prediction, metrics JSON and the report's plots."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from skinlesion import intervals, metrics, plots, scoring
from skinlesion.calibration import DiagnosisRule
from skinlesion.data.images import file_sha256, load_image
from skinlesion.errors import DataError, ImageError
from skinlesion.registry import ModelCard, ModelVersion, read_manifest
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, METADATA_FIELDS, class_index

SPLIT_CHOICES = ("unseen", "test", "all")
#: What batch prediction does with an image it cannot read: leave it out and go on, or answer
#: nothing once one is found (every image is still read, so all bad ones are named).
ON_ERROR = ("skip", "stop")


@dataclass(frozen=True)
class BadImage:
    """An image of a batch that could not be read, and why (the reader's message, naming the file)."""

    image: str
    path: str
    reason: str


class BadImagesError(DataError):
    """A batch had unreadable images (``bad``: every one of them) and was asked to stop."""

    def __init__(self, bad: list[BadImage]):
        self.bad = bad
        listing = "; ".join(f"{b.image}: {b.reason}" for b in bad)
        super().__init__(f"{len(bad)} image(s) cannot be read, nothing was predicted: {listing}. "
                         "Fix or remove them, or pass --on-error skip to answer the others")


@dataclass(frozen=True)
class BatchPredictions:
    """Answers for the readable images (``images``, in dataset order, with ``probs`` rows) and the
    images left out (``bad``)."""

    images: list[str]
    probs: np.ndarray
    bad: list[BadImage]


def write_bad_images(path: Path, bad: list[BadImage]) -> Path:
    """The unreadable images of a batch as a CSV (``image,path,reason``), for the person fixing
    them."""
    pd.DataFrame([vars(b) for b in bad], columns=["image", "path", "reason"]).to_csv(path,
                                                                                   index=False)
    return Path(path)


def _read_or_none(path: str, image: str, bad: list[BadImage]):
    try:
        return load_image(path)
    except ImageError as err:
        bad.append(BadImage(image=image, path=path, reason=str(err)))
        return None


def screen_images(df: pd.DataFrame, *, progress: bool = True) -> tuple[pd.DataFrame, list[BadImage]]:
    """The rows of a dataset table whose image can be read, and every one that cannot (for paths
    that read the files themselves, e.g. the serving path of ``predict --log``)."""
    bad: list[BadImage] = []
    ok = [_read_or_none(str(p), str(name), bad) is not None
          for p, name in tqdm(zip(df["path"], df["image"]), total=len(df), desc="check images",
                              unit="img", file=sys.stderr, disable=not progress)]
    return df[np.array(ok, dtype=bool)], bad


def predict_images(version: ModelVersion, df: pd.DataFrame, *,
                   on_error: Literal["skip", "stop"] = "stop", batch_size: int = 32,
                   progress: bool = True) -> BatchPredictions:
    """Calibrated probabilities for every readable image of a dataset table, naming every image
    that cannot be read (missing, empty, corrupt, truncated, not an image, too large or small).

    ``skip``: the readable images are answered, the others listed in ``bad``. ``stop``: every image
    is still read so that all bad ones are named, then :class:`BadImagesError` lists them (and
    nothing is answered); without bad images both give the same answers."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    bad: list[BadImage] = []
    answered: list[str] = []
    parts: list[np.ndarray] = []
    bar = tqdm(total=len(df), desc=f"predict {version.id}", unit="img", file=sys.stderr,
               disable=not progress)
    for start in range(0, len(df), batch_size):
        chunk = df.iloc[start:start + batch_size]
        images = [_read_or_none(str(p), str(name), bad)
                  for p, name in zip(chunk["path"], chunk["image"])]
        keep = [i for i, img in enumerate(images) if img is not None]
        if keep and not (on_error == "stop" and bad):
            meta = chunk.iloc[keep].loc[:, list(METADATA_FIELDS)].reset_index(drop=True)
            parts.append(version.classifier.predict_proba([images[i] for i in keep], meta))
            answered += [str(chunk["image"].iloc[i]) for i in keep]
        bar.update(len(chunk))
    bar.close()
    if bad and on_error == "stop":
        raise BadImagesError(bad)
    probs = np.concatenate(parts) if parts else np.zeros((0, len(CLASSES)))
    return BatchPredictions(images=answered, probs=probs, bad=bad)


def predict_dataset(version: ModelVersion, df: pd.DataFrame, *, batch_size: int = 32,
                    progress: bool = True) -> np.ndarray:
    """Calibrated probabilities (len(df), 8) for every row of a dataset table, in batches;
    :class:`BadImagesError` names every unreadable image (see :func:`predict_images`)."""
    return predict_images(version, df, on_error="stop", batch_size=batch_size,
                          progress=progress).probs


def select_rows(version: ModelVersion, df: pd.DataFrame, models_dir: Path, split: str) -> tuple[
        pd.DataFrame, str]:
    """Rows to score and a sentence saying which. ``unseen`` (default) keeps images the version never
    trained or validated on (matched by content hash against its manifest); ``test`` keeps its own test
    split; ``all`` keeps everything."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    if split == "all":
        return df, f"all {len(df)} images"
    manifest = read_manifest(models_dir, version.id)
    hashes = df["path"].map(file_sha256)
    if split == "test":
        keep = hashes.isin(set(manifest.loc[manifest["split"] == "test", "sha256"]))
        what = "the version's own test split"
    else:
        keep = ~hashes.isin(set(manifest.loc[manifest["split"] != "test", "sha256"]))
        what = "images the version never saw in training or validation"
    chosen = df.loc[keep]
    if chosen.empty:
        raise DataError(f"no image of this dataset is in {what}; use --split all to score every image")
    return chosen, f"{len(chosen)} of {len(df)} images ({what})"


@dataclass(frozen=True)
class EvaluationReport:
    metrics: dict
    out_dir: Path
    files: list[Path]


def _labels(df: pd.DataFrame) -> np.ndarray:
    if df["diagnosis"].isna().any():
        raise DataError("the dataset has no ground truth for some images; evaluation needs the "
                        "ground-truth CSV (use `skinlesion predict` for unlabelled data)")
    return np.array([class_index(d) for d in df["diagnosis"]])


def card_file_probs(card: ModelCard, probs: np.ndarray) -> np.ndarray:
    """The probabilities a predictions file of this version carries (``skinlesion predict``; what
    a challenge scorer reads): the calibrated ones re-weighted inside the malignant and the benign
    classes by the card's diagnosis rule (:meth:`DiagnosisRule.file_probs`), so their argmax comes
    closer to the shown diagnosis while p_malignant, the malignant columns' sum, stays calibrated."""
    rule = DiagnosisRule.from_dict(card.model_extra.get("diagnosis_rule"), CLASSES)
    return rule.file_probs(probs, np.isin(CLASSES, card.malignant))


def most_confident_mistakes(y: np.ndarray, probs: np.ndarray, k: int = 12,
                            pred: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` wrong predictions (``pred``, the argmax by default) with the highest
    probability of the wrong class."""
    pred = probs.argmax(1) if pred is None else pred
    wrong = np.flatnonzero(pred != y)
    return wrong[np.argsort(-probs[wrong, pred[wrong]])][:k]


def labelled_report(y: np.ndarray, probs: np.ndarray, lesions: np.ndarray, *, threshold: float,
                    malignant: tuple[str, ...] = DEFAULT_MALIGNANT,
                    diagnosis: DiagnosisRule | None = None, n_boot: int = 1000) -> dict:
    """A version's numbers on labelled answers: ``summary`` at ``threshold`` (with
    ``balanced_accuracy_shown``, of the diagnosis the ``diagnosis`` rule shows, and
    ``balanced_accuracy_file``, of the argmax of the probabilities a predictions file carries:
    :meth:`DiagnosisRule.file_probs`), ``per_class`` (one-vs-rest on the probabilities),
    ``per_class_recall`` (of the shown diagnosis), ``official`` (the challenge scorer's aggregates,
    computed as it does from the predictions file's probabilities) and ``intervals`` (every headline
    metric per image and per lesion, 95 % cluster bootstrap over ``lesions``,
    ``balanced_accuracy_shown`` and ``balanced_accuracy_file`` included)."""
    rule = diagnosis or DiagnosisRule()
    malignant_mask = np.isin(CLASSES, malignant)
    per_class = metrics.per_class_metrics(y, probs)
    shown = metrics.per_class_metrics(y, rule.scores(probs))
    extra = {"balanced_accuracy_shown": lambda yy, pp: metrics.balanced_accuracy(yy, rule.scores(pp)),
             "balanced_accuracy_file": lambda yy, pp: metrics.balanced_accuracy(
                 yy, rule.file_probs(pp, malignant_mask))}
    return {
        "summary": {**metrics.summary(y, probs, threshold=threshold, malignant=malignant),
                    **{name: f(y, probs) for name, f in extra.items()}},
        "per_class": per_class,
        "per_class_recall": dict(zip(shown["class"], shown["sensitivity"].astype(float))),
        "official": scoring.official(y, rule.file_probs(probs, malignant_mask)),
        "intervals": intervals.honest_report(y, probs, lesions, threshold=threshold,
                                             malignant=malignant, n_boot=n_boot, extra=extra),
    }


def evaluate_version(version: ModelVersion, df: pd.DataFrame, out_dir: Path, *,
                     description: str = "", batch_size: int = 32, n_boot: int = 1000,
                     progress: bool = True) -> EvaluationReport:
    """Predict ``df``, write ``metrics.json`` and the plots into ``out_dir``, return the metrics.

    Besides the point numbers (``summary``, ``per_class``, ``official``: the challenge's names),
    ``intervals`` holds every headline metric per image and per lesion (``df["lesion_id"]``) with a
    95 % bootstrap interval clustered by lesion (``n_boot`` resamples; see skinlesion.intervals)."""
    y = _labels(df)
    probs = predict_dataset(version, df, batch_size=batch_size, progress=progress)
    card = version.card
    malignant = tuple(card.malignant)
    rule = DiagnosisRule.from_dict(card.model_extra.get("diagnosis_rule"), CLASSES)
    report = labelled_report(y, probs, df["lesion_id"].to_numpy(), threshold=card.threshold,
                             malignant=malignant, diagnosis=rule, n_boot=n_boot)
    result = {
        "version": card.id,
        "data": description,
        "threshold": card.threshold,
        "malignant": list(malignant),
        "diagnosis_rule": rule.to_dict(CLASSES),
        "summary": report["summary"],
        "per_class": report["per_class"].to_dict(orient="records"),
        "per_class_recall_shown": report["per_class_recall"],
        "official": report["official"],
        "intervals": report["intervals"],
        "confusion_matrix": metrics.confusion_matrix(y, rule.scores(probs)).tolist(),
        "classes": list(CLASSES),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "metrics.json"]
    files[0].write_text(json.dumps(result, indent=2, default=float) + "\n")

    pred = rule.index(probs)
    mistakes = most_confident_mistakes(y, probs, pred=pred)
    figures = {
        "confusion_matrix.png": plots.confusion_matrix_figure(y, rule.scores(probs)),
        "roc_curves.png": plots.roc_figure(y, probs, malignant=malignant),
        "calibration.png": plots.calibration_figure(y, probs, malignant=malignant),
        "mistakes.png": plots.mistakes_gallery_figure(
            [load_image(df["path"].iloc[i]) for i in mistakes],
            [CLASSES[y[i]] for i in mistakes], [CLASSES[pred[i]] for i in mistakes],
            [float(probs[i, pred[i]]) for i in mistakes]),
    }
    if card.history:
        figures["learning_curves.png"] = plots.learning_curves_figure(card.history)
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=110, bbox_inches="tight")  # plain Figures: no pyplot state
        files.append(out_dir / name)
    return EvaluationReport(metrics=result, out_dir=out_dir, files=files)
