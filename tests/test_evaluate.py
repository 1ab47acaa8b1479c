"""skinlesion.evaluate: the metrics file carries the challenge's names and honest intervals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from skinlesion.evaluate import (BadImage, BadImagesError, evaluate_version, predict_dataset,
                                 predict_images, screen_images, write_bad_images)
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


def _with_bad_files(synthetic_df, tmp_path):
    """The synthetic table with three unreadable images: empty, not an image, missing."""
    df = synthetic_df.copy()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture")
    bad = {df.index[3]: tmp_path / "empty.jpg", df.index[10]: tmp_path / "text.jpg",
           df.index[40]: tmp_path / "gone.jpg"}
    for row, path in bad.items():
        df.loc[row, "path"] = str(path)
    return df, [df.loc[row, "image"] for row in bad]


def test_skip_answers_the_good_images_and_names_every_bad_one(tmp_path, monkeypatch,
                                                             synthetic_df):
    settings = standin_home(tmp_path, monkeypatch, ("v1",))
    version = load_version("v1", settings.models_dir)
    df, bad_names = _with_bad_files(synthetic_df, tmp_path)
    result = predict_images(version, df, on_error="skip", batch_size=8, progress=False)
    assert [b.image for b in result.bad] == bad_names
    assert all(b.reason for b in result.bad) and "gone.jpg" in result.bad[2].reason
    good = df[~df["image"].isin(bad_names)]
    assert result.images == good["image"].tolist() and result.probs.shape == (len(good), 8)
    whole = predict_dataset(version, good, progress=False)
    np.testing.assert_allclose(result.probs, whole)


def test_stop_lists_every_bad_image_and_answers_nothing(tmp_path, monkeypatch, synthetic_df):
    settings = standin_home(tmp_path, monkeypatch, ("v1",))
    version = load_version("v1", settings.models_dir)
    df, bad_names = _with_bad_files(synthetic_df, tmp_path)
    with pytest.raises(BadImagesError) as caught:
        predict_images(version, df, on_error="stop", batch_size=8, progress=False)
    assert [b.image for b in caught.value.bad] == bad_names
    assert all(name in str(caught.value) for name in bad_names)


def test_bad_images_report_is_a_csv_with_the_reasons(tmp_path):
    bad = [BadImage("ISIC_1", "/x/ISIC_1.jpg", "file /x/ISIC_1.jpg: the file is empty")]
    table = pd.read_csv(write_bad_images(tmp_path / "bad.csv", bad))
    assert table.to_dict(orient="records") == [vars(bad[0])]


def test_screen_keeps_the_readable_rows_and_names_the_others(tmp_path, synthetic_df):
    df, bad_names = _with_bad_files(synthetic_df, tmp_path)
    good, bad = screen_images(df, progress=False)
    assert [b.image for b in bad] == bad_names
    assert good.index.equals(df.index[~df["image"].isin(bad_names)])
