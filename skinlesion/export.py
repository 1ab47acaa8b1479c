"""Export a registered version to the inference runtimes, gated on its reference images.

The reference images are the version's validation split (the images behind its reference answers),
found by name in the dataset it was trained on and checked against the content hashes of its
manifest. ``skinlesion models export VERSION --data DIR`` and ``make bench`` call
:func:`export_version`; serving then loads the gated export (skinlesion.model.runtime).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.data.images import file_sha256, load_image
from skinlesion.data.readers import read_dataset
from skinlesion.errors import DataError
from skinlesion.model.exports import GateReport
from skinlesion.model.runtime import EXPORTED_RUNTIMES, ExportSettings, ExportTarget, export
from skinlesion.registry import ModelVersion, load_version, read_manifest
from skinlesion.schema import METADATA_FIELDS, malignant_mask

#: how many reference images the gate compares on by default
GATE_IMAGES = 200


def reference_rows(version: ModelVersion, models_dir: Path, data: pd.DataFrame, *,
                   n: int = GATE_IMAGES, seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` rows of ``data`` (a dataset table) holding the version's validation images, a
    seeded sample; an image whose content differs from the manifest's is an error."""
    manifest = read_manifest(models_dir, version.id)
    val = manifest[manifest["split"] == "val"]
    rows = data.merge(val.loc[:, ["image", "sha256"]], on="image")
    if rows.empty:
        raise DataError(f"none of version {version.id!r}'s validation images is in this dataset; "
                        "pass the dataset it was trained on (--data DIR)")
    rows = rows.sample(min(n, len(rows)), random_state=seed).sort_values("image")
    changed = [image for image, path, sha in zip(rows["image"], rows["path"], rows["sha256"],
                                                 strict=True) if file_sha256(path) != sha]
    if changed:
        raise DataError(f"{len(changed)} validation image(s) differ from the ones version "
                        f"{version.id!r} was trained on (e.g. {changed[0]}); pass the dataset it "
                        "was trained on")
    return rows.reset_index(drop=True)


def export_target(version: ModelVersion) -> ExportTarget:
    """The :class:`ExportTarget` of a loaded version (on the CPU)."""
    return ExportTarget(version.id, version.path, version.classifier, version.card.threshold,
                        np.array(malignant_mask(version.card.malignant)))


def export_version(models_dir: Path, ref: str, data_dir: Path, *,
                   runtimes: Sequence[str] = EXPORTED_RUNTIMES, n_images: int = GATE_IMAGES,
                   settings: ExportSettings | None = None) -> list[GateReport]:
    """Export the version ``ref`` to each of ``runtimes`` and gate each on ``n_images`` of its
    reference images from the dataset in ``data_dir`` (an export already made is reused)."""
    version = load_version(ref, models_dir, device="cpu")
    rows = reference_rows(version, models_dir, read_dataset(data_dir), n=n_images)
    images = [load_image(path) for path in rows["path"]]
    target = export_target(version)
    return [export(target, runtime, images, rows.loc[:, list(METADATA_FIELDS)], settings=settings)
            for runtime in runtimes]
