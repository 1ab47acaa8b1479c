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


def test_em_recovers_a_planted_prevalence_from_calibrated_probabilities():
    for share in (0.1, 0.2, 0.45):
        assert em_prior(_window(share, 20_000, seed=1), PRIOR)[0] == pytest.approx(share, abs=0.015)
    assert np.mean(_window(0.45, 20_000, seed=1)) < 0.40  # the plain mean stays near the old prior
    with pytest.raises(ValueError, match="reference prior"):
        em_prior([0.1, 0.2], 0.0)


def test_healthy_windows_stay_quiet_and_the_band_covers_the_reference():
    shares = [malignant_share(_window(PRIOR, 300, seed=s), PRIOR, seed=s) for s in range(20)]
    assert sum(s.moved for s in shares) <= 1
    assert sum(s.low <= PRIOR <= s.high for s in shares) >= 19


def test_a_doubled_prevalence_moves_the_share_and_says_so():
    moved = [malignant_share(_window(2 * PRIOR, 300, seed=s), PRIOR, seed=s) for s in range(10)]
    assert sum(s.moved for s in moved) >= 8
    assert all(abs(s.estimate - 2 * PRIOR) < 0.1 for s in moved)
    assert "against 20% in the reference" in moved[0].describe()


def test_a_change_of_no_practical_size_is_not_flagged_however_large_the_window():
    share = malignant_share(_window(PRIOR + 0.025, 50_000, seed=3), PRIOR, replicates=50)
    assert not share.low <= PRIOR <= share.high  # the band alone would flag it
    assert not share.moved


def test_too_few_answers_or_no_reference_give_no_estimate():
    assert malignant_share(_window(PRIOR, MIN_SHARE_ANSWERS - 1, seed=0), PRIOR) is None
    assert malignant_share(_window(PRIOR, 300, seed=0), float("nan")) is None
    assert MalignantShare(0.4, 0.33, 0.47, 0.2, 300).moved
    assert not MalignantShare(0.23, 0.21, 0.25, 0.2, 30_000).moved
