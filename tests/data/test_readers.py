"""skinlesion.data.readers: ISIC 2019 and HAM10000 layouts into the dataset table, and the errors
that name the file, the row and the field."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion.data.readers import (
    COLUMNS, HAM_SITES, detect_format, read_dataset, read_ham10000, read_isic2019)
from skinlesion.data.synthetic import class_counts
from skinlesion.errors import DataError, MetadataError
from skinlesion.schema import CLASSES, SEXES, SITES

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isic2019-ham-train"
GT = "ISIC_2019_Training_GroundTruth.csv"
META = "ISIC_2019_Training_Metadata.csv"
HEADER = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"


def _one_hot(label: str) -> str:
    return ",".join("1.0" if c == label else "0.0" for c in (*CLASSES, "UNK"))


def _isic(root: Path, *, truth: list[str] | None = None, meta: list[str] | None = None,
          images: tuple[str, ...] = ("ISIC_1", "ISIC_2", "ISIC_3"), part: str = "Training"
          ) -> Path:
    """A tiny ISIC 2019 layout; image files are placeholders (readers never open them)."""
    (root / f"ISIC_2019_{part}_Input").mkdir(parents=True)
    for image in images:
        (root / f"ISIC_2019_{part}_Input" / f"{image}.jpg").write_bytes(b"jpeg")
    if truth is None:
        truth = [f"ISIC_1,{_one_hot('MEL')}", f"ISIC_2,{_one_hot('NV')}", f"ISIC_3,{_one_hot('DF')}"]
    if truth:
        (root / f"ISIC_2019_{part}_GroundTruth.csv").write_text("\n".join([HEADER, *truth]) + "\n")
    if meta is None:
        meta = ["ISIC_1,55.0,anterior torso,LES_1,male",
                "ISIC_2,30.0,lower extremity,LES_1,female",
                "ISIC_3,,,,"]
    (root / f"ISIC_2019_{part}_Metadata.csv").write_text(
        "\n".join(["image,age_approx,anatom_site_general,lesion_id,sex", *meta]) + "\n")
    return root


def test_synthetic_dataset_round_trips(synthetic_dir, synthetic_df):
    df = synthetic_df
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 64 and df["image"].is_unique
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    assert df["diagnosis"].value_counts().to_dict() == {c: n for c, n in class_counts(64).items()}
    assert df["sex"].isin(SEXES).all() and df["anatom_site_general"].isin(SITES).all()
    assert df["age_approx"].dropna().between(0, 85).all()
    truth = pd.read_csv(synthetic_dir / GT).set_index("image")
    assert (truth.loc[df["image"], list(CLASSES)].idxmax(axis=1).to_numpy()
            == df["diagnosis"].to_numpy()).all()
    meta = pd.read_csv(synthetic_dir / META).set_index("image")
    assert (meta.loc[df["image"], "lesion_id"].to_numpy() == df["lesion_id"].to_numpy()).all()
    assert df["lesion_id"].nunique() < len(df)  # some lesions photographed twice
    assert detect_format(synthetic_dir) == "isic2019"
    assert read_dataset(synthetic_dir, format="isic2019").equals(df)


def test_isic_table_values(tmp_path):
    df = read_isic2019(_isic(tmp_path))
    assert df["image"].tolist() == ["ISIC_1", "ISIC_2", "ISIC_3"]
    assert df["diagnosis"].tolist() == ["MEL", "NV", "DF"]
    assert df["age_approx"].iloc[0] == 55.0 and math.isnan(df["age_approx"].iloc[2])
    assert df["sex"].tolist() == ["male", "female", "missing"]
    assert df["anatom_site_general"].tolist() == ["anterior torso", "lower extremity", "missing"]
    assert df["lesion_id"].tolist() == ["LES_1", "LES_1", "ISIC_3"]  # blank -> the image id
    assert df["path"].iloc[1] == str(tmp_path / "ISIC_2019_Training_Input" / "ISIC_2.jpg")


def test_rows_follow_the_ground_truth_when_files_are_in_different_orders(tmp_path):
    meta = ["ISIC_3,70,head/neck,L3,male", "ISIC_1,55,anterior torso,L1,male",
            "ISIC_2,30,,L2,female"]
    df = read_isic2019(_isic(tmp_path, meta=meta))
    assert df["image"].tolist() == ["ISIC_1", "ISIC_2", "ISIC_3"]
    assert df["lesion_id"].tolist() == ["L1", "L2", "L3"]
    assert df["age_approx"].tolist() == [55.0, 30.0, 70.0]


def test_release_without_lesion_id_uses_image_ids_and_ages_are_capped(tmp_path):
    root = _isic(tmp_path)
    (root / META).write_text("image,age_approx,anatom_site_general,sex\n"
                             "ISIC_1,90,oral/genital,male\nISIC_2,85,palms/soles,\n"
                             "ISIC_3,0,lateral torso,female\n")
    df = read_dataset(root)
    assert df["lesion_id"].tolist() == df["image"].tolist()
    assert df["age_approx"].tolist() == [85.0, 85.0, 0.0]


def test_test_release_without_ground_truth_has_no_diagnoses(tmp_path):
    root = _isic(tmp_path, truth=[], part="Test")
    df = read_dataset(root)
    assert len(df) == 3 and df["diagnosis"].isna().all()
    assert df["path"].str.contains("ISIC_2019_Test_Input").all()


def _error(root: Path, expected: type[DataError] = DataError) -> DataError:
    with pytest.raises(expected) as info:
        read_dataset(root)
    return info.value


@pytest.mark.parametrize("row, label_cells, words", [
    (2, "0.0,1.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0", "2 diagnoses"),
    (3, "0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0", "0 diagnoses"),
    (1, "0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0", "UNK"),
    (2, "0.0,0.5,0.0,0.0,0.5,0.0,0.0,0.0,0.0", "0 or 1"),
])
def test_bad_ground_truth_rows_are_named(tmp_path, row, label_cells, words):
    truth = [f"ISIC_1,{_one_hot('MEL')}", f"ISIC_2,{_one_hot('NV')}", f"ISIC_3,{_one_hot('DF')}"]
    truth[row - 1] = f"ISIC_{row},{label_cells}"
    err = _error(_isic(tmp_path, truth=truth))
    assert err.source == str(tmp_path / GT) and err.row == row
    assert words in str(err)


@pytest.mark.parametrize("row, cells, field, words", [
    (2, "ISIC_2,30,lower extremity,L,robot", "sex", "'robot'; allowed: male, female"),
    (3, "ISIC_3,40,armpit,L,", "anatom_site_general", "allowed: anterior torso"),
    (1, "ISIC_1,130,,L,male", "age_approx", "between 0 and 120"),
    (1, "ISIC_1,-5,,L,male", "age_approx", "between 0 and 120"),
    (3, "ISIC_3,forty,,L,male", "age_approx", "number"),
])
def test_bad_metadata_values_are_named(tmp_path, row, cells, field, words):
    meta = ["ISIC_1,55,anterior torso,L,male", "ISIC_2,30,,L,female", "ISIC_3,,,,"]
    meta[row - 1] = cells
    err = _error(_isic(tmp_path, meta=meta), MetadataError)
    assert (err.source, err.row, err.field) == (str(tmp_path / META), row, field)
    assert words in str(err)


def test_missing_image_file_is_named(tmp_path):
    err = _error(_isic(tmp_path, images=("ISIC_1", "ISIC_3")))
    assert (err.source, err.row, err.field) == (str(tmp_path / GT), 2, "image")
    assert "ISIC_2" in str(err) and "ISIC_2019_Training_Input" in str(err)


def test_metadata_and_ground_truth_must_list_the_same_images(tmp_path):
    err = _error(_isic(tmp_path, meta=["ISIC_1,55,,L,male", "ISIC_3,,,,"]))
    assert (err.source, err.row, err.field) == (str(tmp_path / GT), 2, "image")
    assert "ISIC_2" in str(err)


def test_duplicate_image_rows_are_refused(tmp_path):
    meta = ["ISIC_1,55,,L,male", "ISIC_2,30,,L,female", "ISIC_3,,,,", "ISIC_2,30,,L,female"]
    err = _error(_isic(tmp_path, meta=meta))
    assert (err.source, err.row, err.field) == (str(tmp_path / META), 4, "image")


def test_missing_files_say_which_layout_was_expected(tmp_path):
    root = _isic(tmp_path)
    (root / META).unlink()
    err = _error(root)
    assert "ISIC_2019_Training_Metadata.csv" in str(err) and "ISIC_2019_Training_Input" in str(err)
    unlabelled = _isic(tmp_path / "unlabelled", truth=[])
    assert "ISIC_2019_Training_GroundTruth.csv" in str(_error(unlabelled))
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _error(empty)
    assert "ISIC 2019" in str(err) and "HAM10000_metadata.csv" in str(err)
    assert "not found" in str(_error(tmp_path / "absent"))


def test_header_only_files_and_a_byte_order_mark(tmp_path):
    root = _isic(tmp_path, truth=[], meta=[], part="Test")
    err = _error(root)
    assert "no images" in str(err) and err.source == str(root / "ISIC_2019_Test_Metadata.csv")
    meta = root / "ISIC_2019_Test_Metadata.csv"
    meta.write_text("\ufeffimage,age_approx,anatom_site_general,sex\nISIC_1,50,,\n",
                    encoding="utf-8")  # saved by a spreadsheet program
    assert read_dataset(root)["image"].tolist() == ["ISIC_1"]


def test_missing_metadata_column_is_named(tmp_path):
    root = _isic(tmp_path)
    (root / META).write_text("image,age_approx,sex\nISIC_1,55,male\n")
    err = _error(root)
    assert err.field == "anatom_site_general" and err.source == str(root / META)


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(DataError, match="isic2019, ham10000"):
        read_dataset(_isic(tmp_path), format="isic2020")


# --- HAM10000 --------------------------------------------------------------------------------------

HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization,dataset"


def _ham(root: Path, rows: list[str]) -> Path:
    for folder, images in (("HAM10000_images_part_1", ("ISIC_1", "ISIC_2")),
                           ("HAM10000_images_part_2", ("ISIC_3",)), ("images", ("ISIC_4",))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for image in images:
            (root / folder / f"{image}.jpg").write_bytes(b"jpeg")
    (root / "HAM10000_metadata.csv").write_text("\n".join([HAM_HEADER, *rows]) + "\n")
    return root


HAM_ROWS = [
    "HAM_1,ISIC_1,mel,histo,80.0,male,trunk,vidir_modern",
    "HAM_1,ISIC_2,mel,histo,80.0,male,back,vidir_modern",
    "HAM_2,ISIC_3,akiec,histo,,unknown,acral,rosendahl",
    "HAM_3,ISIC_4,nv,follow_up,45.0,female,face,vidir_molemax",
]


def test_ham10000_layout_is_mapped_to_the_isic_vocabulary(tmp_path):
    root = _ham(tmp_path, HAM_ROWS)
    assert detect_format(root) == "ham10000"
    df = read_dataset(root)
    assert list(df.columns) == list(COLUMNS)
    assert df["diagnosis"].tolist() == ["MEL", "MEL", "AK", "NV"]
    assert df["lesion_id"].tolist() == ["HAM_1", "HAM_1", "HAM_2", "HAM_3"]
    assert df["sex"].tolist() == ["male", "male", "missing", "female"]
    assert df["anatom_site_general"].tolist() == ["missing", "posterior torso", "palms/soles",
                                                  "head/neck"]
    assert df["age_approx"].iloc[0] == 80.0 and math.isnan(df["age_approx"].iloc[2])
    assert df["path"].tolist() == [str(root / "HAM10000_images_part_1" / "ISIC_1.jpg"),
                                   str(root / "HAM10000_images_part_1" / "ISIC_2.jpg"),
                                   str(root / "HAM10000_images_part_2" / "ISIC_3.jpg"),
                                   str(root / "images" / "ISIC_4.jpg")]
    assert read_ham10000(root).equals(df)


def test_every_ham_localization_maps_into_the_site_vocabulary():
    assert set(HAM_SITES.values()) <= set(SITES)
    assert HAM_SITES["genital"] == "oral/genital" and HAM_SITES["foot"] == "lower extremity"


@pytest.mark.parametrize("row, cells, field, words", [
    (3, "HAM_2,ISIC_3,scc,histo,70,male,face,x", "dx", "unknown diagnosis code 'scc'"),
    (2, "HAM_1,ISIC_2,mel,histo,80,male,elbow,x", "localization", "unknown localization 'elbow'"),
    (4, "HAM_3,ISIC_4,nv,histo,45,other,face,x", "sex", "unknown sex 'other'"),
    (1, "HAM_1,ISIC_1,mel,histo,150,male,face,x", "age", "between 0 and 120"),
    (1, "HAM_1,ISIC_1,,histo,50,male,face,x", "dx", "missing value"),
])
def test_bad_ham_values_are_named(tmp_path, row, cells, field, words):
    rows = list(HAM_ROWS)
    rows[row - 1] = cells
    err = _error(_ham(tmp_path, rows), MetadataError)
    assert (err.source, err.row, err.field) == (str(tmp_path / "HAM10000_metadata.csv"), row, field)
    assert words in str(err)


def test_ham_missing_image_and_missing_folders_are_named(tmp_path):
    root = _ham(tmp_path, [*HAM_ROWS, "HAM_4,ISIC_9,df,histo,40,male,foot,x"])
    err = _error(root)
    assert (err.row, err.field) == (5, "image_id") and "ISIC_9" in str(err)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "HAM10000_metadata.csv").write_text("\n".join([HAM_HEADER, *HAM_ROWS]) + "\n")
    assert "HAM10000_images_part_1" in str(_error(bare))


# --- the real data ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data not at {REAL_DATA}")
def test_real_isic2019_ham_subset_reads_as_documented():
    df = read_dataset(REAL_DATA)
    assert len(df) == 8047 and df["image"].is_unique
    assert df["diagnosis"].value_counts().to_dict() == {
        "NV": 5404, "BKL": 886, "MEL": 876, "BCC": 397, "SCC": 173, "VASC": 113, "AK": 103, "DF": 95}
    sample = df["path"].sample(50, random_state=0)
    assert all(Path(p).is_file() for p in sample)
    assert df["lesion_id"].str.startswith("HAM_").all() and df["lesion_id"].nunique() < len(df)
    assert df["age_approx"].notna().mean() > 0.98
    assert (df["anatom_site_general"] != "missing").mean() == pytest.approx(0.83, abs=0.01)
    assert np.isin(df["sex"], SEXES).all()
