"""Near-duplicate images among the labelled production cases of a retrain, so that one lesion never
sits on both sides of the gate's hold-out.

The same lesion reaches the store more than once with different bytes: re-imaged at a follow-up,
re-encoded by another app, or (in the demo) served again through the incident's imaging device.
Its copies must share one side of the hold-out, or the candidate is scored on images it trained
on. :func:`signature` reduces an image to a small standardised greyscale thumbnail, which brightness,
contrast, a colour tint and blur barely change; two images whose signatures correlate above
:data:`DUPLICATE_CORRELATION` are taken for the same lesion, and :func:`groups` joins them
transitively (with any known grouping, e.g. lesion ids from a version's manifest).

Measured with :func:`check` on the demo's sample of real images (the 1,203 images of data/sample,
each against its copy through ``skinlesion.demo.device_shift`` at severity 0.4 to 1; the command is
in the README's retraining section): every copy correlated at least 0.984 with its original and
joined it, while 3 pairs of distinct lesions joined (the largest group: 6 images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from skinlesion.data.images import load_image

#: thumbnail of a signature (width, height)
SIGNATURE_SIZE = (16, 12)
#: signatures correlating above this are the same lesion
DUPLICATE_CORRELATION = 0.98


def signature(image: Image.Image) -> np.ndarray:
    """The image as a greyscale ``SIGNATURE_SIZE`` thumbnail, standardised (mean 0) and scaled to
    unit length, so the dot product of two signatures is their correlation."""
    grey = np.asarray(image.convert("L").resize(SIGNATURE_SIZE, Image.Resampling.BILINEAR),
                      dtype=np.float64).ravel()
    centred = grey - grey.mean()
    norm = np.linalg.norm(centred)
    return centred / norm if norm > 0 else centred


def signatures(paths: Sequence[str | Path]) -> np.ndarray:
    """:func:`signature` of each image file, one row each."""
    size = SIGNATURE_SIZE[0] * SIGNATURE_SIZE[1]
    return np.array([signature(load_image(Path(p))) for p in paths]).reshape(len(paths), size)


def groups(sigs: np.ndarray, known: Sequence[str | None] | None = None, *,
           correlation: float = DUPLICATE_CORRELATION) -> np.ndarray:
    """A group number per row: rows whose signatures correlate above ``correlation``, or that
    share a ``known`` group name (None: unknown), are in one group, transitively."""
    n = len(sigs)
    if n == 0:
        return np.zeros(0, dtype=int)
    # unit vectors: correlation > c  <=>  euclidean distance < sqrt(2 (1 - c))
    pairs = cKDTree(sigs).query_pairs(np.sqrt(2 * (1 - correlation)), output_type="ndarray")
    edges = [pairs]
    if known is not None:
        names = pd.Series(list(known))
        for members in names.dropna().groupby(names.dropna()).groups.values():
            idx = np.asarray(members, dtype=int)
            edges.append(np.column_stack([np.full(len(idx) - 1, idx[0]), idx[1:]]))
    rows = np.concatenate(edges).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(rows)), (rows[:, 0], rows[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def check(paths: Sequence[str | Path], lesions: Sequence[str], shift: Callable[[Image.Image, float],
          Image.Image], *, seed: int = 0) -> dict[str, float]:
    """How :func:`groups` does on ``paths`` (with their ``lesions``) and a copy of each through
    ``shift`` at a seeded severity in [0.4, 1]: the lowest correlation of a copy with its
    original, the share of copies grouped with their original, pairs of distinct lesions
    grouped, and the largest group."""
    rng = np.random.default_rng(seed)
    images = [load_image(Path(p)) for p in paths]
    originals = np.array([signature(img) for img in images])
    copies = np.array([signature(shift(img, rng.uniform(0.4, 1.0))) for img in images])
    found = groups(np.vstack([originals, copies]))
    n = len(images)
    first = pd.Series(found[:n]).groupby(found[:n]).transform("size")
    distinct = sum(len(set(lesions[i] for i in np.flatnonzero(found[:n] == g))) - 1
                   for g in np.unique(found[:n][first.to_numpy() > 1]))
    return {"images": n, "min_copy_correlation": float((originals * copies).sum(axis=1).min()),
            "copies_with_original": float((found[n:] == found[:n]).mean()),
            "distinct_lesions_joined": int(distinct),
            "largest_group": int(np.bincount(found).max())}

