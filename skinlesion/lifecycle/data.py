"""The training data of a retrain of the version ``base`` (see :mod:`skinlesion.lifecycle.retrain`):

- the base's **original data**: the dataset folder its card names (``retraining.data_dir`` of a
  retrained version, else ``data.name`` when that is a folder, else the folder given), with the
  train/val/test split its manifest records, so the original test split stays unseen;
- the **labelled production cases**: answers whose image was kept (``Settings.retain_images``) and
  that have a label (late ground truth, or a dermatologist's diagnosis from the review queue — the
  active-learning cases), one row per image with its latest label. Images already in the original
  data are left out. Cases the base trained on stay in training; of the others, the newest
  ``holdout_share`` (by answer time) is held out: unseen by both models, it is the **recent
  hold-out** of the gate; the rest join the training split.

Production images are named ``prod-<first 16 hex of their hash>`` in the candidate's manifest, so
:func:`skinlesion.registry.diff_manifests` names the images two versions differ by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from skinlesion.data.readers import read_dataset
from skinlesion.errors import DataError
from skinlesion.registry import ModelCard, read_manifest
from skinlesion.schema import METADATA_FIELDS
from skinlesion.store import Store

#: name prefix of production images in a version's manifest
PRODUCTION_PREFIX = "prod-"
#: the review queue's label source (skinlesion.monitoring.review.REVIEW_SOURCE)
REVIEW_SOURCE = "review"


class TrainingData(BaseModel):
    """The rows a retrain fits on (``df`` with ``split``: the original data plus production cases
    in training) and the ``holdout`` (production cases held out for the gate), all in the dataset
    table's columns; ``data_dir`` and ``data_name`` of the original data."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    df: pd.DataFrame
    split: pd.Series
    holdout: pd.DataFrame
    data_dir: str
    data_name: str

    def counts(self) -> dict[str, int]:
        """How many rows of each kind: ``original``, ``production_train``, ``review_labels``
        (production training rows labelled through the review queue) and ``holdout``."""
        production = self.df["image"].str.startswith(PRODUCTION_PREFIX)
        review = production & self.df.get("label_source", pd.Series("", index=self.df.index)).eq(
            REVIEW_SOURCE)
        return {"original": int((~production).sum()), "production_train": int(production.sum()),
                "review_labels": int(review.sum()), "holdout": len(self.holdout)}


def lineage(card: ModelCard) -> dict[str, Any]:
    """The card's ``retraining`` section ({} for a version that was not retrained)."""
    return dict((card.model_extra or {}).get("retraining") or {})


def original_data_dir(card: ModelCard, override: Path | str | None = None) -> Path:
    """The folder of ``card``'s original dataset: ``override``, else the card's
    ``retraining.data_dir``, else ``data.name`` when it is a folder; DataError otherwise."""
    if override:
        if not Path(override).expanduser().is_dir():
            raise DataError(f"the data folder {override} does not exist", field="data_dir")
        return Path(override).expanduser().resolve()
    for candidate in (lineage(card).get("data_dir"), card.data.name):
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser().resolve()
    raise DataError(f"the card of {card.id} does not say where its training data is (data "
                    f"{card.data.name!r}); give the dataset folder (`skinlesion retrain --data DIR`)",
                    field="data_dir")


def original_data(card: ModelCard, models_dir: Path, data_dir: Path) -> tuple[pd.DataFrame,
                                                                               pd.Series]:
    """The base's original rows (dataset table) with the split its manifest records; DataError
    naming the missing images when the folder no longer holds them all."""
    manifest = read_manifest(models_dir, card.id)
    manifest = manifest[~manifest["image"].str.startswith(PRODUCTION_PREFIX)]
    df = read_dataset(data_dir)
    missing = sorted(set(manifest["image"]) - set(df["image"]))
    if missing:
        raise DataError(f"{len(missing)} image(s) {card.id} was trained on are not in {data_dir} "
                        f"(e.g. {', '.join(missing[:3])}); give the folder it was trained on",
                        source=str(data_dir))
    split_of = manifest.set_index("image")["split"]
    df = df[df["image"].isin(split_of.index)].reset_index(drop=True)
    return df, df["image"].map(split_of).rename("split")


def production_rows(cases: pd.DataFrame, *, include_review_queue: bool = True) -> pd.DataFrame:
    """Labelled production cases (:meth:`Store.retained_labelled_cases`) as dataset-table rows:
    ``image`` (``prod-<hash prefix>``), ``path`` (the kept file), ``diagnosis``, metadata,
    ``lesion_id`` (the image: one case, one lesion), plus ``image_sha256``, ``ts`` (answer time)
    and ``label_source``. Cases whose file is gone are left out; without ``include_review_queue``
    so are the review-queue labels."""
    # astype(bool): with no kept images the mapped column is an empty object Series, which pandas
    # would take as a list of column names (and drop every column)
    keep = cases["image_path"].map(lambda p: Path(p).is_file()).astype(bool)
    if not include_review_queue:
        keep &= cases["label_source"].ne(REVIEW_SOURCE)
    cases = cases[keep]
    names = PRODUCTION_PREFIX + cases["image_sha256"].str[:16]
    return pd.DataFrame({
        "image": names.to_numpy(), "path": cases["image_path"].to_numpy(),
        "diagnosis": cases["diagnosis"].to_numpy(),
        **{field: cases[field].to_numpy() for field in METADATA_FIELDS},
        "lesion_id": names.to_numpy(), "image_sha256": cases["image_sha256"].to_numpy(),
        "ts": pd.to_datetime(cases["ts"], utc=True).to_numpy(),
        "label_source": cases["label_source"].to_numpy(),
    })


def split_production(rows: pd.DataFrame, *, trained: set[str], holdout_share: float
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, holdout)``: rows whose image the base trained on (``trained``: manifest image
    names) stay in training; of the others the newest ``holdout_share`` (by answer time, at least
    one when there are any and the share is above 0) is held out, the rest train."""
    seen = rows["image"].isin(trained)
    new = rows[~seen].sort_values(["ts", "image"], kind="stable")
    n_holdout = int(np.ceil(len(new) * holdout_share)) if holdout_share > 0 else 0
    holdout = new.iloc[len(new) - n_holdout:]
    train = pd.concat([rows[seen], new.iloc[:len(new) - n_holdout]])
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def training_data(store: Store, card: ModelCard, models_dir: Path, *,
                  data_dir: Path | str | None = None, holdout_share: float = 0.3,
                  include_review_queue: bool = True) -> TrainingData:
    """The data of a retrain of ``card`` (see the module docstring)."""
    folder = original_data_dir(card, data_dir)
    df, split = original_data(card, models_dir, folder)
    manifest = read_manifest(models_dir, card.id)
    rows = production_rows(store.retained_labelled_cases(), include_review_queue=include_review_queue)
    original = manifest[~manifest["image"].str.startswith(PRODUCTION_PREFIX)]
    rows = rows[~rows["image_sha256"].isin(set(original["sha256"]))]  # already in the dataset
    trained = set(manifest.loc[manifest["split"].isin(["train", "val"]), "image"])
    train, holdout = split_production(rows, trained=trained, holdout_share=holdout_share)
    combined = pd.concat([df, train], ignore_index=True)
    combined_split = pd.concat([split, pd.Series("train", index=range(len(train)))],
                               ignore_index=True).rename("split")
    name = lineage(card).get("data_name") or card.data.name
    return TrainingData(df=combined, split=combined_split, holdout=holdout, data_dir=str(folder),
                        data_name=str(name))
