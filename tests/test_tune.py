"""Hyperparameter search: a planted bad trial is pruned, trials are recorded, the search is seeded,
and the best config it writes is accepted by `skinlesion train --config`."""

import json

import pytest
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.data.splits import split_dataset
from skinlesion.registry import load_version
from skinlesion.train import TrainConfig
from skinlesion.tune import SearchSpace, tune

TINY = TrainConfig(mode="head", epochs=8, patience=8, lr=3e-3, batch_size=8, width=64, height=48,
                   train_views=("identity",), tta=("identity",))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tune-cache")


def test_a_bad_trial_is_pruned_and_every_trial_recorded(synthetic_df, cache_dir):
    split = split_dataset(synthetic_df, seed=0)
    space = SearchSpace(lr=(1e-7, 1e-2))
    good = space.params_of(TINY)
    bad = good | {"lr": 1e-7}  # learns nothing: stays below the good trial's validation curve
    kw = dict(trials=3, seed=0, space=space, startup_trials=1, warmup_epochs=3, progress=False)
    result = tune(synthetic_df, split, TINY, cache_dir, first=[good, bad], **kw)

    assert [t.number for t in result.trials] == [0, 1, 2]
    assert result.trials[0].state == "COMPLETE" and result.trials[0].epochs == TINY.epochs
    assert result.trials[1].state == "PRUNED" and result.trials[1].epochs < TINY.epochs
    assert result.n_pruned >= 1
    assert result.trials[1].params["lr"] == pytest.approx(1e-7)
    assert result.trials[2].params["head_hidden"] in SearchSpace().head_hidden  # head width searched
    assert result.base_value == result.trials[0].value
    completed = [t.value for t in result.trials if t.state == "COMPLETE"]
    assert result.best_value == max(completed) and result.best_value > 0.3  # chance is 1/8
    assert result.best_config.epochs == TINY.epochs and result.best_config.width == 64
    assert result.best_config.lr == result.trials[result.best_trial].params["lr"]

    again = tune(synthetic_df, split, TINY, cache_dir, first=[good, bad], **kw)
    assert [t.params for t in again.trials] == [t.params for t in result.trials]  # seeded


def test_search_space_and_arguments_are_checked():
    with pytest.raises(ValueError, match="lr range"):
        SearchSpace(lr=(1e-2, 1e-4))
    with pytest.raises(ValueError, match="dropout"):
        SearchSpace(dropout=(0.0, 1.0))
    assert SearchSpace().params_of(TINY.model_copy(update={"lr": 5.0})) is None
    with pytest.raises(ValueError, match="head_hidden"):
        SearchSpace(head_hidden=(0, -8))
    assert SearchSpace().params_of(TINY)["head_hidden"] == 0  # the single linear head is searched
    assert SearchSpace(head_hidden=(64,)).params_of(TINY) is None
    with pytest.raises(ValueError, match="metric must be one of"):
        tune(None, None, TINY, ".", metric="accuracy")


def test_cli_tune_writes_a_best_config_that_train_accepts(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLESION_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "base.json"
    base.write_text(TINY.model_copy(update={"epochs": 3}).model_dump_json())
    best = tmp_path / "tuned" / "best.json"
    runner = CliRunner()
    result = runner.invoke(app, ["tune", "--data", str(synthetic_dir), "--config", str(base),
                                 "--trials", "2", "--out", str(best)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(best)
    assert "trial 1:" in result.stderr and "best val_balanced_accuracy" in result.stderr
    tuned = TrainConfig.model_validate_json(best.read_text())
    assert tuned.epochs == 3 and tuned.width == 64  # the base's fields carried over
    trials = json.loads(best.with_suffix(".trials.json").read_text())
    assert len(trials["trials"]) == 2 and trials["trials"][0]["params"]["lr"] == TINY.lr

    models = tmp_path / "models"
    trained = runner.invoke(app, ["train", "--data", str(synthetic_dir), "--config", str(best),
                                  "--epochs", "2", "--models-dir", str(models)])
    assert trained.exit_code == 0, trained.output
    config = load_version(trained.stdout.strip().splitlines()[-1], models).card.training["config"]
    assert config["lr"] == tuned.lr and config["meta_hidden"] == tuned.meta_hidden
    assert config["head_hidden"] == tuned.head_hidden
    assert config["mode"] == "head" and config["epochs"] == 2  # typed option overrides the file
