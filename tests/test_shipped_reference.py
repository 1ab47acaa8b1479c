"""The shipped ``models/reference`` loads into a Predictor and answers a real image of the shipped
sample as its card says (threshold, diagnosis rule, OOD gate in the current format with its texture
check), and its reference answers agree with the card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion import registry
from skinlesion.calibration import DiagnosisRule
from skinlesion.model.ood import OOD_VALIDATION_SHARE, card_gate
from skinlesion.predict import Predictor
from skinlesion.schema import CLASSES, Metadata

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SAMPLE = ROOT / "data" / "sample"

pytestmark = pytest.mark.skipif(not (MODELS / "reference" / "card.json").is_file(),
                                reason="no shipped reference version in this checkout")


def test_the_shipped_reference_answers_a_sample_image_as_its_card_says():
    predictor = Predictor.from_registry("reference", MODELS, device="cpu")
    card = predictor.version.card
    gate = card_gate(card.model_extra, predictor.version.path)
    assert gate is not None and gate.texture is not None and gate.texture.width == 352
    row = pd.read_csv(SAMPLE / "ISIC_2019_Training_Metadata.csv").iloc[0]
    answer = predictor.predict((SAMPLE / "ISIC_2019_Training_Input" / f"{row['image']}.jpg")
                               .read_bytes(),
                               Metadata.from_raw(row["age_approx"], row["sex"],
                                                 row["anatom_site_general"]))
    probs = np.array([answer.probabilities[c] for c in CLASSES])
    assert probs.sum() == pytest.approx(1.0) and answer.threshold == card.threshold
    rule = DiagnosisRule.from_dict(card.model_extra.get("diagnosis_rule"), CLASSES)
    assert answer.predicted_class == CLASSES[int(rule.index(probs))]
    assert answer.texture_distance is not None and 0 < answer.texture_distance


def test_the_shipped_reference_answers_agree_with_the_card():
    card = registry.read_card(MODELS / "reference")
    reference = registry.read_reference(MODELS, "reference")
    assert len(reference) == card.metrics["val"]["n"]
    refer = reference["p_malignant"] >= card.threshold
    assert (reference["decision"] == np.where(refer, "refer", "no referral")).all()
    rule = DiagnosisRule.from_dict(card.model_extra.get("diagnosis_rule"), CLASSES)
    probs = reference[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert list(reference["predicted_class"]) == [CLASSES[i] for i in rule.index(probs)]
    # the texture check's distances of the reference answers: its bound flags at most the gate's share
    gate = card_gate(card.model_extra, MODELS / "reference")
    assert reference["texture_distance"].notna().all()
    assert gate.texture_flags(reference["texture_distance"]).mean() <= OOD_VALIDATION_SHARE
