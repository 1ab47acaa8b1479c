"""Performance and drift by segment (skinlesion.monitoring.segments), on seeded frames with planted
signals: the model misses the malignant lesions of one site, and one site's share of traffic
triples while another site wobbles by chance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinlesion.monitoring.segments import (age_band, segment_drift, segment_performance,
                                            segment_values)

SITES = ("anterior torso", "head/neck", "lower extremity")


def _answers(n: int, *, seed: int, head_share: float, miss_head: bool = False) -> pd.DataFrame:
    """``n`` labelled answers; a share ``head_share`` on head/neck, the rest split evenly; 40 %
    malignant, all called right but, with ``miss_head``, head/neck's malignant ones."""
    rng = np.random.default_rng(seed)
    others = (1 - head_share) / 2
    site = rng.choice(SITES, size=n, p=[others, head_share, others])
    malignant = rng.random(n) < 0.4
    missed = malignant & (site == "head/neck") if miss_head else np.zeros(n, bool)
    called = malignant & ~missed
    return pd.DataFrame({
        "anatom_site_general": site, "sex": rng.choice(["male", "female"], n),
        "age_approx": rng.choice([25.0, 40.0, 55.0, 70.0, 85.0, np.nan], n),
        "source": "api", "diagnosis": np.where(malignant, "MEL", "NV"),
        "decision": np.where(called, "refer", "no referral"),
        "p_malignant": np.where(malignant, np.where(missed, 0.2, 0.8), 0.1)
        + rng.uniform(0, 0.05, n)})


def test_age_bands_and_missing_values():
    assert [age_band(a) for a in (0, 29, 30, 44.9, 45, 60, 74, 75, 85, None, np.nan)] == [
        "under 30", "under 30", "30–44", "30–44", "45–59", "60–74", "60–74", "75 and over",
        "75 and over", "missing", "missing"]
    frame = pd.DataFrame({"sex": ["male", None, ""], "age_approx": [50.0, None, 80.0]})
    assert list(segment_values(frame, "sex")) == ["male", "missing", "missing"]
    assert list(segment_values(frame, "age_band")) == ["45–59", "missing", "75 and over"]
    with pytest.raises(ValueError, match="segments: anatom_site_general"):
        segment_values(frame, "colour")


def test_the_site_where_malignant_lesions_are_missed_stands_out():
    table = segment_performance(_answers(900, seed=1, head_share=1 / 3, miss_head=True),
                                "anatom_site_general").set_index("value")
    assert table.loc["head/neck", "sensitivity"] == 0.0
    assert table.loc["head/neck", "sensitivity_high"] < 0.1  # not chance: ~120 malignant cases
    for site in ("anterior torso", "lower extremity"):
        assert table.loc[site, "sensitivity"] == 1.0 and table.loc[site, "auroc"] == 1.0
    assert table["specificity"].eq(1.0).all()
    assert table["labelled"].sum() == 900


def test_a_small_segment_says_how_little_it_knows():
    answers = _answers(900, seed=2, head_share=1 / 3)
    few = pd.concat([answers, answers.head(3).assign(anatom_site_general="palms/soles")])
    row = segment_performance(few, "anatom_site_general").set_index("value").loc["palms/soles"]
    assert row["labelled"] == 3
    if row["malignant"]:
        assert row["sensitivity_high"] - row["sensitivity_low"] > 0.4
    else:
        assert np.isnan(row["sensitivity"]) and np.isnan(row["auroc"])


def test_a_tripled_site_shifts_and_chance_wobbles_do_not():
    reference = _answers(1200, seed=3, head_share=0.15)
    same = segment_drift(_answers(1500, seed=4, head_share=0.15), reference, "anatom_site_general")
    assert not same["shifted"].any(), same
    moved = segment_drift(_answers(1500, seed=5, head_share=0.45), reference,
                          "anatom_site_general").set_index("value")
    assert moved.loc["head/neck", "shifted"] and moved.loc["head/neck", "change"] > 0.25
    assert moved.loc[["anterior torso", "lower extremity"], "shifted"].all()  # their shares fell
    assert moved.loc["head/neck", "p_value"] < 1e-6


def test_a_segment_the_reference_does_not_record_has_no_reference_share():
    reference = _answers(300, seed=6, head_share=0.3).drop(columns=["source"])
    table = segment_drift(_answers(300, seed=7, head_share=0.3), reference, "source")
    assert list(table["value"]) == ["api"] and table["current_share"].iloc[0] == 1.0
    assert np.isnan(table["reference_share"].iloc[0]) and not table["shifted"].iloc[0]
