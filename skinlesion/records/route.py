"""The serving route (which versions answer), the audit log of operator actions and its
verification, and the API keys' constants."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from skinlesion.errors import DataError
from skinlesion.records.fields import NonBlank, Record, UtcDatetime, new_id, non_blank, now

#: The model version served before anyone sets a route: the shipped reference version.
DEFAULT_ACTIVE_VERSION = "reference"
API_KEY_PREFIX = "skl_"
#: What an API key may do beyond its own answers: ``labeller`` labels any answer (a pathology lab's
#: system), ``admin`` also reads any answer. A key without scopes reads and labels its own only.
API_SCOPES: tuple[str, ...] = ("labeller", "admin")


class ServingRoute(Record):
    """Which model versions answer: the active one, the fallback (and whether it is engaged), an
    optional challenger taking ``challenger_share`` of the traffic, and an optional shadow that
    answers every request without its answer being returned.

    ``threshold_overrides`` holds the serving configuration of versions whose operating threshold
    was tuned after training (version id -> threshold); a version without an entry decides at its
    model card's threshold. The card itself is never edited: a change is a new route, audited,
    and the route history keeps every earlier value."""

    model_config = ConfigDict(allow_inf_nan=False)

    active_version: NonBlank = DEFAULT_ACTIVE_VERSION
    fallback_version: str | None = None
    fallback_engaged: bool = False
    restricted_to_clear_cases: bool = False
    challenger_version: str | None = None
    challenger_share: float = Field(0.0, ge=0.0, le=1.0)
    shadow_version: str | None = None
    threshold_overrides: dict[str, float] = Field(default_factory=dict)

    @field_validator("threshold_overrides")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for version, threshold in value.items():
            non_blank(version, "threshold_overrides")
            if not 0.0 <= threshold <= 1.0:
                raise DataError(f"the threshold of {version!r} must lie in [0, 1] (it is compared "
                                f"with p_malignant), got {threshold}", field="threshold_overrides")
        return dict(sorted(value.items()))

    def threshold_for(self, version: str) -> float | None:
        """The tuned threshold of ``version``, or None (it decides at its card's threshold)."""
        return self.threshold_overrides.get(version)

    @model_validator(mode="after")
    def _consistent(self) -> ServingRoute:
        if self.fallback_engaged and not self.fallback_version:
            raise DataError("engaging the fallback needs a fallback_version", field="fallback_version")
        if self.challenger_share > 0 and not self.challenger_version:
            raise DataError("a challenger share above 0 needs a challenger_version",
                            field="challenger_version")
        for field in ("challenger_version", "shadow_version"):
            if getattr(self, field) == self.active_version:
                raise DataError(f"must differ from the active version {self.active_version!r}",
                                field=field)
        return self


class AuditEntry(Record):
    """One operator action: who (``actor`` in ``role``), when, what (``action`` on ``target``), why."""

    id: str = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    actor: NonBlank
    role: NonBlank
    action: NonBlank
    target: str | None = None
    reason: str = ""  # at most MAX_REASON_CHARS, checked where it is stored (store.route)
    details: dict[str, Any] = Field(default_factory=dict)



class AuditCheck(Record):
    """The audit chain verified (:meth:`Store.verify_audit`): ``rows`` in the log, ``checked`` of
    them intact from the oldest; where the chain breaks, the first broken row and what is wrong."""

    rows: int
    checked: int
    broken_id: str | None = None
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_id is None
