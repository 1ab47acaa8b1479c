"""Figures for evaluation reports and the dashboard, readable by a clinician.

Every function builds a :class:`matplotlib.figure.Figure` directly (object-oriented API, no pyplot):
nothing is shown, no global figure state is kept (safe in the API and Streamlit threads), and
``fig.savefig(path)`` renders with the Agg backend. Inputs follow :mod:`skinlesion.metrics`:
``y_true`` class indices and ``probs`` (n, 8) in CLASSES order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from skinlesion import metrics
from skinlesion.schema import CLASS_NAMES, CLASSES, DEFAULT_MALIGNANT, class_index, malignant_mask

_MISSED = "#c0392b"  # red: a malignant lesion called benign
_NEUTRAL = "#333333"


def _label(code: str) -> str:
    return f"{CLASS_NAMES[code]} ({code})"


# --- confusion matrix --------------------------------------------------------------------------------


def confusion_matrix_figure(y_true: object, probs: object, *,
                            title: str = "Confusion matrix (rows: true diagnosis)") -> Figure:
    """8x8 confusion matrix of the top prediction; colour = share of the true class (rows sum to
    1), each cell annotated with that share and the count."""
    counts = metrics.confusion_matrix(y_true, probs)
    support = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(support[:, None] > 0, counts / support[:, None], 0.0)
    fig = Figure(figsize=(10, 8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true diagnosis")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            if support[i] == 0:
                text = "–"
            else:
                text = f"{share[i, j]:.2f}\n({counts[i, j]})"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else _NEUTRAL)
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), [f"{_label(c)}  n={n}" for c, n in zip(CLASSES, support)],
                  fontsize=8)
    ax.set_xlabel("predicted diagnosis (highest probability)")
    ax.set_ylabel("true diagnosis")
    ax.set_title(f"{title}\nbalanced accuracy = mean of the diagonal over diagnoses present",
                 fontsize=11)
    return fig


# --- ROC curves ----------------------------------------------------------------------------------------


def _has_both(truth: np.ndarray) -> bool:
    return bool(truth.any() and not truth.all())


def roc_figure(y_true: object, probs: object, *, malignant: Iterable[str] = DEFAULT_MALIGNANT,
               min_sensitivity: float = 0.80) -> Figure:
    """Left: the malignant-vs-benign ROC curve of p(malignant) with its AUROC and the ISIC partial
    AUC above ``min_sensitivity`` (line and shaded region). Right: each diagnosis against the rest,
    AUCs in the legend. Curves that are undefined (one outcome only) are listed as "n/a"."""
    malignant = tuple(malignant)
    y, p = metrics.check_inputs(y_true, probs)
    is_mal = np.asarray(malignant_mask(malignant))[y]
    fig = Figure(figsize=(13, 6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax in (left, right):
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false-positive rate (1 − specificity)")
        ax.set_ylabel("true-positive rate (sensitivity)")
        ax.grid(alpha=0.3)

    left.axhline(min_sensitivity, ls="--", color=_MISSED, lw=1,
                 label=f"{min_sensitivity:.0%} sensitivity")
    if _has_both(is_mal):
        fpr, tpr, _ = metrics.roc_curve_points(y, p, malignant=malignant)
        auc = metrics.auroc(y, p, malignant=malignant)
        pauc = metrics.partial_auc(y, p, malignant=malignant, min_sensitivity=min_sensitivity)
        left.plot(fpr, tpr, lw=2, color="#1f4e79", label=f"malignant vs benign, AUROC {auc:.3f}")
        left.fill_between(fpr, tpr, where=tpr >= min_sensitivity, color="#1f4e79", alpha=0.15,
                          label=f"partial AUC above {min_sensitivity:.0%} (ISIC) {pauc:.3f}")
    else:
        left.text(0.5, 0.4, "not defined: needs both malignant\nand benign cases", ha="center")
    left.set_title(f"Malignant ({', '.join(malignant)}) vs benign\n"
                   f"{int(is_mal.sum())} malignant, {int((~is_mal).sum())} benign")
    left.legend(loc="lower right", fontsize=8)

    colours = [f"C{k}" for k in range(len(CLASSES))]
    for k, code in enumerate(CLASSES):
        truth = y == k
        if _has_both(truth):
            fpr, tpr, _ = metrics.roc_curve_points(y, p, cls=code)
            auc = float(np.trapezoid(tpr, fpr))
            right.plot(fpr, tpr, lw=1.5, color=colours[k], label=f"{_label(code)}: AUC {auc:.3f}")
        else:
            right.plot([], [], color=colours[k], label=f"{_label(code)}: n/a (n={int(truth.sum())})")
    right.set_title("Each diagnosis vs the rest")
    right.legend(loc="lower right", fontsize=7)
    return fig


# --- calibration ---------------------------------------------------------------------------------------


def calibration_figure(y_true: object, probs: object, *,
                       malignant: Iterable[str] = DEFAULT_MALIGNANT, n_bins: int = 10) -> Figure:
    """Top: reliability diagram (observed frequency vs predicted probability, per bin) for
    p(malignant) and for the top prediction's confidence, with their expected calibration errors.
    Bottom: how p(malignant) is distributed among benign and malignant lesions."""
    malignant = tuple(malignant)
    y, p = metrics.check_inputs(y_true, probs)
    fig = Figure(figsize=(7, 8), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1.3], sharex=True)
    top.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    for kind, colour, name in (("binary", "#1f4e79", "p(malignant): share malignant"),
                               ("top_label", "#e67e22", "top-prediction confidence: share right")):
        table = metrics.reliability_table(y, p, malignant=malignant, n_bins=n_bins, kind=kind)
        filled = table[table["count"] > 0]
        if filled.empty:
            continue
        ece = metrics.expected_calibration_error(y, p, malignant=malignant, n_bins=n_bins, kind=kind)
        top.plot(filled["mean_predicted"], filled["observed"], marker="o", color=colour,
                 label=f"{name} (ECE {ece:.3f})")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed frequency")
    top.set_title(f"Calibration (n={len(y)}, {n_bins} bins)\npoints below the diagonal: "
                  "over-confident")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)

    is_mal = np.asarray(malignant_mask(malignant))[y]
    p_mal = p[:, np.asarray(malignant_mask(malignant))].sum(axis=1)
    edges = np.linspace(0, 1, n_bins + 1)
    bottom.hist([p_mal[~is_mal], p_mal[is_mal]], bins=edges, stacked=True,
                color=["#7fb3d5", _MISSED], label=["benign", "malignant"])
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("lesions")
    bottom.legend(fontsize=8)
    return fig


# --- learning curves -----------------------------------------------------------------------------------

_LR_KEYS = ("lr", "learning_rate")


def _pretty(key: str) -> str:
    if key in _LR_KEYS:
        return "learning rate"
    return key.replace("val_", "validation ").replace("_", " ").replace("auroc", "AUROC")


def learning_curves_figure(history: Sequence[Mapping[str, object]]) -> Figure:
    """Training history, one dict per epoch (e.g. ``epoch, train_loss, val_loss,
    val_balanced_accuracy, val_auroc, lr``): losses in one panel, other metrics in another, the
    learning rate (if logged) in a third; whichever keys are present. The epoch of the lowest
    validation loss is marked."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    numeric = [k for k in dict.fromkeys(k for row in history for k in row) if k != "epoch" and any(
        isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool) for row in history)]
    if not numeric:
        raise ValueError(f"history has no numeric columns to plot (keys: {sorted(history[0])})")
    x = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)

    def series(key: str) -> np.ndarray:
        return np.array([row.get(key, math.nan) for row in history], dtype=float)

    groups = [("loss", [k for k in numeric if "loss" in k]),
              ("metric", [k for k in numeric if "loss" not in k and k not in _LR_KEYS]),
              ("learning rate", [k for k in numeric if k in _LR_KEYS])]
    groups = [(name, keys) for name, keys in groups if keys]
    fig = Figure(figsize=(8, 3.2 * len(groups)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(groups), 1, sharex=True))
    best = None
    if "val_loss" in numeric and not np.all(np.isnan(series("val_loss"))):
        best = x[int(np.nanargmin(series("val_loss")))]
    for ax, (name, keys) in zip(axes, groups):
        for key in keys:
            ax.plot(x, series(key), marker="o", ms=3, label=_pretty(key))
        if best is not None:
            ax.axvline(best, ls="--", color="grey", lw=1)
        if name == "learning rate":
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Learning curves" + (f" (dashed: lowest validation loss, epoch {best:g})"
                                           if best is not None else ""))
    axes[-1].set_xlabel("epoch")
    return fig


# --- most confident mistakes ---------------------------------------------------------------------------


def mistakes_gallery_figure(images: Sequence[Image.Image], true_labels: Sequence[str],
                            pred_labels: Sequence[str], confidences: Sequence[float], *,
                            malignant: Iterable[str] = DEFAULT_MALIGNANT, ncols: int = 4) -> Figure:
    """A grid of misclassified images (pass them most confident first) titled with the true and the
    predicted diagnosis and the model's confidence. Missed malignancies (a malignant lesion
    predicted benign) are titled in red. An empty list gives a figure saying there is none."""
    if not len(images) == len(true_labels) == len(pred_labels) == len(confidences):
        raise ValueError(f"images ({len(images)}), true_labels ({len(true_labels)}), pred_labels "
                         f"({len(pred_labels)}) and confidences ({len(confidences)}) must have the "
                         "same length")
    mask = malignant_mask(malignant)
    if not images:
        fig = Figure(figsize=(6, 2), layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "No misclassified images to show", ha="center", va="center", fontsize=12)
        return fig
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, true, pred, conf in zip(axes, images, true_labels, pred_labels, confidences):
        missed = mask[class_index(true)] and not mask[class_index(pred)]
        ax.imshow(np.asarray(img.convert("RGB")))
        ax.set_title(f"true: {_label(true)}\npredicted: {_label(pred)}, {conf:.0%}"
                     + ("\nMISSED MALIGNANCY" if missed else ""),
                     fontsize=8, color=_MISSED if missed else _NEUTRAL)
    fig.suptitle("Most confident mistakes (red: malignant lesion predicted benign)")
    return fig
