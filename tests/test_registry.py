"""Model versions: save/load round trip, aliases, fingerprints and data diffs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion import registry
from skinlesion.errors import ModelNotFoundError, SkinLesionError
from skinlesion.schema import CLASSES


class PriorClassifier:
    """A stand-in classifier answering fixed class priors (no torch needed)."""

    kind = "prior"

    def __init__(self, priors):
        self.priors_ = np.asarray(priors, dtype=float)

    def predict_proba(self, images, metadata):
        return np.tile(self.priors_, (len(images), 1))

    def save(self, directory: Path) -> dict:
        (directory / "priors.json").write_text(json.dumps(self.priors_.tolist()))
        return {"architecture": "prior", "n_params": len(self.priors_)}

    @classmethod
    def load(cls, directory: Path, section: dict):
        return cls(json.loads((directory / "priors.json").read_text()))


@pytest.fixture(autouse=True)
def prior_kind(monkeypatch):
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, "prior", f"{__name__}:PriorClassifier")


def _manifest(images, labels, splits):
    df = pd.DataFrame({"image": images, "lesion_id": images, "diagnosis": labels})
    sha = pd.Series([f"sha-{i}" for i in images])
    return registry.build_manifest(df, pd.Series(splits), sha)


def _save(models_dir, manifest, **kw):
    priors = np.full(len(CLASSES), 1 / len(CLASSES))
    info = registry.data_info(manifest, name="toy")
    return registry.save_version(models_dir, PriorClassifier(priors), threshold=0.3, data=info,
                                 manifest=manifest, **kw)


def test_save_load_round_trip(tmp_path):
    manifest = _manifest(["a", "b", "c"], ["MEL", "NV", "NV"], ["train", "val", "test"])
    card = _save(tmp_path, manifest, metrics={"test": {"auroc": 0.8}})
    loaded = registry.load_version(card.id, tmp_path)
    assert loaded.card.threshold == 0.3
    assert loaded.card.metrics["test"]["auroc"] == 0.8
    assert loaded.card.data.class_counts["NV"] == 2
    assert loaded.classifier.predict_proba([None, None], None).shape == (2, len(CLASSES))
    assert list(registry.read_manifest(tmp_path, card.id)["image"]) == ["a", "b", "c"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_aliases_and_latest(tmp_path):
    manifest = _manifest(["a"], ["MEL"], ["train"])
    first = _save(tmp_path, manifest, version_id="v1")
    second = _save(tmp_path, manifest, version_id="v2", parent="v1")
    assert registry.resolve_version(tmp_path, "latest") in {first.id, second.id}
    registry.set_alias(tmp_path, "champion", "v1")
    assert registry.load_version("champion", tmp_path).id == "v1"
    with pytest.raises(SkinLesionError, match="built-in"):
        registry.set_alias(tmp_path, "latest", "v1")
    with pytest.raises(ModelNotFoundError, match="champion"):
        registry.resolve_version(tmp_path, "nope")


def test_existing_version_id_is_not_overwritten(tmp_path):
    manifest = _manifest(["a"], ["MEL"], ["train"])
    _save(tmp_path, manifest, version_id="v1")
    with pytest.raises(SkinLesionError, match="already exists"):
        _save(tmp_path, manifest, version_id="v1")


def test_fingerprint_depends_on_content_not_order_or_names():
    a = _manifest(["x", "y"], ["MEL", "NV"], ["train", "test"])
    reordered = a.iloc[::-1].reset_index(drop=True)
    renamed = a.assign(image=["p", "q"])
    relabelled = a.assign(diagnosis=["MEL", "MEL"])
    fp = registry.data_fingerprint(a)
    assert registry.data_fingerprint(reordered) == fp
    assert registry.data_fingerprint(renamed) == fp
    assert registry.data_fingerprint(relabelled) != fp


def test_manifest_diff_names_the_images():
    a = _manifest(["x", "y", "z"], ["MEL", "NV", "NV"], ["train", "train", "test"])
    b = _manifest(["y", "z", "w"], ["NV", "BKL", "NV"], ["train", "test", "train"])
    diff = registry.diff_manifests(a, b)
    assert diff == {"added": ["w"], "removed": ["x"], "relabelled": ["z"], "resplit": []}
    moved = registry.diff_manifests(a, b.assign(split=b["split"].where(b["image"] != "y", "val")))
    assert moved["resplit"] == ["y"] and moved["relabelled"] == ["z"]


def test_manifest_diff_tells_duplicate_content_images_apart():
    # ISIC publishes some pictures twice under two names: same content hash, own rows
    a = registry.build_manifest(
        pd.DataFrame({"image": ["dup_1", "dup_2", "u"], "lesion_id": ["l1", "l1", "l2"],
                      "diagnosis": ["NV", "NV", "MEL"]}),
        pd.Series(["train", "train", "test"]), pd.Series(["same", "same", "sha-u"]))
    dropped = a[a["image"] != "dup_2"]
    assert registry.diff_manifests(a, dropped) == {"added": [], "removed": ["dup_2"],
                                                   "relabelled": [], "resplit": []}
    assert registry.diff_manifests(dropped, a)["added"] == ["dup_2"]
    one_relabelled = a.assign(diagnosis=["NV", "BKL", "MEL"])
    changes = registry.manifest_changes(a, one_relabelled)
    assert changes.to_dict("records") == [{"change": "relabelled", "image": "dup_2", "sha256": "same",
                                           "before": "NV", "after": "BKL"}]
    assert registry.manifest_changes(a, a).empty


def test_reference_data_is_stored_and_summarised(tmp_path):
    manifest = _manifest(["a", "b"], ["MEL", "NV"], ["train", "val"])
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"brightness": rng.normal(0.6, 0.05, 200),
                              "sharpness": rng.gamma(2, 0.001, 200), "p_malignant": rng.random(200)})
    card = _save(tmp_path, manifest, reference=reference)
    assert registry.read_reference(tmp_path, card.id).shape == (200, 3)
    stats = registry.read_card(tmp_path / card.id).image_stats_reference
    assert abs(stats["brightness"]["median"] - 0.6) < 0.02
    assert stats["sharpness"]["p01"] < stats["sharpness"]["median"]
    assert registry.read_reference(tmp_path, _save(tmp_path, manifest, version_id="bare").id) is None
