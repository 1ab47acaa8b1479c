"""The reference recipe end to end at smoke-test scale (``--quick``) on tiny synthetic data: a
version is registered with its ablation and results, the serving path agrees with the cached
evaluation, and the shipped id ``reference`` is never taken by a smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skinlesion import reference, registry
from skinlesion.calibration import METHODS


@pytest.fixture(scope="module")
def quick_run(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    models = tmp_path_factory.mktemp("models")
    results = reference.run(synthetic_dir, models, tmp_path_factory.mktemp("cache"), quick=True,
                            progress=False)
    return results, models


def test_a_quick_run_registers_a_version_with_its_results_and_ablation(quick_run):
    results, models = quick_run
    assert results["version"] != reference.VERSION_ID
    assert not (models / reference.VERSION_ID).exists()
    card = registry.read_card(models / results["version"])
    assert "CC BY-NC 4.0" in card.data.licence
    saved = json.loads((models / results["version"] / "results.json").read_text())
    assert saved["test"]["n"] == results["test"]["n"] > 0
    rows = {(r["inputs"], r["backbone"]) for r in saved["ablation"]}
    assert ("metadata only", "none") in rows and ("image + metadata", "fine-tuned (reference)") in rows
    assert all(np.isfinite(r["test_auroc"]) for r in saved["ablation"])


def test_the_served_answers_match_the_cached_evaluation(quick_run):
    results, _ = quick_run
    assert 0 <= results["serving_path_max_abs_diff"] <= 5e-3


def test_the_card_says_what_the_splits_hold_how_the_recipe_was_chosen_and_its_limits(quick_run):
    results, models = quick_run
    card = json.loads((models / results["version"] / "card.json").read_text())
    composition = card["split_composition"]
    assert set(composition) == {"all", "train", "val", "test"}
    assert sum(composition[s]["images"] for s in ("train", "val", "test")) == \
        composition["all"]["images"]
    assert card["selection"]["recipe"] in reference.CANDIDATES
    assert card["selection"]["calibration"] == card["calibration"]["method"] in METHODS
    assert card["diagnosis_rule"]["rule"] == card["selection"]["diagnosis_rule"]
    assert "shown_diagnosis" in card["diagnosis_rule"]
    assert "dermoscop" in card["intended_use"] and "not covered" in card["limits"]
    assert {r["recipe"] for r in card["recipe_ablation"]} == set(reference.CANDIDATES)
    compared = card["calibration_ablation"]["validation_out_of_fold"]
    assert [r["calibration"] for r in compared][0] == "temperature"


def test_test_numbers_come_per_image_and_per_lesion_with_intervals(quick_run):
    results, _ = quick_run
    honest = results["test_intervals"]
    assert honest["n_images"] == results["test"]["n"] and 0 < honest["n_lesions"] <= honest["n_images"]
    for level in ("per_image", "per_lesion"):
        auroc = honest[level]["auroc"]
        assert auroc["low"] <= auroc["value"] <= auroc["high"]
    assert set(results["test_official"]["macro_average"]) == {"auc", "auc_sens_80", "ap"}


def test_choose_reads_validation_only():
    def row(recipe, auroc, bacc, test_auroc):
        return {"recipe": recipe, "calibration": "temperature", "val_auroc": auroc,
                "val_balanced_accuracy": bacc, "test_auroc": test_auroc}
    rows = [row("a", 0.90, 0.60, 0.99), row("b", 0.92, 0.62, 0.50)]
    # b wins on validation; its test score is ignored
    assert reference.choose(rows) == "b"
