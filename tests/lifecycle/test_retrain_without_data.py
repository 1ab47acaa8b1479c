"""Retraining a version whose training data is not on this machine (issue 16, item 1: the embedded
demo serves the shipped reference, whose training images are not shipped): the retrain trains on
the labelled cases whose images were kept, says so before launch and in its log, keeps lesions on
one side of the hold-out, compares the two models only where that is fair, and refuses clearly
when there is nothing to train on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion import registry
from skinlesion.cli import app
from skinlesion.data.images import load_image
from skinlesion.demo import device_shift
from skinlesion.errors import DataError
from skinlesion.lifecycle import jobs
from skinlesion.lifecycle.data import (MIN_PRODUCTION_CASES, PRODUCTION_ONLY, retrain_plan,
                                       split_production, training_data)
from skinlesion.lifecycle.duplicates import check, groups, signature, signatures
from skinlesion.lifecycle.gate import HOLDOUT, ORIGINAL_TEST
from skinlesion.lifecycle.operations import OperationError
from skinlesion.lifecycle.policy import RetrainingPolicy
from skinlesion.lifecycle.retrain import retrain
from skinlesion.lifecycle.spec import RetrainSpec
from skinlesion.monitoring.policy import Policy
from skinlesion.monitoring.runner import run_once
from skinlesion.store import LabelRecord, ServingRoute, Store
from tests.lifecycle.seeded_home import (  # noqa: F401 (fixtures)
    demo_like, demo_like_template, log_production)


class Lines:
    def __init__(self):
        self.lines: list[str] = []

    def progress(self, fraction: float, message: str) -> None:
        self.lines.append(f"{fraction:.0%} {message}")

    def log(self, line: str) -> None:
        self.lines.append(line)


def _spec(home: dict, **fields) -> RetrainSpec:
    return RetrainSpec(base_version="base", models_dir=str(home["models_dir"]),
                       cache_dir=str(home["cache_dir"]), epochs=3, device="cpu", **fields)


def test_near_duplicates_join_their_original_and_nothing_else(synthetic_df):
    """A device-shifted copy (darker, bluish, blurred) is grouped with its original; different
    lesions are not; a known lesion id joins images that look different."""
    originals = synthetic_df["path"].iloc[:12].tolist()
    sigs = signatures(originals)
    shifted = np.stack([signature(device_shift(load_image(p), 1.0)) for p in originals[:4]])
    found = groups(np.vstack([sigs, shifted]))
    assert list(found[12:]) == list(found[:4])  # each copy with its original
    assert len(set(found[:12])) == 12  # twelve different images, twelve groups
    known = [None] * 16
    known[5] = known[9] = "lesion-a"
    joined = groups(np.vstack([sigs, shifted]), known)
    assert joined[5] == joined[9] and len(set(joined[:12])) == 11


def test_the_hold_out_keeps_each_lesion_on_one_side():
    ts = pd.date_range("2026-11-01", periods=8, freq="h", tz="UTC")
    rows = pd.DataFrame({"image": [f"prod-{i}" for i in range(8)], "image_sha256": list("abcdefgh"),
                         "lesion_id": ["L1", "L2", "L3", "L4", "L2", "L5", "L6", "L1"], "ts": ts})
    # L2's base-trained image (b) keeps its newer copy in training; of the 6 other rows the
    # newest quarter (2) is lesion L1, whose oldest image goes with its newest
    train, holdout = split_production(rows, trained={"b"}, holdout_share=0.25)
    assert set(holdout["image"]) == {"prod-0", "prod-7"}
    # a larger share reaches past a lesion boundary: whole lesions, at least the share
    assert set(split_production(rows, trained={"b"}, holdout_share=0.4)[1]["image"]) == {
        "prod-0", "prod-7", "prod-6"}
    assert not set(train["lesion_id"]) & set(holdout["lesion_id"])
    assert {"prod-1", "prod-4"} <= set(train["image"])


def test_the_plan_says_what_a_retrain_will_use_before_launch(demo_like):
    home = demo_like
    plan = retrain_plan(home["store"], home["base"], home["models_dir"])
    assert plan.data_dir is None and plan.refusal is None
    assert (plan.cases, plan.base_test) == (home["n_cases"], home["n_test"])
    text = plan.summary()
    assert "not on this machine" in text and f"{home['n_cases']} labelled cases" in text
    assert f"{home['n_test']} of them are images of base's own test split" in text


def test_with_too_few_kept_cases_the_launch_refuses_and_says_how_to_fix_it(demo_like, tmp_path):
    home = demo_like
    store = Store(tmp_path / "few.duckdb")
    store.set_route(ServingRoute(active_version="base"), actor="ana", role="ml_lead", reason="x")
    log_production(store, tmp_path / "few", n=MIN_PRODUCTION_CASES - 1)
    plan = retrain_plan(store, home["base"], home["models_dir"])
    assert plan.refusal and "Nothing to train on" in plan.refusal and "--data" in plan.refusal
    with pytest.raises(OperationError, match="Nothing to train on"):
        jobs.launch_retrain(store, _spec(home), actor="ana", role="ml_lead", reason="x")
    assert store.list_jobs() == []
    with pytest.raises(DataError, match="Nothing to train on"):
        training_data(store, home["base"], home["models_dir"])


def test_a_monitor_trigger_with_nothing_to_train_on_is_refused_saying_why(demo_like, tmp_path):
    home = demo_like
    store = Store(tmp_path / "none.duckdb")  # no image kept (the default)
    store.set_route(ServingRoute(active_version="base"), actor="ana", role="ml_lead", reason="x")
    store.add_labels([LabelRecord(image_sha256=f"{1:064x}", diagnosis="MEL", source="review",
                                  labelled_by="derm")])
    policy = Policy(retraining=RetrainingPolicy(schedule="never", review_labels=1, epochs=2))
    [fired] = run_once(store, home["models_dir"], policy,
                       retrain_cache_dir=home["cache_dir"]).retraining
    assert fired.job_id is None and "Nothing to train on" in fired.outcome
    assert store.list_jobs() == []


def test_a_retrain_without_the_original_data_trains_on_the_kept_cases(demo_like):
    home = demo_like
    reporter = Lines()
    result = retrain(home["store"], _spec(home), reporter)
    log = "\n".join(reporter.lines)
    assert "is not on this machine" in log and "alone" in log and "epochs run, epoch" in log
    assert f"{home['n_test']} of these cases are images of base's own test split" in log
    data = result.data
    assert data["original"] == 0 and data["base_test"] == home["n_test"]
    assert data["production_train"] + data["holdout"] == home["n_cases"]
    assert data["holdout"] >= np.ceil(0.3 * home["n_cases"])

    card = registry.read_card(home["models_dir"] / result.version)
    assert card.parent == "base" and "alone" in card.data.name and "hold-out" in card.notes
    assert card.model_extra["retraining"]["data"] == PRODUCTION_ONLY
    # the candidate's test split is the recent hold-out; both models are compared there only
    manifest = registry.read_manifest(home["models_dir"], result.version)
    held = manifest[manifest["split"] == "test"]
    assert len(held) == data["holdout"] and held["image"].str.startswith("prod-").all()
    holdout, original = (next(s for s in result.gate.splits if s.split == name)
                         for name in (HOLDOUT, ORIGINAL_TEST))
    assert holdout.n == data["holdout"] and holdout.candidate and holdout.active
    assert original.n == 0 and "not on this machine" in original.note
    # a device-shifted copy and its original sit on the same side of the hold-out
    side = dict(zip(manifest["sha256"], manifest["split"] == "test", strict=True))
    for first, copy in home["copies"]:
        assert side[first] == side[copy]
    assert any(side[copy] for _, copy in home["copies"])  # the incident is the newest: held out


def test_cli_retrain_wait_with_default_settings_over_a_demo_like_home(demo_like, monkeypatch):
    """`skinlesion retrain --reason x --wait` as the demo's lead would type it, with the default
    policy: the job trains on the kept cases, says so in its log, and ends with a candidate."""
    home = demo_like
    monkeypatch.setenv("SKINLESION_HOME", str(home["root"]))
    result = CliRunner().invoke(app, ["retrain", "--reason", "x", "--wait"])
    assert result.exit_code == 0, result.output
    candidate = result.output.strip().splitlines()[-1]
    assert registry.read_card(home["models_dir"] / candidate).parent == "base"
    [job] = home["store"].list_jobs()
    assert job.status == "succeeded" and job.result["version"] == candidate
    log = "\n".join(home["store"].job_log(job.id)["line"])
    assert "is not on this machine" in log and "epoch 1/" in log


def test_check_reports_how_grouping_does_on_shifted_copies(synthetic_df):
    rows = synthetic_df.iloc[:10]
    report = check(rows["path"].tolist(), rows["lesion_id"].tolist(), device_shift)
    assert report["images"] == 10 and report["copies_with_original"] == 1.0
    assert report["min_copy_correlation"] > 0.98 and report["largest_group"] >= 2
    # a "shift" that replaces the image by another lesion's is caught
    other = load_image(synthetic_df["path"].iloc[-1])
    assert check(rows["path"].tolist(), rows["lesion_id"].tolist(),
                 lambda img, severity: other)["copies_with_original"] < 0.5


@pytest.mark.slow
def test_a_monitor_trigger_in_a_demo_like_home_retrains_on_the_kept_cases(demo_like):
    """The monitor's launch (an active-learning trigger) over the demo's kind of home runs a job
    that trains on the kept cases and ends with a candidate."""
    home, store = demo_like, demo_like["store"]
    store.add_labels([LabelRecord(image_sha256=f"{1:064x}", diagnosis="MEL", source="review",
                                  labelled_by="derm")])
    policy = Policy(retraining=RetrainingPolicy(schedule="never", review_labels=1, epochs=2))
    [fired] = run_once(store, home["models_dir"], policy,
                       retrain_cache_dir=home["cache_dir"]).retraining
    assert fired.job_id is not None, fired.outcome
    job = jobs.wait(store, fired.job_id, timeout_s=600)
    assert job.status == "succeeded", job.error
    assert job.result["data"]["original"] == 0
    assert "is not on this machine" in "\n".join(store.job_log(job.id)["line"])
