"""The reference recipe end to end at smoke-test scale (``--quick``) on tiny synthetic data: a
version is registered with its ablation and results, the serving path agrees with the cached
evaluation, and the shipped id ``reference`` is never taken by a smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skinlesion import reference, registry


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
