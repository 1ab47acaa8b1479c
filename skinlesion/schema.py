"""Plain data shared by every layer: the classes, the metadata vocabulary and its validation.

Layer 1 (DESIGN.md): no torch, no DuckDB, no Streamlit here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from skinlesion.errors import MetadataError

#: The ISIC 2019 diagnoses, in the column order of the challenge CSV files.
CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
CLASS_NAMES: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis / intraepithelial carcinoma",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
}
#: Default positive class of every binary metric ("malignant"); AK includes intraepithelial carcinoma.
DEFAULT_MALIGNANT: tuple[str, ...] = ("MEL", "BCC", "SCC", "AK")

MISSING = "missing"
SEXES: tuple[str, ...] = ("male", "female", MISSING)
SITES: tuple[str, ...] = (
    "anterior torso", "posterior torso", "lateral torso", "upper extremity", "lower extremity",
    "head/neck", "palms/soles", "oral/genital", MISSING,
)
AGE_MIN, AGE_MAX = 0.0, 85.0  # ISIC reports ages in 5-year steps and caps them at 85
#: The highest age accepted as input (then reported as AGE_MAX, as ISIC does); above it is a typo.
AGE_ACCEPTED_MAX = 120.0

METADATA_FIELDS: tuple[str, ...] = ("age_approx", "sex", "anatom_site_general")


def class_index(label: str) -> int:
    """Index of ``label`` in :data:`CLASSES`; raises a ValueError listing the allowed labels."""
    try:
        return CLASSES.index(label)
    except ValueError:
        raise ValueError(f"unknown diagnosis {label!r}; allowed: {', '.join(CLASSES)}") from None


def malignant_mask(malignant: Iterable[str] = DEFAULT_MALIGNANT) -> list[bool]:
    """Boolean mask over :data:`CLASSES` marking the malignant set (validated)."""
    chosen = set(malignant)
    unknown = chosen - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown malignant classes {sorted(unknown)}; allowed: {', '.join(CLASSES)}")
    if not chosen:
        raise ValueError("the malignant set must name at least one class")
    return [c in chosen for c in CLASSES]


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and value.strip() == "")


def validate_age(value: object) -> float | None:
    """Age in years (ISIC ``age_approx``) or None when missing. Ages above 85 are capped at 85."""
    if _is_blank(value):
        return None
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MetadataError(f"age must be a number of years between {AGE_MIN:g} and {AGE_MAX:g}+ "
                            f"or empty, got {value!r}", field="age_approx") from None
    if math.isnan(age) or age < AGE_MIN or age > AGE_ACCEPTED_MAX:
        raise MetadataError(f"age must be between {AGE_MIN:g} and {AGE_ACCEPTED_MAX:g} years (85+ is "
                            f"reported as 85), got {value!r}", field="age_approx")
    return min(age, AGE_MAX)


def _validate_choice(value: object, allowed: tuple[str, ...], field: str) -> str:
    if _is_blank(value):
        return MISSING
    text = str(value).strip().lower()
    if text not in allowed:
        raise MetadataError(f"unknown value {value!r}; allowed: {', '.join(allowed)} (or empty)",
                            field=field)
    return text


def validate_sex(value: object) -> str:
    """``male``/``female``/``missing``; blank means missing; anything else is rejected."""
    return _validate_choice(value, SEXES, "sex")


def validate_site(value: object) -> str:
    """An ISIC 2019 ``anatom_site_general`` value; blank means missing; anything else is rejected."""
    return _validate_choice(value, SITES, "anatom_site_general")


@dataclass(frozen=True)
class Metadata:
    """The clinical metadata of one image, validated. Build it with :meth:`from_raw`."""

    age_approx: float | None = None
    sex: str = MISSING
    anatom_site_general: str = MISSING

    @classmethod
    def from_raw(cls, age_approx: object = None, sex: object = None,
                 anatom_site_general: object = None) -> Metadata:
        return cls(validate_age(age_approx), validate_sex(sex), validate_site(anatom_site_general))

    def as_dict(self) -> dict[str, object]:
        return {"age_approx": self.age_approx, "sex": self.sex,
                "anatom_site_general": self.anatom_site_general}
