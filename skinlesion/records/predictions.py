"""Answers and what follows them: a model's answer (:class:`PredictionRecord`, a row of
``predictions``), the ground truth that arrives later (:class:`LabelRecord`), and a request
answered with an error (:class:`FailureRecord`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from skinlesion.errors import DataError
from skinlesion.records.fields import (
    CanonicalUuid,
    ClassName,
    NonBlank,
    OptionalUuid,
    Record,
    Sha256Hex,
    UtcDatetime,
    new_id,
    now,
)
from skinlesion.schema import CLASSES, MISSING, validate_age, validate_sex, validate_site

Source = Literal["api", "dashboard", "batch", "demo"]
#: ``offline``: a version the route does not name, answering a batch (``skinlesion predict --log``)
ModelRole = Literal["active", "fallback", "challenger", "shadow", "offline"]
Decision = Literal["refer", "no referral", "uncertain"]
SOURCES: tuple[str, ...] = get_args(Source)
MODEL_ROLES: tuple[str, ...] = get_args(ModelRole)
DECISIONS: tuple[str, ...] = get_args(Decision)
#: Why a prediction request got no answer (the API's Prometheus ``outcome`` label uses the same words):
#: ``rejected`` bad input (4xx), ``unauthorized`` missing or unknown API key (401/403),
#: ``unavailable`` no model or store to answer with (503), ``error`` a failure while answering (5xx).
FailureKind = Literal["rejected", "unauthorized", "unavailable", "error"]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
#: The failures that count in the error rate: every kind but ``unauthorized`` (a request without a
#: valid key never reaches the model; that is a client's set-up, not the service failing).
ERROR_RATE_KINDS: tuple[str, ...] = tuple(k for k in FAILURE_KINDS if k != "unauthorized")

#: Columns written by ``skinlesion.data.images.image_stats`` and stored with every prediction.
IMAGE_STAT_COLUMNS: tuple[str, ...] = (
    "width", "height", "brightness", "contrast", "saturation", "mean_r", "mean_g", "mean_b", "sharpness")
PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
PREDICTION_COLUMNS: tuple[str, ...] = (
    "request_id", "ts", "source", "model_version", "model_role", "age_approx", "sex",
    "anatom_site_general", "image_sha256", *IMAGE_STAT_COLUMNS, *PROBABILITY_COLUMNS, "p_malignant",
    "predicted_class", "decision", "decision_reason", "threshold", "latency_ms", "device", "embedding",
    "image_path", "simulated", "returned", "api_client", "texture_distance")
LABEL_COLUMNS: tuple[str, ...] = (
    "id", "request_id", "image_sha256", "diagnosis", "source", "labelled_by", "ts", "simulated")

_PROBABILITY_SUM_TOLERANCE = 1e-3

#: The patient metadata as the schema validates it (unknown values rejected, listing the allowed).
Age = Annotated[float | None, BeforeValidator(validate_age)]
Sex = Annotated[str, BeforeValidator(validate_sex)]
Site = Annotated[str, BeforeValidator(validate_site)]


class PredictionRecord(Record):
    """One answer of a model: a row of ``predictions``. ``probabilities`` is keyed by CLASSES."""

    model_config = ConfigDict(allow_inf_nan=False)

    request_id: CanonicalUuid = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    source: Source
    model_version: NonBlank
    model_role: ModelRole = "active"
    age_approx: Age = None
    sex: Sex = MISSING
    anatom_site_general: Site = MISSING
    image_sha256: Sha256Hex
    width: float
    height: float
    brightness: float
    contrast: float
    saturation: float
    mean_r: float
    mean_g: float
    mean_b: float
    sharpness: float
    probabilities: dict[str, float]
    p_malignant: float = Field(ge=0.0, le=1.0)
    predicted_class: ClassName
    decision: Decision
    decision_reason: str = ""
    threshold: float = Field(ge=0.0, le=1.0)
    latency_ms: float = Field(ge=0.0)
    device: NonBlank
    embedding: list[float] | None = None
    image_path: str | None = None
    simulated: bool = False
    returned: bool = True
    #: the name of the API key that asked (None for answers not asked through the API)
    api_client: str | None = None
    #: the OOD gate's texture check (``Prediction.texture_distance``); None when the version's gate
    #: has no texture check
    texture_distance: float | None = Field(default=None, ge=0.0)

    @field_validator("probabilities")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != set(CLASSES):
            raise DataError(f"needs exactly the classes {', '.join(CLASSES)}, got {sorted(value)}",
                            field="probabilities")
        if any(not 0.0 <= p <= 1.0 for p in value.values()):
            raise DataError(f"every probability must lie in [0, 1], got {value}", field="probabilities")
        total = sum(value.values())
        if abs(total - 1.0) > _PROBABILITY_SUM_TOLERANCE:
            raise DataError(f"probabilities must sum to 1 (calibrated softmax), got {total:.4f}",
                            field="probabilities")
        return {c: float(value[c]) for c in CLASSES}

    @field_validator("embedding")
    @classmethod
    def _embedding(cls, value: list[float] | None) -> list[float] | None:
        # Stored as FLOAT[]: keep the float32 values, so a record equals what reading it back gives.
        return None if value is None else np.asarray(value, dtype=np.float32).tolist()

    @model_validator(mode="after")
    def _shadow_not_returned(self) -> PredictionRecord:
        if self.model_role == "shadow" and self.returned:
            raise DataError("a shadow answer is never returned to the caller: set returned=False",
                            field="returned")
        return self

    def to_row(self) -> dict[str, Any]:
        """The flat ``predictions`` row (probabilities as ``p_<CLASS>`` columns)."""
        row = self.model_dump(exclude={"probabilities"})
        row.update({f"p_{c}": p for c, p in self.probabilities.items()})
        return {col: row[col] for col in PREDICTION_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PredictionRecord:
        """Inverse of :meth:`to_row`; extra columns (e.g. from a join) are ignored."""
        fields = {col: row[col] for col in PREDICTION_COLUMNS if col not in PROBABILITY_COLUMNS}
        return cls(**fields, probabilities={c: row[f"p_{c}"] for c in CLASSES})


class LabelRecord(Record):
    """Ground truth for a prediction (by ``request_id``) or for an image (by ``image_sha256``).

    ``source`` says where the diagnosis comes from, e.g. ``histopathology``, ``review``, ``import``.
    The latest label (by ``ts``, then by arrival) of a request or image wins.
    """

    id: str = Field(default_factory=new_id)
    request_id: OptionalUuid = None
    image_sha256: Sha256Hex | None = None
    diagnosis: ClassName
    source: NonBlank
    labelled_by: NonBlank
    ts: UtcDatetime = Field(default_factory=now)
    simulated: bool = False

    @model_validator(mode="after")
    def _has_target(self) -> LabelRecord:
        if self.request_id is None and self.image_sha256 is None:
            raise DataError("a label needs the request_id of the prediction or the image_sha256 of "
                            "the image it labels", field="request_id")
        return self


class FailureRecord(Record):
    """A prediction request answered with an error: a row of ``request_failures``.

    No patient data: neither the request body nor the error message (which may quote a submitted
    value) is kept, only the field at fault. ``model_version`` is None when the request failed
    before a model answered (bad input, auth, no route)."""

    request_id: CanonicalUuid = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    source: Source = "api"
    model_version: str | None = None
    http_status: int = Field(ge=400, le=599)
    kind: FailureKind
    field: str | None = None
