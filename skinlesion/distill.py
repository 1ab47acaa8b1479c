"""Knowledge distillation: a small student learns from a larger teacher (``skinlesion distill``).

The teacher -- one registered neural version (e.g. EfficientNet-Lite2) or an ensemble of several --
answers once for every training image; its logits are kept in the activation cache (keyed by version
and image content), so a second run with another alpha or temperature costs nothing. Softened at
temperature ``T`` (and averaged over an ensemble's members) they become the student's soft targets,
and :func:`skinlesion.train.fit` trains the student (EfficientNet-Lite0 by default) on
``alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * CE(true labels)``. Model selection,
calibration and the threshold still use the true validation labels. The student's card records the
teacher(s), alpha and T.

The student's validation and test images must be unseen by every teacher, or the teacher would leak
their labels: :func:`check_teacher_split` refuses such a split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from skinlesion import calibration
from skinlesion.cache import ActivationCache
from skinlesion.data.images import file_sha256
from skinlesion.errors import DataError, SkinLesionError
from skinlesion.model.neural import NeuralClassifier
from skinlesion.register import register
from skinlesion.registry import MANIFEST_FILE, ModelCard, ModelVersion
from skinlesion.schema import CLASSES
from skinlesion.train import FitResult, SoftTargets, TrainConfig, cached_logits, fit, training_summary

#: For each held-out split of the student, the teacher splits its images must not come from.
_UNSEEN_BY_TEACHER = {"val": ("train",), "test": ("train", "val")}


class DistillationInfo(BaseModel):
    """What the student's model card records under ``distillation``."""

    teachers: list[str] = Field(min_length=1)
    teacher_architectures: list[str]
    alpha: float = Field(ge=0.0, le=1.0)
    temperature: float = Field(gt=0.0)


@dataclass
class Distilled:
    """A distilled student: its fit (as :func:`skinlesion.train.fit` returns it) and the record of
    its teachers."""

    fit: FitResult
    info: DistillationInfo


def teacher_logits(teacher: ModelVersion, df: pd.DataFrame, cache_dir: Path | str, *,
                   progress: bool = True) -> np.ndarray:
    """The teacher's uncalibrated logits (len(df), 8) for dataset rows, computed once per image and
    kept in the activation cache (the teacher's frozen backbone outputs are cached too)."""
    classifier = teacher.classifier
    if not isinstance(classifier, NeuralClassifier):
        raise SkinLesionError(f"teacher {teacher.id!r} is a {teacher.card.kind} model; distillation "
                              "needs neural teachers (their logits)")
    spec = {"what": "teacher_logits", "version": teacher.id, "created": teacher.card.created}
    shas = [file_sha256(p) for p in df["path"].astype(str)]
    logits = ActivationCache(cache_dir).get(
        spec, shas, lambda idx: cached_logits(classifier, df.iloc[idx], cache_dir,
                                              progress=progress),
        batch_size=max(len(df), 1), desc=f"teacher {teacher.id} logits", progress=progress)
    return logits.astype(np.float64)


def soften(logits: list[np.ndarray], temperature: float) -> np.ndarray:
    """Soft targets: ``softmax(logits / T)`` of each teacher, averaged over the teachers."""
    if not logits:
        raise ValueError("distillation needs at least one teacher")
    return np.mean([calibration.apply_temperature(z, temperature) for z in logits], axis=0)


def check_teacher_split(teacher: ModelVersion, df: pd.DataFrame, split: pd.Series) -> None:
    """Refuse a student split the teacher has seen: its training images in the student's validation
    or test split, or its validation images in the student's test split (matched by content hash
    against the teacher's manifest). The same data and split seed always pass."""
    manifest = pd.read_csv(teacher.path / MANIFEST_FILE, dtype=str)
    teacher_split = dict(zip(manifest["sha256"], manifest["split"], strict=True))
    student_split = split.reindex(df.index)
    leaked = [name for name, path, part in zip(df["image"], df["path"], student_split, strict=True)
              if part in _UNSEEN_BY_TEACHER
              and teacher_split.get(file_sha256(path)) in _UNSEEN_BY_TEACHER[part]]
    if leaked:
        raise DataError(f"teacher {teacher.id!r} trained or validated on {len(leaked)} images of the "
                        f"student's held-out splits (e.g. {leaked[0]}); use the teacher's data and "
                        "split seed so the student is judged on images the teacher never saw")


def distill(df: pd.DataFrame, split: pd.Series, teachers: list[ModelVersion], config: TrainConfig,
            cache_dir: Path | str, *, alpha: float = 0.5, temperature: float = 4.0,
            progress: bool = True) -> Distilled:
    """Train the ``config`` student on ``split``'s train rows with the teachers' soft targets."""
    info = DistillationInfo(teachers=[t.id for t in teachers],
                            teacher_architectures=[t.card.architecture for t in teachers],
                            alpha=alpha, temperature=temperature)
    for teacher in teachers:
        check_teacher_split(teacher, df, split)
    train_df = df[split.reindex(df.index) == "train"]
    probs = soften([teacher_logits(t, train_df, cache_dir, progress=progress) for t in teachers],
                   temperature)
    targets = SoftTargets(pd.DataFrame(probs, index=train_df.index, columns=list(CLASSES)),
                          alpha=alpha, temperature=temperature)
    return Distilled(fit=fit(df, split, config, cache_dir, progress=progress,
                             soft_targets=targets), info=info)


def register_student(models_dir: Path, student: Distilled, df: pd.DataFrame, split: pd.Series, *,
                     data_name: str, test_probs: np.ndarray | None = None,
                     progress: bool = True) -> ModelCard:
    """Register the student as a new version; its card names the teacher(s), alpha and T."""
    result, info = student.fit, student.info
    return register(models_dir, result.classifier, df, split, threshold=result.threshold,
                    val_probs=result.val_probs, test_probs=test_probs, data_name=data_name,
                    history=result.history, training=training_summary(result),
                    target_sensitivity=result.config.target_sensitivity,
                    notes=(f"Distilled from {', '.join(info.teachers)} "
                           f"({', '.join(info.teacher_architectures)}) with alpha {info.alpha:g}, "
                           f"temperature {info.temperature:g}"),
                    extra={"distillation": info.model_dump()},
                    progress=progress)
