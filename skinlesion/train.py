"""Fit a neural model version: ``fit(df, split, config, cache_dir) -> FitResult``.

Two modes:

- ``head``: the ImageNet backbone stays frozen; its pooled embedding of every image (and orientation
  view) is computed once and cached, and only the fusion head (metadata MLP + linear layer) trains,
  in seconds.
- ``finetune``: the backbone's last blocks train too. With ``cut > 0`` (the default, on every device:
  the backbone's ``default_cut``, which keeps a CPU run affordable) the first
  ``cut`` blocks stay frozen and their output is computed once per image and orientation view and
  cached in float16; each epoch then picks a random view per image and trains the remaining blocks
  plus the head on the cached activations -- real fine-tuning at a fraction of the cost. With
  ``cut = 0`` (set it in the ``--config`` file; worth it on a GPU) the whole network trains on images
  with online augmentation (orientation + colour jitter), in mixed precision on CUDA.

Every epoch is scored on the validation split (balanced accuracy, malignant-vs-benign AUROC); the best
epoch by validation balanced accuracy is kept (early stopping with ``patience``). Then the config's
calibration (:data:`CALIBRATION_MODES`, a :class:`skinlesion.calibration.Calibrator`) is fitted on
the validation logits and folded into the network's last layer, and the malignant threshold chosen
on validation for the target sensitivity. Runs are seeded: same data + config + seed -> same model.

The parts live beside it: :mod:`skinlesion.train_config` (the config), :mod:`skinlesion.features`
(cached inputs and logits), :mod:`skinlesion.soft_targets` (distillation) and
:mod:`skinlesion.fit_calibration` (the calibration step of a fit).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from skinlesion import calibration, metrics
from skinlesion.data.metadata import MetadataEncoder
from skinlesion.data.transforms import Augmentation, Preprocessing
from skinlesion.errors import DataError
from skinlesion.features import (FeatureSource, Inputs, cut_point, forward_logits, gather_inputs,
                                 metadata_frame, network_logits)
from skinlesion.fit_calibration import fit_mode, fold_calibrator, threshold_at, unfold_logits
from skinlesion.model.backbones import Backbone
from skinlesion.model.fusion import FusionNet
from skinlesion.model.neural import (NeuralClassifier, build_network, freeze_trunk,
                                     parameter_counts, resolve_device)
from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, class_index
from skinlesion.soft_targets import SoftTargets, distillation_loss
from skinlesion.train_config import SPLITS, TrainConfig

__all__ = ["CalibrationChoice", "FitResult", "SoftTargets", "TrainConfig", "cached_logits",
           "calibration_choice", "distillation_loss", "fit", "fold_calibrator", "raw_logits",
           "recalibrate", "threshold_at", "training_summary", "unfold_logits"]


@dataclass
class FitResult:
    """A trained classifier with its validation evidence. ``val_probs`` are calibrated and aligned
    with ``val_index`` (the df index of the validation rows), as are ``val_labels`` (class indices)
    and ``val_logits`` (the raw logits, before the ``calibrator``, which is folded into the
    network's last layer and its temperature). ``class_weights``: the training loss's weights."""

    classifier: NeuralClassifier
    config: TrainConfig
    history: list[dict]
    temperature: float
    threshold: float
    best_epoch: int
    val_index: pd.Index
    val_probs: np.ndarray
    val_labels: np.ndarray
    val_logits: np.ndarray
    class_weights: np.ndarray
    calibrator: calibration.Calibrator
    features: FeatureSource | None = field(default=None, repr=False)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities for dataset rows, through the activation cache (same numbers as
        ``classifier.predict_proba`` on the images, up to float16 caching)."""
        logits = network_logits(self.classifier.net, self.features, self.classifier.encoder.transform(
            metadata_frame(df)), df, self.config)
        return calibration.apply_temperature(logits, self.temperature)



# --- helpers --------------------------------------------------------------------------------------


def _labels(df: pd.DataFrame, what: str) -> np.ndarray:
    if df["diagnosis"].isna().any():
        raise DataError(f"{int(df['diagnosis'].isna().sum())} {what} rows have no diagnosis; training "
                        "needs ground truth for every train and validation image", field="diagnosis")
    return np.array([class_index(d) for d in df["diagnosis"]], dtype=np.int64)


def _class_weights(y: np.ndarray, how: str) -> torch.Tensor:
    counts = np.maximum(np.bincount(y, minlength=len(CLASSES)), 1).astype(np.float64)
    w = {"balanced": counts.max() / counts, "sqrt": np.sqrt(counts.max() / counts),
         "none": np.ones(len(CLASSES))}[how]
    return torch.tensor(w / w[np.bincount(y, minlength=len(CLASSES)) > 0].mean(), dtype=torch.float32)


def _scores(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    probs = calibration.apply_temperature(logits, 1.0)
    out = {"val_loss": float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y))),
           "val_balanced_accuracy": metrics.balanced_accuracy(y, probs)}
    is_mal = np.isin(y, [class_index(c) for c in DEFAULT_MALIGNANT])
    out["val_auroc"] = metrics.auroc(y, probs) if 0 < is_mal.sum() < len(y) else float("nan")
    return out


# --- the training loop ----------------------------------------------------------------------------


def _optimizer(net: FusionNet, config: TrainConfig, steps: int) -> tuple[torch.optim.Optimizer,
                                                                         torch.optim.lr_scheduler.LRScheduler]:
    backbone = [p for p in (net.backbone.parameters() if net.backbone is not None else [])
                if p.requires_grad]
    head = [p for n, p in net.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    groups = [{"params": head, "lr": config.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": config.backbone_lr})
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=max(steps, 1),
        pct_start=min(max(config.warmup, 1e-3), 0.9))
    return opt, sched


@dataclass
class _Run:
    """Everything one fit works with, prepared once by :func:`_prepare` (the named steps of
    :func:`fit` share it)."""

    config: TrainConfig
    train_df: pd.DataFrame
    val_df: pd.DataFrame
    y_tr: np.ndarray
    y_va: np.ndarray
    meta_tr: np.ndarray
    meta_va: np.ndarray
    encoder: MetadataEncoder
    net: FusionNet
    cut: int
    backbone_config: dict
    preprocessing: Preprocessing
    features: FeatureSource | None
    train_views: tuple[str, ...]
    inputs_tr: Inputs | None
    inputs_va: Inputs | None
    augment: Augmentation | None
    weights: torch.Tensor
    device: torch.device
    soft_targets: SoftTargets | None
    soft_tr: torch.Tensor | None


def _split_rows(df: pd.DataFrame, split: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and validation rows; DataError when the split is incomplete or either is empty."""
    split = split.reindex(df.index)
    if split.isna().any() or not set(split.unique()) <= set(SPLITS):
        raise DataError(f"split must give every row one of {', '.join(SPLITS)}")
    train_df, val_df = df[split == "train"], df[split == "val"]
    if len(train_df) == 0 or len(val_df) == 0:
        raise DataError(f"training needs train and val rows; got {len(train_df)} train, "
                        f"{len(val_df)} val")
    return train_df, val_df


def _prepare(df: pd.DataFrame, split: pd.Series, config: TrainConfig, cache_dir: Path, *,
             progress: bool, init_backbone: Backbone | None,
             soft_targets: SoftTargets | None) -> _Run:
    """Step 1: rows, labels, metadata encoding, the network (frozen up to its cut), and the cached
    (or in-memory) image inputs of the train and validation rows."""
    train_df, val_df = _split_rows(df, split)
    y_tr, y_va = _labels(train_df, "train"), _labels(val_df, "validation")
    soft_tr = None if soft_targets is None else torch.from_numpy(
        soft_targets.for_rows(train_df.index))
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    encoder = MetadataEncoder().fit(train_df)
    meta_tr = encoder.transform(metadata_frame(train_df))
    meta_va = encoder.transform(metadata_frame(val_df))

    backbone_config = {"drop_connect_rate": config.drop_connect_rate} if config.backbone.startswith(
        "efficientnet_lite") else {}
    net = build_network(config.backbone if config.inputs != "metadata" else None,
                        inputs=config.inputs, n_metadata=meta_tr.shape[1],
                        pretrained=config.pretrained and init_backbone is None,
                        backbone_config=backbone_config, meta_hidden=config.meta_hidden,
                        head_hidden=config.head_hidden,
                        dropout=config.dropout, weights_path=config.weights_path)
    if init_backbone is not None and net.backbone is not None:
        net.backbone.load_state_dict(init_backbone.state_dict())
    cut = cut_point(config, net.backbone)
    freeze_trunk(net, cut)
    net.to(device)
    preprocessing = Preprocessing(width=config.width, height=config.height,
                                  mean=net.backbone.mean if net.backbone else Preprocessing.mean,
                                  std=net.backbone.std if net.backbone else Preprocessing.std)
    features = None
    if net.uses_image:
        features = FeatureSource(net.backbone, preprocessing, Path(cache_dir), device=device,
                                 progress=progress)
    online = config.mode == "finetune" and cut == 0
    train_views = ("identity",) if online else config.train_views
    return _Run(config=config, train_df=train_df, val_df=val_df, y_tr=y_tr, y_va=y_va,
                meta_tr=meta_tr, meta_va=meta_va, encoder=encoder, net=net, cut=cut,
                backbone_config=backbone_config, preprocessing=preprocessing, features=features,
                train_views=train_views,
                inputs_tr=gather_inputs(net, features, train_df, train_views, cut, config),
                inputs_va=gather_inputs(net, features, val_df, config.tta, cut, config),
                augment=Augmentation(config.train_views, config.color_jitter) if online else None,
                weights=_class_weights(y_tr, config.class_weight).to(device), device=device,
                soft_targets=soft_targets, soft_tr=soft_tr)


def _train_epoch(run: _Run, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                 rng: np.random.Generator, generator: torch.Generator, bar) -> float:
    """Step 2a: one pass over the train rows in a seeded random order, each image in a random
    training view; returns the mean training loss."""
    config, net, device = run.config, run.net, run.device
    net.train()
    freeze_trunk(net, run.cut)
    order = rng.permutation(len(run.train_df))
    total, seen = 0.0, 0
    for s in range(0, len(order), config.batch_size):
        rows = order[s:s + config.batch_size]
        views = rng.integers(len(run.train_views), size=len(rows))
        x = None if run.inputs_tr is None else run.inputs_tr.batch(
            rows, views, names=run.train_views, device=device,
            normalize=run.preprocessing.normalize, augment=run.augment, generator=generator)
        meta = torch.from_numpy(run.meta_tr[rows]).to(device)
        target = torch.from_numpy(run.y_tr[rows]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = forward_logits(net, x, meta, config, run.cut)
        loss = F.cross_entropy(logits.float(), target, weight=run.weights,
                               label_smoothing=config.label_smoothing)
        if run.soft_tr is not None:
            soft = run.soft_tr[torch.from_numpy(rows)].to(device)
            loss = distillation_loss(logits.float(), soft, loss, alpha=run.soft_targets.alpha,
                                     temperature=run.soft_targets.temperature,
                                     sample_weight=run.weights[target])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(rows)
        seen += len(rows)
        bar.update(1)
    return total / seen


def _val_logits(run: _Run) -> np.ndarray:
    return network_logits(run.net, run.features, run.meta_va, run.val_df, run.config, run.inputs_va)


def _train(run: _Run, *, progress: bool, on_epoch: Callable[[dict], None] | None
           ) -> tuple[list[dict], int]:
    """Step 2: the epochs, each scored on validation; keeps the best epoch by validation balanced
    accuracy (early stopping after ``patience`` epochs without a better one) and loads its weights
    into ``run.net``. Returns the history and the best epoch."""
    config = run.config
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_batches = math.ceil(len(run.train_df) / config.batch_size)
    opt, sched = _optimizer(run.net, config, config.epochs * n_batches)
    history: list[dict] = []
    best = (-math.inf, -1, None)
    bar = tqdm(total=config.epochs * n_batches, desc=f"train {config.mode}", unit="batch",
               file=sys.stderr, disable=not progress)
    for epoch in range(1, config.epochs + 1):
        loss = _train_epoch(run, opt, sched, rng, generator, bar)
        row = {"epoch": epoch, "train_loss": loss, **_scores(run.y_va, _val_logits(run))}
        history.append(row)
        if on_epoch is not None:
            on_epoch({**row, "epochs": config.epochs})
        bar.set_postfix(val_bacc=f"{row['val_balanced_accuracy']:.3f}",
                        val_auroc=f"{row['val_auroc']:.3f}")
        if row["val_balanced_accuracy"] > best[0]:
            best = (row["val_balanced_accuracy"], epoch, copy.deepcopy(run.net.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    bar.close()
    run.net.load_state_dict(best[2])
    run.net.eval()
    return history, best[1]


def _package(run: _Run, history: list[dict], best_epoch: int, val_logits: np.ndarray,
             class_weights: np.ndarray) -> FitResult:
    """Step 4: fit the config's calibration on the validation logits, fold it into the network,
    choose the threshold, and wrap the network as a NeuralClassifier with its preprocessing,
    encoder and temperature."""
    config, net = run.config, run.net
    calibrator = fit_mode(val_logits, run.y_va, class_weights, config.calibration)
    fold_calibrator(net, calibrator)
    val_probs = calibrator.probs(val_logits)
    threshold = threshold_at(run.y_va, val_probs, config.target_sensitivity)
    clf_config = {
        "architecture": config.backbone if net.uses_image else None, "inputs": config.inputs,
        "backbone_config": run.backbone_config, "meta_hidden": config.meta_hidden,
        "head_hidden": config.head_hidden,
        "dropout": config.dropout, "cut": run.cut, "mode": config.mode,
    }
    classifier = NeuralClassifier(net.cpu() if run.device.type != "cpu" else net, config=clf_config,
                                  preprocessing=run.preprocessing, encoder=run.encoder,
                                  temperature=calibrator.temperature,
                                  tta=config.tta if net.uses_image else ("identity",),
                                  device=config.device)
    net.to(run.device)
    return FitResult(classifier=classifier, config=config, history=history,
                     temperature=calibrator.temperature, threshold=threshold,
                     best_epoch=best_epoch, val_index=run.val_df.index, val_probs=val_probs,
                     features=run.features, val_labels=run.y_va, val_logits=val_logits,
                     class_weights=class_weights, calibrator=calibrator)


def fit(df: pd.DataFrame, split: pd.Series, config: TrainConfig, cache_dir: Path | str, *,
        progress: bool = True, init_backbone: Backbone | None = None,
        on_epoch: Callable[[dict], None] | None = None,
        soft_targets: SoftTargets | None = None) -> FitResult:
    """Train on ``split == "train"`` rows, select and calibrate on ``split == "val"`` rows.

    ``df`` is a dataset table (skinlesion.data.readers), ``split`` a Series of train/val/test aligned
    with it; ``cache_dir`` holds the cached frozen-backbone outputs. ``init_backbone`` (same
    architecture) starts from its weights instead of ImageNet's, e.g. a parent version's fine-tuned
    backbone. ``on_epoch`` is called with each epoch's history row (``epoch``, ``train_loss``,
    validation scores) and ``epochs`` (the planned number): progress reports, cancellation, pruning
    of hyperparameter trials. ``soft_targets`` (a teacher's answers on the train rows) turn the loss
    into knowledge distillation; selection and calibration still use the true validation labels.

    The steps: :func:`_prepare` (data, network, cached inputs), :func:`_train` (epochs, best epoch
    by validation balanced accuracy), :func:`_package` (the calibration mode fitted on validation
    and folded into the network, the threshold on validation, the classifier)."""
    run = _prepare(df, split, config, Path(cache_dir), progress=progress,
                   init_backbone=init_backbone, soft_targets=soft_targets)
    history, best_epoch = _train(run, progress=progress, on_epoch=on_epoch)
    return _package(run, history, best_epoch, _val_logits(run), run.weights.cpu().numpy())


@dataclass(frozen=True)
class CalibrationChoice:
    """One calibration mode fitted on a result's validation logits: its ``calibrator`` and the
    ``threshold`` for the target sensitivity."""

    mode: str
    calibrator: calibration.Calibrator
    threshold: float

    @property
    def temperature(self) -> float:
        return self.calibrator.temperature

    def probs(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from raw logits (:func:`raw_logits`)."""
        return self.calibrator.probs(raw)


def raw_logits(result: FitResult, df: pd.DataFrame) -> np.ndarray:
    """The trained network's logits for dataset rows (TTA-averaged, via the activation cache),
    before the calibration folded into it."""
    logits = network_logits(result.classifier.net, result.features, result.classifier.encoder.transform(
        metadata_frame(df)), df, result.config)
    return unfold_logits(logits, result.calibrator)


def calibration_choice(result: FitResult, calibration_mode: str) -> CalibrationChoice:
    """``calibration_mode`` (one of :data:`CALIBRATION_MODES`) fitted on ``result``'s validation
    logits; nothing is changed."""
    calibrator = fit_mode(result.val_logits, result.val_labels, result.class_weights,
                          calibration_mode)
    return CalibrationChoice(mode=calibration_mode, calibrator=calibrator, threshold=threshold_at(
        result.val_labels, calibrator.probs(result.val_logits), result.config.target_sensitivity))


def recalibrate(result: FitResult, calibration_mode: str) -> FitResult:
    """The same trained network under another calibration mode: the calibrator folded into its last
    layer, temperature, threshold and validation probabilities redone from the stored validation
    logits, without training again. The network is shared with (and changed in) ``result``'s
    classifier; use the returned result from then on."""
    choice = calibration_choice(result, calibration_mode)
    fold_calibrator(result.classifier.net, choice.calibrator, result.calibrator)
    result.classifier.temperature = choice.temperature
    return dataclasses.replace(
        result, config=result.config.model_copy(update={"calibration": calibration_mode}),
        temperature=choice.temperature, threshold=choice.threshold,
        val_probs=choice.probs(result.val_logits), calibrator=choice.calibrator)


def cached_logits(classifier: NeuralClassifier, df: pd.DataFrame, cache_dir: Path | str, *,
                  progress: bool = True) -> np.ndarray:
    """Uncalibrated logits (len(df), 8) of a trained classifier for dataset rows, averaged over its
    test-time views, with its frozen backbone part read from (or added to) the activation cache --
    e.g. a teacher's answers for distillation without running its whole backbone again."""
    net = classifier.net
    mode = classifier.config.get("mode", "finetune")
    config = TrainConfig(mode=mode, cut=None if mode == "head" else classifier.config.get("cut"),
                         tta=classifier.tta)
    device = next(net.parameters()).device
    features = None if net.backbone is None else FeatureSource(
        net.backbone, classifier.preprocessing, Path(cache_dir), device=device, progress=progress)
    return network_logits(net, features, classifier.encoder.transform(metadata_frame(df)), df, config)


def training_summary(result: FitResult) -> dict:
    """The card's ``training`` section: config, best epoch, parameter counts."""
    return {"config": result.config.model_dump(mode="json"), "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "parameters": parameter_counts(result.classifier.net)}
