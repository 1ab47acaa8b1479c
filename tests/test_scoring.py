"""Our scorer against the official ISIC challenge scorer (the test oracle), and the `score` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.data.isic_csv import write_predictions_csv
from skinlesion.errors import DataError
from skinlesion.schema import CLASSES
from skinlesion.scoring import score_files

isic = pytest.importorskip("isic_challenge_scoring")


def write_case(folder: Path, n: int = 400, seed: int = 0, signal: float = 1.5) -> tuple[Path, Path]:
    """Seeded truth/prediction CSVs: imbalanced classes, logits favouring the true class, the
    prediction rows in a different order from the truth rows."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.18, 0.45, 0.12, 0.05, 0.1, 0.03, 0.03, 0.04])
    y = rng.choice(len(CLASSES), size=n, p=weights)
    y[:len(CLASSES)] = np.arange(len(CLASSES))  # every class present
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    images = [f"ISIC_{1000000 + i:07d}" for i in range(n)]
    truth = pd.DataFrame(np.eye(len(CLASSES))[y], columns=list(CLASSES))
    truth.insert(0, "image", images)
    truth_csv = folder / "truth.csv"
    truth.to_csv(truth_csv, index=False)
    order = rng.permutation(n)
    pred_csv = write_predictions_csv(folder / "preds.csv", [images[i] for i in order], probs[order])
    return truth_csv, pred_csv


def official(truth_csv: Path, pred_csv: Path):
    """The official scorer's classification entry point, on the same two files."""
    from isic_challenge_scoring import ClassificationMetric, ClassificationScore

    return ClassificationScore.from_file(truth_csv, pred_csv, ClassificationMetric.BALANCED_ACCURACY)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the official scorer uses DataFrame.applymap
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ... and rdp (ROC simplification) old numpy
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_official_isic_scorer(tmp_path: Path, seed: int) -> None:
    truth_csv, pred_csv = write_case(tmp_path, seed=seed)
    ours = score_files(truth_csv, pred_csv)
    theirs = official(truth_csv, pred_csv)
    assert 0.3 < ours["summary"]["balanced_accuracy"] < 0.95  # informative, not perfect
    assert ours["summary"]["balanced_accuracy"] == pytest.approx(
        theirs.aggregate["balanced_accuracy"], abs=1e-6)
    per_class = pd.DataFrame(ours["per_class"]).set_index("class")
    for cls in CLASSES:
        assert per_class.loc[cls, "auc"] == pytest.approx(theirs.per_category.loc[cls, "auc"],
                                                          abs=1e-6), cls
        assert per_class.loc[cls, "pauc_80"] == pytest.approx(
            theirs.per_category.loc[cls, "auc_sens_80"], abs=1e-6), cls
        assert per_class.loc[cls, "ap"] == pytest.approx(theirs.per_category.loc[cls, "ap"],
                                                         abs=1e-6), cls
    for name in ("auc", "auc_sens_80", "ap"):  # the challenge's macro averages, by its names
        assert ours["official"]["macro_average"][name] == pytest.approx(
            theirs.macro_average[name], abs=1e-6), name
    assert ours["official"]["aggregate"]["balanced_accuracy"] == pytest.approx(
        theirs.aggregate["balanced_accuracy"], abs=1e-6)


def test_score_files_result_is_json_and_complete(tmp_path: Path) -> None:
    truth_csv, pred_csv = write_case(tmp_path, n=120)
    result = score_files(truth_csv, pred_csv, threshold=0.3, malignant=("MEL",))
    assert result["malignant"] == ["MEL"] and result["threshold"] == 0.3
    assert result["summary"]["n"] == 120 and len(result["per_class"]) == 8
    assert np.array(result["confusion_matrix"]).sum() == 120
    json.dumps(result)  # plain types only


def test_score_files_names_images_missing_from_truth(tmp_path: Path) -> None:
    truth_csv, _ = write_case(tmp_path, n=20)
    pred_csv = write_predictions_csv(tmp_path / "other.csv", ["ISIC_9999999", "ISIC_1000000"],
                                     np.tile(np.eye(8)[1], (2, 1)))
    with pytest.raises(DataError, match="no ground truth.*ISIC_9999999"):
        score_files(truth_csv, pred_csv)


def test_score_command_table_and_json(tmp_path: Path) -> None:
    truth_csv, pred_csv = write_case(tmp_path, n=120)
    runner = CliRunner()
    table = runner.invoke(app, ["score", "--truth", str(truth_csv), "--predictions", str(pred_csv)])
    assert table.exit_code == 0, table.output
    assert "AUROC" in table.output and "melanoma" in table.output
    out = tmp_path / "metrics.json"
    res = runner.invoke(app, ["score", "--truth", str(truth_csv), "--predictions", str(pred_csv),
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    written = json.loads(out.read_text())
    assert written["summary"] == score_files(truth_csv, pred_csv)["summary"]
    assert set(written["official"]["macro_average"]) == {"auc", "auc_sens_80", "ap"}
    bad = runner.invoke(app, ["score", "--truth", str(truth_csv), "--predictions", str(pred_csv),
                              "--malignant", "MEL,CANCER"])
    assert bad.exit_code == 2 and "unknown malignant classes" in bad.output


def test_window_without_malignant_cases_scores_with_nulls_and_a_note(tmp_path: Path) -> None:
    images = ["ISIC_1", "ISIC_2", "ISIC_3"]
    truth = pd.DataFrame(np.eye(8)[[1, 1, 4]], columns=list(CLASSES))
    truth.insert(0, "image", images)
    truth.to_csv(tmp_path / "gt.csv", index=False)
    write_predictions_csv(tmp_path / "p.csv", images, np.eye(8)[[1, 4, 4]])
    res = CliRunner().invoke(app, ["score", "--truth", str(tmp_path / "gt.csv"), "--predictions",
                                   str(tmp_path / "p.csv"), "--json", "-"])
    assert res.exit_code == 0, res.output
    assert "note: undefined on this window" in res.output
    payload = json.loads(res.output[res.output.index("{"):])  # strict JSON: nan became null
    assert payload["summary"]["auroc"] is None
    assert payload["summary"]["balanced_accuracy"] == pytest.approx(0.75)
