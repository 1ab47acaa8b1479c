"""skinlesion.data.splits: lesion-grouped, class-stratified, exact and deterministic splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinlesion.data.splits import SPLITS, split_composition, split_dataset
from skinlesion.errors import DataError
from skinlesion.schema import CLASSES

#: Lesions per class: imbalanced like ISIC, the rarest with exactly 3 lesions.
LESIONS = {"MEL": 40, "NV": 150, "BCC": 30, "AK": 8, "BKL": 25, "DF": 3, "VASC": 4, "SCC": 6}


def _table(seed: int = 0) -> pd.DataFrame:
    """A dataset table with 1-4 images per lesion (the index deliberately not a RangeIndex)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls, n_lesions in LESIONS.items():
        for k in range(n_lesions):
            for view in range(int(rng.integers(1, 5))):
                rows.append({"image": f"{cls}_{k}_{view}", "diagnosis": cls,
                             "lesion_id": f"L_{cls}_{k}"})
    df = pd.DataFrame(rows)
    df.index = df.index * 10 + 7
    return df


def test_no_lesion_is_in_two_splits_and_every_class_is_in_every_split():
    df = _table()
    split = split_dataset(df)
    assert split.index.equals(df.index) and set(split) == set(SPLITS)
    assert (df.assign(split=split).groupby("lesion_id")["split"].nunique() == 1).all()
    present = pd.crosstab(df["diagnosis"], split)
    assert (present[list(SPLITS)] > 0).all().all(), present


def test_proportions_follow_the_fractions_overall_and_per_class():
    df = _table()
    for fractions in [(0.7, 0.15, 0.15), (0.5, 0.25, 0.25), (0.8, 0.1, 0.1)]:
        share = split_dataset(df, fractions).value_counts(normalize=True)
        assert np.allclose(share[list(SPLITS)], fractions, atol=0.02), (fractions, share)
    per_class = pd.crosstab(df["diagnosis"], split_dataset(df), normalize="index")
    for cls in ("MEL", "NV", "BCC"):  # classes with enough lesions are split close to the target
        assert per_class.loc[cls, "train"] == pytest.approx(0.7, abs=0.06)


def test_deterministic_for_a_seed_and_different_across_seeds():
    df = _table()
    assert split_dataset(df, seed=3).equals(split_dataset(df, seed=3))
    assert (split_dataset(df, seed=3) != split_dataset(df, seed=4)).any()


def test_a_zero_fraction_leaves_that_split_empty():
    split = split_dataset(_table(), (0.8, 0.0, 0.2))
    assert set(split) == {"train", "test"}


def test_unlabelled_images_are_split_too():
    df = _table()
    df.loc[df.index[:40], "diagnosis"] = np.nan
    split = split_dataset(df)
    assert split.notna().all()
    assert (df.assign(split=split).groupby("lesion_id")["split"].nunique() == 1).all()


def test_split_of_the_synthetic_dataset(synthetic_df):
    split = split_dataset(synthetic_df)
    assert (synthetic_df.assign(split=split).groupby("lesion_id")["split"].nunique() == 1).all()
    present = pd.crosstab(synthetic_df["diagnosis"], split)
    assert set(present.index) == set(CLASSES) and (present > 0).all().all()


@pytest.mark.parametrize("fractions", [(0.7, 0.2), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5),
                                       (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_dataset(_table(), fractions)


def test_table_without_lesion_ids_is_refused():
    with pytest.raises(DataError, match="lesion_id"):
        split_dataset(_table().drop(columns="lesion_id"))


def _follow_up_table(seed: int = 0) -> pd.DataFrame:
    """Like HAM10000: most lesions have one image, a third have a series of 2-6 (planted)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls, n_lesions in {"MEL": 120, "NV": 600, "BCC": 60, "AK": 20, "BKL": 90, "DF": 12,
                           "VASC": 14, "SCC": 18}.items():
        for k in range(n_lesions):
            n_images = 1 if rng.random() < 0.65 else int(rng.integers(2, 7))
            rows += [{"image": f"{cls}_{k}_{i}", "diagnosis": cls, "lesion_id": f"L_{cls}_{k}"}
                     for i in range(n_images)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_split_has_the_mix_of_single_and_multi_image_lesions_of_the_whole(seed):
    df = _follow_up_table(seed)
    composition = split_composition(df, split_dataset(df, seed=seed))
    whole = composition.loc["all", "multi_image_share_of_images"]
    assert 0.5 < whole < 0.8  # the planted structure: most images come from multi-image lesions
    for name in SPLITS:
        share = composition.loc[name, "multi_image_share_of_images"]
        assert abs(share - whole) <= 0.03, composition
        assert composition.loc[name, "images_per_lesion"] == pytest.approx(
            composition.loc["all", "images_per_lesion"], rel=0.05), composition


def test_composition_counts_images_and_lesions_per_split():
    df = pd.DataFrame({"lesion_id": ["a", "a", "b", "c", "c", "c"], "diagnosis": ["NV"] * 6})
    split = pd.Series(["train", "train", "test", "train", "train", "train"])
    composition = split_composition(df, split)
    assert list(composition.index) == ["all", "train", "test"]
    assert composition.loc["train", ["images", "lesions"]].tolist() == [5, 2]
    assert composition.loc["train", "multi_image_share_of_images"] == 1.0
    assert composition.loc["test", "multi_image_share_of_images"] == 0.0
    assert composition.loc["all", "multi_image_share_of_lesions"] == pytest.approx(2 / 3)
