"""Train / validation / test splits that keep every lesion in one split, every class in each, and
each split's mix of single- and multi-image lesions like the whole dataset's.

Several images often show the same lesion (HAM10000 has up to six); if they landed in both train and
test, the test score would measure recognition of a lesion already seen, not diagnosis. So images
are split by ``lesion_id``, and stratified by diagnosis so the rare classes (DF, VASC: about 1% of
ISIC 2019) are present in every split. They are also stratified by lesion size (images per lesion):
a validation or test split made mostly of single-image lesions would not look like the data a version
meets (follow-up series and several views of one lesion), and a threshold or temperature fitted on it
would be fitted to the wrong population.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from skinlesion.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
_UNLABELLED = "\x00unlabelled"  # the stratum of images without a diagnosis (sorts first)


def split_dataset(df: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
                  ) -> pd.Series:
    """"train"/"val"/"test" for each row of ``df`` (a dataset table), aligned with its index.

    Lesion-grouped: all images of one ``lesion_id`` get the same split. Class-stratified: each
    lesion is labelled by its most frequent diagnosis (images without one form their own stratum)
    and every class is split on its own so that each split gets ``fractions`` of the class's images.
    Size-stratified: within a class, each split gets its share of the single-image lesions, of the
    two-image lesions, and so on.

    How: within a class, lesions are shuffled with ``seed`` and then ordered by size (the shuffle
    orders lesions of one size). When the class has at least one lesion per split, its first
    (smallest) lesions go one to each split, the smallest split first, so even a class of 3 lesions
    is in train, val and test. Then, walking the order, each lesion goes to the split furthest below
    its target share of the images walked so far (this lesion included). Every run of same-size
    lesions is therefore dealt out in proportion, and no split ends more than about one lesion away
    from its target. Exact for any fractions (scikit-learn's StratifiedGroupKFold gives fractions
    only in steps of 1/k and can leave a rare class out of a split). Deterministic for a given
    ``seed`` and table. A fraction of 0 leaves that split empty.
    """
    share = _check_fractions(fractions)
    for column in ("lesion_id", "diagnosis"):
        if column not in df.columns:
            raise DataError(f"the dataset table has no {column!r} column; read it with "
                            "skinlesion.data.readers.read_dataset", field=column)
    lesions = _lesion_table(df)
    rng = np.random.default_rng(seed)
    split_of: dict[str, int] = {}
    for _, members in lesions.groupby("label", sort=True):
        shuffled = members.iloc[rng.permutation(len(members))]
        ordered = shuffled.iloc[np.argsort(shuffled["size"].to_numpy(), kind="stable")]
        for lesion, k in zip(ordered.index, _allocate(ordered["size"].to_numpy(), share),
                             strict=True):
            split_of[lesion] = k
    codes = df["lesion_id"].astype(str).map(split_of).to_numpy()
    return pd.Series(np.asarray(SPLITS, dtype=object)[codes], index=df.index, name="split")


def split_composition(df: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """What each split holds (rows: ``all`` then the splits present): images, lesions, images per
    lesion, the share of images that come from lesions with several images, and the share of
    lesions with several images. The numbers the card records to show the splits are alike."""
    size = df.groupby("lesion_id")["lesion_id"].transform("size")
    table = pd.DataFrame({"split": split.reindex(df.index).to_numpy(),
                          "lesion": df["lesion_id"].astype(str).to_numpy(),
                          "multi": (size > 1).to_numpy()})
    groups = [("all", table)] + [(s, table[table["split"] == s]) for s in SPLITS
                                 if (table["split"] == s).any()]
    rows = []
    for name, part in groups:
        per_lesion = part.drop_duplicates("lesion")
        rows.append({"split": name, "images": len(part), "lesions": len(per_lesion),
                     "images_per_lesion": len(part) / max(len(per_lesion), 1),
                     "multi_image_share_of_images": float(part["multi"].mean()),
                     "multi_image_share_of_lesions": float(per_lesion["multi"].mean())})
    return pd.DataFrame(rows).set_index("split")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    share = np.asarray(fractions, dtype=np.float64)
    if share.shape != (len(SPLITS),) or not np.all(np.isfinite(share)) or np.any(share < 0) \
            or share[0] <= 0 or not np.isclose(share.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers for "
                         f"{'/'.join(SPLITS)} summing to 1, with train > 0; got {tuple(fractions)}")
    return share


def _lesion_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion (index: lesion id): its majority diagnosis ``label`` and image count."""
    pairs = pd.DataFrame({"lesion": df["lesion_id"].astype(str).to_numpy(),
                          "label": df["diagnosis"].fillna(_UNLABELLED).astype(str).to_numpy()})
    counts = pairs.value_counts().rename("n").reset_index()
    majority = (counts.sort_values(["lesion", "n", "label"], ascending=[True, False, True])
                .drop_duplicates("lesion").set_index("lesion")["label"])
    size = pairs.groupby("lesion").size()
    return pd.DataFrame({"label": majority, "size": size.reindex(majority.index)})


def _allocate(sizes: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Split index for each lesion of one class, walking ``sizes`` (images per lesion) in order."""
    got = np.zeros(len(share))
    split = np.full(len(sizes), -1)
    active = np.flatnonzero(share > 0)
    first = 0
    if len(sizes) >= len(active):
        # Cover every split: the first lesions, one to each split, the smallest split first.
        for k, s in enumerate(active[np.argsort(share[active], kind="stable")]):
            split[k], got[s] = s, got[s] + sizes[k]
        first = len(active)
    walked = got.sum()
    for k in range(first, len(sizes)):
        walked += sizes[k]
        deficit = np.where(share > 0, share * walked - got, -np.inf)
        s = int(np.argmax(deficit))  # ties go to train, then val
        split[k], got[s] = s, got[s] + sizes[k]
    return split
