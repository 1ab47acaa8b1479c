"""The field types and helpers the records share, each validator written once as an ``Annotated``
type: :data:`UtcDatetime` (aware UTC; a naive value is taken to be UTC already),
:data:`CanonicalUuid` / :data:`OptionalUuid`, :data:`NonBlank`, :data:`Sha256Hex`,
:data:`ClassName` (one of the diagnoses), :data:`FiniteOrNone` and :data:`JsonDict` (no NaN
reaches the store). A bad value raises :class:`~skinlesion.errors.DataError` naming the field.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from skinlesion.errors import DataError
from skinlesion.schema import class_index

#: Longest audit reason: a short why, never a place for patient details.
MAX_REASON_CHARS = 500


class Record(BaseModel):
    """A record: immutable once made, and refusing fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def canonical_uuid(value: object, field: str) -> str:
    """``value`` as a canonical lower-case UUID string; a DataError naming ``field`` otherwise."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise DataError(f"must be a UUID such as {new_id()}, got {value!r}", field=field) from None


def sha256_hex(value: str, field: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise DataError(f"must be a sha256 hex digest (64 hex characters), got {value!r}", field=field)
    return text


def non_blank(value: str, field: str) -> str:
    if not value.strip():
        raise DataError("must not be empty", field=field)
    return value.strip()


def _field(info: ValidationInfo) -> str:
    return info.field_name or "value"


#: An aware UTC datetime (a naive one is taken to be UTC).
UtcDatetime = Annotated[datetime, AfterValidator(utc)]
#: A canonical lower-case UUID string.
CanonicalUuid = Annotated[str, BeforeValidator(lambda v, info: canonical_uuid(v, _field(info)))]
#: A canonical UUID string, or None.
OptionalUuid = Annotated[str | None, BeforeValidator(
    lambda v, info: None if v is None else canonical_uuid(v, _field(info)))]
#: Text that is not blank, stripped.
NonBlank = Annotated[str, AfterValidator(lambda v, info: non_blank(v, _field(info)))]
#: A sha256 hex digest, lower case.
Sha256Hex = Annotated[str, AfterValidator(lambda v, info: sha256_hex(v, _field(info)))]


def plain_status(value: object) -> object:
    """A status enum member (``monitoring.policy.Status`` is a StrEnum) as its plain string."""
    return str(value) if isinstance(value, str) else value


def finite_or_none(value: float | None) -> float | None:
    """NaN and infinities (a metric undefined in its window) are stored as NULL."""
    return None if value is None or not np.isfinite(value) else float(value)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def known_class(value: str) -> str:
    """``value`` if it is one of the diagnoses (CLASSES); a DataError listing them otherwise."""
    class_index(value)
    return value


#: One of the diagnoses (CLASSES).
ClassName = Annotated[str, AfterValidator(known_class)]
#: A finite float; NaN and infinities become None (stored as NULL).
FiniteOrNone = Annotated[float | None, AfterValidator(finite_or_none)]
#: A JSON object whose non-finite floats became None (JSON has no NaN), at any depth.
JsonDict = Annotated[dict[str, Any], AfterValidator(json_safe)]
