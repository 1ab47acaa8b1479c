"""Metadata validation: the ISIC vocabulary is enforced, never silently mapped."""

import math

import pytest

from skinlesion.errors import MetadataError
from skinlesion.schema import CLASSES, Metadata, malignant_mask, validate_age


def test_blank_values_mean_missing():
    meta = Metadata.from_raw(None, "", float("nan"))
    assert meta == Metadata(None, "missing", "missing")


def test_values_are_normalised_case_insensitively():
    assert Metadata.from_raw("45", " Female ", "Head/Neck") == Metadata(45.0, "female", "head/neck")


@pytest.mark.parametrize(("field", "raw", "allowed"), [
    ("sex", {"sex": "m"}, "male, female, missing"),
    ("anatom_site_general", {"anatom_site_general": "torso"}, "anterior torso"),
])
def test_unknown_values_are_rejected_with_the_allowed_list(field, raw, allowed):
    with pytest.raises(MetadataError) as err:
        Metadata.from_raw(**raw)
    assert err.value.field == field
    assert allowed in str(err.value)


@pytest.mark.parametrize("age", [-1, 130, "forty", math.inf])
def test_ages_out_of_range_are_rejected(age):
    with pytest.raises(MetadataError, match="age"):
        validate_age(age)


def test_ages_above_85_are_capped_as_isic_reports_them():
    assert validate_age(90) == 85.0


def test_malignant_mask_validates_class_names():
    assert sum(malignant_mask()) == 4
    assert malignant_mask(["MEL"]) == [c == "MEL" for c in CLASSES]
    with pytest.raises(ValueError, match="unknown malignant"):
        malignant_mask(["MELANOMA"])
