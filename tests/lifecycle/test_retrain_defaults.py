"""Retraining with default settings (issue 16, item 1): no production image is kept, so a retrain
trains on the version's own data, says so in its log, and registers a candidate."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion import registry
from skinlesion.cli import app
from skinlesion.lifecycle import jobs
from skinlesion.lifecycle.policy import RetrainingPolicy
from skinlesion.lifecycle.data import production_rows
from skinlesion.lifecycle.retrain import retrain
from skinlesion.lifecycle.spec import RetrainSpec
from skinlesion.monitoring.policy import Policy
from skinlesion.monitoring.runner import run_once
from skinlesion.store import LabelRecord, ServingRoute, Store
from tests.lifecycle.seeded_home import lifecycle, lifecycle_template  # noqa: F401 (fixtures)


class Lines:
    def __init__(self):
        self.lines: list[str] = []

    def progress(self, fraction: float, message: str) -> None:
        """Progress is not under test."""

    def log(self, line: str) -> None:
        self.lines.append(line)


def test_no_kept_images_give_no_production_rows():
    cases = pd.DataFrame({c: pd.Series(dtype=object) for c in (
        "image_sha256", "image_path", "request_id", "ts", "age_approx", "sex",
        "anatom_site_general", "diagnosis", "label_source", "labelled_by", "label_ts")})
    rows = production_rows(cases)
    assert rows.empty and "image_sha256" in rows.columns


def test_a_retrain_without_kept_images_trains_on_the_versions_data_and_says_so(lifecycle, tmp_path):
    home = lifecycle
    store = Store(tmp_path / "fresh.duckdb")  # default settings: answers logged, no image kept
    store.set_route(ServingRoute(active_version="base"), actor="ana", role="ml_lead", reason="deploy")
    reporter = Lines()
    result = retrain(store, RetrainSpec(base_version="base", models_dir=str(home["models_dir"]),
                                        cache_dir=str(home["cache_dir"]), epochs=2, device="cpu"),
                     reporter)
    assert result.data["production_train"] == 0 and result.data["holdout"] == 0
    assert result.data["original"] == len(registry.read_manifest(home["models_dir"], "base"))
    assert any("own data only" in line for line in reporter.lines)
    card = registry.read_card(home["models_dir"] / result.version)
    assert card.parent == "base" and card.data.name  # the candidate names its data


@pytest.mark.slow
def test_cli_retrain_wait_with_default_settings_succeeds(lifecycle, tmp_path, monkeypatch):
    """The issue's steps from the command line: a fresh store (no image kept), the base active,
    `skinlesion retrain --reason x --wait` ends with a candidate (it failed with 'image_sha256')."""
    home = lifecycle
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    monkeypatch.setenv("SKINLESION_MODELS_DIR", str(home["models_dir"]))
    monkeypatch.setenv("SKINLESION_CACHE_DIR", str(home["cache_dir"]))
    store = Store(tmp_path / "data" / "skinlesion.duckdb")
    store.set_route(ServingRoute(active_version="base"), actor="ana", role="ml_lead", reason="deploy")
    result = CliRunner().invoke(app, ["retrain", "--reason", "x", "--wait", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    candidate = result.output.strip().splitlines()[-1]
    assert registry.read_card(home["models_dir"] / candidate).parent == "base"
    job = store.list_jobs()[0]
    log = "\n".join(store.job_log(job.id)["line"])
    assert "own data only" in log


@pytest.mark.slow
def test_a_monitor_trigger_with_default_settings_retrains(lifecycle, tmp_path):
    """The monitor's launch (an active-learning trigger on review labels whose images were not
    kept, the default) runs a job that ends with a candidate."""
    home = lifecycle
    store = Store(tmp_path / "fresh.duckdb")
    store.set_route(ServingRoute(active_version="base"), actor="ana", role="ml_lead", reason="deploy")
    store.add_labels([LabelRecord(image_sha256=f"{1:064x}", diagnosis="MEL", source="review",
                                  labelled_by="derm")])
    policy = Policy(retraining=RetrainingPolicy(schedule="never", review_labels=1, epochs=2))
    result = run_once(store, home["models_dir"], policy, retrain_cache_dir=home["cache_dir"])
    [fired] = result.retraining
    assert fired.job_id is not None, fired.outcome
    job = jobs.wait(store, fired.job_id, timeout_s=600)
    assert job.status == "succeeded", job.error
    assert registry.read_card(home["models_dir"] / job.result["version"]).parent == "base"
