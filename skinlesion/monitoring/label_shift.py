"""Label shift: has the share of malignant lesions in a window moved from the share the version's
probabilities are calibrated to?

CBPE (:mod:`~skinlesion.monitoring.estimate`) takes ``p_malignant`` at face value. A change of
prevalence (a referral clinic opening, a screening campaign ending) breaks that without moving a
single image feature: the probabilities stay calibrated to the old share, so the estimates follow
the old share too (on the real-image replays, malignant ×2 left estimated precision 0.15 too high
while drift stayed green or yellow). Drift's per-feature distances barely see it at a day's
window, because the change moves only the outputs' distribution, by about the same-population
variation of a 300-answer window.

The window's malignant share is estimated instead, by the EM procedure of Saerens, Latinne and
Decaestecker (2002, "Adjusting the outputs of a classifier to new a priori probabilities"): with
probabilities calibrated to a prior ``pi0``, a prior ``pi`` re-weights each answer to
``p' = (pi/pi0) p / ((pi/pi0) p + ((1-pi)/(1-pi0)) (1-p))``, and the window's maximum-likelihood
``pi`` is the fixed point ``pi = mean(p')``. The band is the central :data:`SHARE_LEVEL` of the
estimate over bootstrap resamples of the window's answers (seeded). The share has **moved** when
the band excludes ``pi0`` and the estimate is at least :data:`MIN_SHARE_CHANGE` from it; the
version's ``pi0`` is the mean ``p_malignant`` of its reference answers (its probabilities are
calibrated on that population, so that mean is the share they stand for).

Pure numpy: no SQL, no streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Central level of the share's bootstrap band: 99 %, so that a window of healthy traffic is
#: flagged on about 1 day in 50 (one test beside drift's and the OOD share's).
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
    low: float
    high: float
    reference: float
    n: int

    @property
    def moved(self) -> bool:
        """The band excludes the reference share and the change is of practical size."""
        return (not self.low <= self.reference <= self.high
                and abs(self.estimate - self.reference) >= MIN_SHARE_CHANGE)

    def describe(self) -> str:
        """The estimate in words, e.g. for an estimate's note."""
        return (f"malignant share estimated {self.estimate:.0%} ({self.low:.0%}-{self.high:.0%}) "
                f"against {self.reference:.0%} in the reference")


def em_prior(p_malignant: object, prior: float) -> np.ndarray:
    """The malignant prior of each row of ``p_malignant`` (shape ``(n,)`` or ``(rows, n)``), whose
    probabilities are calibrated to ``prior``: the Saerens-Latinne-Decaestecker fixed point, every
    row iterated at once until no row moves by more than 1e-7."""
    p = np.clip(np.atleast_2d(np.asarray(p_malignant, dtype=np.float64)), _EPS, 1 - _EPS)
    if not 0 < prior < 1:
        raise ValueError(f"the reference prior must lie in (0, 1), got {prior}")
    pi = np.full(p.shape[0], float(p.mean()) if p.size else prior)
    for _ in range(_STEPS):
        up = p * (pi / prior)[:, None]
        adjusted = up / (up + (1 - p) * ((1 - pi) / (1 - prior))[:, None])
        new = adjusted.mean(axis=1)
        done = np.max(np.abs(new - pi)) < _TOL
        pi = new
        if done:
            break
    return pi


def malignant_share(p_malignant: object, reference_prior: float, *, replicates: int = SHARE_REPLICATES,
                    level: float = SHARE_LEVEL, seed: int = 0) -> MalignantShare | None:
    """The malignant share of a window of answers (their calibrated ``p_malignant``), with its
    bootstrap band, against ``reference_prior``; None below :data:`MIN_SHARE_ANSWERS` answers or
    without a usable reference prior."""
    p = np.asarray(p_malignant, dtype=np.float64).ravel()
    p = p[np.isfinite(p)]
    if p.size < MIN_SHARE_ANSWERS or not math.isfinite(reference_prior) or not 0 < reference_prior < 1:
        return None
    if replicates < 20 or not 0 < level < 1:
        raise ValueError(f"a band needs a level in (0, 1) and at least 20 replicates, got {level}, {replicates}")
    rng = np.random.default_rng(seed)
    boot = em_prior(p[rng.integers(0, p.size, (replicates, p.size))], reference_prior)
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return MalignantShare(estimate=float(em_prior(p, reference_prior)[0]), low=float(low), high=float(high),
                          reference=float(reference_prior), n=int(p.size))
