"""Score an ISIC-format prediction file against a ground-truth file.

The same two files can be given to the official ``isic-challenge-scoring`` package; our balanced
accuracy, per-class AUC, per-class partial AUC and their macro averages agree with it
(tests/test_scoring.py), reported under the scorer's own names in ``official``, and we add the
clinic's malignant-vs-benign numbers at an operating threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import metrics
from skinlesion.data.isic_csv import align_to_truth, read_ground_truth_csv, read_predictions_csv
from skinlesion.errors import DataError
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, malignant_mask


def score_files(truth_csv: Path | str, predictions_csv: Path | str, *, threshold: float = 0.5,
                malignant: Iterable[str] = DEFAULT_MALIGNANT) -> dict:
    """All metrics of ``predictions_csv`` against ``truth_csv`` as a JSON-able dict:
    ``truth, predictions, threshold, malignant, classes``, ``summary`` (:func:`metrics.summary`),
    ``per_class`` (:func:`metrics.per_class_metrics` as records), ``official`` (:func:`official`:
    the challenge's aggregate and macro-averaged numbers under its names) and ``confusion_matrix``
    (8x8, rows true). Both files must list the same images (order may differ)."""
    malignant = tuple(malignant)
    malignant_mask(malignant)  # validate before reading files
    truth_images, y = read_ground_truth_csv(truth_csv)
    if not truth_images:
        raise DataError("the ground truth has no rows; nothing to score", source=str(truth_csv))
    pred_images, probs = read_predictions_csv(predictions_csv)
    probs = align_to_truth(truth_images, pred_images, probs, truth_source=str(truth_csv),
                           predictions_source=str(predictions_csv))
    per_class = metrics.per_class_metrics(y, probs)
    return {
        "truth": str(truth_csv),
        "predictions": str(predictions_csv),
        "threshold": float(threshold),
        "malignant": list(malignant),
        "classes": list(CLASSES),
        "summary": metrics.summary(y, probs, threshold=threshold, malignant=malignant),
        "per_class": per_class.to_dict(orient="records"),
        "official": official(y, probs, per_class),
        "confusion_matrix": metrics.confusion_matrix(y, probs).tolist(),
    }


def official(y: np.ndarray, probs: np.ndarray, per_class: pd.DataFrame | None = None) -> dict:
    """The numbers the ISIC challenge reports, under the official scorer's names:
    ``aggregate.balanced_accuracy`` and ``macro_average.auc`` / ``auc_sens_80`` (partial AUC above
    80 % sensitivity, raw) / ``ap``: means over the classes of the one-vs-rest values, classes where
    a value is undefined (absent from the truth) left out, as the scorer's pandas mean does.
    ``per_class`` (:func:`metrics.per_class_metrics` of the same arrays) saves recomputing it."""
    table = metrics.per_class_metrics(y, probs) if per_class is None else per_class
    macro = {name: float(np.nanmean(table[column])) if table[column].notna().any() else float("nan")
             for name, column in (("auc", "auc"), ("auc_sens_80", "pauc_80"), ("ap", "ap"))}
    return {"aggregate": {"balanced_accuracy": metrics.balanced_accuracy(y, probs)},
            "macro_average": macro}


def _nan_to_none(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def to_json(result: dict) -> str:
    """``result`` as strict JSON (undefined metrics, nan in Python, become ``null``)."""
    return json.dumps(_nan_to_none(result), indent=2, allow_nan=False) + "\n"
