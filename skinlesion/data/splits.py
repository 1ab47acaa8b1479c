"""Train / validation / test splits that keep every lesion in one split and every class in each.

Several images often show the same lesion (HAM10000 has up to six); if they landed in both train and
test, the test score would measure recognition of a lesion already seen, not diagnosis. So images
are split by ``lesion_id``, and stratified by diagnosis so the rare classes (DF, VASC: about 1% of
ISIC 2019) are present in every split.
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

    How: within a class, lesions are shuffled with ``seed``. When the class has at least one lesion
    per split, its smallest lesions first go one to each split (so even a class of 3 lesions is in
    train, val and test); then the remaining lesions, largest first, each go to the split furthest
    below its target image count. This is exact for any fractions; scikit-learn's
    StratifiedGroupKFold in two stages gives fractions only in steps of 1/k (0.15 becomes 1/7) and
    can leave a rare class out of the test split. Deterministic for a given ``seed`` and table.
    A fraction of 0 leaves that split empty.
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
        order = rng.permutation(len(members))
        ids = members.index.to_numpy()[order]
        sizes = members["size"].to_numpy()[order]
        for lesion, k in zip(ids, _allocate(sizes, share), strict=True):
            split_of[lesion] = k
    codes = df["lesion_id"].astype(str).map(split_of).to_numpy()
    return pd.Series(np.asarray(SPLITS, dtype=object)[codes], index=df.index, name="split")


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
    """Split index for each lesion of one class (``sizes``: images per lesion, already shuffled)."""
    target = share * sizes.sum()
    got = np.zeros(len(share))
    split = np.full(len(sizes), -1)
    active = np.flatnonzero(share > 0)
    by_size = np.argsort(sizes, kind="stable")  # smallest first; the shuffle breaks ties
    if len(sizes) >= len(active):
        # Cover every split: the smallest lesions, the smallest going to the smallest split.
        for k, s in zip(by_size, active[np.argsort(share[active], kind="stable")], strict=False):
            split[k], got[s] = s, got[s] + sizes[k]
    for k in by_size[::-1]:
        if split[k] < 0:
            deficit = np.where(share > 0, target - got, -np.inf)
            s = int(np.argmax(deficit))  # ties go to train, then val
            split[k], got[s] = s, got[s] + sizes[k]
    return split
