"""skinlesion.data.synthetic: deterministic, readable, and carrying the planted signal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.data.readers import read_dataset
from skinlesion.data.synthetic import (
    CLASS_FREQUENCY, MARKER, class_counts, draw_lesion, render_lesion, sample_lesion,
    sample_metadata, write_synthetic_dataset)
from skinlesion.errors import DataError
from skinlesion.schema import CLASSES, Metadata


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", n=16, seed=5, width=48)
    b = write_synthetic_dataset(tmp_path / "b", n=16, seed=5, width=48)
    c = write_synthetic_dataset(tmp_path / "c", n=16, seed=6, width=48)
    assert _digest(a) == _digest(b) != _digest(c)


def test_layout_reads_back_with_the_requested_size(synthetic_dir, synthetic_df):
    assert (synthetic_dir / "ISIC_2019_Training_Input").is_dir() and (synthetic_dir / MARKER).is_file()
    with Image.open(synthetic_df["path"].iloc[0]) as img:
        assert img.size == (96, 72) and img.format == "JPEG"
    assert set(synthetic_df["diagnosis"]) == set(CLASSES)
    assert synthetic_df["diagnosis"].value_counts().idxmax() == "NV"
    per_lesion = synthetic_df.groupby("lesion_id").agg(n=("image", "size"),
                                                      classes=("diagnosis", "nunique"))
    assert (per_lesion["n"] == 2).any() and (per_lesion["classes"] == 1).all()
    # a lesion's two photographs share the patient's metadata
    twice = synthetic_df[synthetic_df["lesion_id"].duplicated(keep=False)]
    assert (twice.groupby("lesion_id")[["sex", "anatom_site_general"]].nunique() == 1).all().all()


@pytest.mark.parametrize("n", [8, 31, 32, 64, 400, 5000])
def test_class_counts_are_imbalanced_but_complete(n):
    counts = class_counts(n)
    assert sum(counts.values()) == n and list(counts) == list(CLASSES)
    assert min(counts.values()) >= (2 if n >= 32 else 1)
    if n >= 64:
        assert max(counts, key=counts.get) == "NV" and counts["NV"] > 3 * counts["DF"]
    assert abs(sum(CLASS_FREQUENCY.values()) - 1) < 1e-9


def test_every_class_has_two_lesions_from_32_images(tmp_path):
    df = read_dataset(write_synthetic_dataset(tmp_path / "d", n=32, seed=1, width=32))
    assert (df.groupby("diagnosis")["lesion_id"].nunique() >= 2).all()
    with pytest.raises(ValueError, match="at least 8"):
        write_synthetic_dataset(tmp_path / "e", n=7)


def test_metadata_follows_the_real_associations():
    rng = np.random.default_rng(0)
    draws = {cls: pd.DataFrame([sample_metadata(cls, rng) for _ in range(600)]) for cls in CLASSES}
    age = {cls: d["age_approx"].astype(float).mean() for cls, d in draws.items()}
    assert age["NV"] + 15 < age["BCC"] and age["NV"] + 15 < age["AK"] and age["NV"] < age["MEL"]
    head = {cls: (d["anatom_site_general"] == "head/neck").mean() for cls, d in draws.items()}
    assert head["AK"] > 0.4 and head["BCC"] > 0.4 and head["NV"] < 0.1
    legs = {cls: (d["anatom_site_general"] == "lower extremity").mean() for cls, d in draws.items()}
    assert max(legs, key=legs.get) == "DF"
    every = pd.concat(draws.values())
    assert every["age_approx"].isna().mean() == pytest.approx(0.03, abs=0.01)
    assert (every["sex"] == "missing").mean() == pytest.approx(0.02, abs=0.01)
    assert (every["anatom_site_general"] == "missing").mean() == pytest.approx(0.15, abs=0.02)
    Metadata.from_raw(**draws["MEL"].iloc[0].to_dict())  # in the schema vocabulary


def _measures(img) -> tuple[float, float]:
    """(share of dark pixels, colours covering >= 2%) in the central region: lesion area and
    colour variety, measured without knowing where the lesion is."""
    rgb = np.asarray(img, dtype=np.float64) / 255
    h, w, _ = rgb.shape
    centre = rgb[h // 8: -h // 8, w // 8: -w // 8].reshape(-1, 3)
    lum = centre @ [0.299, 0.587, 0.114]
    dark = float((lum < 0.85 * np.percentile(lum, 90)).mean())
    bins = np.minimum((centre * 4).astype(int), 3) @ [16, 4, 1]
    colours = int((np.bincount(bins, minlength=64) / len(bins) >= 0.02).sum())
    return dark, colours


def test_melanomas_are_larger_and_more_colourful_than_nevi():
    rng = np.random.default_rng(0)
    mel = np.array([_measures(render_lesion("MEL", rng, 96)) for _ in range(16)])
    nv = np.array([_measures(render_lesion("NV", rng, 96)) for _ in range(16)])
    assert mel[:, 0].mean() > 2 * nv[:, 0].mean()  # area
    assert mel[:, 1].mean() > nv[:, 1].mean() + 1.5  # colour variety


def _colour_features(img) -> list[float]:
    """Mean/std colour of the central region and of the pixels unlike the skin there."""
    rgb = np.asarray(img, dtype=np.float64) / 255
    h, w, _ = rgb.shape
    centre = rgb[h // 8: -h // 8, w // 8: -w // 8].reshape(-1, 3)
    lum = centre @ [0.299, 0.587, 0.114]
    skin = centre[lum >= np.percentile(lum, 70)].mean(axis=0)
    unlike = np.linalg.norm(centre - skin, axis=1) > 0.08
    lesion = centre[unlike] if unlike.sum() > 3 else centre
    return [*centre.mean(0), *centre.std(0), unlike.mean(), *(lesion.mean(0) - skin),
            *lesion.std(0), _measures(img)[0]]


def test_a_simple_colour_classifier_beats_chance_clearly():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(len(CLASSES)), 12)
    x = np.array([_colour_features(render_lesion(CLASSES[k], rng, 64)) for k in labels])
    x = (x - x.mean(0)) / x.std(0)
    pred = cross_val_predict(LinearDiscriminantAnalysis(), x, labels,
                             cv=StratifiedKFold(4, shuffle=True, random_state=0))
    assert balanced_accuracy_score(labels, pred) > 3 / len(CLASSES)  # 3x chance


def test_the_same_lesion_photographed_twice_differs_only_in_the_photograph():
    rng = np.random.default_rng(2)
    params = sample_lesion("VASC", rng)
    first, second = draw_lesion(params, rng, 96), draw_lesion(params, rng, 96)
    assert first.size == second.size == (96, 72)
    assert not np.array_equal(np.asarray(first), np.asarray(second))
    assert _measures(first)[0] == pytest.approx(_measures(second)[0], abs=0.08)
    with pytest.raises(ValueError, match="unknown class"):
        sample_lesion("UNK", rng)


def test_refuses_to_overwrite_other_data_but_replaces_its_own(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "ISIC_2019_Training_GroundTruth.csv").write_text("precious\n")
    with pytest.raises(DataError, match="not empty"):
        write_synthetic_dataset(real, n=8, width=32)
    assert (real / "ISIC_2019_Training_GroundTruth.csv").read_text() == "precious\n"
    mine = write_synthetic_dataset(tmp_path / "mine", n=20, width=32)
    write_synthetic_dataset(mine, n=10, width=32)
    assert len(list((mine / "ISIC_2019_Training_Input").iterdir())) == 10
    assert len(read_dataset(mine)) == 10


def test_cli_synth_writes_a_dataset(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n", "12",
                                      "--seed", "3", "--size", "40"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "s")
    assert len(read_dataset(tmp_path / "s")) == 12
