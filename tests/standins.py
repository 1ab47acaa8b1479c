"""A stand-in classifier for tests of the layers above the model (registry, serving, API): it needs no
torch, answers instantly, and carries a planted signal (darker images look more malignant)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion import registry
from skinlesion.schema import CLASSES
from skinlesion.settings import Settings

STANDIN_KIND = "standin"
STANDIN_PATH = f"{__name__}:BrightnessClassifier"


class BrightnessClassifier:
    """p(MEL) grows as the image gets darker; the rest of the mass goes to NV."""

    kind = STANDIN_KIND

    def __init__(self, scale: float = 1.0):
        self.scale_ = scale

    def predict_proba(self, images, metadata: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(images), len(CLASSES)))
        for i, img in enumerate(images):
            darkness = 1.0 - np.asarray(img.convert("L"), dtype=float).mean() / 255.0
            p_mel = float(np.clip(darkness * self.scale_, 0.01, 0.99))
            out[i, CLASSES.index("MEL")] = p_mel
            out[i, CLASSES.index("NV")] = 1.0 - p_mel
        return out

    def save(self, directory: Path) -> dict:
        (directory / "standin.json").write_text(json.dumps({"scale": self.scale_}))
        return {"architecture": "brightness_standin"}

    @classmethod
    def load(cls, directory: Path, section: dict) -> BrightnessClassifier:
        return cls(json.loads((directory / "standin.json").read_text())["scale"])


def save_standin(models_dir: Path, version_id: str, *, threshold: float = 0.5,
                 scale: float = 1.0, reference: pd.DataFrame | None = None) -> registry.ModelCard:
    manifest = registry.build_manifest(
        pd.DataFrame({"image": ["a"], "lesion_id": ["a"], "diagnosis": ["MEL"]}),
        pd.Series(["train"]), pd.Series(["0" * 64]))
    return registry.save_version(models_dir, BrightnessClassifier(scale), threshold=threshold,
                                 data=registry.data_info(manifest, name="standin"),
                                 manifest=manifest, version_id=version_id, reference=reference)


def standin_home(tmp_path: Path, monkeypatch, versions: tuple[str, ...]) -> Settings:
    """A ``SKINLESION_HOME`` in ``tmp_path`` whose models folder holds stand-in ``versions``
    (loadable: the stand-in kind is registered for the test)."""
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    settings = Settings()
    for version in versions:
        save_standin(settings.models_dir, version)
    return settings
