"""The window's malignant share (label_shift): recovered from calibrated probabilities after a
planted change of prevalence, flagged when it moved by a practical amount, quiet otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from skinlesion.monitoring.label_shift import MIN_SHARE_ANSWERS, MalignantShare, em_prior, malignant_share

PRIOR = 0.2
SEPARATION = 2.0  # class-conditional scores N(+-1, 1): AUROC about 0.92


def _window(share: float, n: int, seed: int) -> np.ndarray:
    """``p_malignant`` of ``n`` cases drawn with malignant share ``share``, calibrated to :data:`PRIOR`."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < share
    score = rng.normal(np.where(y, SEPARATION / 2, -SEPARATION / 2), 1.0)
    odds = PRIOR / (1 - PRIOR) * np.exp(SEPARATION * score)  # likelihood ratio of N(+-1, 1) times the prior odds
    return odds / (1 + odds)


REFERENCE = _window(PRIOR, 1200, seed=100)


def test_em_recovers_a_planted_prevalence_from_calibrated_probabilities():
    for share in (0.1, 0.2, 0.45):
        assert em_prior(_window(share, 20_000, seed=1), PRIOR)[0] == pytest.approx(share, abs=0.015)
    assert np.mean(_window(0.45, 20_000, seed=1)) < 0.40  # the plain mean stays near the old prior
    rows = np.stack([_window(0.1, 5_000, seed=2), _window(0.45, 5_000, seed=3)])
    assert em_prior(rows, np.array([PRIOR, PRIOR])) == pytest.approx([0.1, 0.45], abs=0.02)
    with pytest.raises(ValueError, match="reference prior"):
        em_prior([0.1, 0.2], 0.0)


def test_healthy_windows_stay_quiet_and_the_band_covers_no_change():
    shares = [malignant_share(_window(PRIOR, 300, seed=s), REFERENCE, seed=s) for s in range(20)]
    assert sum(s.moved for s in shares) <= 1
    assert sum(s.change_low <= 0 <= s.change_high for s in shares) >= 19
    assert all(s.reference == pytest.approx(REFERENCE.mean()) for s in shares)


def test_a_doubled_prevalence_moves_the_share_and_says_so():
    moved = [malignant_share(_window(2 * PRIOR, 300, seed=s), REFERENCE, seed=s) for s in range(10)]
    assert sum(s.moved for s in moved) >= 8
    assert all(abs(s.estimate - 2 * PRIOR) < 0.1 and s.change_low > 0 for s in moved if s.moved)
    assert "in the reference (change +" in moved[0].describe()


def test_a_change_of_no_practical_size_is_not_flagged_however_large_the_windows():
    share = malignant_share(_window(PRIOR + 0.025, 50_000, seed=3), _window(PRIOR, 50_000, seed=4),
                            replicates=50)
    assert share.change_low > 0  # the band alone would flag it
    assert not share.moved


def test_too_few_answers_give_no_estimate():
    assert malignant_share(_window(PRIOR, MIN_SHARE_ANSWERS - 1, seed=0), REFERENCE) is None
    assert malignant_share(_window(PRIOR, 300, seed=0), REFERENCE[:10]) is None
    assert malignant_share(_window(PRIOR, 300, seed=0), [np.nan] * 100) is None
    assert MalignantShare(0.4, 0.2, 0.13, 0.27, 300).moved
    assert not MalignantShare(0.23, 0.2, 0.01, 0.05, 30_000).moved
