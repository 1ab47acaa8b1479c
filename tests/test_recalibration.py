"""The calibration step: chosen out of fold on validation (BCTS and the balanced rule under a planted
prior shift, temperature without one), and applied to a trained version in place, without training
it again, so that its weights serve what its card and reference answers say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.special

from skinlesion import metrics, recalibration, registry
from skinlesion.data.images import load_image
from skinlesion.errors import DataError
from skinlesion.register import register
from skinlesion.schema import CLASSES, METADATA_FIELDS, class_index
from skinlesion.train import TrainConfig, fit


def drawn(bias: np.ndarray, n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from ``softmax(logits / 1.3 + bias)``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, size=(n, 8))
    probs = scipy.special.softmax(logits / 1.3 + bias, axis=1)
    return logits, (probs.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)


def test_the_step_picks_bcts_and_the_balanced_rule_under_a_prior_shift():
    logits, y = drawn(np.array([-1.0, 2.0, -1.2, -1.5, 0.5, -0.8, -0.8, -1.5]))
    lesions = np.arange(len(y)) // 2
    rows = recalibration.validation_rows(logits, y, lesions)
    assert [r["calibration"] for r in rows] == ["temperature", "bcts", "vector"]
    assert recalibration.choose(rows) == ("bcts", "balanced")
    by = {r["calibration"]: r for r in rows}
    assert by["bcts"]["val_oof_ece_15"] < by["temperature"]["val_oof_ece_15"]
    assert by["bcts"]["val_oof_balanced_accuracy_balanced"] > \
        by["bcts"]["val_oof_balanced_accuracy_argmax"]


def test_the_step_keeps_temperature_when_there_is_no_prior_to_correct():
    logits, y = drawn(np.zeros(8), seed=1)
    rows = recalibration.validation_rows(logits, y, np.arange(len(y)))
    assert recalibration.choose(rows)[0] == "temperature"


def every_class_split(df: pd.DataFrame) -> pd.Series:
    """Per class, its first lesion to val, its second to test, the others to train: a validation
    split with every class (a per-class bias needs each)."""
    split = pd.Series("train", index=df.index)
    for _, rows in df.groupby("diagnosis"):
        lesions = list(dict.fromkeys(rows["lesion_id"]))
        split[df["lesion_id"] == lesions[0]] = "val"
        split[df["lesion_id"] == lesions[1]] = "test"
    return split


@pytest.fixture(scope="module")
def version(synthetic_df, tmp_path_factory):
    """A small neural version (image head + metadata, class-balanced loss, temperature only)."""
    split = every_class_split(synthetic_df)
    config = TrainConfig(mode="head", epochs=20, lr=3e-3, patience=20, width=64, height=48,
                         train_views=("identity",), tta=("identity",), class_weight="balanced")
    cache = tmp_path_factory.mktemp("cache")
    result = fit(synthetic_df, split, config, cache, progress=False)
    models = tmp_path_factory.mktemp("models")
    test = synthetic_df[split == "test"]
    card = register(models, result.classifier, synthetic_df, split, threshold=result.threshold,
                    val_probs=result.val_probs, test_probs=result.predict_proba(test),
                    data_name="synthetic", target_sensitivity=0.9, version_id="v1",
                    progress=False)
    (models / card.id / "results.json").write_text("{}\n")
    return models, cache, split


def test_recalibrating_a_version_rewrites_it_consistently(version, synthetic_df, monkeypatch):
    models, cache, split = version
    out = recalibration.recalibrate_version(models, "v1", synthetic_df, cache, method="bcts",
                                            rule="balanced", n_boot=20, progress=False)
    card = registry.read_card(models / "v1")
    assert card.model_extra["calibration"]["method"] == "bcts"
    assert card.model_extra["diagnosis_rule"]["rule"] == "balanced"
    assert card.threshold == pytest.approx(out.step.threshold)
    assert 0 <= out.serving_diff <= recalibration.SERVING_ATOL
    assert (models / "v1" / "results.json").is_file()  # carried over
    assert not list(models.glob(".v1-old-*"))
    # the saved weights serve exactly what the reference answers say (p columns, diagnosis)
    loaded = registry.load_version("v1", models, device="cpu")
    reference = registry.read_reference(models, "v1")
    val = synthetic_df[split == "val"]
    served = loaded.classifier.predict_proba([load_image(p) for p in val["path"]],
                                             val.loc[:, list(METADATA_FIELDS)].reset_index(drop=True))
    np.testing.assert_allclose(reference[[f"p_{c}" for c in CLASSES]].to_numpy(), served,
                               atol=1e-4)
    y = np.array([class_index(d) for d in val["diagnosis"]])
    # calibrated to the validation prevalence: mean probabilities match the class frequencies
    np.testing.assert_allclose(served.mean(0), np.bincount(y, minlength=8) / len(y), atol=0.02)
    rule = out.step.diagnosis
    assert list(reference["predicted_class"]) == [CLASSES[i] for i in rule.index(served)]
    assert card.metrics["val"]["balanced_accuracy_shown"] == pytest.approx(
        metrics.balanced_accuracy(y, rule.scores(served)))
    assert set(card.model_extra["test_intervals"]["per_lesion"]) >= {"ece_15",
                                                                    "balanced_accuracy_shown"}
    # recalibrating again changes (almost) nothing: the step is idempotent
    again = recalibration.recalibrate_version(models, "v1", synthetic_df, cache, method="bcts",
                                              rule="balanced", n_boot=20, progress=False)
    assert again.step.calibrator.temperature == pytest.approx(out.step.calibrator.temperature,
                                                              rel=1e-3)


def test_recalibration_refuses_data_unlike_the_manifest(version, synthetic_df):
    models, cache, _ = version
    relabelled = synthetic_df.copy()
    val_image = registry.read_manifest(models, "v1").query("split == 'val'")["image"].iloc[0]
    relabelled.loc[relabelled["image"] == val_image, "diagnosis"] = "DF" if \
        relabelled.loc[relabelled["image"] == val_image, "diagnosis"].iloc[0] != "DF" else "NV"
    with pytest.raises(DataError, match="differ from the version's manifest"):
        recalibration.recalibrate_version(models, "v1", relabelled, cache, progress=False)
    with pytest.raises(DataError, match="not in the data"):
        recalibration.recalibrate_version(models, "v1", synthetic_df.iloc[:10], cache,
                                          progress=False)


def test_the_cli_recalibrates_a_version_and_rejects_unknown_options(version, synthetic_dir,
                                                                    monkeypatch):
    from typer.testing import CliRunner

    from skinlesion.cli import app

    models, cache, _ = version
    monkeypatch.setenv("SKINLESION_CACHE_DIR", str(cache))
    bad = CliRunner().invoke(app, ["models", "recalibrate", "v1", "--data", str(synthetic_dir),
                                   "--method", "platt", "--models-dir", str(models)])
    assert bad.exit_code == 2 and "temperature, bcts, vector" in bad.output
    ok = CliRunner().invoke(app, ["models", "recalibrate", "v1", "--data", str(synthetic_dir),
                                  "--method", "temperature", "--rule", "argmax",
                                  "--models-dir", str(models)])
    assert ok.exit_code == 0, ok.output
    assert "temperature calibration" in ok.stdout and "shown diagnosis argmax" in ok.stdout
    assert registry.read_card(models / "v1").model_extra["calibration"]["method"] == "temperature"


def test_the_notes_say_the_calibration_step_ran():
    step = recalibration.CalibrationStep(
        calibrator=recalibration.Calibrator("bcts", np.ones(8), np.zeros(8)),
        diagnosis=recalibration.DiagnosisRule(), threshold=0.1, rows=[])
    note = recalibration.recalibrated_note("Trained by the recipe.", step)
    assert note.startswith("Trained by the recipe. Recalibrated") and "bcts calibration" in note
