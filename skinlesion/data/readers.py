"""Read published dermoscopy datasets, laid out as they are published, into the dataset table.

The dataset table (the contract every layer above relies on) has one row per image:

============================  ==================================================================
``image``                     image id (file name without extension), e.g. ``ISIC_0024306``
``path``                      absolute path of the image file (checked to exist, never opened)
``diagnosis``                 one of :data:`~skinlesion.schema.CLASSES`; NaN without ground truth
``age_approx``                float years, NaN = missing, capped at 85
``sex``                       male / female / missing
``anatom_site_general``       the ISIC 2019 site vocabulary, ``missing`` for blanks
``lesion_id``                 lesion the image shows (the image id when the dataset has none)
============================  ==================================================================

Layouts:

- **ISIC 2019** — ``ISIC_2019_Training_Input/<image>.jpg``, ``ISIC_2019_Training_GroundTruth.csv``
  (one-hot ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``) and ``ISIC_2019_Training_Metadata.csv``
  (``image,age_approx,anatom_site_general,lesion_id,sex``; ``lesion_id`` is absent from some
  releases). The test release (``ISIC_2019_Test_Input/``, ``ISIC_2019_Test_Metadata.csv``, ground
  truth optional) is read the same way, with NaN diagnoses when it has no ground-truth file.
- **HAM10000** — ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,dx_type,age,sex,localization``)
  with the images in ``HAM10000_images_part_1/``, ``HAM10000_images_part_2/`` and/or ``images/``.
  Diagnosis codes, sex and body sites are mapped to the ISIC 2019 vocabulary by the explicit tables
  :data:`HAM_DX` and :data:`HAM_SITES`; any other value is an error, never a silent guess.

Every problem raises :class:`~skinlesion.errors.DataError` (or its :class:`MetadataError` subclass)
naming the file, the 1-based data row and the field. Reading never decodes an image (it lists each
image folder once to check that the files exist), so 8,047 images read in about a quarter second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.data.isic_csv import read_ground_truth_csv
from skinlesion.data.metadata import clean_column, clean_metadata
from skinlesion.errors import DataError, MetadataError
from skinlesion.schema import CLASSES, MISSING

#: Columns of the dataset table, in order.
COLUMNS: tuple[str, ...] = (
    "image", "path", "diagnosis", "age_approx", "sex", "anatom_site_general", "lesion_id")
FORMATS: tuple[str, ...] = ("isic2019", "ham10000")
#: Image file extensions looked for, in order of preference.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")

#: ISIC 2019 releases: the folder/file prefix of each, training first.
ISIC_PARTS: tuple[str, ...] = ("ISIC_2019_Training", "ISIC_2019_Test")

HAM_METADATA = "HAM10000_metadata.csv"
HAM_IMAGE_DIRS: tuple[str, ...] = ("HAM10000_images_part_1", "HAM10000_images_part_2", "images")
#: HAM10000 ``dx`` codes -> ISIC 2019 classes ("akiec" covers actinic keratoses and Bowen's disease,
#: which ISIC 2019 files under AK). HAM10000 has no SCC images.
HAM_DX: dict[str, str] = {"mel": "MEL", "nv": "NV", "bcc": "BCC", "akiec": "AK", "bkl": "BKL",
                          "df": "DF", "vasc": "VASC"}
#: HAM10000 ``localization`` -> ISIC 2019 ``anatom_site_general``. Choices that are judgement calls:
#:
#: - ``trunk`` -> missing: HAM10000 uses it when front/back was not recorded, and guessing "anterior"
#:   would plant a wrong value; ISIC's own release of these images leaves it blank too (its site
#:   counts match HAM10000 with trunk and unknown blank).
#: - ``hand``/``foot`` -> upper/lower extremity and only ``acral`` -> palms/soles: HAM10000 marks
#:   palmar/plantar skin as "acral" separately, so hand/foot is most often dorsal skin (again matching
#:   the ISIC release, which has palms/soles only for the few acral images).
#: - ``genital`` -> oral/genital, the vocabulary's own category (ISIC's release seems to leave these
#:   few images blank; we keep the information).
HAM_SITES: dict[str, str] = {
    "abdomen": "anterior torso",
    "chest": "anterior torso",
    "back": "posterior torso",
    "trunk": MISSING,
    "upper extremity": "upper extremity",
    "hand": "upper extremity",
    "lower extremity": "lower extremity",
    "foot": "lower extremity",
    "acral": "palms/soles",
    "face": "head/neck",
    "scalp": "head/neck",
    "ear": "head/neck",
    "neck": "head/neck",
    "genital": "oral/genital",
    "unknown": MISSING,
}
#: HAM10000 ``sex`` values besides the ISIC ones: "unknown" is a missing value.
HAM_SEX: dict[str, str] = {"male": "male", "female": "female", "unknown": MISSING}

_ISIC_LAYOUT = ("ISIC_2019_Training_Input/<image>.jpg, ISIC_2019_Training_GroundTruth.csv and "
                "ISIC_2019_Training_Metadata.csv (or the ISIC_2019_Test_ files)")
_HAM_LAYOUT = (f"{HAM_METADATA} with the images in {'/, '.join(HAM_IMAGE_DIRS)}/")
_SHOW = 5


def _few(items: Sequence[object]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def read_dataset(root: Path | str, format: str = "auto") -> pd.DataFrame:  # noqa: A002 (contract)
    """The dataset table of the dataset in ``root``; ``format`` is "auto" (detect the layout),
    "isic2019" or "ham10000"."""
    fmt = detect_format(root) if format == "auto" else format
    if fmt == "isic2019":
        return read_isic2019(root)
    if fmt == "ham10000":
        return read_ham10000(root)
    raise DataError(f"unknown dataset format {format!r}; use auto, {', '.join(FORMATS)}",
                    field="format")


def detect_format(root: Path | str) -> str:
    """"ham10000" or "isic2019" from the files in ``root``; DataError naming both layouts else."""
    folder = _folder(root)
    if (folder / HAM_METADATA).is_file():
        return "ham10000"
    isic_names = {f"{part}{suffix}" for part in ISIC_PARTS
                  for suffix in ("_Input", "_GroundTruth.csv", "_Metadata.csv")}
    if any((folder / name).exists() for name in isic_names):
        return "isic2019"
    raise DataError(f"no known dataset layout here; expected ISIC 2019 ({_ISIC_LAYOUT}) or "
                    f"HAM10000 ({_HAM_LAYOUT})", source=str(folder))


def read_isic2019(root: Path | str) -> pd.DataFrame:
    """Read an ISIC 2019 release (training, or test: with or without ground truth).

    With a ground-truth file its rows define the images and the metadata file must list exactly the
    same images; without one (test release) the metadata file defines them and ``diagnosis`` is NaN.
    UNK rows and rows without exactly one diagnosis are errors (the classifier has no "unknown")."""
    folder = _folder(root)
    part = next((p for p in ISIC_PARTS if (folder / f"{p}_Input").is_dir()), None)
    if part is None:
        raise DataError(f"no ISIC_2019_Training_Input/ (or ISIC_2019_Test_Input/) image folder; "
                        f"expected the ISIC 2019 layout: {_ISIC_LAYOUT}", source=str(folder))
    truth_path = folder / f"{part}_GroundTruth.csv"
    meta_path = folder / f"{part}_Metadata.csv"
    if not meta_path.is_file():
        raise DataError(f"missing {meta_path.name} (the metadata file of the release); expected the "
                        f"ISIC 2019 layout: {_ISIC_LAYOUT}", source=str(folder))
    meta = _read_csv(meta_path, required=("image", "age_approx", "anatom_site_general", "sex"))
    meta_images = _ids(meta["image"], str(meta_path), "image")
    clean = clean_metadata(meta, source=str(meta_path))  # in file order: errors name file rows
    clean["lesion_id"] = meta["lesion_id"] if "lesion_id" in meta.columns else ""
    if truth_path.is_file():
        images, y = read_ground_truth_csv(truth_path)
        diagnosis = np.asarray(CLASSES, dtype=object)[y]
        _same_images(images, meta_images, truth_path, meta_path)
        clean = clean.iloc[pd.Index(meta_images).get_indexer(images)]
        rows_source = truth_path
    elif part == "ISIC_2019_Training":
        raise DataError(f"missing {truth_path.name}; the training layout needs its ground truth "
                        f"({_ISIC_LAYOUT}); an unlabelled set uses the ISIC_2019_Test_ names",
                        source=str(folder))
    else:
        images, diagnosis, rows_source = meta_images, np.full(len(meta_images), np.nan), meta_path
    paths = _image_paths(images, [folder / f"{part}_Input"], rows_source)
    return _table(images, paths, diagnosis, clean)


def read_ham10000(root: Path | str) -> pd.DataFrame:
    """Read a HAM10000 release: ``dx``, ``sex`` and ``localization`` are mapped to the ISIC 2019
    vocabulary by :data:`HAM_DX`, :data:`HAM_SEX` and :data:`HAM_SITES`; other values are errors."""
    folder = _folder(root)
    meta_path = folder / HAM_METADATA
    source = str(meta_path)
    if not meta_path.is_file():
        raise DataError(f"missing {HAM_METADATA}; expected the HAM10000 layout: {_HAM_LAYOUT}",
                        source=str(folder))
    meta = _read_csv(meta_path, required=("lesion_id", "image_id", "dx", "age", "sex",
                                          "localization"))
    images = _ids(meta["image_id"], source, "image_id")
    diagnosis = _map_column(meta["dx"], HAM_DX, source, "dx", what="diagnosis code")
    clean = pd.DataFrame({
        "age_approx": clean_column(meta["age"], "age_approx", source=source, column="age"),
        "sex": _map_column(meta["sex"], HAM_SEX, source, "sex", what="sex", blank=MISSING),
        "anatom_site_general": _map_column(meta["localization"], HAM_SITES, source, "localization",
                                           what="localization", blank=MISSING),
        "lesion_id": meta["lesion_id"],
    })
    dirs = [folder / d for d in HAM_IMAGE_DIRS if (folder / d).is_dir()]
    if not dirs:
        raise DataError(f"no image folder ({', '.join(d + '/' for d in HAM_IMAGE_DIRS)}) next to "
                        f"{HAM_METADATA}; expected the HAM10000 layout: {_HAM_LAYOUT}",
                        source=str(folder))
    paths = _image_paths(images, dirs, meta_path, field="image_id")
    return _table(images, paths, diagnosis, clean)


def _folder(root: Path | str) -> Path:
    folder = Path(root).expanduser().absolute()
    if not folder.is_dir():
        raise DataError("dataset folder not found; check the path", source=str(folder))
    return folder


def _read_csv(path: Path, *, required: Sequence[str]) -> pd.DataFrame:
    """The CSV as stripped strings ("" for blanks); DataError when unreadable or missing columns."""
    source = str(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"the file is empty; expected the header {','.join(required)},...",
                        source=source) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"not a readable CSV file ({err}); save it as UTF-8 comma-separated text",
                        source=source) from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; the header needs "
                        f"{','.join(required)}", source=source, field=missing[0])
    return table.apply(lambda col: col.str.strip())


def _ids(values: pd.Series, source: str, field: str) -> list[str]:
    """Image ids: none blank, none repeated."""
    blank = np.flatnonzero(values.eq("").to_numpy())
    if blank.size:
        raise DataError("empty image id; every row needs one", source=source,
                        row=int(blank[0]) + 1, field=field)
    repeated = values.duplicated()
    if repeated.any():
        first = int(np.flatnonzero(repeated.to_numpy())[0])
        dupes = values[repeated].unique().tolist()
        raise DataError(f"image id(s) {_few(dupes)} appear more than once; each image needs exactly "
                        "one row", source=source, row=first + 1, field=field)
    return values.tolist()


def _same_images(truth: list[str], meta: list[str], truth_path: Path, meta_path: Path) -> None:
    """The ground truth and metadata files must describe the same images."""
    meta_set, truth_set = set(meta), set(truth)
    no_meta = [i for i in truth if i not in meta_set]
    if no_meta:
        row = truth.index(no_meta[0]) + 1
        raise DataError(f"{len(no_meta)} image(s) of the ground truth have no row in "
                        f"{meta_path.name}: {_few(no_meta)}; use the metadata file of the same "
                        "release", source=str(truth_path), row=row, field="image")
    no_truth = [i for i in meta if i not in truth_set]
    if no_truth:
        row = meta.index(no_truth[0]) + 1
        raise DataError(f"{len(no_truth)} image(s) have metadata but no ground truth in "
                        f"{truth_path.name}: {_few(no_truth)}; use the ground truth of the same "
                        "release", source=str(meta_path), row=row, field="image")


def _map_column(values: pd.Series, mapping: dict[str, str], source: str, field: str, *, what: str,
                blank: str | None = None) -> np.ndarray:
    """``values`` (lower-cased) through ``mapping``; blanks become ``blank`` (an error when None)."""
    keys = values.str.lower()
    mapped = keys.map(mapping)
    bad = mapped.isna() if blank is None else mapped.isna() & keys.ne("")
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        value = values.iloc[first]
        shown = "missing value" if value == "" else f"unknown {what} {value!r}"
        raise MetadataError(f"{shown}; allowed: {', '.join(mapping)}"
                            + (" (or empty)" if blank is not None else ""),
                            source=source, row=first + 1, field=field)
    return mapped.fillna(blank if blank is not None else "").to_numpy(dtype=object)


def _image_paths(images: Iterable[str], folders: Sequence[Path], rows_source: Path, *,
                 field: str = "image") -> list[str]:
    """Absolute path of each image's file, looked up in ``folders`` (one directory listing each)."""
    images = list(images)
    if not images:
        raise DataError("the file lists no images (only a header); use the release's complete file",
                        source=str(rows_source))
    rank = {ext: k for k, ext in enumerate(IMAGE_EXTENSIONS)}
    best: dict[str, tuple[int, str]] = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                r = rank.get(ext.lower())
                if r is not None and (stem not in best or r < best[stem][0]) and entry.is_file():
                    best[stem] = (r, os.path.join(folder, entry.name))
    found = {stem: path for stem, (_, path) in best.items()}
    missing = [(k, i) for k, i in enumerate(images) if i not in found]
    if missing:
        where = " or ".join(f"{f.name}/" for f in folders)
        names = [i for _, i in missing]
        raise DataError(f"{len(missing)} image file(s) not found in {where}: {_few(names)} "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)}); unpack all image archives of "
                        "the release into the layout folder", source=str(rows_source),
                        row=missing[0][0] + 1, field=field)
    return [found[i] for i in images]


def _table(images: list[str], paths: list[str], diagnosis: object, clean: pd.DataFrame
           ) -> pd.DataFrame:
    """Assemble the dataset table; ``clean`` holds the validated metadata and raw ``lesion_id``."""
    image = np.asarray(images, dtype=object)
    lesion = clean["lesion_id"].to_numpy(dtype=object)
    return pd.DataFrame({
        "image": image,
        "path": paths,
        "diagnosis": pd.Series(diagnosis, dtype=object).to_numpy(),
        "age_approx": clean["age_approx"].to_numpy(dtype=np.float64),
        "sex": clean["sex"].to_numpy(dtype=object),
        "anatom_site_general": clean["anatom_site_general"].to_numpy(dtype=object),
        "lesion_id": np.where(lesion == "", image, lesion),
    }, columns=list(COLUMNS))
