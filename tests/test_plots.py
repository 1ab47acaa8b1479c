"""Every report figure builds, saves a PNG with real content, and copes with degenerate windows."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from skinlesion import plots
from skinlesion.schema import CLASSES


@pytest.fixture(autouse=True)
def _no_undefined_metric_warnings():
    """Figures must check what is defined themselves rather than spray metric warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def data(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(len(CLASSES)), rng.integers(0, len(CLASSES), n - len(CLASSES))])
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += 2.0
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def saved_png(fig: Figure, path: Path) -> np.ndarray:
    """Save, reload, and return the PNG's pixels after checking it is a real, non-blank picture."""
    assert isinstance(fig, Figure)
    fig.savefig(path, dpi=60)
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 10  # not a blank canvas
    return pixels


def texts(fig: Figure) -> str:
    """All text drawn in the figure: titles, labels, annotations, legend entries, tick labels."""
    return "\n".join(t.get_text() for t in fig.findobj(Text) if t.get_text())


def test_confusion_matrix_figure(tmp_path: Path) -> None:
    y, probs = data()
    fig = plots.confusion_matrix_figure(y, probs)
    saved_png(fig, tmp_path / "cm.png")
    content = texts(fig)
    assert "melanoma (MEL)" in content and "true diagnosis" in content
    diag = (probs.argmax(1) == y) & (y == 0)
    assert f"({diag.sum()})" in content  # the MEL/MEL count is annotated


def test_roc_figure_shows_aucs_and_the_sensitivity_line(tmp_path: Path) -> None:
    y, probs = data()
    fig = plots.roc_figure(y, probs)
    saved_png(fig, tmp_path / "roc.png")
    content = texts(fig)
    assert "AUROC" in content and "80% sensitivity" in content and "partial AUC" in content
    assert content.count(": AUC ") == len(CLASSES)


def test_roc_figure_with_one_class_window(tmp_path: Path) -> None:
    y = np.full(5, CLASSES.index("NV"))
    probs = np.tile(np.eye(8)[1] * 0.9 + 0.1 / 8 * (1 - np.eye(8)[1]) * 8 / 7, (5, 1))
    probs /= probs.sum(1, keepdims=True)
    fig = plots.roc_figure(y, probs)
    saved_png(fig, tmp_path / "roc1.png")
    assert "not defined" in texts(fig) and "n/a" in texts(fig)


def test_calibration_figure(tmp_path: Path) -> None:
    y, probs = data()
    fig = plots.calibration_figure(y, probs, n_bins=8)
    saved_png(fig, tmp_path / "cal.png")
    content = texts(fig)
    assert "ECE" in content and "observed frequency" in content and "malignant" in content


def test_learning_curves_plot_whatever_is_present(tmp_path: Path) -> None:
    history = [{"epoch": e, "train_loss": 1.5 / e, "val_loss": 1.2 / e + 0.05 * e,
                "val_balanced_accuracy": 0.4 + 0.05 * e, "val_auroc": 0.7 + 0.03 * e,
                "lr": 1e-3 / e} for e in range(1, 7)]
    fig = plots.learning_curves_figure(history)
    saved_png(fig, tmp_path / "lc.png")
    content = texts(fig)
    assert "validation balanced accuracy" in content and "learning rate" in content
    assert "epoch 5" in content  # lowest validation loss: 1.2/e + 0.05e is smallest at e=5
    assert len(fig.axes) == 3
    only_loss = plots.learning_curves_figure([{"train_loss": 1.0}, {"train_loss": 0.5}])
    assert len(only_loss.axes) == 1
    with pytest.raises(ValueError, match="empty"):
        plots.learning_curves_figure([])


def test_mistakes_gallery_marks_missed_malignancies(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(5)]
    fig = plots.mistakes_gallery_figure(images, ["MEL", "NV", "BCC", "BKL", "SCC"],
                                        ["NV", "MEL", "AK", "DF", "VASC"],
                                        [0.97, 0.9, 0.8, 0.7, 0.6])
    saved_png(fig, tmp_path / "gallery.png")
    content = texts(fig)
    assert content.count("MISSED MALIGNANCY") == 2  # MEL->NV and SCC->VASC; BCC->AK stays malignant
    assert "predicted: melanocytic nevus (NV), 97%" in content
    empty = plots.mistakes_gallery_figure([], [], [], [])
    saved_png(empty, tmp_path / "none.png")
    assert "No misclassified" in texts(empty)
    with pytest.raises(ValueError, match="same length"):
        plots.mistakes_gallery_figure(images[:1], ["MEL"], [], [0.5])
