"""Drift against the reference: planted shifts are flagged (and nothing else), the null distribution
bounds sampling noise, too few answers are not judged, sampling, the HTML report.

Frames of 3,000 rows keep sampling noise below the effect size (at most ~0.09 over 20 seeds for the
noisiest column, age), so "only the planted column" is a stable assertion without a null; windows
of 100-300 answers need the null."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from skinlesion.errors import DataError
from skinlesion.monitoring.drift import (
    CLASS_PROBABILITY_FEATURES, DEFAULT_FEATURES, CategoricalSummary, DriftNull, DriftResult,
    NumericSummary, compute_drift, compute_null, drift_report_html, resolve_features, version_null)
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, SITES
from tests.standins import save_standin

N = 3000
SITE_MIX = (0.2, 0.15, 0.05, 0.15, 0.2, 0.15, 0.03, 0.02, 0.05)
HEAD_HEAVY_MIX = (0.05, 0.05, 0.05, 0.1, 0.1, 0.5, 0.05, 0.05, 0.05)


def window(n: int, seed: int, *, brightness: float = 0.0, embedding_shift: float = 0.0,
           site_mix: tuple[float, ...] = SITE_MIX, texture: float | None = 0.0) -> pd.DataFrame:
    """Predictions-table rows drawn from one fixed distribution, with optional planted shifts;
    ``texture=None``: no ``texture_distance`` column (a version whose gate has no texture check)."""
    rng = np.random.default_rng(seed)
    age = np.clip(np.round(rng.normal(55, 15, n) / 5) * 5, 0, 85)
    age[rng.random(n) < 0.1] = np.nan
    probs = rng.dirichlet(np.full(len(CLASSES), 0.7), n)
    df = pd.DataFrame({
        "age_approx": age,
        "sex": rng.choice(["male", "female", "missing"], n, p=[0.5, 0.45, 0.05]),
        "anatom_site_general": rng.choice(SITES, n, p=site_mix),
        "width": rng.choice([600.0, 1024.0], n), "height": rng.choice([450.0, 768.0, 1024.0], n),
        "brightness": rng.normal(0.55 + brightness, 0.07, n), "contrast": rng.normal(0.18, 0.04, n),
        "saturation": rng.normal(0.35, 0.08, n), "mean_r": rng.normal(0.7, 0.06, n),
        "mean_g": rng.normal(0.5, 0.06, n), "mean_b": rng.normal(0.45, 0.06, n),
        "sharpness": rng.lognormal(-6, 0.5, n),
    })
    for i, c in enumerate(CLASSES):
        df[f"p_{c}"] = probs[:, i]
    df["p_malignant"] = probs[:, [CLASSES.index(c) for c in DEFAULT_MALIGNANT]].sum(axis=1)
    df["predicted_class"] = np.array(CLASSES)[probs.argmax(axis=1)]
    df["embedding"] = list(rng.normal(embedding_shift, 1.0, (n, 16)).astype(np.float32))
    if texture is not None:  # drawn last: the other columns are the same with or without it
        df["texture_distance"] = rng.gamma(16.0, 0.5, n) + texture
    return df


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return window(N, seed=0)


@pytest.fixture(scope="module")
def no_shift(reference: pd.DataFrame) -> DriftResult:
    return compute_drift(reference, window(N, seed=1))


def test_no_shift_flags_nothing(no_shift: DriftResult) -> None:
    assert no_shift.drifted_features() == ()
    assert no_shift.share_drifted == 0.0
    assert [f.name for f in no_shift.features] == [f.name for f in DEFAULT_FEATURES]
    assert all(f.tested for f in no_shift.features)
    assert (no_shift.n_reference, no_shift.n_current, no_shift.sampled) == (N, N, False)


def test_distances_by_evidently_bounded_by_the_effect_size_without_a_null(no_shift: DriftResult) -> None:
    brightness, site = no_shift.feature("brightness"), no_shift.feature("anatom_site_general")
    assert brightness.stattest == "Wasserstein distance (normed)" and brightness.threshold == 0.1
    assert site.stattest == "Jensen-Shannon distance" and site.threshold == 0.1
    assert not brightness.is_p_value and 0 <= brightness.score < 0.1
    assert math.isnan(brightness.null_bound) and brightness.effect_size == 0.1
    assert "effect size alone" in no_shift.null


@pytest.fixture(scope="module")
def small_reference() -> pd.DataFrame:
    """1,000 reference answers, 2-3 images per lesion (a lesion's images alike in brightness)."""
    ref = window(1000, seed=10)
    lesions = np.repeat(np.arange(400), 3)[:1000]
    ref["lesion_id"] = [f"L{i}" for i in lesions]
    rng = np.random.default_rng(3)  # the same marginal as window()'s, most of it shared per lesion
    ref["brightness"] = 0.55 + 0.07 * (0.95 * rng.normal(size=400)[lesions] + 0.312 * rng.normal(size=1000))
    return ref


@pytest.fixture(scope="module")
def null(small_reference: pd.DataFrame) -> DriftNull:
    return compute_null(small_reference, sizes=(100, 300), replicates=40, seed=0)


def test_the_null_is_stored_per_size_and_bounds_noise(null: DriftNull, small_reference: pd.DataFrame) -> None:
    assert null.sizes == (100, 300) and null.grouped_by == "lesion_id" and null.n_reference == 1000
    for name in ("brightness", "sex", "embedding"):
        small, large = null.bound(name, 100), null.bound(name, 300)
        assert small > large > 0  # smaller windows are noisier
        at_100, at_300 = null.bounds[name]
        ratio = np.median([at_100 / math.sqrt(1 / 100 + 1 / 900), at_300 / math.sqrt(1 / 300 + 1 / 700)])
        assert null.bound(name, 200) == pytest.approx(ratio * math.sqrt(1 / 200 + 1 / 1000))
        assert null.bound(name, 3000) < large  # beyond the grid: the sampling scale
    assert DriftNull.from_dict(json.loads(json.dumps(null.as_dict()))) == null
    with pytest.raises(ValueError, match="increasing"):
        DriftNull(sizes=(300, 100), bounds={}, n_reference=1000)


def test_a_null_replay_stays_green(small_reference: pd.DataFrame, null: DriftNull) -> None:
    shares = [compute_drift(small_reference, window(300, seed=s), null=null).share_drifted for s in range(20, 30)]
    assert max(shares) <= 0.1 and np.mean(shares) < 0.05


@pytest.mark.parametrize(("shift", "flagged"), [({"brightness": 0.05}, "brightness"),
                                                ({"embedding_shift": 0.3}, "embedding"),
                                                ({"texture": 0.8}, "texture_distance")])
def test_a_planted_shift_beyond_the_null_goes_red_naming_its_feature(
        small_reference: pd.DataFrame, null: DriftNull, shift: dict, flagged: str) -> None:
    result = compute_drift(small_reference, window(300, seed=40, **shift), null=null)
    assert result.drifted_features()[0] == flagged and len(result.drifted_features()) <= 2
    feature = result.feature(flagged)
    assert feature.score > feature.threshold == max(feature.null_bound, feature.effect_size)


def test_a_shift_within_the_null_is_not_drift(small_reference: pd.DataFrame, null: DriftNull) -> None:
    """A shift of half the noise passes the effect size alone but not the null at 100 answers."""
    result = compute_drift(small_reference, window(100, seed=41, brightness=0.01), null=null,
                           features=["brightness"])
    assert result.drifted_features() == () and result.feature("brightness").null_bound > 0.1


def test_too_few_answers_are_not_judged(small_reference: pd.DataFrame, null: DriftNull) -> None:
    result = compute_drift(small_reference, window(40, seed=42, brightness=0.3), null=null)
    assert not result.enough_answers and math.isnan(result.share_drifted)
    assert result.feature("brightness").score > 1 and not result.feature("brightness").drifted
    assert result.notes[0] == "not enough answers (40 of 50): drift not judged"


@pytest.mark.parametrize(("shift", "flagged"), [
    ({"brightness": 0.15}, "brightness"),
    ({"site_mix": HEAD_HEAVY_MIX}, "anatom_site_general"),
    ({"embedding_shift": 0.5}, "embedding"),
])
def test_a_planted_shift_flags_that_feature_only(reference: pd.DataFrame, shift: dict,
                                                 flagged: str) -> None:
    result = compute_drift(reference, window(N, seed=1, **shift))
    assert result.drifted_features() == (flagged,)
    assert result.share_drifted == pytest.approx(1 / len(DEFAULT_FEATURES))
    assert result.feature(flagged).severity > 2 and not result.feature(flagged).is_p_value


def test_without_texture_distances_the_feature_is_untested_and_the_score_as_before(
        reference: pd.DataFrame) -> None:
    """A version whose gate has no texture check: its reference has no ``texture_distance`` column
    and its logged answers hold NULLs. The feature is untested, saying why, and the score is the
    share over the other 15 features, as before the feature existed."""
    others = [f for f in DEFAULT_FEATURES if f.name != "texture_distance"]
    old_reference = reference.drop(columns="texture_distance")
    logged = window(N, seed=1, brightness=0.15).assign(texture_distance=np.nan)
    for ref, current, why in ((old_reference, logged, "no column 'texture_distance' in the reference data"),
                              (reference, logged, "no values in the current data"),
                              (old_reference, logged.drop(columns="texture_distance"),
                               "no column 'texture_distance' in the reference and current data")):
        result = compute_drift(ref, current)
        texture = result.feature("texture_distance")
        assert not texture.tested and not texture.drifted and why in texture.note
        assert f"texture_distance: not tested: {why}" in result.notes
        assert result.drifted_features() == ("brightness",)
        assert result.share_drifted == 1 / 15 == compute_drift(ref, current, features=others).share_drifted


def test_summaries_show_the_shift(reference: pd.DataFrame) -> None:
    result = compute_drift(reference, window(N, seed=1, brightness=0.15, site_mix=HEAD_HEAVY_MIX),
                           features=["age_approx", "anatom_site_general", "brightness", "contrast"])
    ref, cur = result.feature("brightness").reference_summary, result.feature("brightness").current_summary
    assert isinstance(ref, NumericSummary) and isinstance(cur, NumericSummary)
    assert ref.edges == cur.edges and len(ref.density) == len(ref.edges) - 1
    widths = np.diff(ref.edges)
    assert float(np.sum(np.array(ref.density) * widths)) == pytest.approx(1.0)
    assert cur.mean - ref.mean == pytest.approx(0.15, abs=0.01)
    age = result.feature("age_approx").reference_summary
    assert age.missing == pytest.approx(0.1, abs=0.03) and age.n == round(N * (1 - age.missing))
    site_ref = result.feature("anatom_site_general").reference_summary
    site_cur = result.feature("anatom_site_general").current_summary
    assert isinstance(site_cur, CategoricalSummary) and list(site_ref.shares) == list(site_cur.shares)
    assert site_cur.shares["head/neck"] == pytest.approx(0.5, abs=0.05)
    assert site_ref.shares["head/neck"] == pytest.approx(0.15, abs=0.03)
    groups = result.by_group()
    assert list(groups) == ["metadata", "image"]
    assert [f.name for f in groups["image"]] == ["brightness", "contrast"]
    drifted = result.drifted_features()
    assert set(drifted) == {"brightness", "anatom_site_general"}
    assert result.feature(drifted[0]).severity >= result.feature(drifted[1]).severity


def test_large_windows_are_sampled_with_the_seed(reference: pd.DataFrame) -> None:
    big = window(6000, seed=2)
    features = ["contrast", "sex", "embedding"]
    result = compute_drift(reference, big, sample_size=1000, seed=3, features=features)
    assert (result.n_reference, result.n_current) == (N, 6000)
    assert (result.n_reference_used, result.n_current_used, result.sampled) == (1000, 1000, True)
    assert result.feature("contrast").current_summary.n == 1000
    assert any("sampled" in note for note in result.notes)
    again = compute_drift(reference, big, sample_size=1000, seed=3, features=features)
    other = compute_drift(reference, big, sample_size=1000, seed=4, features=features)
    assert [f.score for f in again.features] == [f.score for f in result.features]
    assert [f.score for f in other.features] != [f.score for f in result.features]


def test_empty_window_gives_a_result_with_a_note(reference: pd.DataFrame) -> None:
    result = compute_drift(reference, reference.iloc[:0])
    assert result.n_current == 0 and result.features == () and math.isnan(result.share_drifted)
    assert "no predictions" in result.notes[0]
    with pytest.raises(DataError, match="reference has no rows"):
        compute_drift(reference.iloc[:0], reference)


def test_all_missing_columns_and_absent_embeddings_are_untested(reference: pd.DataFrame) -> None:
    current = window(N, seed=1)
    current["age_approx"] = np.nan
    current["embedding"] = [None] * N
    result = compute_drift(reference, current)
    for name in ("age_approx", "embedding"):
        feature = result.feature(name)
        assert not feature.tested and not feature.drifted and "not tested" in feature.note
        assert any(note.startswith(name) for note in result.notes)
    age = result.feature("age_approx")
    assert age.current_summary.missing == 1.0 and age.current_summary.n == 0
    assert age.reference_summary.n > 0 and age.reference_summary.edges == age.current_summary.edges
    assert result.share_drifted == 0.0 and len([f for f in result.features if f.tested]) == len(DEFAULT_FEATURES) - 2
    no_column = compute_drift(reference.drop(columns=["embedding"]), current.drop(columns=["embedding"]),
                              features=["embedding", "brightness"])
    assert "no column 'embedding'" in no_column.feature("embedding").note


def test_some_rows_without_embedding_are_left_out(reference: pd.DataFrame) -> None:
    current = window(N, seed=1, embedding_shift=0.5)
    current.loc[current.index[:500], "embedding"] = None
    feature = compute_drift(reference, current, features=["embedding"]).feature("embedding")
    assert feature.drifted and feature.current_summary.n == N - 500
    assert "500 current rows without an embedding" in feature.note


def test_a_category_unseen_in_the_reference(reference: pd.DataFrame) -> None:
    current = window(400, seed=1)
    current.loc[current.index[:60], "anatom_site_general"] = "scalp"
    for ref in (reference, window(400, seed=0)):  # Jensen-Shannon, then chi-square
        site = compute_drift(ref, current, features=["anatom_site_general"]).feature("anatom_site_general")
        assert site.drifted
        assert site.reference_summary.shares["scalp"] == 0.0
        assert site.current_summary.shares["scalp"] == pytest.approx(0.15)
        assert list(site.current_summary.shares)[-1] == "scalp"


def test_features_by_name_and_bad_inputs(reference: pd.DataFrame) -> None:
    specs = resolve_features(["brightness", *CLASS_PROBABILITY_FEATURES])
    assert [s.group for s in specs] == ["image"] + ["output"] * len(CLASSES)
    with pytest.raises(ValueError, match="unknown drift feature 'colour'"):
        resolve_features(["colour"])
    current = window(50, seed=1)
    embeddings = list(current["embedding"])
    embeddings[7] = np.zeros(8, dtype=np.float32)
    current["embedding"] = embeddings
    with pytest.raises(DataError, match="row 8.*embedding"):
        compute_drift(reference, current, features=["embedding"])
    current = window(50, seed=1).astype({"brightness": object})
    current.loc[current.index[0], "brightness"] = "bright"
    with pytest.raises(DataError, match="brightness"):
        compute_drift(reference, current, features=["brightness"])


def test_result_round_trips_through_json(reference: pd.DataFrame) -> None:
    current = window(300, seed=1)
    current["age_approx"] = np.nan
    result = compute_drift(reference, current, features=["age_approx", "sex", "brightness", "embedding"])
    text = json.dumps(result.as_dict(), allow_nan=False)
    back = DriftResult.from_dict(json.loads(text))
    assert back.drifted_features() == result.drifted_features()
    assert back.feature("brightness") == result.feature("brightness")
    assert back.feature("sex") == result.feature("sex")
    assert math.isnan(back.feature("age_approx").score)


def test_html_report_is_written(tmp_path, reference: pd.DataFrame) -> None:
    path = drift_report_html(reference.iloc[:300], window(300, seed=1, brightness=0.15),
                             tmp_path / "reports" / "drift.html", features=["brightness", "sex"])
    text = path.read_text()
    assert path.parent.name == "reports" and "<html" in text.lower()
    assert "brightness" in text and "anatom_site_general" not in text
    with pytest.raises(DataError, match="current data has no rows"):
        drift_report_html(reference, reference.iloc[:0], tmp_path / "empty.html")


@pytest.mark.slow
def test_html_report_with_embeddings(tmp_path, reference: pd.DataFrame) -> None:
    path = drift_report_html(reference.iloc[:300], window(300, seed=1, embedding_shift=0.5),
                             tmp_path / "drift.html", embeddings=True)
    assert "Drift in embeddings" in path.read_text()


def test_the_version_null_is_computed_once_and_stored(tmp_path, small_reference: pd.DataFrame) -> None:
    reference = small_reference.iloc[:400]
    save_standin(tmp_path, "v1", reference=reference)
    first = version_null(tmp_path, "v1", reference)
    assert (tmp_path / "v1" / "drift_null.json").is_file() and first.n_reference == 400
    assert version_null(tmp_path, "v1", reference) == first  # read back, not recomputed
    assert version_null(tmp_path, "v1", reference.iloc[:300]).n_reference == 300  # another reference
    assert version_null(tmp_path, "v1", reference.iloc[:16]) is None  # too small to split
    before_texture = reference.drop(columns="texture_distance")
    assert "texture_distance" not in version_null(tmp_path, "v1", before_texture).bounds
    refitted = version_null(tmp_path, "v1", reference)  # the reference gained texture distances
    assert refitted.bound("texture_distance", 100) > 0
    with pytest.raises(DataError, match="at least 20"):
        compute_null(reference.iloc[:16])
