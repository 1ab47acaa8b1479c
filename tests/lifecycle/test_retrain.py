"""Retraining: the training data of a retrain, the candidate's data identity, the gate, and what a
person then does with the candidate (promotion, rollback, archiving)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion import registry
from skinlesion.errors import DataError, PermissionDeniedError
from skinlesion.lifecycle import operations
from skinlesion.lifecycle.data import training_data
from skinlesion.lifecycle.gate import HOLDOUT, ORIGINAL_TEST, compare_split, gate_table, paired_bootstrap
from skinlesion.lifecycle.retrain import retrain
from skinlesion.lifecycle.spec import QuietReporter, RetrainSpec
from skinlesion.schema import CLASSES
from tests.lifecycle.seeded_home import (  # noqa: F401 (fixtures)
    lifecycle, lifecycle_template, log_copies, log_production)

LEAD = dict(actor="ana", role="ml_lead")


def _spec(home: dict, **fields) -> RetrainSpec:
    return RetrainSpec(base_version="base", models_dir=str(home["models_dir"]),
                       cache_dir=str(home["cache_dir"]), epochs=3, device="cpu", **fields)


def test_a_retrain_trains_on_the_original_data_plus_labelled_production_cases(lifecycle):
    home = lifecycle
    models_dir, store, production = home["models_dir"], home["store"], home["production"]
    result = retrain(store, _spec(home, holdout_share=0.25), QuietReporter())

    card = registry.read_card(models_dir / result.version)
    assert card.parent == "base" and card.kind == "neural"
    assert store.get_route().active_version == "base"  # a candidate, never promoted by itself
    # the data identity: the diff against the base names exactly the production images trained on
    base_manifest = registry.read_manifest(models_dir, "base")
    manifest = registry.read_manifest(models_dir, result.version)
    diff = registry.diff_manifests(base_manifest, manifest)
    trained, held_out = production[:18], production[18:]  # the newest quarter is held out
    assert diff == {"added": sorted(trained), "removed": [], "relabelled": [], "resplit": []}
    assert result.added_images == sorted(trained)
    assert card.data.fingerprint == result.fingerprint != home["base"].data.fingerprint
    assert not set(held_out) & set(manifest["image"])
    assert set(manifest.loc[manifest["image"].isin(trained), "split"]) == {"train"}
    assert result.data == {"original": len(base_manifest), "production_train": 18,
                           "review_labels": 6, "holdout": 6, "base_test": 0,
                           "test_copies": 0}
    # the gate, in the card and the result: both splits, each difference inside its interval
    gate = card.model_extra["gate"]
    assert gate == result.gate.model_dump(mode="json")
    assert [s["split"] for s in gate["splits"]] == [HOLDOUT, ORIGINAL_TEST]
    assert gate["splits"][0]["n"] == 6
    assert gate["splits"][1]["n"] == home["base"].data.split_counts["test"]
    assert gate["resamples"] == 1000 and gate["candidate"] == result.version
    table = gate_table(gate)
    with_ci = table.dropna(subset=["difference"])
    assert set(with_ci["metric"]) <= {"auroc", "recall"} and len(with_ci) >= 2
    assert (with_ci["ci_low"] <= with_ci["difference"] + 1e-12).all()
    assert (with_ci["difference"] <= with_ci["ci_high"] + 1e-12).all()

    # a person promotes it: the role is checked and the promotion audited; rollback undoes it
    with pytest.raises(PermissionDeniedError):
        operations.activate(store, models_dir, result.version, reason="gate passed",
                            actor="cleo", role="clinician")
    assert store.get_route().active_version == "base"
    operations.activate(store, models_dir, result.version, reason="gate passed", **LEAD)
    audit = store.query_audit(limit=1).iloc[0]
    assert (audit["actor"], audit["target"], audit["details"]["operation"]) == (
        "ana", result.version, "activate")
    operations.rollback(store, models_dir, reason="second thoughts", **LEAD)
    assert store.get_route().active_version == "base"

    # the next retrain starts from the candidate: the production cases it trained on stay in
    # training; only cases it never saw (its hold-out, newly labelled ones) can be held out
    newer = log_production(store, home["root"] / "production-2", n=8, seed=2,
                           model_version=result.version)
    data = training_data(store, card, models_dir, holdout_share=0.5)
    assert set(data.holdout["image"]) <= set(newer) | set(held_out)
    assert len(data.holdout) == 7  # half of the 6 + 8 unseen cases, rounded up
    assert set(trained) <= set(data.df.loc[data.split == "train", "image"])


def test_the_gate_compares_the_active_version_at_its_served_threshold(lifecycle):
    home = lifecycle
    store, models_dir = home["store"], home["models_dir"]
    operations.set_threshold(store, models_dir, "base", 1.0, reason="refer nobody", **LEAD)
    result = retrain(store, _spec(home), QuietReporter())
    card = registry.read_card(models_dir / result.version)
    assert result.gate.thresholds == {"candidate": card.threshold, "active": 1.0}
    test = next(s for s in result.gate.splits if s.split == ORIGINAL_TEST)
    # at threshold 1 the active version refers nobody; the candidate is scored at its own threshold:
    # the recall and specificity of its card's test metrics (taken at card.threshold), which refer
    # some malignant cases, so a gate scoring it at the active's threshold would fail here
    assert test.active["recall"] == 0.0 and test.active["specificity"] == 1.0
    assert test.n == card.data.split_counts["test"] and card.metrics["test"]["recall"] > 0.0
    for metric in ("recall", "specificity"):
        assert test.candidate[metric] == pytest.approx(card.metrics["test"][metric])


def test_review_queue_labels_join_the_training_data_unless_the_policy_leaves_them_out(lifecycle):
    home = lifecycle
    card = home["base"]
    review = set(home["production"][::3])  # every third case was labelled in the review queue
    kept = training_data(home["store"], card, home["models_dir"], holdout_share=0.0)
    production = kept.df[kept.df["image"].str.startswith("prod-")]
    assert review <= set(production["image"]) and len(production) == 24
    assert kept.counts()["review_labels"] == len(review)
    left_out = training_data(home["store"], card, home["models_dir"], holdout_share=0.0,
                             include_review_queue=False)
    assert not review & set(left_out.df["image"])
    assert left_out.counts()["production_train"] == 24 - len(review)


def test_copies_of_original_test_images_are_held_out_never_trained_on(lifecycle, synthetic_df,
                                                                    tmp_path):
    """Production images that are the original test split's lesions again (here through another
    camera) would leak that split into training: they are held out, whatever their age."""
    from skinlesion.data.images import load_image
    from skinlesion.demo import device_shift

    home = lifecycle
    manifest = registry.read_manifest(home["models_dir"], "base")
    test = synthetic_df[synthetic_df["image"].isin(manifest.loc[manifest["split"] == "test",
                                                                "image"])].iloc[:3]
    for row in test.itertuples():
        device_shift(load_image(row.path), 0.8).save(tmp_path / Path(row.path).name, quality=88)
    oldest = datetime.now(UTC) - timedelta(days=30)  # older than every other case: not "recent"
    log_copies(home["store"], [(tmp_path / Path(r.path).name, r.diagnosis, r.sex, r.age_approx,
                                r.anatom_site_general) for r in test.itertuples()],
               tmp_path / "kept", start=oldest)
    data = training_data(home["store"], home["base"], home["models_dir"], holdout_share=0.25)
    copies = {p.name for p in (tmp_path / "kept").iterdir()}
    held = {Path(p).name for p in data.holdout["path"]}
    assert copies <= held and data.counts()["test_copies"] == 3
    assert not copies & {Path(p).name for p in data.df["path"]}
    assert len(held) == 3 + 6  # and the newest quarter of the 24 others, as before


def test_a_card_without_a_data_folder_asks_for_one(lifecycle, tmp_path):
    card = home_card = lifecycle["base"]
    nowhere = card.model_copy(update={"data": card.data.model_copy(update={"name": "ISIC 2019"})})
    with pytest.raises(DataError, match="--data"):
        training_data(lifecycle["store"], nowhere, lifecycle["models_dir"])
    with pytest.raises(DataError, match="does not exist"):
        training_data(lifecycle["store"], home_card, lifecycle["models_dir"],
                      data_dir=tmp_path / "missing")


# --- the gate's statistics --------------------------------------------------------------------------


def _scores(rng: np.random.Generator, truth: np.ndarray, separation: float) -> np.ndarray:
    return np.clip(rng.normal(0.5 + separation * (truth - 0.5), 0.15), 0, 1)


def test_the_paired_bootstrap_tells_a_better_candidate_from_an_equal_one():
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.4
    good, poor = _scores(rng, truth, 0.6), _scores(rng, truth, 0.1)
    better = paired_bootstrap(truth, good, poor, thresholds=(0.5, 0.5), resamples=1000, seed=0)
    diff, low, high = better["auroc"]
    assert 0 < low <= diff <= high
    assert better["recall"][1] > 0  # sensitivity at 0.5 rises too
    same = paired_bootstrap(truth, poor, poor, thresholds=(0.5, 0.5), resamples=1000, seed=0)
    assert same == {"auroc": (0.0, 0.0, 0.0), "recall": (0.0, 0.0, 0.0)}
    assert paired_bootstrap(truth, good, poor, thresholds=(0.5, 0.5), seed=0) == better  # seeded
    # the point estimate is the usual AUROC difference
    from sklearn.metrics import roc_auc_score

    assert diff == pytest.approx(roc_auc_score(truth, good) - roc_auc_score(truth, poor))


def _probs(p_malignant: np.ndarray) -> np.ndarray:
    out = np.zeros((len(p_malignant), len(CLASSES)))
    out[:, CLASSES.index("MEL")] = p_malignant
    out[:, CLASSES.index("NV")] = 1 - p_malignant
    return out


def test_compare_split_shows_both_models_and_says_which_is_better():
    rng = np.random.default_rng(1)
    truth = rng.random(150) < 0.4
    diagnoses = pd.Series(np.where(truth, "MEL", "NV"))
    split = compare_split("recent hold-out", diagnoses, _probs(_scores(rng, truth, 0.6)),
                          _probs(_scores(rng, truth, 0.05)), thresholds=(0.5, 0.5))
    assert split.n == 150 and split.n_malignant == int(truth.sum())
    assert split.candidate["auroc"] > split.active["auroc"]
    assert {d.metric: d.verdict for d in split.deltas}["auroc"] == "better"
    worse = compare_split("x", diagnoses, _probs(_scores(rng, truth, 0.05)),
                          _probs(_scores(rng, truth, 0.6)), thresholds=(0.5, 0.5))
    assert {d.metric: d.verdict for d in worse.deltas}["auroc"] == "worse"
    benign_only = compare_split("x", pd.Series(["NV"] * 5), _probs(np.full(5, 0.2)),
                                _probs(np.full(5, 0.3)), thresholds=(0.5, 0.5))
    assert benign_only.note and {d.verdict for d in benign_only.deltas} == {"undefined"}
