"""ISIC challenge CSV files: predictions (``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC``) and ground truth
(the same columns, one-hot, optionally with ISIC 2019's ``UNK`` column).

We write exactly what the official scorer (``isic-challenge-scoring``) accepts, and read with the
same rules plus errors that name the file, the row and the fix, so our numbers and the official
ones come from the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.errors import DataError
from skinlesion.schema import CLASSES

#: Header of a prediction file, in order.
PREDICTION_COLUMNS: tuple[str, ...] = ("image", *CLASSES)
#: ISIC 2019's "none of the above" column; allowed in ground truth but never set for a usable row.
UNKNOWN = "UNK"
#: How far a prediction row may sum away from 1 (float32 softmax outputs written as text).
SUM_TOLERANCE = 1e-3
_SHOW = 5  # how many offending images/rows an error message names


def _few(items: Sequence[object]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def write_predictions_csv(path: Path | str, images: Sequence[str], probs: object) -> Path:
    """Write ``probs`` ((n, 8), CLASSES order) for ``images`` as an ISIC prediction CSV.

    Values are written with Python's shortest exact float repr (always with a '.' or exponent, so
    the official scorer reads every column as floating point). Creates missing parent folders."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(CLASSES):
        raise ValueError(f"probs must have shape (n, {len(CLASSES)}), got {p.shape}")
    if len(images) != p.shape[0]:
        raise ValueError(f"{len(images)} images but {p.shape[0]} rows of probabilities")
    if not np.all(np.isfinite(p)) or (p.size and (p.min() < 0.0 or p.max() > 1.0)):
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    ids = pd.Series([str(i) for i in images], dtype=object)
    dupes = ids[ids.duplicated()].unique().tolist()
    if dupes:
        raise DataError(f"duplicate image ids {_few(dupes)}; each image needs exactly one row",
                        source=str(path), field="image")
    table = pd.DataFrame(p, columns=list(CLASSES))
    table.insert(0, "image", ids)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def _read_table(path: Path | str, *, required: Sequence[str], optional: Sequence[str] = ()
                ) -> pd.DataFrame:
    """The CSV as strings with exactly the ``required`` (+ ``optional``) columns; DataError else."""
    source = str(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError("file not found; check the path", source=source) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"the file is empty; expected the header {','.join(required)}",
                        source=source) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"not a readable CSV file ({err}); save it as UTF-8 comma-separated text",
                        source=source) from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; the header must be "
                        f"{','.join(required)}", source=source)
    extra = [c for c in table.columns if c not in required and c not in optional]
    if extra:
        allowed = ", ".join([*required, *optional])
        raise DataError(f"unexpected column(s) {', '.join(map(str, extra))}; allowed: {allowed}",
                        source=source)
    return table


def _image_ids(table: pd.DataFrame, source: str) -> list[str]:
    ids = table["image"].str.strip()
    blank = np.flatnonzero(ids.eq("").to_numpy())
    if blank.size:
        raise DataError("empty image id; every row needs one", source=source,
                        row=int(blank[0]) + 1, field="image")
    dupes = ids[ids.duplicated()].unique().tolist()
    if dupes:
        rows = (np.flatnonzero(ids.isin(dupes).to_numpy()) + 1).tolist()
        raise DataError(f"duplicate image ids {_few(dupes)} (rows {_few(rows)}); each image "
                        "needs exactly one row", source=source, field="image")
    return ids.tolist()


def _numbers(table: pd.DataFrame, columns: Sequence[str], source: str) -> np.ndarray:
    """The ``columns`` as a float array; DataError at the first empty or non-numeric cell."""
    out = np.empty((len(table), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        text = table[col].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() | ~np.isfinite(values.to_numpy(float)))
        if bad.size:
            cell = text.iloc[bad[0]]
            what = "missing value" if cell == "" else f"{cell!r} is not a number"
            raise DataError(f"{what}; every cell must hold a number in [0, 1]", source=source,
                            row=int(bad[0]) + 1, field=col)
        out[:, j] = text.to_numpy().astype(np.float64)  # exact parse (pandas' fast one is not)
    return out


def read_predictions_csv(path: Path | str) -> tuple[list[str], np.ndarray]:
    """``(images, probs (n, 8))`` from an ISIC prediction CSV, columns reordered to CLASSES order.

    As the official scorer does, a trailing ``.jpg`` is dropped from image ids and values must lie in
    [0, 1]; additionally each row must sum to 1 (these are softmax probabilities over the 8 classes;
    files of independent per-class scores must be normalised first)."""
    source = str(path)
    table = _read_table(path, required=PREDICTION_COLUMNS)
    table["image"] = table["image"].str.replace(r"\.jpg$", "", case=False, regex=True)
    images = _image_ids(table, source)
    probs = _numbers(table, CLASSES, source)
    outside = np.flatnonzero(((probs < 0.0) | (probs > 1.0)).any(axis=1))
    if outside.size:
        raise DataError(f"probabilities must lie in [0, 1] (rows {_few((outside + 1).tolist())})",
                        source=source, row=int(outside[0]) + 1)
    sums = probs.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if off.size:
        raise DataError(f"the 8 class probabilities sum to {sums[off[0]]:.4g}, not 1 (rows "
                        f"{_few((off + 1).tolist())}); write softmax probabilities, or divide each "
                        "row by its sum", source=source, row=int(off[0]) + 1)
    return images, probs


def read_ground_truth_csv(path: Path | str) -> tuple[list[str], np.ndarray]:
    """``(images, y)`` from an ISIC ground-truth CSV: one-hot rows over CLASSES (any column order),
    optionally with an ``UNK`` column. ``y`` holds class indices into CLASSES.

    Rows labelled UNK, and rows that are not exactly one 1 and seven 0s, are errors naming the row:
    our classes have no "unknown", and a scorer must not guess a label."""
    source = str(path)
    table = _read_table(path, required=PREDICTION_COLUMNS, optional=(UNKNOWN,))
    images = _image_ids(table, source)
    columns = [*CLASSES, *([UNKNOWN] if UNKNOWN in table.columns else [])]
    values = _numbers(table, columns, source)
    if values.size:
        not_binary = np.flatnonzero(((values != 0.0) & (values != 1.0)).any(axis=1))
        if not_binary.size:
            r = int(not_binary[0])
            raise DataError(f"ground truth must be 0 or 1, got {np.round(values[r], 4).tolist()} (rows "
                            f"{_few((not_binary + 1).tolist())})", source=source, row=r + 1)
        if UNKNOWN in columns:
            unknown = np.flatnonzero(values[:, -1] == 1.0)
            if unknown.size:
                r = int(unknown[0])
                raise DataError(f"image {images[r]} is labelled UNK (rows "
                                f"{_few((unknown + 1).tolist())}); the classifier has no unknown "
                                "class: remove these rows before scoring", source=source, row=r + 1,
                                field=UNKNOWN)
    one_hot = values[:, :len(CLASSES)]
    not_one = np.flatnonzero(one_hot.sum(axis=1) != 1.0)
    if not_one.size:
        r = int(not_one[0])
        raise DataError(f"image {images[r]} has {int(one_hot[r].sum())} diagnoses marked; exactly "
                        f"one of {', '.join(CLASSES)} must be 1 (rows {_few((not_one + 1).tolist())})",
                        source=source, row=r + 1)
    return images, one_hot.argmax(axis=1).astype(np.int64)


def align_to_truth(truth_images: Sequence[str], pred_images: Sequence[str], probs: np.ndarray, *,
                   truth_source: str = "ground truth", predictions_source: str = "predictions"
                   ) -> np.ndarray:
    """``probs`` reordered to the order of ``truth_images``. Both files must cover the same images:
    an image in one but not the other is a DataError naming a few (a silent subset would give a
    score for different data)."""
    truth_set, pred_set = set(truth_images), set(pred_images)
    extra = [i for i in pred_images if i not in truth_set]
    if extra:
        raise DataError(f"{len(extra)} image(s) have predictions but no ground truth in "
                        f"{truth_source}: {_few(extra)}; score against the matching ground-truth "
                        "file", source=predictions_source, field="image")
    missing = [i for i in truth_images if i not in pred_set]
    if missing:
        raise DataError(f"{len(missing)} image(s) of {truth_source} have no prediction: "
                        f"{_few(missing)}; predict every image of the ground truth",
                        source=predictions_source, field="image")
    position = {image: k for k, image in enumerate(pred_images)}
    return np.asarray(probs)[[position[i] for i in truth_images]]
