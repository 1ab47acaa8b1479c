"""Model versions: self-described folders under ``models/``.

A version folder holds the classifier's own files (weights or fitted state), ``card.json`` (the model
card: everything needed to load and to judge the version) and ``manifest.csv`` (the data it saw: image
content hashes, labels, split). Loading a version needs nothing else. A version is named by its id or
by an alias: ``latest`` (newest version), or one recorded in ``models/aliases.json``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from skinlesion import __version__
from skinlesion.errors import ModelNotFoundError, SkinLesionError
from skinlesion.model.base import Classifier
from skinlesion.model.exports import read_reports
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT

CARD_FILE = "card.json"
MANIFEST_FILE = "manifest.csv"
ALIASES_FILE = "aliases.json"
REFERENCE_FILE = "reference.parquet"
#: The null distribution of drift over the reference, written by monitoring on first use.
DRIFT_NULL_FILE = "drift_null.json"
#: image statistics whose training distribution the card records (for out-of-distribution checks)
REFERENCE_STATS = ("brightness", "contrast", "saturation", "mean_r", "mean_g", "mean_b", "sharpness")
MANIFEST_COLUMNS = ("image", "sha256", "lesion_id", "diagnosis", "split")

#: Classifier implementations by the ``kind`` stored in the card (imported lazily: the fallback
#: needs no torch).
CLASSIFIER_KINDS: dict[str, str] = {
    "neural": "skinlesion.model.neural:NeuralClassifier",
    "fallback": "skinlesion.model.fallback:ABCDFallback",
}
BUILTIN_ALIASES = ("latest",)


class DataInfo(BaseModel):
    """What a version was trained on."""

    model_config = ConfigDict(extra="allow")

    name: str
    fingerprint: str
    n_images: int
    class_counts: dict[str, int]
    split_counts: dict[str, int]
    licence: str | None = None


class ModelCard(BaseModel):
    """The model card stored as ``card.json``. Unknown keys are kept (forward compatible)."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str
    created: str
    parent: str | None = None
    package_version: str = __version__
    classes: list[str] = Field(default_factory=lambda: list(CLASSES))
    malignant: list[str] = Field(default_factory=lambda: list(DEFAULT_MALIGNANT))
    threshold: float
    target_sensitivity: float | None = None
    model: dict
    data: DataInfo
    metrics: dict[str, dict] = Field(default_factory=dict)
    history: list[dict] = Field(default_factory=list)
    training: dict = Field(default_factory=dict)
    notes: str | None = None

    @property
    def architecture(self) -> str:
        return str(self.model.get("architecture", self.kind))


@dataclass(frozen=True)
class ModelVersion:
    """A loaded version: its card, its folder and the classifier ready to predict."""

    card: ModelCard
    path: Path
    classifier: Classifier

    @property
    def id(self) -> str:
        return self.card.id


# --- data identity ------------------------------------------------------------------------------------


def build_manifest(df: pd.DataFrame, split: pd.Series, sha256: pd.Series) -> pd.DataFrame:
    """The data manifest of a version: one row per image with its content hash, label and split."""
    manifest = pd.DataFrame({
        "image": df["image"].astype(str).values,
        "sha256": sha256.astype(str).values,
        "lesion_id": df["lesion_id"].astype(str).values,
        "diagnosis": df["diagnosis"].astype(str).values,
        "split": split.astype(str).values,
    })
    return manifest.sort_values("image", kind="stable").reset_index(drop=True)


def data_fingerprint(manifest: pd.DataFrame) -> str:
    """sha256 over the sorted (content hash, label, split) triples: same data -> same fingerprint,
    whatever the file names or row order."""
    lines = sorted(manifest["sha256"] + "," + manifest["diagnosis"] + "," + manifest["split"])
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def data_info(manifest: pd.DataFrame, *, name: str, licence: str | None = None) -> DataInfo:
    counts = manifest["diagnosis"].value_counts()
    return DataInfo(
        name=name,
        fingerprint=data_fingerprint(manifest),
        n_images=len(manifest),
        class_counts={c: int(counts.get(c, 0)) for c in CLASSES},
        split_counts={k: int(v) for k, v in manifest["split"].value_counts().sort_index().items()},
        licence=licence,
    )


#: the kinds of change between two manifests, in the order they are reported
MANIFEST_CHANGES = ("added", "removed", "relabelled", "resplit")


def manifest_changes(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """What changed from manifest ``a`` to manifest ``b``: one row per change with ``change``
    (``added``, ``removed``, ``relabelled``, ``resplit``), ``image``, ``sha256``, ``before`` and
    ``after`` (the label or split; ``"label, split"`` of an added or removed image on its side, empty
    on the other), ordered by change then image.

    A manifest row is identified by its content hash *and* its image name, so duplicate-content
    images (the same picture published under two names) are told apart: dropping one copy is a
    removal. An image renamed between the versions shows as removed under the old name and added
    under the new one. An image both relabelled and resplit gives two rows."""
    key = ["sha256", "image"]
    both = a.merge(b, on=key, how="outer", suffixes=("_a", "_b"), indicator=True)
    added = both[both["_merge"] == "right_only"]
    removed = both[both["_merge"] == "left_only"]
    rows = [added.loc[:, key].assign(change="added", before="",
                                     after=added["diagnosis_b"] + ", " + added["split_b"]),
            removed.loc[:, key].assign(change="removed", before=removed["diagnosis_a"] + ", "
                                       + removed["split_a"], after="")]
    kept = both[both["_merge"] == "both"]
    for change, column in (("relabelled", "diagnosis"), ("resplit", "split")):
        moved = kept[kept[f"{column}_a"] != kept[f"{column}_b"]]
        rows.append(moved.loc[:, key].assign(change=change, before=moved[f"{column}_a"],
                                             after=moved[f"{column}_b"]))
    return pd.concat([r.sort_values("image", kind="stable") for r in rows], ignore_index=True).loc[
        :, ["change", "image", "sha256", "before", "after"]]


def diff_manifests(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, list[str]]:
    """Image names per kind of change from ``a`` to ``b`` (see :func:`manifest_changes`):
    ``added`` (only in ``b``), ``removed`` (only in ``a``), ``relabelled``, ``resplit``."""
    changes = manifest_changes(a, b)
    return {change: sorted(changes.loc[changes["change"] == change, "image"])
            for change in MANIFEST_CHANGES}


def describe_manifest_changes(changes: pd.DataFrame, *, limit: int = 50) -> list[str]:
    """Readable lines for :func:`manifest_changes`: the count of each kind of change first, then up
    to ``limit`` images per kind (``limit`` 0: counts only)."""
    counts = changes["change"].value_counts()
    lines = [f"{change:<11}{counts.get(change, 0):>7}" for change in MANIFEST_CHANGES]
    for change in MANIFEST_CHANGES:
        rows = changes[changes["change"] == change]
        if rows.empty or limit == 0:
            continue
        lines += ["", f"{change} ({len(rows)}):"]
        lines += [f"  {r.image}: {r.before} -> {r.after}" if r.before and r.after
                  else f"  {r.image} ({r.before or r.after})" for r in rows.head(limit).itertuples()]
        if len(rows) > limit:
            lines.append(f"  … and {len(rows) - limit} more")
    return lines


# --- saving -------------------------------------------------------------------------------------------


def image_stats_reference(reference: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Median, median absolute deviation and 1st percentile of each image statistic."""
    out = {}
    for name in REFERENCE_STATS:
        if name in reference:
            col = reference[name].dropna().to_numpy(dtype=float)
            med = float(np.median(col))
            out[name] = {"median": med, "mad": float(np.median(np.abs(col - med))),
                         "p01": float(np.percentile(col, 1))}
    return out


def new_version_id(architecture: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{architecture.replace('_', '-')}-{secrets.token_hex(3)}"


def save_version(models_dir: Path, classifier: Classifier, *, threshold: float, data: DataInfo,
                 manifest: pd.DataFrame, metrics: dict[str, dict] | None = None,
                 history: list[dict] | None = None, training: dict | None = None,
                 parent: str | None = None, target_sensitivity: float | None = None,
                 malignant: tuple[str, ...] = DEFAULT_MALIGNANT, notes: str | None = None,
                 version_id: str | None = None, extra: dict | None = None,
                 reference: pd.DataFrame | None = None) -> ModelCard:
    """Write a new version folder and return its card. The folder appears atomically (written under a
    temporary name, then renamed), so a reader never sees a half-written version.

    ``reference`` (optional) is the version's validation-split answers in the predictions-table
    columns: the baseline for drift and estimated performance. Its image statistics also give the
    card's ``image_stats_reference`` (median, MAD, 1st percentile per statistic), which the Predictor
    uses to flag images unlike the training images."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        model_section = classifier.save(tmp)
        vid = version_id or new_version_id(str(model_section.get("architecture", classifier.kind)))
        card = ModelCard(
            id=vid, kind=classifier.kind, created=datetime.now(UTC).isoformat(timespec="seconds"),
            parent=parent, malignant=list(malignant), threshold=float(threshold),
            target_sensitivity=target_sensitivity, model=model_section, data=data,
            metrics=metrics or {}, history=history or [], training=training or {}, notes=notes,
            **(extra or {}),
            **({"image_stats_reference": image_stats_reference(reference)}
               if reference is not None else {}),
        )
        if reference is not None:
            reference.to_parquet(tmp / REFERENCE_FILE, index=False)
        manifest.loc[:, list(MANIFEST_COLUMNS)].to_csv(tmp / MANIFEST_FILE, index=False)
        (tmp / CARD_FILE).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
        final = models_dir / vid
        if final.exists():
            raise SkinLesionError(f"model version {vid!r} already exists in {models_dir}; "
                                  "choose another id or remove the old folder first")
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return card


# --- finding and loading -----------------------------------------------------------------------------


def read_card(version_dir: Path) -> ModelCard:
    """The version's card, with ``exports``: the runtime exports made of it since it was saved and
    what their accuracy gate said (skinlesion.model.exports; not stored in card.json)."""
    card = json.loads((Path(version_dir) / CARD_FILE).read_text())
    return ModelCard.model_validate(
        card | {"exports": [report.summary() for report in read_reports(version_dir)]})


def list_versions(models_dir: Path) -> list[ModelCard]:
    """Cards of every version under ``models_dir``, oldest first."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    cards = [read_card(p) for p in models_dir.iterdir()
             if p.is_dir() and not p.name.startswith(".") and (p / CARD_FILE).is_file()]
    return sorted(cards, key=lambda c: (c.created, c.id))


def read_aliases(models_dir: Path) -> dict[str, str]:
    path = Path(models_dir) / ALIASES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def set_alias(models_dir: Path, alias: str, ref: str) -> str:
    """Point ``alias`` at the version ``ref`` names; returns the version id."""
    if alias in BUILTIN_ALIASES:
        raise SkinLesionError(f"{alias!r} is a built-in alias and cannot be reassigned")
    if (Path(models_dir) / alias).is_dir():
        raise SkinLesionError(f"{alias!r} is already a version id; choose another alias")
    vid = resolve_version(models_dir, ref)
    aliases = read_aliases(models_dir) | {alias: vid}
    (Path(models_dir) / ALIASES_FILE).write_text(json.dumps(aliases, indent=2, sort_keys=True) + "\n")
    return vid


def resolve_version(models_dir: Path, ref: str) -> str:
    """Version id for ``ref`` (an id, ``latest`` or an alias); ModelNotFoundError lists what exists."""
    models_dir = Path(models_dir)
    if (models_dir / ref / CARD_FILE).is_file():
        return ref
    versions = list_versions(models_dir)
    if ref == "latest" and versions:
        return versions[-1].id
    aliases = read_aliases(models_dir)
    if ref in aliases:
        return resolve_version(models_dir, aliases[ref])
    known = [c.id for c in versions] + sorted(aliases) + (["latest"] if versions else [])
    raise ModelNotFoundError(
        f"no model version {ref!r} in {models_dir}; known: {', '.join(known) or 'none'} "
        "(train one with `skinlesion train --data DIR`)")


def load_version(ref: str, models_dir: Path, *, device: str = "auto") -> ModelVersion:
    """Load the version ``ref`` names, ready to predict (neural versions on ``device``:
    auto|cpu|cuda)."""
    vid = resolve_version(models_dir, ref)
    path = Path(models_dir) / vid
    card = read_card(path)
    if card.kind not in CLASSIFIER_KINDS:
        raise SkinLesionError(f"version {vid!r} has unknown kind {card.kind!r}; "
                              f"known kinds: {', '.join(CLASSIFIER_KINDS)}")
    module_name, cls_name = CLASSIFIER_KINDS[card.kind].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    section = card.model | ({"device": device} if card.kind == "neural" else {})
    return ModelVersion(card=card, path=path, classifier=cls.load(path, section))


def read_manifest(models_dir: Path, ref: str) -> pd.DataFrame:
    vid = resolve_version(models_dir, ref)
    return pd.read_csv(Path(models_dir) / vid / MANIFEST_FILE, dtype=str)


def read_reference(models_dir: Path, ref: str) -> pd.DataFrame | None:
    """The version's reference answers (validation split), or None for a version saved without."""
    path = Path(models_dir) / resolve_version(models_dir, ref) / REFERENCE_FILE
    return pd.read_parquet(path) if path.is_file() else None


def read_drift_null(models_dir: Path, ref: str) -> dict | None:
    """The null distribution of drift stored with the version (``monitoring.drift.DriftNull`` as a
    dict), or None while none has been computed."""
    path = Path(models_dir) / resolve_version(models_dir, ref) / DRIFT_NULL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_drift_null(models_dir: Path, ref: str, null: dict) -> Path:
    """Store the version's null distribution of drift beside its reference (written under a
    temporary name, then renamed: a reader sees the old file or the new one)."""
    folder = Path(models_dir) / resolve_version(models_dir, ref)
    tmp = folder / f".{DRIFT_NULL_FILE}.{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(null) + "\n")
    tmp.replace(folder / DRIFT_NULL_FILE)
    return folder / DRIFT_NULL_FILE
