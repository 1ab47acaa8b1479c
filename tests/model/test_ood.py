"""The OOD gate: about its quantile of same-distribution images flagged, a planted outlier flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skinlesion.model.ood import OODGate, fit_ood_gate


def embeddings(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Correlated 8-d embeddings (a fixed mixing matrix), optionally shifted along every axis."""
    mixing = np.random.default_rng(0).normal(size=(8, 8))
    return np.random.default_rng(seed).normal(size=(n, 8)) @ mixing + shift


@pytest.fixture(scope="module")
def gate() -> OODGate:
    return fit_ood_gate(embeddings(2000, seed=1), embeddings(500, seed=2), quantile=0.99)


def test_same_distribution_flags_about_the_quantile(gate: OODGate) -> None:
    share = gate.flags(embeddings(5000, seed=3)).mean()
    assert 0.003 < share < 0.025
    assert gate.n_train == 2000 and gate.n_validation == 500 and gate.dim == 8


def test_a_planted_outlier_and_a_shifted_batch_are_flagged(gate: OODGate) -> None:
    typical = embeddings(1, seed=4)[0]
    outlier = typical + 40.0 * np.eye(8)[3]
    flags = gate.flags(np.stack([typical, outlier]))
    assert flags.tolist() == [False, True]
    assert gate.flags(embeddings(500, seed=5, shift=6.0)).mean() > 0.9
    assert "out of distribution" in gate.reason(float(gate.distance(outlier)[0]))


def test_round_trip_and_bad_inputs(gate: OODGate) -> None:
    back = OODGate.from_dict(json.loads(json.dumps(gate.as_dict())))
    x = embeddings(10, seed=6)
    np.testing.assert_allclose(back.distance(x), gate.distance(x))
    with pytest.raises(ValueError, match="components"):
        gate.distance(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="at least 20"):
        fit_ood_gate(embeddings(10, seed=1), embeddings(500, seed=2))
    with pytest.raises(ValueError, match="same d"):
        fit_ood_gate(embeddings(100, seed=1), embeddings(100, seed=2)[:, :4])
