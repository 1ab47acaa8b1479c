"""On-disk cache of frozen-network outputs (trunk activations or pooled embeddings).

Computing the frozen part of a network is the slow step of training on CPU, and its output for an
image never changes while the backbone, cut point, preprocessing and view stay the same. So each output
is stored once as a float16 ``.npy`` file under a key made of exactly those things plus the image's
content hash (not its name): renamed or moved files hit the cache, a changed recipe never does.

Layout: ``<root>/<spec key>/spec.json`` (what the key stands for) and
``<root>/<spec key>/<sha[:2]>/<sha>.npy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def spec_key(spec: dict) -> str:
    """Stable short key of a JSON-able spec (backbone, weights, cut, preprocessing, view, ...)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ActivationCache:
    """Get-or-compute store of per-image arrays. ``computed_`` counts arrays this object computed
    (the rest were read from disk)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.computed_ = 0

    def _dir(self, spec: dict) -> Path:
        folder = self.root / spec_key(spec)
        if not (folder / "spec.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(folder / "spec.json", (json.dumps(spec, indent=2, sort_keys=True)
                                                 + "\n").encode())
        return folder

    def get(self, spec: dict, shas: Sequence[str], compute: Callable[[list[int]], np.ndarray], *,
            batch_size: int = 32, desc: str = "extract", progress: bool = True) -> np.ndarray:
        """Stacked float16 arrays for ``shas`` (image content hashes). Missing ones are computed by
        ``compute(indices into shas) -> array (len(indices), ...)`` in batches, with a progress bar
        on stderr, and stored; identical hashes are computed once."""
        folder = self._dir(spec)
        paths = [folder / sha[:2] / f"{sha}.npy" for sha in shas]
        first_of: dict[str, int] = {}
        for i, sha in enumerate(shas):
            first_of.setdefault(sha, i)
        missing = [i for sha, i in first_of.items() if not paths[i].is_file()]
        bar = tqdm(total=len(missing), desc=desc, unit="img", file=sys.stderr,
                   disable=not progress or not missing)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            arrays = np.asarray(compute(chunk), dtype=np.float16)
            if len(arrays) != len(chunk):
                raise ValueError(f"compute returned {len(arrays)} arrays for {len(chunk)} images")
            for i, arr in zip(chunk, arrays):
                paths[i].parent.mkdir(exist_ok=True)
                _atomic_save(paths[i], arr)
            self.computed_ += len(chunk)
            bar.update(len(chunk))
        bar.close()
        if not shas:
            return np.zeros((0,), np.float16)
        first = np.load(paths[0])
        out = np.empty((len(shas),) + first.shape, dtype=np.float16)
        for i, path in enumerate(paths):
            out[i] = first if i == 0 else np.load(path)
        return out


def _atomic_save(path: Path, array: np.ndarray) -> None:
    """np.save via a temporary file and rename, so a crash never leaves a truncated entry."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
