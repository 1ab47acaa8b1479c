"""The demo's shipped sample of real images: the reference's test split, byte for byte, attributed,
small; and how the demo serves it (original bytes outside the incident, natural class mix, only
images the model never trained or selected on)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from skinlesion.cli.apps import available_port
from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.demo import (DEMO_MIN_LABELS, class_mix, dataset_cases, demo_thresholds,
                             natural_mix, shifted, unseen_rows)
from skinlesion.demo_sample import MAX_BYTES, SAMPLE_DIR, reference_test_rows, write_sample
from skinlesion.errors import DataError
from skinlesion.monitoring.policy import load_policy
from skinlesion.schema import CLASSES
from skinlesion.thresholds import Status, status

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2019-ham-train"


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_the_sample_is_the_test_split_copied_byte_for_byte(synthetic_dir, synthetic_df, tmp_path):
    rows = reference_test_rows(synthetic_df)
    assert set(rows.index) == set(synthetic_df.index[split_dataset(synthetic_df) == "test"])
    summary = write_sample(synthetic_dir, rows, tmp_path / "sample")
    copied = read_dataset(tmp_path / "sample")
    assert sorted(copied["image"]) == sorted(rows["image"])
    assert summary.images == len(rows) and sum(summary.class_counts.values()) == len(rows)
    for (_, src), (_, dst) in zip(rows.sort_values("image").iterrows(),
                                  copied.sort_values("image").iterrows(), strict=True):
        assert _sha(src["path"]) == _sha(dst["path"])
    for name in ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"):
        source = pd.read_csv(synthetic_dir / name, dtype=str, keep_default_na=False)
        written = pd.read_csv(tmp_path / "sample" / name, dtype=str, keep_default_na=False)
        expected = source[source["image"].isin(rows["image"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(written, expected)
    readme = (tmp_path / "sample" / "README.md").read_text()
    assert "CC BY-NC 4.0" in readme and "Tschandl" in readme and "make demo-sample" in readme


@pytest.mark.skipif(not (SAMPLE_DIR / "README.md").is_file(), reason="no shipped sample here")
def test_the_shipped_sample_is_small_attributed_and_readable():
    images = list((SAMPLE_DIR / "ISIC_2019_Training_Input").glob("*.jpg"))
    assert 0 < sum(p.stat().st_size for p in images) <= MAX_BYTES
    assert "CC BY-NC 4.0" in (SAMPLE_DIR / "README.md").read_text()
    assert len(read_dataset(SAMPLE_DIR)) == len(images)


@pytest.mark.skipif(not REAL_DATA.is_dir() or not (SAMPLE_DIR / "README.md").is_file(),
                    reason="needs the real data folder and the shipped sample")
def test_the_shipped_sample_is_the_reference_recipes_test_split():
    expected = reference_test_rows(read_dataset(REAL_DATA))
    shipped = read_dataset(SAMPLE_DIR).set_index("image")
    assert sorted(shipped.index) == sorted(expected["image"])
    for _, row in expected.head(50).iterrows():
        assert _sha(row["path"]) == _sha(shipped.loc[row["image"], "path"])


def test_demo_serves_original_bytes_outside_the_incident(synthetic_df):
    draw = dataset_cases(synthetic_df)
    image, meta = draw("MEL", np.random.default_rng(0))
    assert isinstance(image, bytes) and set(meta) == {"age_approx", "sex", "anatom_site_general"}
    assert shifted(image, 0.0) is image
    assert not isinstance(shifted(image, 0.8), bytes)


def test_natural_mix_draws_each_image_equally_often_before_the_incident(synthetic_df):
    mix = natural_mix(synthetic_df)
    p = class_mix(0.0, mix)
    shares = synthetic_df["diagnosis"].value_counts(normalize=True)
    assert np.allclose(p, [shares.get(c, 0.0) for c in CLASSES])
    older = class_mix(1.0, mix)
    assert older[CLASSES.index("BCC")] > p[CLASSES.index("BCC")]


def test_only_images_the_model_never_trained_or_selected_on_are_served(synthetic_df):
    split = split_dataset(synthetic_df)
    manifest = pd.DataFrame({"image": synthetic_df["image"], "split": split})
    served = unseen_rows(synthetic_df, manifest)
    assert set(served["image"]) == set(synthetic_df.loc[split == "test", "image"])
    with pytest.raises(DataError, match="make demo-sample"):
        unseen_rows(synthetic_df[split == "train"], manifest)


def test_a_taken_port_is_replaced_by_a_free_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = available_port("127.0.0.1", taken)
    assert other != taken
    assert available_port("127.0.0.1", other) == other


def test_demo_policy_bands_what_the_version_misses_around_its_validation_value(tmp_path):
    card = SimpleNamespace(id="reference", metrics={"val": {"precision": 0.557, "recall": 0.90,
                                                            "fnr": 0.16, "accuracy": 0.842}})
    text = demo_thresholds(card, load_policy(None))
    path = tmp_path / "thresholds.toml"
    path.write_text(text)
    policy = load_policy(path)
    assert (policy.thresholds["precision"].green, policy.thresholds["precision"].red) == (0.507, 0.457)
    assert (policy.thresholds["fnr"].green, policy.thresholds["fnr"].red) == (0.21, 0.26)
    assert status(0.557, policy.thresholds["precision"]) is Status.GREEN
    assert status(0.40, policy.thresholds["precision"]) is Status.RED
    assert policy.thresholds["recall"] == load_policy(None).thresholds["recall"]  # met: kept
    assert policy.thresholds["accuracy"].red == 0.742  # never stricter than the clinic's bound
    assert "clinic: green 0.8" in text
    assert policy.min_labels == DEMO_MIN_LABELS > load_policy(None).min_labels
