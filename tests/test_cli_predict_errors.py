"""``skinlesion predict --on-error skip|stop``: every unreadable image is named, not only the first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.schema import CLASSES
from tests.standins import standin_home


def _broken_copy(synthetic_dir: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """The synthetic dataset with two unreadable images: one empty, one not an image."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    images = sorted((data / "ISIC_2019_Training_Input").glob("*.jpg"))
    images[2].write_bytes(b"")
    images[7].write_text("not a picture")
    return data, [images[2].stem, images[7].stem]


def test_skip_writes_the_good_answers_and_names_each_bad_file(synthetic_dir, tmp_path, monkeypatch):
    standin_home(tmp_path, monkeypatch, ("v1",))
    data, bad = _broken_copy(synthetic_dir, tmp_path)
    out = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", "v1", "--data", str(data), "--out", str(out),
                                   "--on-error", "skip"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["image", *CLASSES] and not set(bad) & set(table["image"])
    assert len(table) == len(list((data / "ISIC_2019_Training_Input").glob("*.jpg"))) - 2
    listed = pd.read_csv(out.with_suffix(".bad.csv"))
    assert sorted(listed["image"]) == sorted(bad) and listed["reason"].str.len().min() > 10
    assert all(name in res.output for name in bad)


def test_stop_lists_every_bad_file_and_exits_non_zero(synthetic_dir, tmp_path, monkeypatch):
    standin_home(tmp_path, monkeypatch, ("v1",))
    data, bad = _broken_copy(synthetic_dir, tmp_path)
    out = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", "v1", "--data", str(data), "--out", str(out)])
    assert res.exit_code == 2
    assert all(name in res.output for name in bad) and "--on-error skip" in res.output
    assert not out.exists()


def test_unknown_on_error_value_is_refused(synthetic_dir, tmp_path, monkeypatch):
    standin_home(tmp_path, monkeypatch, ("v1",))
    res = CliRunner().invoke(app, ["predict", "v1", "--data", str(synthetic_dir), "--out",
                                   str(tmp_path / "p.csv"), "--on-error", "ignore"])
    assert res.exit_code == 2 and "skip, stop" in res.output
