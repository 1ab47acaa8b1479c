"""Score a model version on a dataset: batch prediction, metrics JSON and the report's plots."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from skinlesion import intervals, metrics, plots, scoring
from skinlesion.data.images import file_sha256, load_image
from skinlesion.errors import DataError
from skinlesion.registry import ModelVersion, read_manifest
from skinlesion.schema import CLASSES, METADATA_FIELDS, class_index

SPLIT_CHOICES = ("unseen", "test", "all")


def predict_dataset(version: ModelVersion, df: pd.DataFrame, *, batch_size: int = 32,
                    progress: bool = True) -> np.ndarray:
    """Calibrated probabilities (len(df), 8) for every row of a dataset table, in batches."""
    out = np.zeros((len(df), len(CLASSES)), dtype=np.float64)
    bar = tqdm(total=len(df), desc=f"predict {version.id}", unit="img", file=sys.stderr,
               disable=not progress)
    for start in range(0, len(df), batch_size):
        chunk = df.iloc[start:start + batch_size]
        images = [load_image(p) for p in chunk["path"]]
        meta = chunk.loc[:, list(METADATA_FIELDS)].reset_index(drop=True)
        out[start:start + len(chunk)] = version.classifier.predict_proba(images, meta)
        bar.update(len(chunk))
    bar.close()
    return out


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


def most_confident_mistakes(y: np.ndarray, probs: np.ndarray, k: int = 12) -> np.ndarray:
    """Indices of the ``k`` wrong predictions with the highest confidence in the wrong class."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != y)
    return wrong[np.argsort(-probs[wrong, pred[wrong]])][:k]


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
    summary = metrics.summary(y, probs, threshold=card.threshold, malignant=malignant)
    per_class = metrics.per_class_metrics(y, probs)
    result = {
        "version": card.id,
        "data": description,
        "threshold": card.threshold,
        "malignant": list(malignant),
        "summary": summary,
        "per_class": per_class.to_dict(orient="records"),
        "official": scoring.official(y, probs, per_class),
        "intervals": intervals.honest_report(y, probs, df["lesion_id"].to_numpy(),
                                             threshold=card.threshold, malignant=malignant,
                                             n_boot=n_boot),
        "confusion_matrix": metrics.confusion_matrix(y, probs).tolist(),
        "classes": list(CLASSES),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "metrics.json"]
    files[0].write_text(json.dumps(result, indent=2, default=float) + "\n")

    mistakes = most_confident_mistakes(y, probs)
    pred = probs.argmax(1)
    figures = {
        "confusion_matrix.png": plots.confusion_matrix_figure(y, probs),
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
