"""What defines a training run: :class:`TrainConfig` (stored in the model card) and the calibration
modes a run can end with (see :mod:`skinlesion.fit_calibration`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from skinlesion.data.transforms import VIEWS, check_views
from skinlesion.model.fusion import INPUTS

SPLITS = ("train", "val", "test")
#: How validation calibrates the probabilities: a temperature alone; the fixed class-prior offset that
#: undoes the class-weighted loss (see :func:`_prior_shift`), then a temperature; or a calibrator
#: fitted by NLL with a bias per class (``bcts``) or a scale and a bias per class (``vector``).
CALIBRATION_MODES = ("temperature", "prior+temperature", "bcts", "vector")
CalibrationMode = Literal["temperature", "prior+temperature", "bcts", "vector"]


class TrainConfig(BaseModel):
    """Everything that defines a training run (stored in the model card)."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = "efficientnet_lite0"
    inputs: str = "image+metadata"
    mode: Literal["head", "finetune"] = "finetune"
    pretrained: bool = True
    weights_path: str | None = None
    width: int = 256
    height: int = 192
    #: leading backbone blocks kept frozen (and cached) in finetune mode; None = the backbone's default
    cut: int | None = None
    epochs: int = 8
    lr: float = 1e-3  # head and metadata branch
    backbone_lr: float = 3e-4  # trained backbone blocks
    weight_decay: float = 1e-2
    batch_size: int = 64
    warmup: float = 0.1  # share of steps with rising learning rate (one-cycle schedule)
    dropout: float = 0.3
    meta_hidden: int = 32
    head_hidden: int = 0  # hidden layer width of the classification head; 0 = one linear layer
    drop_connect_rate: float = 0.2
    class_weight: Literal["balanced", "sqrt", "none"] = "sqrt"
    label_smoothing: float = 0.0
    train_views: tuple[str, ...] = VIEWS  # orientation views seen in training
    tta: tuple[str, ...] = ("identity", "hflip")  # views averaged at validation and serving
    color_jitter: float = 0.2  # only with cut=0 (online augmentation)
    patience: int = 3
    seed: int = 0
    calibration: CalibrationMode = "temperature"
    target_sensitivity: float = 0.90
    device: str = "auto"

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: str) -> str:
        if v not in INPUTS:
            raise ValueError(f"inputs must be one of {', '.join(INPUTS)}")
        return v

    @field_validator("train_views", "tta")
    @classmethod
    def _views(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_views(v)

    @field_validator("epochs", "batch_size", "width", "height")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("head_hidden")
    @classmethod
    def _head_hidden(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be 0 (a single linear head) or a positive width")
        return v
