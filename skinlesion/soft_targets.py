"""Knowledge distillation's training signal: a teacher's soft targets and the distillation loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from skinlesion.errors import DataError
from skinlesion.schema import CLASSES


@dataclass(frozen=True)
class SoftTargets:
    """Knowledge distillation: a teacher's temperature-softened class probabilities for the training
    rows (``probs``: index = the dataset table's index, columns = CLASSES). With them the training
    loss is ``alpha * T^2 * KL(probs || softmax(student_logits / T)) + (1 - alpha) * CE(labels)``,
    both terms weighted per image by the class weight of its true label (see
    :func:`distillation_loss`)."""

    probs: pd.DataFrame
    alpha: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distillation alpha must be within 0..1, got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"distillation temperature must be positive, got {self.temperature}")
        if list(self.probs.columns) != list(CLASSES):
            raise ValueError(f"soft targets need the columns {', '.join(CLASSES)}")

    def for_rows(self, index: pd.Index) -> np.ndarray:
        """The soft targets of ``index`` rows, (len(index), 8); every row must have one."""
        missing = index.difference(self.probs.index)
        if len(missing):
            raise DataError(f"the teacher gave no soft targets for {len(missing)} training rows "
                            f"(e.g. row {missing[0]!r})")
        probs = self.probs.loc[index].to_numpy(dtype=np.float32)
        if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("soft targets must be probabilities (each row sums to 1)")
        return probs


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                      hard_loss: torch.Tensor, *, alpha: float, temperature: float,
                      sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_probs || softmax(student_logits / T)) + (1 - alpha) * hard_loss``
    (Hinton et al. 2015: T^2 keeps the soft term's gradients on the scale of the hard one's). The
    KL term is a ``sample_weight``-weighted mean over the batch, as the class-weighted cross-entropy
    is, so the rare classes keep the emphasis the config's ``class_weight`` gives them."""
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), teacher_probs,
                  reduction="none").sum(dim=1)
    soft = kl.mean() if sample_weight is None else (kl * sample_weight).sum() / sample_weight.sum()
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard_loss
