"""skinlesion.data.metadata: table validation naming rows, and the 14-feature MetadataEncoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from skinlesion.data.metadata import MetadataEncoder, clean_metadata
from skinlesion.errors import MetadataError
from skinlesion.schema import SITES


def _meta(ages, sexes, sites) -> pd.DataFrame:
    return pd.DataFrame({"age_approx": ages, "sex": sexes, "anatom_site_general": sites})


TRAIN = _meta([30.0, 50.0, 70.0, np.nan], ["male", "female", None, "male"],
              ["head/neck", "", "lower extremity", "palms/soles"])


def test_feature_layout():
    enc = MetadataEncoder().fit(TRAIN)
    assert enc.n_features_ == 14 == len(enc.feature_names_)
    assert enc.feature_names_[:5] == ["age", "age_missing", "sex_male", "sex_female", "sex_missing"]
    assert enc.feature_names_[5:] == ["site_anterior_torso", "site_posterior_torso",
                                      "site_lateral_torso", "site_upper_extremity",
                                      "site_lower_extremity", "site_head_neck", "site_palms_soles",
                                      "site_oral_genital", "site_missing"]


def test_encoding_values():
    enc = MetadataEncoder().fit(TRAIN)
    x = enc.transform(TRAIN)
    assert x.dtype == np.float32 and x.shape == (4, 14)
    assert enc.age_mean_ == pytest.approx(50.0)
    assert x[:3, 0] == pytest.approx([-1.2247449, 0.0, 1.2247449], abs=1e-5)  # standardised
    assert x[3, 0] == 0.0 and x[:, 1].tolist() == [0, 0, 0, 1]  # missing: the mean, flagged
    assert (x[:, 2:5].sum(axis=1) == 1).all() and (x[:, 5:].sum(axis=1) == 1).all()
    names = enc.feature_names_
    assert x[2, names.index("sex_missing")] == 1 and x[1, names.index("site_missing")] == 1
    assert x[0, names.index("site_head_neck")] == 1


def test_case_and_blanks_are_normalised_and_ages_capped():
    enc = MetadataEncoder().fit(TRAIN)
    x = enc.transform(_meta(["95", ""], [" Male", np.nan], ["HEAD/NECK", None]))
    names = enc.feature_names_
    assert x[0, 0] == pytest.approx((85 - 50) / enc.age_scale_)
    assert x[0, names.index("sex_male")] == 1 and x[0, names.index("site_head_neck")] == 1
    assert x[1, names.index("age_missing")] == 1 and x[1, names.index("sex_missing")] == 1


def test_state_round_trips_through_json():
    enc = MetadataEncoder().fit(TRAIN)
    again = MetadataEncoder.from_state(json.loads(json.dumps(enc.get_state())))
    other = _meta([41.0, np.nan], ["female", "male"], ["oral/genital", "lateral torso"])
    assert np.array_equal(again.transform(other), enc.transform(other))
    assert again.feature_names_ == enc.feature_names_


def test_unknown_values_name_the_row_and_the_allowed_values():
    enc = MetadataEncoder().fit(TRAIN)
    with pytest.raises(MetadataError) as info:
        enc.transform(_meta([30.0, 40.0, 50.0], ["male", "female", "robot"], ["", "", ""]))
    assert (info.value.row, info.value.field) == (3, "sex")
    assert "allowed: male, female, missing" in str(info.value)
    with pytest.raises(MetadataError) as info:
        enc.transform(_meta([30.0, 40.0], ["male", "male"], ["", "elbow"]))
    assert (info.value.row, info.value.field) == (2, "anatom_site_general")
    assert all(site in str(info.value) for site in SITES)
    with pytest.raises(MetadataError, match="between 0 and 120") as info:
        MetadataEncoder().fit(_meta([30.0, -1.0], ["male", "male"], ["", ""]))
    assert info.value.row == 2


def test_missing_column_and_unfitted_use_are_refused():
    with pytest.raises(MetadataError, match="missing column") as info:
        MetadataEncoder().fit(TRAIN.drop(columns="sex"))
    assert info.value.field == "sex"
    with pytest.raises(NotFittedError):
        MetadataEncoder().transform(TRAIN)
    with pytest.raises(ValueError, match="version"):
        MetadataEncoder.from_state({**MetadataEncoder().fit(TRAIN).get_state(), "version": 99})


def test_no_ages_in_training_still_gives_a_sensible_scale():
    enc = MetadataEncoder().fit(_meta([np.nan, np.nan], ["male", "female"], ["", ""]))
    x = enc.transform(_meta([65.0], ["male"], [""]))
    assert abs(x[0, 0]) < 2  # 65 years lands within a couple of units, not at 65


def test_clean_metadata_names_the_source():
    with pytest.raises(MetadataError) as info:
        clean_metadata(_meta(["40", "x"], ["", ""], ["", ""]), source="upload.csv")
    assert (info.value.source, info.value.row, info.value.field) == ("upload.csv", 2, "age_approx")
    clean = clean_metadata(_meta(["40", ""], ["FEMALE", ""], ["Anterior Torso", ""]))
    assert clean["age_approx"].tolist()[0] == 40.0 and np.isnan(clean["age_approx"].iloc[1])
    assert clean["sex"].tolist() == ["female", "missing"]
    assert clean["anatom_site_general"].tolist() == ["anterior torso", "missing"]
