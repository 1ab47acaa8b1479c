"""CLI: `skinlesion models diff A B` names the images two versions' training data differ by."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from skinlesion import registry
from skinlesion.cli import app
from tests.standins import STANDIN_KIND, STANDIN_PATH, BrightnessClassifier

runner = CliRunner()


def _version(models_dir, version_id: str, rows: list[tuple[str, str, str, str]]) -> None:
    """A stand-in version trained on ``rows`` of (image, sha256, diagnosis, split)."""
    image, sha, diagnosis, split = map(list, zip(*rows, strict=True))
    manifest = registry.build_manifest(
        pd.DataFrame({"image": image, "lesion_id": image, "diagnosis": diagnosis}),
        pd.Series(split), pd.Series(sha))
    registry.save_version(models_dir, BrightnessClassifier(), threshold=0.5,
                          data=registry.data_info(manifest, name="toy"), manifest=manifest,
                          version_id=version_id)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CLASSIFIER_KINDS, STANDIN_KIND, STANDIN_PATH)
    base = [("ISIC_1", "s1", "NV", "train"), ("ISIC_2", "s2", "MEL", "train"),
            ("ISIC_3", "s3", "NV", "val"), ("ISIC_3_dup", "s3", "NV", "train"),
            ("ISIC_4", "s4", "BKL", "test")]
    retrained = [("ISIC_1", "s1", "NV", "train"), ("ISIC_2", "s2", "BCC", "train"),
                 ("ISIC_3", "s3", "NV", "train"), ("ISIC_4", "s4", "BKL", "test"),
                 ("prod-aaaa", "p1", "MEL", "train"), ("prod-bbbb", "p2", "NV", "train")]
    _version(tmp_path, "base", base)
    _version(tmp_path, "retrained", retrained)
    return tmp_path


def test_diff_prints_the_counts_then_the_images(models_dir):
    result = runner.invoke(app, ["models", "diff", "base", "retrained", "--models-dir",
                                 str(models_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("data of base (5 images") and "retrained (6 images" in lines[0]
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[1:5]}
    assert counts == {"added": 2, "removed": 1, "relabelled": 1, "resplit": 1}
    assert "  prod-aaaa (MEL, train)" in lines and "  prod-bbbb (NV, train)" in lines
    assert "  ISIC_3_dup (NV, train)" in lines  # the dropped copy of a duplicate-content pair
    assert "  ISIC_2: MEL -> BCC" in lines and "  ISIC_3: val -> train" in lines


def test_diff_limits_the_listing_and_names_unknown_versions(models_dir):
    counts_only = runner.invoke(app, ["models", "diff", "base", "retrained", "--limit", "0",
                                      "--models-dir", str(models_dir)])
    assert counts_only.exit_code == 0 and len(counts_only.output.splitlines()) == 5
    one = runner.invoke(app, ["models", "diff", "base", "retrained", "--limit", "1",
                              "--models-dir", str(models_dir)])
    assert "  … and 1 more" in one.output.splitlines()
    unknown = runner.invoke(app, ["models", "diff", "base", "nope", "--models-dir", str(models_dir)])
    assert unknown.exit_code == 2 and "no model version 'nope'" in unknown.output
