"""A fit's calibration step on its validation logits: the calibration modes
(:data:`skinlesion.train_config.CALIBRATION_MODES`) as :class:`~skinlesion.calibration.Calibrator`
s, folded exactly into the network's last layer (and back), and the malignant threshold for a
target sensitivity."""

from __future__ import annotations

import numpy as np
import torch

from skinlesion import calibration, metrics
from skinlesion.model.fusion import FusionNet
from skinlesion.schema import DEFAULT_MALIGNANT, class_index
from skinlesion.train_config import CALIBRATION_MODES


def _prior_shift(weights: np.ndarray, calibration_mode: str) -> np.ndarray:
    """Per-class logit offset of the calibration mode: ``-log(weights)`` for ``prior+temperature``
    (a loss weighted by ``w_c`` learns ``p(c|x)`` times ``w_c``; the offset undoes that, so the
    probabilities follow the training prevalence again), zeros for ``temperature``."""
    if calibration_mode == "prior+temperature":
        return -np.log(weights / weights.max())
    return np.zeros_like(weights)


def fit_mode(raw_logits: np.ndarray, y: np.ndarray, class_weights: np.ndarray,
             calibration_mode: str) -> calibration.Calibrator:
    """The calibrator of ``calibration_mode`` (one of :data:`CALIBRATION_MODES`) fitted on raw
    logits and labels: ``prior+temperature`` is the fixed prior offset of ``class_weights`` then a
    temperature; the others are :func:`skinlesion.calibration.fit_calibrator`."""
    if calibration_mode not in CALIBRATION_MODES:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_MODES)}, "
                         f"got {calibration_mode!r}")
    if calibration_mode != "prior+temperature":
        return calibration.fit_calibrator(raw_logits, y, calibration_mode)
    shift = _prior_shift(class_weights, calibration_mode)
    temperature = calibration.fit_temperature(raw_logits + shift, y)
    return calibration.Calibrator(calibration_mode, np.full(shift.size, 1.0 / temperature),
                                  shift / temperature)


def threshold_at(y: np.ndarray, probs: np.ndarray, target_sensitivity: float) -> float:
    """The malignant threshold giving ``target_sensitivity`` on labelled calibrated answers."""
    is_mal = np.isin(y, [class_index(c) for c in DEFAULT_MALIGNANT])
    return calibration.threshold_for_sensitivity(is_mal, metrics.p_malignant(probs),
                                                 target=target_sensitivity)


def fold_calibrator(net: FusionNet, new: calibration.Calibrator,
                    old: calibration.Calibrator | None = None) -> None:
    """Make the network serve ``new``: its last layer changed so that its logits divided by
    ``new.temperature`` (the classifier's temperature) are ``new.logits(raw)``, where ``raw`` are the
    logits before ``old`` (the calibrator folded in so far; None: nothing was). Per class ``c`` the
    served logit is ``T * (scale_c * raw_c + bias_c)``; a temperature or BCTS leaves the weights
    as they are (``T * scale_c = 1``) and moves the bias only."""
    old = old or calibration.Calibrator.identity(new.scale.size)
    # raw = (served_old / T_old - bias_old) / scale_old; served_new = T_new * (scale_new * raw + bias_new)
    factor = new.temperature * new.scale / (old.temperature * old.scale)
    offset = new.temperature * (new.bias - new.scale * old.bias / old.scale)
    with torch.no_grad():
        w, b = net.fc.weight, net.fc.bias
        w.mul_(torch.as_tensor(factor, dtype=w.dtype, device=w.device)[:, None])
        b.mul_(torch.as_tensor(factor, dtype=b.dtype, device=b.device))
        b.add_(torch.as_tensor(offset, dtype=b.dtype, device=b.device))


def unfold_logits(served: np.ndarray, folded: calibration.Calibrator) -> np.ndarray:
    """The raw logits behind a network's outputs ``served`` when ``folded`` is folded into it (the
    inverse of :func:`fold_calibrator`)."""
    return (served / folded.temperature - folded.bias) / folded.scale
