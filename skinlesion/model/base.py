"""The interface every servable model implements (neural network or rule-based fallback).

A classifier answers calibrated class probabilities for a batch of images with their metadata, and can
save itself into a version folder and be loaded back from it with nothing else (see registry.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from PIL import Image


@runtime_checkable
class Classifier(Protocol):
    #: registry key of the implementation, stored in the model card ("neural", "fallback")
    kind: ClassVar[str]

    def predict_proba(self, images: Sequence[Image.Image], metadata: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, shape (n, len(CLASSES)), columns in CLASSES order.

        ``metadata`` has one row per image with columns age_approx (float, NaN = missing),
        sex and anatom_site_general (validated vocabulary, "missing" allowed)."""
        ...

    def save(self, directory: Path) -> dict:
        """Write weights/state into ``directory``; return the card's ``model`` section: architecture,
        config, preprocessing, metadata-encoder state, temperature, parameter counts (JSON-able)."""
        ...

    @classmethod
    def load(cls, directory: Path, model_section: dict) -> Classifier:
        """Rebuild the classifier from ``directory`` and the card's ``model`` section."""
        ...
