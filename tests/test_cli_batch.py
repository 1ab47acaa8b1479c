"""Batch and replay from the command line: ``predict --log`` goes through the serving path (the
route's role, threshold and restriction for the version), ``labels import`` joins ground truth to
those answers; ``models list`` / ``models show`` describe the versions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion import registry
from skinlesion.cli import app
from skinlesion.data.images import file_sha256
from skinlesion.data.readers import read_dataset
from skinlesion.evaluate import predict_dataset
from skinlesion.data.isic_csv import read_ground_truth_csv
from skinlesion.schema import CLASSES
from skinlesion.settings import Settings
from skinlesion.store import ServingRoute, Store
from tests.standins import STANDIN_KIND, BrightnessClassifier, standin_home

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    return standin_home(tmp_path, monkeypatch, ("main-v1", "rules-v1", "cand-v2"))


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def set_route(settings: Settings, **fields) -> Store:
    store = Store(settings.db_path)
    store.set_route(ServingRoute(active_version="main-v1", fallback_version="rules-v1", **fields),
                    actor="test", role="ml_lead", reason="set-up")
    return store


def predict_log(synthetic_dir, tmp_path, version: str) -> pd.DataFrame:
    out = tmp_path / f"{version}.csv"
    assert run("predict", version, "--data", str(synthetic_dir), "--out", str(out),
               "--log").strip().splitlines()[-1] == str(out)
    return pd.read_csv(out)


def test_predict_log_decides_at_the_routes_threshold_override(home, synthetic_dir, tmp_path):
    store = set_route(home, threshold_overrides={"main-v1": 0.35})
    written = predict_log(synthetic_dir, tmp_path, "main-v1")
    logged = store.query_predictions(model_version="main-v1")
    assert len(logged) == len(written) == 64
    assert set(logged["source"]) == {"batch"} and set(logged["model_role"]) == {"active"}
    assert logged["returned"].all() and (logged["threshold"] == 0.35).all()
    referred = logged["decision"] == "refer"
    assert (referred == (logged["p_malignant"] >= 0.35)).all()
    # the override mattered: answers between it and the card's 0.5 are referred
    assert (referred & (logged["p_malignant"] < 0.5)).sum() >= 10
    by_image = written.set_index("image")["MEL"]
    assert sorted(by_image.round(6)) == sorted(logged["p_MEL"].round(6))


def test_predict_log_takes_the_versions_role_and_the_routes_restriction(home, synthetic_dir,
                                                                         tmp_path):
    store = set_route(home, restricted_to_clear_cases=True)
    predict_log(synthetic_dir, tmp_path, "rules-v1")
    predict_log(synthetic_dir, tmp_path, "cand-v2")
    logged = store.query_predictions()
    roles = logged.groupby("model_version")["model_role"].unique().map(list).to_dict()
    assert roles == {"rules-v1": ["fallback"], "cand-v2": ["offline"]}
    returned = logged.groupby("model_version")["returned"].unique().map(list).to_dict()
    assert returned == {"rules-v1": [True], "cand-v2": [False]}
    # restricted to clear cases: "no referral" only below half the card's 0.5, the rest referred
    clear = logged["p_malignant"] < 0.25
    assert ((logged["decision"] == "no referral") == clear).all()
    benign_unclear = ~clear & (logged["p_malignant"] < 0.5)
    assert benign_unclear.sum() >= 50
    assert logged.loc[benign_unclear, "decision_reason"].str.startswith("restricted to clear").all()


def test_labels_import_joins_ground_truth_to_the_logged_answers(home, synthetic_dir, tmp_path):
    store = set_route(home)
    predict_log(synthetic_dir, tmp_path, "main-v1")
    truth = synthetic_dir / "ISIC_2019_Training_GroundTruth.csv"
    out = run("labels", "import", str(truth), "--source", "histopathology")
    assert out.strip() == "stored 64 labels; 64 matched logged predictions"
    names, y = read_ground_truth_csv(truth)
    folder = synthetic_dir / "ISIC_2019_Training_Input"
    expected = {file_sha256(folder / f"{name}.jpg"): CLASSES[int(k)]
                for name, k in zip(names, y, strict=True)}
    joined = store.labelled_predictions()
    assert len(joined) == 64
    assert dict(zip(joined["image_sha256"], joined["diagnosis"], strict=True)) == expected


def test_labels_import_names_a_missing_image(home, tmp_path):
    truth = tmp_path / "gt.csv"
    truth.write_text("image," + ",".join(CLASSES) + "\nISIC_0000001,1,0,0,0,0,0,0,0\n")
    result = runner.invoke(app, ["labels", "import", str(truth)])
    assert result.exit_code == 2 and "ISIC_0000001" in result.output


def test_models_list_shows_every_version_and_the_latest_alias(home):
    run("models", "alias", "prod", "main-v1")
    out = run("models", "list")
    lines = {line.split("│")[1].strip(): line for line in out.splitlines()
             if line.count("│") > 2 and "-v" in line}
    assert set(lines) == {"main-v1", "rules-v1", "cand-v2"}
    latest = registry.resolve_version(home.models_dir, "latest")
    assert "prod" in lines["main-v1"] and "latest" in lines[latest]


def test_models_list_of_an_empty_folder_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    assert run("models", "list").strip() == f"no model versions in {tmp_path / 'models'}"


def test_models_show_prints_the_card_by_id_or_alias(home):
    run("models", "alias", "prod", "main-v1")
    card = json.loads(run("models", "show", "prod"))
    assert card["id"] == "main-v1" and card["threshold"] == 0.5 and card["kind"] == STANDIN_KIND
    result = runner.invoke(app, ["models", "show", "nope"])
    assert result.exit_code == 2 and "main-v1" in result.output


def test_predict_log_keeps_the_images_when_retention_is_on(home, synthetic_dir, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("SKINLESION_RETAIN_IMAGES", "true")
    store = set_route(home)
    predict_log(synthetic_dir, tmp_path, "main-v1")
    kept = store.query_predictions()["image_path"]
    assert len(kept) == 64 and all((home.data_dir / "images").joinpath(p).is_file() for p in kept)


def test_the_predictions_file_keeps_p_malignant_and_reweighs_inside_each_group(home, synthetic_dir,
                                                                             tmp_path, monkeypatch):
    """A version with the balanced diagnosis rule writes, per image, the malignant columns summing
    to its calibrated p_malignant and, inside the malignant and the benign classes, each class's
    probability relative to its prior: the balanced rule's order within each group."""
    answer = BrightnessClassifier.predict_proba
    spread = np.array([0.1, 0.3, 0.2, 0.1, 0.1, 0.05, 0.05, 0.1])  # every class gets some mass
    monkeypatch.setattr(BrightnessClassifier, "predict_proba",
                        lambda self, images, metadata: 0.8 * answer(self, images, metadata) + 0.2 * spread)
    card_path = home.models_dir / "main-v1" / registry.CARD_FILE
    card = json.loads(card_path.read_text())
    prior = np.array([0.1, 0.6, 0.05, 0.02, 0.12, 0.03, 0.03, 0.05])
    card["diagnosis_rule"] = {"rule": "balanced", "class_prior": dict(zip(CLASSES, prior.tolist(), strict=True))}
    card_path.write_text(json.dumps(card))
    out = tmp_path / "preds.csv"
    run("predict", "main-v1", "--data", str(synthetic_dir), "--out", str(out))
    written = pd.read_csv(out).set_index("image")
    df = read_dataset(synthetic_dir)
    calibrated = pd.DataFrame(predict_dataset(registry.load_version("main-v1", home.models_dir), df,
                                              progress=False), index=df["image"], columns=CLASSES)
    written = written.loc[calibrated.index, list(CLASSES)]
    malignant = [c for c in CLASSES if c in card["malignant"]]
    np.testing.assert_allclose(written[malignant].sum(axis=1), calibrated[malignant].sum(axis=1), atol=1e-6)
    assert np.abs(written.to_numpy() - calibrated.to_numpy()).max() > 0.01  # re-weighed, not copied
    for group in (malignant, [c for c in CLASSES if c not in malignant]):
        relative = calibrated[group] / prior[[CLASSES.index(c) for c in group]]
        expected = relative.div(relative.sum(axis=1), axis=0).mul(calibrated[group].sum(axis=1), axis=0)
        np.testing.assert_allclose(written[group].to_numpy(), expected.to_numpy(), atol=1e-6)
