"""Performance and drift by segment: anatomical site, age band, sex and source (where the answers
came from), for the cockpit's Drift page.

- :func:`segment_performance`: per value of a segment, the labelled answers, the malignant ones
  among them, sensitivity (recall) and specificity of the served call with 95 % Wilson intervals
  (so a small segment shows how little it says), and AUROC of ``p_malignant`` when both classes
  are present. The call is the one the clinic got: any decision but "no referral" counts as
  called malignant.
- :func:`segment_drift`: per value, its share of the reference answers and of the window's
  answers, and the mean ``p_malignant`` of each. A value *shifted* when its share changed by at
  least :data:`MIN_SHARE_CHANGE` AND beyond chance for samples of those sizes (a two-proportion
  chi-square test at :data:`ALPHA`), the same two conditions a drifting feature must meet.

Pure functions of frames with the predictions' columns (``age_approx``, ``sex``,
``anatom_site_general``, ``source``, ``decision``, ``p_malignant``; ``diagnosis`` for labelled
answers).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.stats import binomtest, chi2_contingency
from sklearn.metrics import roc_auc_score

from skinlesion.schema import DEFAULT_MALIGNANT

#: the segments, by column (``age_band`` is derived from ``age_approx``)
SEGMENTS: tuple[str, ...] = ("anatom_site_general", "age_band", "sex", "source")
#: age bands in years: (lowest age, label); ages are ISIC's 5-year steps, capped at 85
AGE_BANDS: tuple[tuple[float, str], ...] = ((0, "under 30"), (30, "30–44"), (45, "45–59"),
                                            (60, "60–74"), (75, "75 and over"))
MISSING = "missing"
#: a value's share must change by at least this much (absolute) to count as shifted
MIN_SHARE_CHANGE = 0.05
#: ... and beyond chance at this level
ALPHA = 0.01
#: the decision that is not a call of malignant
NO_REFERRAL = "no referral"


def age_band(age: float | None) -> str:
    """The band of an age in years (:data:`AGE_BANDS`), or "missing"."""
    if age is None or pd.isna(age):
        return MISSING
    return next(label for low, label in reversed(AGE_BANDS) if age >= low)


def segment_values(frame: pd.DataFrame, segment: str) -> pd.Series:
    """Each row's value of ``segment`` (missing values read "missing"); a ValueError names the
    segments when ``segment`` is not one."""
    if segment not in SEGMENTS:
        raise ValueError(f"unknown segment {segment!r}; segments: {', '.join(SEGMENTS)}")
    if segment == "age_band":
        return frame["age_approx"].map(age_band) if len(frame) else pd.Series(dtype=str)
    if segment not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="object")
    return frame[segment].fillna(MISSING).astype(str).replace("", MISSING)


def _interval(successes: int, trials: int) -> tuple[float, float, float]:
    """(share, low, high): a share with its 95 % Wilson interval; NaNs without trials."""
    if trials == 0:
        return np.nan, np.nan, np.nan
    ci = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return successes / trials, float(ci.low), float(ci.high)


def segment_performance(labelled: pd.DataFrame, segment: str, *,
                        malignant: Iterable[str] = DEFAULT_MALIGNANT) -> pd.DataFrame:
    """Per value of ``segment`` in the labelled answers (most labelled first): ``value``,
    ``labelled``, ``malignant``, ``sensitivity`` with ``sensitivity_low``/``_high``,
    ``specificity`` with its interval, and ``auroc`` (NaN unless both classes are present)."""
    columns = ["value", "labelled", "malignant", "sensitivity", "sensitivity_low",
               "sensitivity_high", "specificity", "specificity_low", "specificity_high", "auroc"]
    if labelled.empty:
        return pd.DataFrame(columns=columns)
    truth = labelled["diagnosis"].isin(set(malignant)).to_numpy()
    called = (labelled["decision"] != NO_REFERRAL).to_numpy()
    scores = labelled["p_malignant"].to_numpy(dtype=float)
    values = segment_values(labelled, segment).to_numpy()
    rows = []
    for value in pd.unique(values):
        at = values == value
        positive, negative = truth[at], ~truth[at]
        sens = _interval(int((called[at] & positive).sum()), int(positive.sum()))
        spec = _interval(int((~called[at] & negative).sum()), int(negative.sum()))
        auroc = (float(roc_auc_score(positive, scores[at])) if positive.any() and negative.any()
                 else np.nan)
        rows.append([value, int(at.sum()), int(positive.sum()), *sens, *spec, auroc])
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["labelled", "value"], ascending=[False, True], ignore_index=True)


def _shift_p_value(ref_count: int, ref_total: int, cur_count: int, cur_total: int) -> float:
    """The chi-square test's p-value that a value's share is the same in both samples."""
    table = np.array([[ref_count, ref_total - ref_count], [cur_count, cur_total - cur_count]])
    if (table.sum(axis=0) == 0).any():
        return 1.0
    return float(chi2_contingency(table)[1])


def segment_drift(current: pd.DataFrame, reference: pd.DataFrame | None,
                  segment: str) -> pd.DataFrame:
    """Per value of ``segment`` seen in either frame (largest current share first): ``value``,
    ``reference_share`` and ``current_share`` (NaN when the reference does not record the
    segment, e.g. the source), ``change``, ``p_value``, ``shifted``, and the mean ``p_malignant``
    of each side (``reference_p_malignant``, ``current_p_malignant``)."""
    columns = ["value", "reference_share", "current_share", "change", "p_value", "shifted",
               "reference_p_malignant", "current_p_malignant"]
    cur = segment_values(current, segment)
    ref = segment_values(reference, segment) if reference is not None else pd.Series(dtype=object)
    has_reference = len(ref) > 0 and ref.notna().any()
    values = sorted(set(cur.dropna()) | (set(ref.dropna()) if has_reference else set()))
    rows = []
    for value in values:
        cur_in, ref_in = cur == value, ref == value
        cur_share = float(cur_in.mean()) if len(cur) else np.nan
        if has_reference:
            ref_share = float(ref_in.mean())
            p_value = _shift_p_value(int(ref_in.sum()), len(ref), int(cur_in.sum()), len(cur))
            change = cur_share - ref_share
            shifted = bool(abs(change) >= MIN_SHARE_CHANGE and p_value < ALPHA)
            ref_p = float(reference.loc[ref_in.to_numpy(), "p_malignant"].mean()) \
                if ref_in.any() else np.nan
        else:
            ref_share = change = p_value = ref_p = np.nan
            shifted = False
        cur_p = float(current.loc[cur_in.to_numpy(), "p_malignant"].mean()) if cur_in.any() else np.nan
        rows.append([value, ref_share, cur_share, change, p_value, shifted, ref_p, cur_p])
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["current_share", "value"], ascending=[False, True], ignore_index=True)
