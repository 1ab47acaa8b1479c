"""Knowledge distillation: the soft-target loss pulls the student towards a planted teacher bias, the
student is registered with its teacher on the card, and a leaking split is refused."""

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from skinlesion.calibration import apply_temperature
from skinlesion.cli import app
from skinlesion.data.splits import split_dataset
from skinlesion.distill import check_teacher_split, soften
from skinlesion.errors import DataError
from skinlesion.register import register
from skinlesion.registry import load_version
from skinlesion.schema import CLASSES, class_index
from skinlesion.train import SoftTargets, TrainConfig, cached_logits, distillation_loss, fit

TINY = TrainConfig(mode="head", epochs=12, patience=12, lr=3e-3, batch_size=8, width=64, height=48,
                   train_views=("identity",), tta=("identity",))
VASC = CLASSES.index("VASC")


@pytest.fixture(scope="module")
def split(synthetic_df):
    return split_dataset(synthetic_df, seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("distill-cache")


@pytest.fixture(scope="module")
def teacher(synthetic_df, split, cache_dir, tmp_path_factory):
    """A registered (tiny) teacher version, trained with split seed 0."""
    models = tmp_path_factory.mktemp("models")
    result = fit(synthetic_df, split, TINY, cache_dir, progress=False)
    card = register(models, result.classifier, synthetic_df, split, threshold=result.threshold,
                    val_probs=result.val_probs, data_name="synthetic", progress=False)
    return models, card.id


def _biased_teacher(df: pd.DataFrame) -> pd.DataFrame:
    """A planted teacher: 70 % on the true class, 30 % on VASC for every image."""
    probs = np.zeros((len(df), len(CLASSES)))
    probs[np.arange(len(df)), [class_index(d) for d in df["diagnosis"]]] = 0.7
    probs[:, VASC] += 0.3
    return pd.DataFrame(probs, index=df.index, columns=list(CLASSES))


def test_alpha_one_pulls_the_student_towards_the_soft_targets(synthetic_df, split, cache_dir):
    targets = _biased_teacher(synthetic_df[split == "train"])
    val = synthetic_df[(split == "val") & (synthetic_df["diagnosis"] != "VASC")]

    def p_vasc(alpha: float) -> float:
        result = fit(synthetic_df, split, TINY, cache_dir, progress=False,
                     soft_targets=SoftTargets(targets, alpha=alpha, temperature=1.0))
        probs = apply_temperature(cached_logits(result.classifier, val, cache_dir,
                                                progress=False), 1.0)
        return float(probs[:, VASC].mean())

    taught, alone = p_vasc(1.0), p_vasc(0.0)
    assert taught > 0.15  # the teacher's 30 % VASC bias is learnt...
    assert taught > 3 * alone  # ...and only from the soft targets


def test_distillation_loss_and_ensemble_targets():
    logits = torch.tensor([[2.0, 0.0, -1.0] + [0.0] * 5])
    teacher = torch.softmax(logits / 3.0, dim=1)
    hard = torch.tensor(1.5)
    # a student that already matches the teacher at T: only the hard part remains
    assert distillation_loss(logits, teacher, hard, alpha=0.4, temperature=3.0).item() \
        == pytest.approx(0.6 * 1.5, abs=1e-6)
    # class weighting reaches the soft term: a zero-weight image's disagreement does not count
    off = torch.cat([logits, -logits])
    both = torch.cat([teacher, teacher])
    assert distillation_loss(off, both, hard, alpha=0.4, temperature=3.0,
                             sample_weight=torch.tensor([1.0, 0.0])).item() \
        == pytest.approx(0.6 * 1.5, abs=1e-6)
    assert distillation_loss(off, both, hard, alpha=0.4, temperature=3.0).item() > 0.6 * 1.5 + 0.1
    z1, z2 = np.array([[4.0] + [0.0] * 7]), np.array([[0.0] * 7 + [4.0]])
    np.testing.assert_allclose(soften([z1, z2], 2.0),
                               (apply_temperature(z1, 2.0) + apply_temperature(z2, 2.0)) / 2)
    with pytest.raises(ValueError, match="alpha"):
        SoftTargets(_biased_teacher(pd.DataFrame({"diagnosis": ["MEL"]})), alpha=1.5)


def test_cli_distill_registers_a_student_naming_its_teacher(synthetic_dir, split, teacher,
                                                            cache_dir, tmp_path, monkeypatch):
    models, teacher_id = teacher
    monkeypatch.setenv("SKINLESION_CACHE_DIR", str(cache_dir))
    config = tmp_path / "student.json"
    config.write_text(TINY.model_copy(update={"epochs": 3}).model_dump_json())
    result = CliRunner().invoke(app, ["distill", "--teacher", teacher_id, "--data",
                                      str(synthetic_dir), "--alpha", "0.7", "--temperature", "3",
                                      "--config", str(config), "--models-dir", str(models)])
    assert result.exit_code == 0, result.output
    student = load_version(result.stdout.strip().splitlines()[-1], models)
    card = student.card.model_dump()
    assert card["distillation"] == {"teachers": [teacher_id],
                                    "teacher_architectures": ["efficientnet_lite0"],
                                    "alpha": 0.7, "temperature": 3.0}
    assert teacher_id in card["notes"] and card["training"]["config"]["epochs"] == 3
    assert student.id != teacher_id
    cached = [p for p in cache_dir.glob("*/spec.json") if "teacher_logits" in p.read_text()]
    assert len(cached) == 1  # the teacher's answers on the train rows, kept for the next run
    assert len(list(cached[0].parent.glob("*/*.npy"))) == (split == "train").sum()

    bad = CliRunner().invoke(app, ["distill", "--teacher", "nope", "--data", str(synthetic_dir),
                                   "--models-dir", str(models)])
    assert bad.exit_code == 2 and "no model version 'nope'" in bad.output


def test_a_split_leaking_the_teachers_training_images_is_refused(synthetic_df, teacher):
    models, teacher_id = teacher
    version = load_version(teacher_id, models)
    check_teacher_split(version, synthetic_df, split_dataset(synthetic_df, seed=0))  # same split
    with pytest.raises(DataError, match="never saw"):
        check_teacher_split(version, synthetic_df, split_dataset(synthetic_df, seed=1))
