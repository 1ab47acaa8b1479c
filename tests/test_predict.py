"""The Predictor's decision logic: confidence (normalised entropy), image quality and distribution
checks, the decision with its reason, and batches answering as single images do."""

from __future__ import annotations

import io
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinlesion import registry
from skinlesion.data.splits import split_dataset
from skinlesion.model.neural import MONITORING_DIM
from skinlesion.model.ood import fit_ood_gate
from skinlesion.monitoring.drift import compute_drift
from skinlesion.predict import (NO_REFERRAL, REFER, UNCERTAIN, DecisionPolicy, Predictor, decide,
                                normalised_entropy, quality_issues)
from skinlesion.register import register
from skinlesion.schema import CLASSES, Metadata
from skinlesion.serving import prediction_record
from skinlesion.store import Store
from skinlesion.train import TrainConfig, fit

POLICY = DecisionPolicy()
#: the training images' statistics as a card stores them (median, MAD, 1st percentile)
REFERENCE = {"brightness": {"median": 0.55, "mad": 0.05, "p01": 0.40},
             "saturation": {"median": 0.30, "mad": 0.04, "p01": 0.20},
             "sharpness": {"median": 0.010, "mad": 0.002, "p01": 0.006}}
TYPICAL = {"brightness": 0.56, "saturation": 0.31, "sharpness": 0.011}


def confident(cls: str, p: float = 0.9) -> np.ndarray:
    """Probabilities with ``p`` on ``cls`` and the rest on NV (or on MEL when ``cls`` is NV)."""
    out = np.zeros(len(CLASSES))
    out[CLASSES.index(cls)] = p
    out[CLASSES.index("MEL" if cls == "NV" else "NV")] += 1 - p
    return out


# --- normalised entropy -----------------------------------------------------------------------------


def test_entropy_is_one_for_uniform_zero_for_certain_and_scaled_by_class_count():
    assert normalised_entropy(np.full(8, 1 / 8)) == pytest.approx(1.0)
    assert normalised_entropy(np.eye(8)[0]) == pytest.approx(0.0, abs=1e-9)
    assert normalised_entropy(confident("MEL", 0.5)) == pytest.approx(math.log(2) / math.log(8))


# --- quality and distribution checks ----------------------------------------------------------------


def test_a_typical_image_has_no_issues():
    assert quality_issues(TYPICAL, POLICY, REFERENCE) == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"brightness": 0.05}, "too dark"),
    ({"brightness": 0.98}, "overexposed"),
    ({"sharpness": 0.001}, "blurred"),
    ({"saturation": 0.95}, "out of distribution: saturation"),
])
def test_each_issue_is_named(change, expected):
    issues = quality_issues(TYPICAL | change, POLICY, REFERENCE)
    assert any(expected in issue for issue in issues), issues


def test_without_a_reference_only_exposure_is_checked():
    assert quality_issues(TYPICAL | {"sharpness": 0.0, "saturation": 0.99}, POLICY) == []
    assert quality_issues(TYPICAL | {"brightness": 0.05}, POLICY) != []


# --- the decision ------------------------------------------------------------------------------------


def test_refer_at_or_above_the_threshold_and_no_referral_below():
    probs = confident("MEL")
    assert decide(probs, 0.40, 0.40, [], POLICY)[0] == REFER
    decision, reason = decide(probs, 0.39, 0.40, [], POLICY)
    assert decision == NO_REFERRAL and "0.39 < threshold 0.40" in reason


def test_low_confidence_is_uncertain_whatever_p_malignant():
    decision, reason = decide(np.full(8, 1 / 8), 0.9, 0.4, [], POLICY)
    assert decision == UNCERTAIN and "not confident" in reason


def test_quality_issues_make_the_answer_uncertain_with_them_as_reason():
    issues = ["image too dark (brightness 0.05 < 0.12)", "image blurred"]
    decision, reason = decide(confident("MEL"), 0.9, 0.4, issues, POLICY)
    assert decision == UNCERTAIN and reason == "; ".join(issues)


@pytest.mark.parametrize(("p_malignant", "issues", "expected"), [
    (0.10, [], NO_REFERRAL),  # below half the threshold: a clear case, answered
    (0.30, [], REFER),  # benign at the threshold but not clearly: referred
    (0.10, ["image too dark"], REFER),  # uncertain: referred
])
def test_restricted_mode_answers_only_clear_cases(p_malignant, issues, expected):
    decision, reason = decide(confident("NV"), p_malignant, 0.4, issues, POLICY, restricted=True)
    assert decision == expected
    assert ("clear case" in reason) if expected == NO_REFERRAL else ("restricted" in reason)


# --- the Predictor on a trained version --------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(synthetic_df, tmp_path_factory) -> Predictor:
    folder = tmp_path_factory.mktemp("predictor")
    split = split_dataset(synthetic_df, seed=0)
    config = TrainConfig(mode="head", epochs=3, device="cpu", width=64, height=48,
                         train_views=("identity",), tta=("identity",))
    result = fit(synthetic_df, split, config, folder / "cache", progress=False)
    card = register(folder / "models", result.classifier, synthetic_df, split,
                    threshold=result.threshold, val_probs=result.val_probs, data_name="synthetic",
                    progress=False)
    return Predictor.from_registry(card.id, folder / "models", device="cpu")


def rows(df, n: int = 6) -> tuple[list[bytes], list[Metadata]]:
    chosen = df.iloc[:n]
    return ([open(p, "rb").read() for p in chosen["path"]],
            [Metadata.from_raw(r.age_approx, r.sex, r.anatom_site_general)
             for r in chosen.itertuples()])


def test_a_batch_answers_as_single_images_do(predictor, synthetic_df):
    images, meta = rows(synthetic_df)
    batch = predictor.predict_batch(images, meta)
    singles = [predictor.predict(image, m) for image, m in zip(images, meta, strict=True)]
    for a, b in zip(batch, singles, strict=True):
        assert a.image_sha256 == b.image_sha256
        np.testing.assert_allclose([a.probabilities[c] for c in CLASSES],
                                   [b.probabilities[c] for c in CLASSES], atol=1e-5)
        assert (a.decision, a.predicted_class) == (b.decision, b.predicted_class)
        assert a.device == "cpu" and a.threshold == predictor.threshold


def test_a_too_dark_photo_is_uncertain_through_the_predictor(predictor, synthetic_df):
    images, meta = rows(synthetic_df, 1)
    dark = Image.open(io.BytesIO(images[0])).point(lambda v: v // 12)
    answer = predictor.predict(dark, meta[0])
    assert answer.decision == UNCERTAIN and "too dark" in answer.decision_reason


# --- the monitoring embedding ------------------------------------------------------------------------


def test_answers_log_the_same_embedding_as_the_reference_and_drift_tests_it(predictor, synthetic_df,
                                                                           tmp_path):
    """The version's reference (its validation answers) and every logged answer carry the same
    projected image embedding: answering the validation images again reproduces the reference's,
    and a drift run over the logged answers tests the embedding feature."""
    reference = registry.read_reference(predictor.version.path.parent, predictor.version.id)
    assert reference["embedding"].map(len).eq(MONITORING_DIM).all()
    val = synthetic_df[split_dataset(synthetic_df, seed=0) == "val"]
    images, meta = rows(val, len(val))
    answers = predictor.predict_batch(images, meta)
    np.testing.assert_allclose(np.stack([a.embedding for a in answers]),
                               np.stack(reference["embedding"]), rtol=1e-4, atol=1e-4)
    store = Store(tmp_path / "log.duckdb")
    store.log_predictions(prediction_record(a, source="batch", metadata=m)
                          for a, m in zip(answers, meta, strict=True))
    drift = compute_drift(reference, store.query_predictions(include_embedding=True),
                          features=["embedding"])
    (embedding,) = drift.features
    assert embedding.stattest.startswith("mean Wasserstein distance") and not embedding.drifted


def test_an_image_unlike_the_training_images_is_uncertain_with_the_gate_as_reason(predictor,
                                                                                  synthetic_df):
    """The version's OOD gate (fitted and bound here on 30 answers: a tiny version's validation
    split is too small) passes the images it was fitted on (all but the farthest of each of its three checks) and
    flags a planted outlier: noise, nothing like a dermoscopy image."""
    images, meta = rows(synthetic_df, 30)
    answers = predictor.predict_batch(images, meta)
    embeddings = np.stack([a.embedding for a in answers])
    stats = pd.DataFrame([a.image_stats for a in answers])
    gate = fit_ood_gate(embeddings, stats, embeddings, stats)
    card = registry.ModelCard.model_validate({**predictor.version.card.model_dump(), "ood": gate.as_dict()})
    gated = Predictor(registry.ModelVersion(card, predictor.version.path, predictor.version.classifier))
    assert sum("out of distribution" in a.decision_reason for a in gated.predict_batch(images, meta)) <= 3
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8))
    answer = gated.predict(noise, meta[0])
    assert answer.decision == UNCERTAIN
    assert "out of distribution: the image is unlike the training images (embedding" in answer.decision_reason
    assert "statistics distance" in answer.decision_reason
    assert "distance" not in predictor.predict(noise, meta[0]).decision_reason  # no gate, no such reason


def test_answers_carry_the_texture_distance_and_its_reason_and_old_gates_answer_none(predictor, synthetic_df,
                                                                                     tmp_path):
    """A gate with the texture check (fitted here on 30 images' own texture statistics, its arrays in
    a copy of the version folder) fills every answer's texture_distance and flags a flat grey image,
    whose activations have no texture at all; a gate of the earlier form (no texture check) answers
    with texture_distance None."""
    images, meta = rows(synthetic_df, 30)
    answers = predictor.predict_batch(images, meta)
    assert all(a.texture_distance is None for a in answers)  # this version has no gate
    decoded = [Image.open(io.BytesIO(image)).convert("RGB") for image in images]
    embeddings, texture = predictor.version.classifier.upright_features(decoded)
    stats = pd.DataFrame([a.image_stats for a in answers])
    gate = fit_ood_gate(embeddings, stats, embeddings, stats, train_texture=texture, validation_texture=texture)
    folder = tmp_path / "version"
    shutil.copytree(predictor.version.path, folder)
    gate.save_arrays(folder)
    card = registry.ModelCard.model_validate({**predictor.version.card.model_dump(), "ood": gate.as_dict()})
    gated = Predictor(registry.ModelVersion(card, folder, predictor.version.classifier))
    answered = gated.predict_batch(images, meta)
    np.testing.assert_allclose([a.texture_distance for a in answered], gate.texture_distance(texture),
                               rtol=1e-4)
    assert sum("texture unlike" in a.decision_reason for a in answered) <= 3
    grey = Image.new("RGB", (96, 72), (150, 110, 100))
    flat = gated.predict(grey, meta[0])
    assert flat.texture_distance > gate.texture_bound and flat.decision == UNCERTAIN
    assert "colour, grain and texture unlike the training images (texture distance" in flat.decision_reason
    old = registry.ModelCard.model_validate({**card.model_dump(), "ood": {**gate.as_dict(), "texture": None}})
    answer = Predictor(registry.ModelVersion(old, folder, predictor.version.classifier)).predict(grey, meta[0])
    assert answer.texture_distance is None and "texture" not in answer.decision_reason
