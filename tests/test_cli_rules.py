"""``skinlesion train --mode rules``: a deployment builds the rule-based fallback from its own data,
registered as a version whose id is printed last, ready for ``models fallback on --version``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.registry import read_card
from skinlesion.settings import Settings
from skinlesion.store import Store

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    return Settings()


def test_train_rules_registers_a_calibrated_fallback_that_can_be_engaged(home, synthetic_dir):
    result = runner.invoke(app, ["train", "--data", str(synthetic_dir), "--mode", "rules"])
    assert result.exit_code == 0, result.output
    version = result.stdout.strip().splitlines()[-1]
    card = read_card(home.models_dir / version)
    assert card.kind == "fallback" and card.training["mode"] == "rules"
    assert card.target_sensitivity == 0.95 and 0 < card.threshold < 1
    assert {"val", "test"} <= set(card.metrics) and card.metrics["val"]["recall"] >= 0.95
    assert card.image_stats_reference  # the Predictor's out-of-distribution checks have a baseline
    assert card.training["n_train"] + card.training["n_val"] < 64  # the test split is held out

    engaged = runner.invoke(app, ["models", "fallback", "on", "--version", version, "--reason",
                                  "main model red"])
    assert engaged.exit_code == 0, engaged.output
    route = Store(home.db_path).get_route()
    assert route.fallback_engaged and route.fallback_version == version


def test_train_rules_refuses_the_options_of_the_neural_modes(home, synthetic_dir):
    result = runner.invoke(app, ["train", "--data", str(synthetic_dir), "--mode", "rules",
                                 "--epochs", "3", "--backbone", "efficientnet_lite2"])
    assert result.exit_code == 2
    assert "--mode rules" in result.output and "--backbone, --epochs" in result.output
    assert not home.models_dir.exists()
