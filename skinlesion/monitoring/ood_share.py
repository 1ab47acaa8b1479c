"""The out-of-distribution share of a window and the label-free checks beside its estimates
(:func:`estimate_checks`: the estimates' bands, the share of answers beyond the version's OOD
gate, the window's malignant share against the reference's), how the OOD share is coloured
(:func:`ood_status`) and when a window is too small to judge it.
Pure functions over a sample of answers; :mod:`skinlesion.monitoring.health` puts them on the
health report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skinlesion.errors import ModelNotFoundError
from skinlesion.model.ood import OODGate, card_gate
from skinlesion.monitoring.drift_results import MIN_ANSWERS
from skinlesion.monitoring.estimate import estimate_band
from skinlesion.monitoring.label_shift import MalignantShare, malignant_share
from skinlesion.registry import read_card, resolve_version
from skinlesion.thresholds import Status

#: The share of a window's answers beyond the version's OOD gate; its gate flags about 1% of
#: images like its validation answers, so a share above these is yellow / red.
OOD_METRIC = "ood_share"
OOD_SHARE_YELLOW = 0.03
OOD_SHARE_RED = 0.06
#: Below this many answers the OOD share is shown but not judged (drift's minimum too): with a
#: gate flagging about 1.4 % of healthy images, 3 of 46 answers (6.5 %, red) happen by chance on
#: about one healthy demo day a month, while 6 of 100 are unlikely (binomial, p < 0.01).
MIN_OOD_ANSWERS = MIN_ANSWERS


def ood_status(share: float | None, n: int) -> Status:
    """The colour of a window's out-of-distribution share of ``n`` answers (:data:`OOD_SHARE_YELLOW`,
    ``_RED``); UNKNOWN without a share or below :data:`MIN_OOD_ANSWERS` answers."""
    if share is None or n < MIN_OOD_ANSWERS:
        return Status.UNKNOWN
    return Status.RED if share > OOD_SHARE_RED else Status.YELLOW if share > OOD_SHARE_YELLOW else Status.GREEN


def version_gate(models_dir: Path, version: str) -> OODGate | None:
    """The OOD gate stored in ``version``'s card (with its texture check, read from the version
    folder); None for a version without one or not found."""
    try:
        folder = Path(models_dir) / resolve_version(models_dir, version)
        return card_gate(read_card(folder).model_extra, folder)
    except ModelNotFoundError:
        return None


@dataclass(frozen=True)
class EstimateChecks:
    """What :func:`estimate_checks` found about a window: the estimates' ``bands``, the share of
    answers beyond the OOD gate (``ood_share``, None without a gate or embeddings) with a note on
    what was checked, and the window's ``malignant_share`` (None without a reference or below its
    minimum window)."""

    bands: dict[str, tuple[float, float]] | None = None
    ood_share: float | None = None
    ood_note: str = ""
    malignant_share: MalignantShare | None = None


def estimate_checks(current: pd.DataFrame, reference: pd.DataFrame | None, gate: OODGate | None,
                    malignant: tuple[str, ...]) -> EstimateChecks:
    """The label-free checks of a window (``current``, a sample of its answers with
    ``p_malignant`` and ``threshold``) against the version's ``reference`` answers: the estimate
    bands (recalibration uncertainty from the reference when it carries ``diagnosis``), the
    malignant share (:func:`~skinlesion.monitoring.label_shift.malignant_share` against the
    reference's mean ``p_malignant``) and the share of answers beyond ``gate``. An answer is out of
    distribution when the embedding or image-statistics checks flag it, or its logged
    ``texture_distance`` lies beyond the gate's texture bound; answers without one (a version
    whose gate has no texture check, answers logged before the column) by the other checks only."""
    if current.empty:
        return EstimateChecks(ood_note="no predictions in the window")
    labelled = reference is not None and "diagnosis" in reference.columns and len(reference) >= 20
    p = current["p_malignant"].to_numpy(dtype=float)
    bands = estimate_band(p, current["threshold"].to_numpy(dtype=float),
                          reference_p=reference["p_malignant"].to_numpy(dtype=float) if labelled else None,
                          reference_malignant=reference["diagnosis"].isin(list(malignant)).to_numpy()
                          if labelled else None)
    share = malignant_share(p, reference["p_malignant"]) if reference is not None else None
    if gate is None:
        return EstimateChecks(bands, None, "the version has no OOD gate", share)
    if "embedding" not in current.columns:
        return EstimateChecks(bands, None, "the answers carry no embedding", share)
    embedded = current[current["embedding"].map(lambda e: e is not None and np.size(e) == gate.dim)]
    if embedded.empty:
        return EstimateChecks(bands, None, "the answers carry no embedding", share)
    texture = embedded["texture_distance"] if "texture_distance" in embedded.columns else None
    ood = float(gate.flags(np.stack(embedded["embedding"].to_list()), embedded, texture).mean())
    return EstimateChecks(bands, ood, f"{len(embedded):,} answers checked against the version's OOD gate; "
                                      f"{texture_note(gate, texture)}", share)


def ood_judged(share: float | None, n: int) -> str:
    """Says so when a window's OOD share is too small to judge."""
    if share is None or n >= MIN_OOD_ANSWERS:
        return ""
    return f"not enough answers ({n} of {MIN_OOD_ANSWERS}): the share is not judged"


def texture_note(gate: OODGate, texture: pd.Series | None) -> str:
    """How many of the checked answers the gate's texture check saw."""
    if gate.texture_bound is None:
        return "the gate has no texture check"
    measured = 0 if texture is None else int(pd.to_numeric(texture).notna().sum())
    return f"{measured:,} of them with a texture distance (bound {gate.texture_bound:.1f})"
