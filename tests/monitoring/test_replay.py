"""The replay harness's pieces: shifts of the stated size, seeded traffic, the per-scenario summary,
the version fingerprint, logged columns and OOD gate its answer cache is keyed by."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinlesion import registry
from skinlesion.data.images import image_stats
from skinlesion.monitoring import replay
from skinlesion.model.ood import GATE_STATS, fit_ood_gate
from skinlesion.monitoring.replay import (
    Scenario, WindowOutcome, _flagged, answer_images, answers_tag, blur, colour_cast, default_scenarios,
    jpeg, malignant_prevalence, older_patients, results_table, summarise, traffic_days, upsample,
    version_fingerprint)
from skinlesion.predict import Predictor
from skinlesion.records import PREDICTION_COLUMNS
from skinlesion.schema import DEFAULT_MALIGNANT
from tests.standins import STANDIN_KIND, STANDIN_PATH, save_standin


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 400
    return pd.DataFrame({"image": [f"img{i}" for i in range(n)], "age_approx": rng.integers(2, 17, n) * 5.0,
                         "anatom_site_general": rng.choice(["head/neck", "back"], n, p=[0.1, 0.9]),
                         "diagnosis": rng.choice(["MEL", "NV"], n, p=[0.2, 0.8])})


def test_image_transforms_move_the_statistics_they_name() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(60, 200, (150, 200, 3), dtype=np.uint8))
    before = image_stats(image)
    cast = image_stats(colour_cast(1.1, 0.9)(image))
    assert cast["mean_r"] > before["mean_r"] + 0.03 and cast["mean_b"] < before["mean_b"] - 0.03
    assert image_stats(blur(1.5)(image))["sharpness"] < 0.5 * before["sharpness"]
    assert upsample(3.0)(image).size == (600, 450)
    assert image_stats(jpeg(20)(image))["sharpness"] != before["sharpness"]


def test_weighted_traffic_keeps_the_shift_and_uniform_traffic_is_a_plain_sample(pool: pd.DataFrame) -> None:
    older = Scenario("older", "population", "", weights=older_patients(12.5))
    prevalence = Scenario("prev", "prevalence", "", weights=malignant_prevalence(2.0, DEFAULT_MALIGNANT))
    calm = Scenario("calm", "none", "")
    days = traffic_days(pool, older, windows=5, per_window=300, seed=0)
    assert len(days) == 5 and all(len(d) == 300 for d in days)
    assert np.mean([d["age_approx"].mean() for d in days]) > pool["age_approx"].mean() + 10
    share = np.mean([d["diagnosis"].eq("MEL").mean() for d in traffic_days(pool, prevalence, windows=5,
                                                                            per_window=300, seed=0)])
    assert share == pytest.approx(2 * 0.2 / 1.2, abs=0.04)
    uniform = traffic_days(pool, calm, windows=2, per_window=300, seed=0)
    assert uniform[0]["image"].is_unique  # without replacement
    assert uniform[0]["ts"].is_monotonic_increasing and uniform[0]["request_id"].is_unique
    again = traffic_days(pool, calm, windows=2, per_window=300, seed=0)
    assert again[1]["image"].tolist() == uniform[1]["image"].tolist()


def test_every_named_shift_says_which_features_it_should_move() -> None:
    scenarios = default_scenarios(DEFAULT_MALIGNANT)
    assert scenarios[0].kind == "none" and not scenarios[0].expected
    assert all(s.expected and s.size for s in scenarios[1:])
    assert {s.kind for s in scenarios} == {"none", "acquisition", "population", "prevalence"}


def test_summary_counts_false_alarms_detection_and_coverage(pool: pd.DataFrame) -> None:
    scenario = Scenario("cast", "acquisition", "x1.1", ("mean_r",))

    def outcome(day: int, drift: str, drifted: tuple[str, ...], covered: bool) -> WindowOutcome:
        estimate = {"estimated": 0.8, "low": 0.7, "high": 0.9, "realised": 0.85 if covered else 0.5,
                    "unreliable": drift == "red", "covered": covered}
        return WindowOutcome(day, drift, drift, 0.3 if drift == "red" else 0.0, drifted, 0.01, "green", (),
                             {m: estimate for m in ("accuracy", "precision", "recall", "specificity",
                                                    "auroc", "log_loss")})

    outcomes = [outcome(0, "green", (), True), outcome(1, "red", ("mean_r", "brightness"), True),
                outcome(2, "red", ("mean_r",), False), outcome(3, "yellow", ("brightness",), True)]
    summary = summarise(scenario, outcomes, pool)
    assert summary["drift_red_rate"] == 0.5 and summary["drift_yellow_rate"] == 0.25
    assert summary["detection_delay_hours"] == 48.0 and summary["named_match_rate"] == 1.0
    assert summary["features_named"] == {"mean_r": 2, "brightness": 2}
    recall = summary["estimates"]["recall"]
    assert recall["band_coverage"] == 0.75 and recall["unreliable_share"] == 0.5
    assert recall["mean_abs_error"] == pytest.approx((0.05 * 3 + 0.3) / 4)


def test_the_answer_cache_follows_what_the_version_answers_with(tmp_path: Path) -> None:
    card = {"id": "v", "model": {"temperature": 1.2}, "threshold": 0.3, "notes": "first", "ood": {}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "weights.pt").write_bytes(b"weights")
    before = version_fingerprint(tmp_path)
    (tmp_path / "card.json").write_text(json.dumps({**card, "notes": "edited", "ood": {"fitted": True}}))
    assert version_fingerprint(tmp_path) == before  # documentation and the gate: same answers
    for changed in ({**card, "threshold": 0.2}, {**card, "model": {"temperature": 1.0}}):
        (tmp_path / "card.json").write_text(json.dumps(changed))
        assert version_fingerprint(tmp_path) != before
    (tmp_path / "card.json").write_text(json.dumps(card))
    (tmp_path / "weights.pt").write_bytes(b"retrained")
    assert version_fingerprint(tmp_path) != before


def test_the_answer_cache_follows_the_logged_columns_and_the_gate(tmp_path: Path, monkeypatch) -> None:
    """A cache written before a logged column existed (or against another OOD gate, which measures
    the texture distance) is not reused: its answers would lack the column or carry stale values."""
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    save_standin(tmp_path / "models", "v1")
    folder = tmp_path / "models" / "v1"
    predictor = Predictor.from_registry("v1", tmp_path / "models", device="cpu")
    rows = pd.DataFrame({"image": ["a", "b"], "lesion_id": ["la", "lb"], "diagnosis": ["MEL", "NV"],
                         "age_approx": [50.0, None], "sex": ["male", "female"],
                         "anatom_site_general": ["head/neck", "missing"]})
    rows["path"] = [str(tmp_path / f"{name}.png") for name in rows["image"]]
    for path, grey in zip(rows["path"], (40, 200), strict=True):
        Image.new("RGB", (40, 30), (grey, grey, grey)).save(path)
    cache_dir = tmp_path / "answers"

    with monkeypatch.context() as old:  # the code before texture_distance was logged
        old.setattr(replay, "PREDICTION_COLUMNS", tuple(c for c in PREDICTION_COLUMNS if c != "texture_distance"))
        stale = answer_images(predictor, rows, "identity", None, cache_dir, progress=False)
        stale_tag = answers_tag(folder)
    stale.drop(columns="texture_distance").assign(p_malignant=-1.0).to_parquet(
        next(cache_dir.glob(f"*-{stale_tag}.parquet")), index=False)

    assert answers_tag(folder) != stale_tag
    fresh = answer_images(predictor, rows, "identity", None, cache_dir, progress=False)
    assert "texture_distance" in fresh.columns and (fresh["p_malignant"] > 0).all()
    assert fresh["p_malignant"].tolist() == pytest.approx([1 - 40 / 255, 1 - 200 / 255], abs=0.02)

    before = answers_tag(folder)
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "notes": "edited"}))
    assert answers_tag(folder) == before  # documentation: the same answers
    (folder / "card.json").write_text(json.dumps({**card, "ood": {"refitted": True}}))
    assert answers_tag(folder) != before


def test_the_gate_check_counts_the_texture_check_and_the_table_shows_it() -> None:
    """Images flagged by each check, the texture check's from the texture distance each answer
    logged; the README table gets a column for it ("–" in results written before it)."""
    rng = np.random.default_rng(0)

    def inputs(n: int) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
        stats = pd.DataFrame({name: rng.normal(0.5, 0.05, n) for name in GATE_STATS})
        stats["sharpness"] = rng.lognormal(-4, 0.3, n)
        return rng.normal(3.0, 1.0, (n, 6)), stats, rng.normal(1.0, 0.2, (n, 10))

    (train, validation, current) = (inputs(600), inputs(400), inputs(200))
    gate = fit_ood_gate(train[0], train[1], validation[0], validation[1], share=0.01,
                        train_texture=train[2], validation_texture=validation[2])
    answers = current[1].assign(embedding=list(current[0]), texture_distance=gate.texture_distance(current[2]))
    answers.loc[answers.index[:50], "texture_distance"] = 5 * gate.texture_bound
    flagged = _flagged(gate, answers)
    assert flagged["by_texture"] >= 0.25 and flagged["flagged"] >= flagged["by_texture"]
    assert flagged["by_embedding"] < 0.05 and flagged["by_statistics"] < 0.05
    assert _flagged(replace(gate, texture=None), answers)["by_texture"] is None

    results = {"scenarios": [], "ood_gate": {"planted": flagged,
                                             "written before": {k: v for k, v in flagged.items() if k != "by_texture"}}}
    table = results_table(results)
    assert "| by the texture |" in table
    assert f"| planted (200) | {100 * flagged['flagged']:.0f}% |" in table
    assert table.splitlines()[-1].startswith("| written before (200) |") and table.endswith("| – |")
