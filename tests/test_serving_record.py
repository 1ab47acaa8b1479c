"""serving.prediction_record: the store's row carries what the answer measured, the OOD gate's
texture distance included (None for a version whose gate has no texture check)."""

from __future__ import annotations

import pytest

from skinlesion.predict import Prediction
from skinlesion.schema import CLASSES, Metadata
from skinlesion.serving import prediction_record


def _answer(texture_distance: float | None) -> Prediction:
    probabilities = dict.fromkeys(CLASSES, 1 / len(CLASSES))
    stats = dict(width=600.0, height=450.0, brightness=0.5, contrast=0.2, saturation=0.3, mean_r=0.6,
                 mean_g=0.4, mean_b=0.3, sharpness=12.0)
    return Prediction(probabilities=probabilities, p_malignant=0.5, predicted_class="MEL", decision="refer",
                      decision_reason="p_malignant 0.50 ≥ threshold 0.30", threshold=0.3,
                      model_version="v1", model_role="active", latency_ms=12.0, device="cpu",
                      image_sha256="a" * 64, image_stats=stats, embedding=[0.1, 0.2],
                      texture_distance=texture_distance)


@pytest.mark.parametrize("distance", [7.25, None])
def test_the_record_carries_the_answers_texture_distance(distance: float | None) -> None:
    record = prediction_record(_answer(distance), source="api", metadata=Metadata.from_raw(50, "male"))
    assert record.texture_distance == distance
    assert record.to_row()["texture_distance"] == distance
