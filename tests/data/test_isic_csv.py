"""ISIC challenge CSV files: round trip, the UNK column, and errors naming file, row and fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion.data.isic_csv import (
    align_to_truth,
    read_ground_truth_csv,
    read_predictions_csv,
    write_predictions_csv,
)
from skinlesion.errors import DataError
from skinlesion.schema import CLASSES

HEADER = "image," + ",".join(CLASSES)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_predictions_round_trip_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), 6)
    probs[0] = np.eye(8)[2]  # exact zeros and ones stay floats
    images = [f"ISIC_{i:07d}" for i in range(6)]
    out = write_predictions_csv(tmp_path / "sub" / "preds.csv", images, probs)
    assert out.read_text().splitlines()[0] == HEADER
    assert out.read_text().splitlines()[1].startswith("ISIC_0000000,0.0,0.0,1.0,")
    got_images, got = read_predictions_csv(out)
    assert got_images == images
    assert np.array_equal(got, probs)


def test_predictions_columns_may_come_in_any_order_and_jpg_is_dropped(tmp_path: Path) -> None:
    cols = list(reversed(CLASSES))
    row = {c: 0.0 for c in cols} | {"MEL": 0.75, "NV": 0.25}
    text = "image," + ",".join(cols) + "\nISIC_1.jpg," + ",".join(str(row[c]) for c in cols) + "\n"
    images, probs = read_predictions_csv(write(tmp_path / "p.csv", text))
    assert images == ["ISIC_1"]
    assert probs[0, CLASSES.index("MEL")] == 0.75 and probs[0, CLASSES.index("NV")] == 0.25


@pytest.mark.parametrize(("text", "match"), [
    ("image,MEL,NV\nA,0.5,0.5\n", "missing column.*BCC"),
    (HEADER + ",EXTRA\nA,1,0,0,0,0,0,0,0,7\n", "unexpected column.*EXTRA"),
    (HEADER + "\nA,1,0,0,0,0,0,0,0\nA,1,0,0,0,0,0,0,0\n", "duplicate image ids A"),
    (HEADER + "\nA,1,0,0,0,0,0,0,0\nB,0.5,0.6,0,0,0,0,0,0\n", "row 2.*sum to 1.1"),
    (HEADER + "\nA,1,0,0,0,0,0,0,0\nB,abc,1,0,0,0,0,0,0\n", "row 2, field 'MEL'.*'abc' is not a number"),
    (HEADER + "\nA,1,0,0,0,,0,0,0\n", "row 1, field 'BKL'.*missing value"),
    (HEADER + "\nA,1.5,-0.5,0,0,0,0,0,0\n", r"\[0, 1\]"),
    ("", "empty"),
])
def test_bad_prediction_files_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=match) as info:
        read_predictions_csv(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_predictions_csv(tmp_path / "nope.csv")


def test_ground_truth_with_unk_column(tmp_path: Path) -> None:
    text = (HEADER + ",UNK\n"
            "ISIC_1,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
            "ISIC_2,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n")
    images, y = read_ground_truth_csv(write(tmp_path / "gt.csv", text))
    assert images == ["ISIC_1", "ISIC_2"]
    assert y.tolist() == [CLASSES.index("NV"), CLASSES.index("SCC")]


@pytest.mark.parametrize(("rows", "match"), [
    (["A,0,1,0,0,0,0,0,0,0", "B,0,0,0,0,0,0,0,0,1"], "row 2, field 'UNK'.*image B is labelled UNK"),
    (["A,0,1,0,0,0,0,0,0,0", "B,1,1,0,0,0,0,0,0,0"], "row 2.*image B has 2 diagnoses"),
    (["A,0,0,0,0,0,0,0,0,0"], "row 1.*has 0 diagnoses"),
    (["A,0,0.7,0,0,0,0,0,0,0"], "row 1.*must be 0 or 1"),
])
def test_bad_ground_truth_rows_are_named(tmp_path: Path, rows: list[str], match: str) -> None:
    path = write(tmp_path / "gt.csv", HEADER + ",UNK\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=match) as info:
        read_ground_truth_csv(path)
    assert str(path) in str(info.value)


def test_align_to_truth_reorders_and_names_unmatched_images() -> None:
    probs = np.eye(8)[:3]
    aligned = align_to_truth(["c", "a", "b"], ["a", "b", "c"], probs)
    assert aligned.argmax(1).tolist() == [2, 0, 1]
    with pytest.raises(DataError, match="2 image.*no ground truth.*x, y"):
        align_to_truth(["a"], ["a", "x", "y"], np.eye(8)[:3])
    with pytest.raises(DataError, match="1 image.*no prediction: b"):
        align_to_truth(["a", "b"], ["a"], np.eye(8)[:1])


def test_written_file_is_accepted_by_pandas_as_floats(tmp_path: Path) -> None:
    # the official scorer rejects columns pandas does not parse as float64
    path = write_predictions_csv(tmp_path / "p.csv", ["A", "B"], np.tile(np.eye(8)[1], (2, 1)))
    assert (pd.read_csv(path).drop(columns="image").dtypes == np.float64).all()


def test_write_rejects_duplicates_and_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="duplicate image ids A"):
        write_predictions_csv(tmp_path / "p.csv", ["A", "A"], np.tile(np.eye(8)[0], (2, 1)))
    with pytest.raises(ValueError, match="2 images but 1 rows"):
        write_predictions_csv(tmp_path / "p.csv", ["A", "B"], np.eye(8)[:1])
