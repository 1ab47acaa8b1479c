"""skinlesion.evaluate: the metrics file carries the challenge's names and honest intervals."""

from __future__ import annotations

import json

from skinlesion.evaluate import evaluate_version
from skinlesion.registry import load_version
from tests.standins import standin_home


def test_metrics_file_has_per_image_and_per_lesion_intervals(tmp_path, monkeypatch, synthetic_df):
    settings = standin_home(tmp_path, monkeypatch, ("v1",))
    version = load_version("v1", settings.models_dir)
    report = evaluate_version(version, synthetic_df, tmp_path / "report", n_boot=60,
                              progress=False)
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    honest = written["intervals"]
    assert honest["n_images"] == len(synthetic_df)
    assert honest["n_lesions"] == synthetic_df["lesion_id"].nunique()
    for level in ("per_image", "per_lesion"):
        auroc = honest[level]["auroc"]
        assert auroc["low"] <= auroc["value"] <= auroc["high"] and auroc["n_boot"] == 60
    assert set(written["official"]["macro_average"]) == {"auc", "auc_sens_80", "ap"}
    assert report.metrics["summary"]["auroc"] == written["summary"]["auroc"]
