"""The training data of a retrain of the version ``base`` (see :mod:`skinlesion.lifecycle.retrain`):

- the base's **original data**: the dataset folder its card names (``retraining.data_dir`` of a
  retrained version, else ``data.name`` when that is a folder, else the folder given), with the
  train/val/test split its manifest records, so the original test split stays unseen;
- the **labelled production cases**: answers whose image was kept (``Settings.retain_images``; the
  demo keeps the images of its simulated traffic) and that have a label (late ground truth, or a
  dermatologist's diagnosis from the review queue — the active-learning cases), one row per image
  with its latest label. Images already in the original data are left out. Cases the base trained
  on stay in training; of the others, the newest ``holdout_share`` (by answer time) is held out:
  unseen by both models, it is the **recent hold-out** of the gate; the rest join the training
  split. Near-duplicate images (one lesion imaged or encoded twice, :mod:`.duplicates`) stay on
  one side of the hold-out, and cases that are near-duplicates of the original test split's
  images are held out too (never trained on), so that split stays a fair ground for the gate.

When the original data is not on this machine (the shipped ``reference`` was trained on a dataset
that is not shipped; the card names it but no folder here), a retrain trains on the labelled
production cases alone (:data:`PRODUCTION_ONLY`): the newest share held out as above, the rest split
into training and validation by lesion. It needs :data:`MIN_PRODUCTION_CASES` of them, malignant and
benign. Cases that are images of the base's own test split (the demo's traffic is drawn from the
reference's) may then be trained on, so the base's test split is no fair ground for comparing the
two: the gate compares them on the recent hold-out only. :func:`retrain_plan` says all this before
a job is launched, without reading an image.

Production images are named ``prod-<first 16 hex of their hash>`` in the candidate's manifest, so
:func:`skinlesion.registry.diff_manifests` names the images two versions differ by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.errors import DataError
from skinlesion.lifecycle.duplicates import groups, signatures
from skinlesion.registry import ModelCard, read_manifest
from skinlesion.schema import METADATA_FIELDS, malignant_mask, class_index
from skinlesion.store import Store

#: name prefix of production images in a version's manifest
PRODUCTION_PREFIX = "prod-"
#: the review queue's label source (skinlesion.monitoring.review.REVIEW_SOURCE)
REVIEW_SOURCE = "review"
#: the two kinds of retrain: on the original data plus production cases, or on the cases alone
WITH_ORIGINAL = "original data + production cases"
PRODUCTION_ONLY = "production cases only"
#: labelled cases with kept images a retrain without the original data needs
MIN_PRODUCTION_CASES = 30
#: share of the (not held-out) cases a production-only retrain validates on
VALIDATION_SHARE = 0.2


class TrainingData(BaseModel):
    """The rows a retrain fits on (``df`` with ``split``: the original data plus production cases
    in training) and the ``holdout`` (production cases held out for the gate), all in the dataset
    table's columns; ``data_dir`` (None: not on this machine, :data:`PRODUCTION_ONLY`) and
    ``data_name`` of the original data; ``base_test``: production cases that are images of the
    base's own test split; ``test_copies``: production cases held out because they are
    near-duplicates of the original test split's images."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    df: pd.DataFrame
    split: pd.Series
    holdout: pd.DataFrame
    data_dir: str | None
    data_name: str
    base_test: int = 0
    test_copies: int = 0

    @property
    def kind(self) -> Literal["original data + production cases", "production cases only"]:
        return WITH_ORIGINAL if self.data_dir is not None else PRODUCTION_ONLY

    def counts(self) -> dict[str, int]:
        """How many rows of each kind: ``original``, ``production_train`` (production rows in the
        training or validation split), ``review_labels`` (of those, labelled through the review
        queue), ``holdout``, ``base_test`` and ``test_copies``."""
        production = self.df["image"].str.startswith(PRODUCTION_PREFIX)
        review = production & self.df.get("label_source", pd.Series("", index=self.df.index)).eq(
            REVIEW_SOURCE)
        return {"original": int((~production).sum()), "production_train": int(production.sum()),
                "review_labels": int(review.sum()), "holdout": len(self.holdout),
                "base_test": self.base_test, "test_copies": self.test_copies}


class RetrainPlan(BaseModel):
    """What a retrain of ``base`` would train on, known before launching it (no image is read):
    the original data (``data_dir``, None when not on this machine) and the labelled cases with
    kept images (``cases``; ``base_test`` of them images of the base's test split). ``refusal``
    says why there is nothing to train on (None: a retrain can run)."""

    model_config = ConfigDict(frozen=True)

    base: str
    data_name: str
    data_dir: str | None
    original_images: int
    cases: int
    base_test: int
    holdout_share: float
    refusal: str | None = None

    def summary(self) -> str:
        """What the retrain will train on, in a sentence or three (the refusal when it cannot)."""
        if self.refusal:
            return self.refusal
        held = f"the newest {self.holdout_share:.0%} of the new cases held out for the gate"
        if self.data_dir is not None:
            return (f"Trains on {self.base}'s original data ({self.original_images} images in "
                    f"{self.data_dir}) plus {self.cases} labelled cases with kept images, {held}.")
        text = (f"{self.base}'s training data ({self.data_name}) is not on this machine: its card "
                f"names no data folder here. The retrain will use the {self.cases} labelled cases "
                f"whose images were kept, {held} and the rest split into training and validation.")
        if self.base_test:
            text += (f" {self.base_test} of them are images of {self.base}'s own test split, so the "
                     f"gate compares the two models on the held-out cases only, not on "
                     f"{self.base}'s test split.")
        return text


def lineage(card: ModelCard) -> dict[str, Any]:
    """The card's ``retraining`` section ({} for a version that was not retrained)."""
    return dict((card.model_extra or {}).get("retraining") or {})


def find_original_dir(card: ModelCard, override: Path | str | None = None) -> Path | None:
    """The folder of ``card``'s original dataset: ``override`` (DataError when it is no folder),
    else the card's ``retraining.data_dir``, else ``data.name`` when it is a folder; None when
    the card names no folder on this machine."""
    if override:
        if not Path(override).expanduser().is_dir():
            raise DataError(f"the data folder {override} does not exist", field="data_dir")
        return Path(override).expanduser().resolve()
    for candidate in (lineage(card).get("data_dir"), card.data.name):
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser().resolve()
    return None


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


def with_groups(rows: pd.DataFrame, known: pd.Series | None = None) -> pd.DataFrame:
    """``rows`` with ``lesion_id`` set to one name per group of near-duplicate images (and of
    rows sharing a ``known`` lesion id, aligned with ``rows``): the name of its oldest image."""
    if rows.empty:
        return rows
    ordered = rows.sort_values(["ts", "image"], kind="stable")
    names = None if known is None else known.reindex(ordered.index).tolist()
    ordered = ordered.reset_index(drop=True)
    group = groups(signatures(ordered["path"].tolist()), names)
    first = pd.Series(ordered["image"].to_numpy()).groupby(group).transform("first")
    return ordered.assign(lesion_id=first.to_numpy())


def copies_of(rows: pd.DataFrame, originals: pd.DataFrame) -> pd.Series:
    """Whether each of ``rows`` is a near-duplicate (:mod:`.duplicates`) of an image of
    ``originals`` (e.g. the base's test split), aligned with ``rows``."""
    if rows.empty or originals.empty:
        return pd.Series(False, index=rows.index)
    found = groups(np.vstack([signatures(originals["path"].tolist()),
                              signatures(rows["path"].tolist())]))
    return pd.Series(np.isin(found[len(originals):], found[:len(originals)]), index=rows.index)


def split_production(rows: pd.DataFrame, *, trained: set[str], holdout_share: float
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, holdout)``: rows whose image the base trained on (``trained``: image sha256) and
    every row of their lesion (``lesion_id``) stay in training; of the other lesions, the newest
    (by their latest answer) are held out until ``holdout_share`` of their rows is (at least one
    lesion when there are any and the share is above 0); the rest train."""
    seen_lesions = set(rows.loc[rows["image_sha256"].isin(trained), "lesion_id"])
    seen = rows["lesion_id"].isin(seen_lesions)
    new = rows[~seen]
    target = int(np.ceil(len(new) * holdout_share)) if holdout_share > 0 else 0
    latest = new.groupby("lesion_id")["ts"].max().reset_index().sort_values(
        ["ts", "lesion_id"], ascending=False, kind="stable")
    sizes = new["lesion_id"].value_counts().reindex(latest["lesion_id"]).to_numpy()
    held = set(latest["lesion_id"].iloc[:int(np.searchsorted(np.cumsum(sizes), target) + 1)]
               if target else [])
    holdout = new[new["lesion_id"].isin(held)]
    train = pd.concat([rows[seen], new[~new["lesion_id"].isin(held)]])
    return (train.sort_values(["ts", "image"], kind="stable").reset_index(drop=True),
            holdout.sort_values(["ts", "image"], kind="stable").reset_index(drop=True))


def _base_test_shas(manifest: pd.DataFrame) -> set[str]:
    return set(manifest.loc[manifest["split"].eq("test"), "sha256"])


def _refusal(card: ModelCard, cases: pd.DataFrame) -> str | None:
    """Why a retrain on ``cases`` alone cannot run (too few, or one class only), or None."""
    name = lineage(card).get("data_name") or card.data.name
    where = (f"{card.id}'s training data ({name}) is not on this machine (its card names no "
             "data folder here)")
    fix = ("Give the data folder (`skinlesion retrain --data DIR`, or the data-folder field of "
           "the Models page), or keep images (SKINLESION_RETAIN_IMAGES=true) and label answers.")
    if len(cases) < MIN_PRODUCTION_CASES:
        return (f"Nothing to train on: {where}, and only {len(cases)} labelled case(s) have their "
                f"image kept (a retrain on those alone needs {MIN_PRODUCTION_CASES}). {fix}")
    malignant = np.asarray(malignant_mask(tuple(card.malignant)))[
        [class_index(d) for d in cases["diagnosis"]]]
    if malignant.all() or not malignant.any():
        return (f"Nothing to train on: {where}, and the {len(cases)} labelled cases with kept "
                f"images are all {'malignant' if malignant.all() else 'benign'}. {fix}")
    return None


def _cases(store: Store, manifest: pd.DataFrame, folder: Path | None, *,
           include_review_queue: bool) -> pd.DataFrame:
    """The labelled production cases a retrain can use: with the original data, those not
    already in it."""
    rows = production_rows(store.retained_labelled_cases(), include_review_queue=include_review_queue)
    if folder is None:
        return rows
    original = manifest[~manifest["image"].str.startswith(PRODUCTION_PREFIX)]
    return rows[~rows["image_sha256"].isin(set(original["sha256"]))]  # already in the dataset


def retrain_plan(store: Store, card: ModelCard, models_dir: Path, *,
                 data_dir: Path | str | None = None, holdout_share: float = 0.3,
                 include_review_queue: bool = True) -> RetrainPlan:
    """What a retrain of ``card`` would train on (see the module docstring); cheap enough for a
    page: reads the manifest and the store, no image."""
    folder = find_original_dir(card, data_dir)
    manifest = read_manifest(models_dir, card.id)
    cases = _cases(store, manifest, folder, include_review_queue=include_review_queue)
    original = manifest[~manifest["image"].str.startswith(PRODUCTION_PREFIX)]
    return RetrainPlan(base=card.id, data_name=str(lineage(card).get("data_name") or card.data.name),
                       data_dir=None if folder is None else str(folder),
                       original_images=len(original), cases=len(cases),
                       base_test=int(cases["image_sha256"].isin(_base_test_shas(manifest)).sum()),
                       holdout_share=holdout_share,
                       refusal=None if folder is not None else _refusal(card, cases))


def _production_only(card: ModelCard, manifest: pd.DataFrame, rows: pd.DataFrame, *,
                     holdout_share: float, seed: int) -> TrainingData:
    """Training data of the labelled cases alone: lesions known to the base's manifest (by image
    hash) and near-duplicates grouped; the newest share held out; the rest split into training
    and validation by lesion, stratified by class."""
    refusal = _refusal(card, rows)
    if refusal:
        raise DataError(refusal, field="data_dir")
    lesion_of = manifest.drop_duplicates("sha256").set_index("sha256")["lesion_id"]
    rows = with_groups(rows, rows["image_sha256"].map(lesion_of))
    trained = set(manifest.loc[manifest["split"].isin(["train", "val"]), "sha256"])
    train, holdout = split_production(rows, trained=trained, holdout_share=holdout_share)
    split = split_dataset(train, fractions=(1 - VALIDATION_SHARE, VALIDATION_SHARE, 0.0),
                          seed=seed).rename("split")
    name = lineage(card).get("data_name") or card.data.name
    return TrainingData(df=train, split=split, holdout=holdout, data_dir=None, data_name=str(name),
                        base_test=int(rows["image_sha256"].isin(_base_test_shas(manifest)).sum()))


def training_data(store: Store, card: ModelCard, models_dir: Path, *,
                  data_dir: Path | str | None = None, holdout_share: float = 0.3,
                  include_review_queue: bool = True, seed: int = 0) -> TrainingData:
    """The data of a retrain of ``card`` (see the module docstring)."""
    folder = find_original_dir(card, data_dir)
    manifest = read_manifest(models_dir, card.id)
    rows = _cases(store, manifest, folder, include_review_queue=include_review_queue)
    if folder is None:
        return _production_only(card, manifest, rows, holdout_share=holdout_share, seed=seed)
    df, split = original_data(card, models_dir, folder)
    rows = with_groups(rows)
    # copies of the original test split's images (whole lesions) are held out, never trained on,
    # so that split stays a fair ground for the gate
    copies = rows["lesion_id"].isin(rows.loc[copies_of(rows, df[split == "test"]), "lesion_id"])
    train, holdout = split_production(rows[~copies], trained=set(manifest["sha256"][
        manifest["split"].isin(["train", "val"])]), holdout_share=holdout_share)
    holdout = pd.concat([holdout, rows[copies]]).sort_values(["ts", "image"], kind="stable")
    combined = pd.concat([df, train], ignore_index=True)
    combined_split = pd.concat([split, pd.Series("train", index=range(len(train)))],
                               ignore_index=True).rename("split")
    name = lineage(card).get("data_name") or card.data.name
    return TrainingData(df=combined, split=combined_split, holdout=holdout.reset_index(drop=True),
                        data_dir=str(folder), data_name=str(name), test_copies=int(copies.sum()))
