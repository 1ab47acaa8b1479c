"""The real-image sample the demo ships: ``python -m skinlesion.demo_sample --data DIR --out DIR``.

The lesions of the shipped reference version's test split (the images it never saw in training or
model selection), computed exactly as :mod:`skinlesion.reference` computes it
(:func:`~skinlesion.data.splits.split_dataset`, seed :data:`~skinlesion.reference.SPLIT_SEED`) on the
ISIC 2019 / HAM10000 folder, written in the same ISIC 2019 layout so any reader takes it. Each image
is copied byte for byte (never re-encoded: a re-encoded image would itself look like a new device to
the drift monitor), and the two CSV files keep the source's rows and text as they are. A README
beside the images carries the licence's attribution (CC BY-NC 4.0) and the command that rebuilt it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.reference import SPLIT_SEED

IMAGES = "ISIC_2019_Training_Input"
TRUTH = "ISIC_2019_Training_GroundTruth.csv"
META = "ISIC_2019_Training_Metadata.csv"
#: the demo's default sample, shipped in a source checkout
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
#: the most the shipped sample may weigh (issue 18)
MAX_BYTES = 15 * 1024 * 1024
ATTRIBUTION = """\
Licence and attribution: CC BY-NC 4.0 (non-commercial use, attribution required).
- Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of multi-source
  dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 (2018).
- Codella N. et al. Skin Lesion Analysis Toward Melanoma Detection: A Challenge Hosted by the ISIC
  (ISBI 2018). arXiv:1710.05006; Combalia M. et al. BCN20000: Dermoscopic Lesions in the Wild.
  arXiv:1908.02288 (ISIC 2019).
"""


@dataclass(frozen=True)
class SampleSummary:
    images: int
    lesions: int
    bytes: int
    class_counts: dict[str, int]


def reference_test_rows(df: pd.DataFrame, *, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """The rows of ``df`` (a dataset table) in the reference recipe's test split."""
    return df[split_dataset(df, seed=seed) == "test"]


def write_sample(source: Path, rows: pd.DataFrame, out: Path) -> SampleSummary:
    """Copy the images of ``rows`` (read from ``source``, an ISIC 2019 folder) byte for byte into
    ``out`` (replaced), with their ground-truth and metadata rows unchanged, and a README."""
    source, out = Path(source), Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / IMAGES).mkdir(parents=True)
    for path in rows["path"]:
        shutil.copyfile(path, out / IMAGES / Path(path).name)
    keep = set(rows["image"])
    for name in (TRUTH, META):
        table = pd.read_csv(source / name, dtype=str, keep_default_na=False)
        table[table["image"].isin(keep)].to_csv(out / name, index=False)
    summary = SampleSummary(images=len(rows), lesions=int(rows["lesion_id"].nunique()),
                            bytes=sum(p.stat().st_size for p in (out / IMAGES).iterdir()),
                            class_counts=rows["diagnosis"].value_counts().to_dict())
    (out / "README.md").write_text(readme(summary))
    return summary


def readme(summary: SampleSummary) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in summary.class_counts.items())
    return f"""# The demo's sample of real dermoscopy images

{summary.images} images of {summary.lesions} lesions ({summary.bytes / 2**20:.1f} MiB), the whole test
split of the shipped `reference` version: the ISIC 2019 training set's HAM10000 subset (200x150),
split by lesion with `skinlesion.data.splits.split_dataset(df, seed={SPLIT_SEED})` as
`skinlesion/reference.py` does, so the reference model never saw these lesions in training or
model selection. Class counts: {counts}.

`make run` (`skinlesion demo`) sends them through the reference model as 30 days of simulated clinic
traffic, with a simulated incident (a new imaging device, an older patient mix) in the last week.
The images are the source files byte for byte and the CSV rows are unchanged (ISIC 2019 layout).
Not for clinical use.

Rebuild from the data folder: `make demo-sample` (`python -m skinlesion.demo_sample --data
../shared/data/isic2019-ham-train --out data/sample`).

{ATTRIBUTION}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="the ISIC 2019 / HAM10000 folder the reference was trained on")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    args = parser.parse_args(argv)
    rows = reference_test_rows(read_dataset(args.data))
    summary = write_sample(args.data, rows, args.out)
    print(f"{summary.images} images of {summary.lesions} lesions, {summary.bytes / 2**20:.1f} MiB "
          f"-> {args.out}")
    if summary.bytes > MAX_BYTES:
        print(f"error: the sample weighs more than {MAX_BYTES / 2**20:.0f} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
