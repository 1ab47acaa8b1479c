"""The ML commands chained as a user runs them, each in its own process (as from a shell, so no
module is imported by an earlier test): ``train`` prints the version id last, ``evaluate`` writes
the metrics and the report's plots, ``predict`` writes the ISIC challenge CSV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from skinlesion.schema import CLASSES

CONFIG = {"mode": "head", "epochs": 2, "width": 64, "height": 48, "train_views": ["identity"],
          "tta": ["identity"]}


def skinlesion(home: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "skinlesion", *args], capture_output=True,
                          text=True, timeout=300, env=os.environ | {"SKINLESION_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_train_then_evaluate_then_predict(synthetic_dir, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    version = skinlesion(tmp_path, "train", "--data", str(synthetic_dir), "--config",
                         str(config)).strip().splitlines()[-1]
    assert (tmp_path / "models" / version / "card.json").is_file()

    report = tmp_path / "report"
    out = skinlesion(tmp_path, "evaluate", version, "--data", str(synthetic_dir), "--split", "all",
                     "--out", str(report))
    assert out.strip().splitlines()[-1] == str(report)
    scored = json.loads((report / "metrics.json").read_text())
    assert scored["version"] == version and scored["summary"]["n"] == 64
    assert {"confusion_matrix.png", "roc_curves.png", "calibration.png", "mistakes.png",
            "learning_curves.png"} <= {p.name for p in report.iterdir()}

    preds = tmp_path / "preds.csv"
    skinlesion(tmp_path, "predict", version, "--data", str(synthetic_dir), "--out", str(preds))
    table = pd.read_csv(preds)
    assert list(table.columns) == ["image", *CLASSES] and len(table) == 64
    assert (table[list(CLASSES)].sum(axis=1) - 1).abs().max() < 1e-6
