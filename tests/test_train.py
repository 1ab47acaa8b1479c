"""Training: head and fine-tune modes on the seeded synthetic data (planted signal), cache reuse,
reproducibility, input checks."""

import numpy as np
import pandas as pd
import pytest

from skinlesion.data.splits import split_dataset
from skinlesion.errors import DataError
from skinlesion.schema import CLASSES
from skinlesion.train import (TrainConfig, calibration_choice, fit, raw_logits, recalibrate,
                              training_summary)

SMALL = {"width": 64, "height": 48, "train_views": ("identity", "rot180"), "tta": ("identity",)}


def head_config(**kw) -> TrainConfig:
    return TrainConfig(**({"mode": "head", "epochs": 20, "lr": 3e-3, "patience": 20} | SMALL | kw))


@pytest.fixture(scope="module")
def split(synthetic_df):
    return split_dataset(synthetic_df, seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_head_mode_learns_the_planted_signal(synthetic_df, split, cache_dir):
    result = fit(synthetic_df, split, head_config(), cache_dir, progress=False)
    best = result.history[result.best_epoch - 1]
    assert best["val_balanced_accuracy"] > 0.3  # chance is 1/8
    assert best["val_auroc"] > 0.8
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "val_balanced_accuracy",
                                      "val_auroc"}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.temperature > 0 and 0 <= result.threshold <= 1
    assert result.val_probs.shape == ((split == "val").sum(), 8)
    np.testing.assert_allclose(result.val_probs.sum(axis=1), 1, atol=1e-6)
    summary = training_summary(result)
    assert summary["config"]["mode"] == "head"
    assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"]


def test_second_run_reuses_the_cache_and_is_reproducible(synthetic_df, split, cache_dir):
    config = head_config(epochs=3)
    first = fit(synthetic_df, split, config, cache_dir, progress=False)
    second = fit(synthetic_df, split, config, cache_dir, progress=False)
    assert second.features.cache.computed_ == 0  # nothing extracted again
    assert first.history == second.history
    np.testing.assert_array_equal(first.val_probs, second.val_probs)
    other = fit(synthetic_df, split, config.model_copy(update={"seed": 1}), cache_dir,
                progress=False)
    assert other.history != first.history


@pytest.mark.filterwarnings("ignore:fitted temperature")  # 2 short epochs: barely trained
def test_finetune_on_cached_trunk_trains_the_last_blocks(synthetic_df, split, cache_dir):
    config = TrainConfig(**({"mode": "finetune", "epochs": 2} | SMALL))
    result = fit(synthetic_df, split, config, cache_dir, progress=False)
    net = result.classifier.net
    cut = result.classifier.config["cut"]
    assert cut == net.backbone.default_cut
    assert not any(p.requires_grad for p in net.backbone.blocks[:cut].parameters())
    assert all(p.requires_grad for p in net.backbone.blocks[cut:].parameters())
    assert len(result.history) == 2


@pytest.mark.filterwarnings("ignore:fitted temperature")
def test_full_finetune_from_images(synthetic_df, split, tmp_path):
    config = TrainConfig(mode="finetune", cut=0, epochs=1, width=32, height=24, tta=("identity",))
    result = fit(synthetic_df, split, config, tmp_path, progress=False)
    assert result.classifier.config["cut"] == 0
    assert all(p.requires_grad for p in result.classifier.net.parameters())


def test_metadata_only_variant_needs_no_images(synthetic_df, split, tmp_path):
    result = fit(synthetic_df, split, head_config(inputs="metadata", epochs=3), tmp_path,
                 progress=False)
    assert result.classifier.net.backbone is None and result.features is None


def test_bad_inputs_are_rejected(synthetic_df, split, tmp_path):
    unlabelled = synthetic_df.copy()
    unlabelled.loc[split[split == "train"].index[0], "diagnosis"] = np.nan
    with pytest.raises(DataError, match="no diagnosis"):
        fit(unlabelled, split, head_config(), tmp_path, progress=False)
    with pytest.raises(DataError, match="train and val"):
        fit(synthetic_df, pd.Series("train", index=synthetic_df.index), head_config(), tmp_path,
            progress=False)
    with pytest.raises(ValueError, match="inputs"):
        TrainConfig(inputs="text")
    with pytest.raises(ValueError, match="cut"):
        fit(synthetic_df, split, TrainConfig(mode="finetune", cut=99, **SMALL), tmp_path,
            progress=False)


def test_cli_train_registers_a_version_and_prints_its_id_last(synthetic_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from skinlesion.cli import app
    from skinlesion.registry import load_version

    monkeypatch.setenv("SKINLESION_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["train", "--data", str(synthetic_dir), "--mode", "head",
                                      "--inputs", "metadata", "--epochs", "3",
                                      "--models-dir", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    version_id = result.stdout.strip().splitlines()[-1]
    loaded = load_version(version_id, tmp_path / "models")
    assert loaded.card.training["config"]["inputs"] == "metadata"
    bad = CliRunner().invoke(app, ["train", "--data", str(synthetic_dir), "--inputs", "text",
                                   "--models-dir", str(tmp_path / "models")])
    assert bad.exit_code == 2 and "inputs must be one of" in bad.output


def test_prior_calibration_undoes_the_class_weights_and_recalibrate_matches_a_fresh_fit(
        synthetic_df, split, cache_dir):
    weighted = fit(synthetic_df, split, head_config(epochs=8, class_weight="balanced"), cache_dir,
                   progress=False)
    val = synthetic_df[split == "val"]
    assert weighted.calibrator.method == "temperature" and np.all(weighted.calibrator.bias == 0)
    # The prior offset is -log(weights): the rarest class (largest weight) loses the most.
    choice = calibration_choice(weighted, "prior+temperature")
    assert np.argmin(choice.calibrator.bias) == np.argmax(weighted.class_weights)
    fresh = fit(synthetic_df, split, head_config(epochs=8, class_weight="balanced",
                                                 calibration="prior+temperature"), cache_dir,
                progress=False)
    # The same network under prior calibration, without training again, answers as the fresh fit.
    redone = recalibrate(weighted, "prior+temperature")
    assert redone.config.calibration == "prior+temperature"
    assert redone.temperature == pytest.approx(fresh.temperature, rel=1e-6)
    np.testing.assert_allclose(redone.predict_proba(val), fresh.predict_proba(val), atol=1e-5)
    np.testing.assert_allclose(choice.probs(raw_logits(redone, val)), redone.predict_proba(val),
                               atol=1e-5)
    # Undoing the weights moves probability mass back to the most common class.
    common = CLASSES.index(synthetic_df["diagnosis"].value_counts().index[0])
    assert redone.val_probs[:, common].mean() > weighted.val_probs[:, common].mean()


@pytest.mark.parametrize("mode", ["bcts", "vector"])
def test_a_per_class_calibrator_folds_into_the_network_exactly(synthetic_df, split, cache_dir, mode):
    result = fit(synthetic_df, split, head_config(epochs=8, class_weight="balanced"), cache_dir,
                 progress=False)
    val = synthetic_df[split == "val"]
    before = raw_logits(result, val)
    redone = recalibrate(result, mode)
    assert redone.calibrator.method == mode and redone.config.calibration == mode
    # the raw logits behind the folded network are unchanged, and the served answers are the
    # calibrator's, through the classifier's own path (network + temperature)
    np.testing.assert_allclose(raw_logits(redone, val), before, atol=1e-4)
    np.testing.assert_allclose(redone.predict_proba(val), redone.calibrator.probs(before), atol=1e-5)
    np.testing.assert_allclose(redone.val_probs.mean(0), np.bincount(
        redone.val_labels, minlength=8) / len(redone.val_labels), atol=0.02)
