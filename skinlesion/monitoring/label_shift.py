"""Label shift: has the share of malignant lesions in a window moved from the share the version's
probabilities are calibrated to?

CBPE (:mod:`~skinlesion.monitoring.estimate`) takes ``p_malignant`` at face value. A change of
prevalence (a referral clinic opening, a screening campaign ending) breaks that without moving a
single image feature: the probabilities stay calibrated to the old share, so the estimates follow
the old share too (on the real-image replays, malignant ×2 left estimated precision about 0.16
below the realised while drift stayed green or yellow). Drift's per-feature distances barely see it at a day's
window, because the change moves only the outputs' distribution, by about the same-population
variation of a 300-answer window.

The window's malignant share is estimated instead, by the EM procedure of Saerens, Latinne and
Decaestecker (2002, "Adjusting the outputs of a classifier to new a priori probabilities"): with
probabilities calibrated to a prior ``pi0``, a prior ``pi`` re-weights each answer to
``p' = (pi/pi0) p / ((pi/pi0) p + ((1-pi)/(1-pi0)) (1-p))``, and the window's maximum-likelihood
``pi`` is the fixed point ``pi = mean(p')``. The version's ``pi0`` is the mean ``p_malignant`` of
its reference answers (its probabilities are calibrated on that population, so that mean is the
share they stand for). Both are estimates: the band is the central :data:`SHARE_LEVEL` of the
*change* ``pi - pi0`` over bootstrap replicates (seeded) that resample the window's answers and the
reference's answers together. The EM amplifies a small difference of calibration between the
reference and new answers of the same population (on the reference model's test split, mean
``p_malignant`` 0.014 below validation's became an estimated share 0.035 below it), and the
reference's resampling carries the part of that which 1,211 reference answers leave open. The
share has **moved** when the band of the change excludes 0 and the estimate is at least
:data:`MIN_SHARE_CHANGE` from ``pi0``.

Pure numpy: no SQL, no streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Central level of the change's bootstrap band: 99 % (one test beside drift's and the OOD share's).
SHARE_LEVEL = 0.99
SHARE_REPLICATES = 200
#: Smallest change of the malignant share flagged, in absolute terms: about one and a half
#: standard deviations of the estimate in a 300-answer day of the reference model's test images,
#: so a very large window does not flag a change of no practical size.
MIN_SHARE_CHANGE = 0.05
#: Fewer answers than this give no estimate (drift's minimum window too).
MIN_SHARE_ANSWERS = 50
_STEPS = 1000
_TOL = 1e-7
_EPS = 1e-9


@dataclass(frozen=True)
class MalignantShare:
    """A window's estimated malignant share with its band, against the version's ``reference``."""

    estimate: float
    reference: float
    change_low: float
    change_high: float
    n: int

    @property
    def moved(self) -> bool:
        """The band of the change excludes 0 and the change is of practical size."""
        return (not self.change_low <= 0 <= self.change_high
                and abs(self.estimate - self.reference) >= MIN_SHARE_CHANGE)

    def describe(self) -> str:
        """The estimate in words, e.g. for an estimate's note."""
        return (f"malignant share estimated {self.estimate:.0%} against {self.reference:.0%} in the "
                f"reference (change {100 * self.change_low:+.0f} to {100 * self.change_high:+.0f} points)")


def em_prior(p_malignant: object, prior: float | np.ndarray) -> np.ndarray:
    """The malignant prior of each row of ``p_malignant`` (shape ``(n,)`` or ``(rows, n)``), whose
    probabilities are calibrated to ``prior`` (one for all rows, or one per row): the
    Saerens-Latinne-Decaestecker fixed point, every row iterated at once until no row moves by
    more than 1e-7."""
    p = np.clip(np.atleast_2d(np.asarray(p_malignant, dtype=np.float64)), _EPS, 1 - _EPS)
    prior = np.broadcast_to(np.asarray(prior, dtype=np.float64), p.shape[:1])
    if not np.all((prior > 0) & (prior < 1)):
        raise ValueError(f"the reference prior must lie in (0, 1), got {prior.min()} to {prior.max()}")
    pi = p.mean(axis=1)
    for _ in range(_STEPS):
        up = p * (pi / prior)[:, None]
        adjusted = up / (up + (1 - p) * ((1 - pi) / (1 - prior))[:, None])
        new = adjusted.mean(axis=1)
        done = np.max(np.abs(new - pi)) < _TOL
        pi = new
        if done:
            break
    return pi


def _finite(values: object) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def malignant_share(p_malignant: object, reference_p: object, *, replicates: int = SHARE_REPLICATES,
                    level: float = SHARE_LEVEL, seed: int = 0) -> MalignantShare | None:
    """The malignant share of a window of answers (their calibrated ``p_malignant``) against the
    version's reference answers' (``reference_p``, their ``p_malignant``), with the bootstrap band
    of the change; None below :data:`MIN_SHARE_ANSWERS` answers on either side or for a reference
    whose mean is 0 or 1."""
    p, ref = _finite(p_malignant), _finite(reference_p)
    if p.size < MIN_SHARE_ANSWERS or ref.size < MIN_SHARE_ANSWERS or not 0 < ref.mean() < 1:
        return None
    if replicates < 20 or not 0 < level < 1:
        raise ValueError(f"a band needs a level in (0, 1) and at least 20 replicates, got {level}, {replicates}")
    rng = np.random.default_rng(seed)
    priors = np.clip(ref[rng.integers(0, ref.size, (replicates, ref.size))].mean(axis=1), _EPS, 1 - _EPS)
    change = em_prior(p[rng.integers(0, p.size, (replicates, p.size))], priors) - priors
    alpha = (1 - level) / 2
    low, high = np.quantile(change, [alpha, 1 - alpha])
    prior = float(ref.mean())
    return MalignantShare(estimate=float(em_prior(p, prior)[0]), reference=prior,
                          change_low=float(low), change_high=float(high), n=int(p.size))
