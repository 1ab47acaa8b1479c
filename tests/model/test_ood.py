"""The OOD gate: about its share of same-distribution images flagged, a planted outlier flagged by
the check that sees it (a turned embedding of ordinary size too; a smoother texture by the texture
check), the texture check's sidecar, and cards of the earlier forms (raw embedding components, no
texture check) still read."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from skinlesion.model.ood import GATE_STATS, OODGate, card_gate, fit_ood_gate, stats_matrix


def embeddings(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Correlated 8-d embeddings (a fixed mixing matrix) around a fixed centre away from the origin
    (as pooled features are), optionally shifted along every axis."""
    rng = np.random.default_rng(0)
    mixing, centre = rng.normal(size=(8, 8)), rng.normal(3.0, 2.0, size=8)
    return np.random.default_rng(seed).normal(size=(n, 8)) @ mixing + centre + shift


def stats(n: int, seed: int, brightness: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(0.5, 0.05, n) for name in GATE_STATS})
    frame["sharpness"] = rng.lognormal(-4, 0.3, n)
    frame["brightness"] += brightness
    return frame


@pytest.fixture(scope="module")
def gate() -> OODGate:
    return fit_ood_gate(embeddings(2000, seed=1), stats(2000, seed=1), embeddings(1000, seed=2),
                        stats(1000, seed=2), share=0.01)


def test_same_distribution_flags_about_its_validation_share(gate: OODGate) -> None:
    share = gate.flags(embeddings(5000, seed=3), stats(5000, seed=3)).mean()
    assert 0.004 < share < 0.02
    assert 0.99 < gate.quantile < 1
    assert gate.n_train == 2000 and gate.n_validation == 1000 and gate.dim == 8


def test_a_planted_outlier_is_flagged_by_the_check_that_sees_it(gate: OODGate) -> None:
    typical, typical_stats = embeddings(1, seed=4)[0], stats(1, seed=4).iloc[0].to_dict()
    outlier = typical + 40.0 * np.eye(8)[3]
    assert gate.reasons(typical, typical_stats) == []
    (reason,) = gate.reasons(outlier, typical_stats)
    assert reason.startswith("out of distribution: the image is unlike the training images (embedding")
    dark = {**typical_stats, "brightness": typical_stats["brightness"] - 0.4}
    joint, alone = gate.reasons(typical, dark)
    assert "colour, exposure or sharpness" in joint
    assert alone.startswith("out of distribution: brightness unlike the training images")
    assert gate.flags(embeddings(500, seed=5, shift=6.0), stats(500, seed=5)).mean() > 0.9
    assert gate.flags(embeddings(500, seed=5), stats(500, seed=5, brightness=-0.3)).mean() > 0.9


def test_a_turned_embedding_of_ordinary_length_is_flagged(gate: OODGate) -> None:
    """Each component's size as in training, the signs scrambled: the vector points where no
    training image does."""
    x = embeddings(500, seed=7)
    turned = np.abs(x) * np.sign(np.random.default_rng(8).normal(size=(500, 8)))  # signs scrambled
    ordinary = stats(500, seed=7)
    assert gate.flags(turned, ordinary).mean() > 2 * gate.flags(x, ordinary).mean() + 0.1


def test_a_card_of_the_earlier_form_still_reads(gate: OODGate) -> None:
    raw = fit_ood_gate(embeddings(300, seed=1), stats(300, seed=1), embeddings(300, seed=2), stats(300, seed=2))
    card = {k: v for k, v in raw.as_dict().items() if k != "embedding_form"}
    card["embedding"] = {"mean": [0.0] * 8, "precision": np.eye(8).tolist(), "bound": 3.0}
    old = OODGate.from_dict(card)
    assert old.embedding_form == "raw" and old.dim == 8
    (reason,) = old.reasons(np.full(8, 5.0), stats(1, seed=4).iloc[0].to_dict())
    assert "embedding distance 14.1" in reason


def test_round_trip_and_bad_inputs(gate: OODGate) -> None:
    back = OODGate.from_dict(json.loads(json.dumps(gate.as_dict())))
    x, s = embeddings(10, seed=6), stats(10, seed=6)
    np.testing.assert_array_equal(back.flags(x, s), gate.flags(x, s))
    with pytest.raises(ValueError, match="components"):
        gate.flags(np.zeros((2, 5)), stats(2, seed=0))
    with pytest.raises(ValueError, match="at least 20"):
        fit_ood_gate(embeddings(10, seed=1), stats(10, seed=1), embeddings(500, seed=2), stats(500, seed=2))
    with pytest.raises(ValueError, match="same d"):
        fit_ood_gate(embeddings(100, seed=1), stats(100, seed=1), embeddings(100, seed=2)[:, :4], stats(100, seed=2))
    with pytest.raises(ValueError, match="re-register"):
        OODGate.from_dict({"method": "mahalanobis", "mean": [0.0]})


def test_one_statistic_far_off_is_flagged_by_the_one_by_one_check(gate: OODGate) -> None:
    """Sharpness alone 4 standard deviations low (a heavy blur): within the joint distance's bound,
    beyond the one-by-one check's."""
    typical, typical_stats = embeddings(1, seed=4)[0], stats(1, seed=4).iloc[0].to_dict()
    blurred = {**typical_stats, "sharpness": typical_stats["sharpness"] * np.exp(-0.3 * 4)}  # log sd 0.3
    assert gate.stats.distance(stats_matrix([blurred]))[0] < gate.stats.bound
    (reason,) = gate.reasons(typical, blurred)
    assert reason.startswith("out of distribution: sharpness unlike the training images")
    assert gate.extremes is not None and OODGate.from_dict(gate.as_dict()).extremes is not None


# --- the texture check --------------------------------------------------------------------------------


def texture(n: int, seed: int, smooth: float = 1.0) -> np.ndarray:
    """40 texture statistics (20 channel means, then their 20 standard deviations) driven by 6
    correlated factors (a fixed mixing) around fixed positive levels; ``smooth`` scales the
    standard deviations (a blurred or drawn image has less grain)."""
    rng = np.random.default_rng(10)
    mixing, level = rng.normal(size=(6, 40)), rng.uniform(1.0, 2.0, size=40)
    rows = level * np.exp(0.1 * np.random.default_rng(seed).normal(size=(n, 6)) @ mixing / 2.5)
    rows[:, 20:] *= smooth
    return rows


@pytest.fixture(scope="module")
def textured() -> OODGate:
    return fit_ood_gate(embeddings(600, seed=1), stats(600, seed=1), embeddings(400, seed=2), stats(400, seed=2),
                        train_texture=texture(600, seed=1), validation_texture=texture(400, seed=2))


def test_the_texture_check_flags_a_different_texture_and_not_the_training_one(textured: OODGate) -> None:
    assert textured.texture is not None and textured.texture.width == 40
    assert textured.texture_bound == textured.texture.bound > 0
    x, s = embeddings(500, seed=3), stats(500, seed=3)
    same = textured.texture_distance(texture(500, seed=3))
    smooth = textured.texture_distance(texture(500, seed=3, smooth=0.7))
    assert textured.texture_flags(same).mean() < 0.03
    assert textured.texture_flags(smooth).mean() > 0.95
    assert textured.flags(x, s).mean() < 0.03  # embedding and statistics ordinary: the texture decides
    assert textured.flags(x, s, smooth).mean() > 0.95
    (reason,) = textured.reasons(x[0], s.iloc[0].to_dict(), float(smooth[0]))
    assert reason.startswith("out of distribution: colour, grain and texture unlike the training images "
                             f"(texture distance {smooth[0]:.0f} > {textured.texture_bound:.0f})")
    assert textured.reasons(x[0], s.iloc[0].to_dict(), float(same[0])) == []
    assert textured.reasons(x[0], s.iloc[0].to_dict(), None) == []  # not measured: no texture reason
    # answers logged without a distance (None / NaN) are not flagged by it
    assert textured.texture_flags([None, np.nan, float(smooth[0])]).tolist() == [False, False, True]


def test_the_texture_check_reads_from_its_sidecar_and_old_gates_have_none(textured: OODGate, tmp_path) -> None:
    card = json.loads(json.dumps({"ood": textured.as_dict()}))
    assert card["ood"]["texture"]["file"] == "ood_texture.npz" and len(json.dumps(card)) < 20_000
    with pytest.raises(ValueError, match="ood_texture.npz is missing"):
        card_gate(card, tmp_path)
    textured.save_arrays(tmp_path)
    back = card_gate(card, tmp_path)
    rows = texture(20, seed=5, smooth=0.8)
    np.testing.assert_allclose(back.texture_distance(rows), textured.texture_distance(rows), rtol=1e-5)
    assert card_gate(card).texture is None  # without the version folder: no texture check
    old = fit_ood_gate(embeddings(300, seed=1), stats(300, seed=1), embeddings(300, seed=2), stats(300, seed=2))
    assert old.texture is None and old.texture_bound is None and old.as_dict()["texture"] is None
    assert old.texture_flags([3.0, None]).tolist() == [False, False]
    with pytest.raises(ValueError, match="no texture check"):
        old.texture_distance(rows)
    with pytest.raises(ValueError, match="texture statistics must be one row"):
        fit_ood_gate(embeddings(100, seed=1), stats(100, seed=1), embeddings(100, seed=2), stats(100, seed=2),
                     train_texture=texture(100, seed=1), validation_texture=texture(100, seed=2)[:, :30])
