"""Hyperparameter search: ``tune(df, split, base, cache_dir) -> TuneResult`` (``skinlesion tune``).

Optuna's TPE sampler (seeded) proposes the learning rate, weight decay, head width (the hidden layer
of the classification head, 0 = a single linear layer), the metadata branch's width, dropout and
class weighting of the loss; every other field comes from the
``base`` :class:`TrainConfig`. Each trial is one :func:`skinlesion.train.fit` on the same
lesion-grouped train/validation split (``skinlesion.data.splits.split_dataset``): the test split is
never looked at. Each epoch's validation score is reported to the trial, and a median pruner stops
trials that fall below the median of earlier trials at the same epoch. The base config's own values
are tried first, so the best config is never worse on validation than the default.

The best config is a plain :class:`TrainConfig`; ``skinlesion train --config best.json`` reuses it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, get_args

import optuna
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator
from tqdm.auto import tqdm

from skinlesion.train import TrainConfig, fit

Metric = Literal["val_balanced_accuracy", "val_auroc"]
CLASS_WEIGHTS: tuple[str, ...] = ("none", "sqrt", "balanced")


class SearchSpace(BaseModel):
    """Ranges of the searched hyperparameters (log scale for ``lr`` and ``weight_decay``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: tuple[float, float] = (1e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-5, 1e-1)
    meta_hidden: tuple[int, ...] = (16, 32, 64, 128)
    head_hidden: tuple[int, ...] = (0, 64, 128, 256)  # 0 = a single linear head
    dropout: tuple[float, float] = (0.0, 0.6)
    class_weight: tuple[Literal["none", "sqrt", "balanced"], ...] = CLASS_WEIGHTS

    @model_validator(mode="after")
    def _ranges(self) -> SearchSpace:
        for name in ("lr", "weight_decay"):
            low, high = getattr(self, name)
            if not 0 < low < high:
                raise ValueError(f"{name} range must be (low, high) with 0 < low < high, got "
                                 f"{(low, high)}")
        if not 0 <= self.dropout[0] < self.dropout[1] < 1:
            raise ValueError(f"dropout range must be (low, high) with 0 <= low < high < 1, got "
                             f"{self.dropout}")
        if not self.meta_hidden or min(self.meta_hidden) < 1:
            raise ValueError("meta_hidden needs at least one positive width")
        if not self.head_hidden or min(self.head_hidden) < 0:
            raise ValueError("head_hidden needs at least one width, each 0 (single linear head) or "
                             "positive")
        if not self.class_weight:
            raise ValueError("class_weight needs at least one choice")
        return self

    def suggest(self, trial: optuna.Trial) -> dict:
        """One set of hyperparameters for ``trial`` (keys are TrainConfig fields)."""
        return {
            "lr": trial.suggest_float("lr", *self.lr, log=True),
            "weight_decay": trial.suggest_float("weight_decay", *self.weight_decay, log=True),
            "meta_hidden": trial.suggest_categorical("meta_hidden", list(self.meta_hidden)),
            "head_hidden": trial.suggest_categorical("head_hidden", list(self.head_hidden)),
            "dropout": trial.suggest_float("dropout", *self.dropout),
            "class_weight": trial.suggest_categorical("class_weight", list(self.class_weight)),
        }

    def params_of(self, config: TrainConfig) -> dict | None:
        """``config``'s values of the searched hyperparameters, or None when one lies outside."""
        params = {name: getattr(config, name) for name in ("lr", "weight_decay", "meta_hidden",
                                                           "head_hidden", "dropout", "class_weight")}
        inside = (self.lr[0] <= params["lr"] <= self.lr[1]
                  and self.weight_decay[0] <= params["weight_decay"] <= self.weight_decay[1]
                  and self.dropout[0] <= params["dropout"] <= self.dropout[1]
                  and params["meta_hidden"] in self.meta_hidden
                  and params["head_hidden"] in self.head_hidden
                  and params["class_weight"] in self.class_weight)
        return params if inside else None


class TrialRecord(BaseModel):
    """One finished trial: its state (COMPLETE, PRUNED), score, epochs run and hyperparameters."""

    number: int
    state: str
    value: float | None
    epochs: int
    params: dict
    seconds: float


class TuneResult(BaseModel):
    """The search's outcome: the best config (a full TrainConfig) and every trial."""

    metric: str
    best_value: float
    best_trial: int
    best_config: TrainConfig
    base_value: float | None  # the base config's score (trial 0), when it lies in the search space
    trials: list[TrialRecord]
    seconds: float

    @property
    def n_pruned(self) -> int:
        return sum(t.state == "PRUNED" for t in self.trials)


def with_params(base: TrainConfig, params: dict) -> TrainConfig:
    """``base`` with ``params`` replacing its fields, validated."""
    return TrainConfig.model_validate(base.model_dump() | params)


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    start, end = trial.datetime_start, trial.datetime_complete
    return TrialRecord(number=trial.number, state=trial.state.name, value=trial.value,
                       epochs=len(trial.intermediate_values), params=dict(trial.params),
                       seconds=(end - start).total_seconds() if start and end else 0.0)


def _describe(record: TrialRecord, metric: str, best: float | None) -> str:
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in record.params.items())
    score = "-" if record.value is None else f"{record.value:.4f}"
    best_text = "" if best is None else f" (best {best:.4f})"
    return (f"trial {record.number}: {record.state.lower()} after {record.epochs} epochs, "
            f"{metric} {score}{best_text}; {params}")


def _check(metric: str, trials: int, timeout: float | None) -> None:
    if metric not in get_args(Metric):
        raise ValueError(f"metric must be one of {', '.join(get_args(Metric))}, got {metric!r}")
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout}")


def _objective(df: pd.DataFrame, split: pd.Series, base: TrainConfig, space: SearchSpace,
               cache_dir: Path | str, metric: Metric) -> Callable[[optuna.Trial], float]:
    """A trial: train with the sampled hyperparameters, reporting ``metric`` after every epoch so
    the pruner can stop it; its value is ``metric`` at the best epoch."""

    def objective(trial: optuna.Trial) -> float:
        config = with_params(base, space.suggest(trial))

        def report(row: dict) -> None:
            trial.report(row[metric], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric} {row[metric]:.4f} below the median at epoch "
                                         f"{row['epoch']}")

        result = fit(df, split, config, cache_dir, progress=False, on_epoch=report)
        value = result.history[result.best_epoch - 1][metric]
        if math.isnan(value):
            raise ValueError(f"{metric} is undefined on this validation split (it needs both "
                             "malignant and benign cases); tune on val_balanced_accuracy")
        return value

    return objective


class _Progress:
    """An Optuna callback: one line per finished trial and a bar (stderr), best value and pruned
    count as the bar's postfix."""

    def __init__(self, trials: int, metric: str, *, show: bool):
        self.metric, self.show = metric, show
        self.bar = tqdm(total=trials, desc="tune", unit="trial", file=sys.stderr, disable=not show)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max((t.value for t in done), default=None)
        if self.show:
            tqdm.write(_describe(_record(trial), self.metric, best), file=sys.stderr)
        self.bar.update(1)
        if best is not None:
            self.bar.set_postfix(best=f"{best:.4f}", pruned=sum(
                t.state == optuna.trial.TrialState.PRUNED for t in study.trials))


def _run_study(objective: Callable[[optuna.Trial], float], queued: list[dict], progress: _Progress,
               *, trials: int, timeout: float | None, seed: int, startup_trials: int,
               warmup_epochs: int) -> optuna.Study:
    """A seeded TPE study with median pruning, the ``queued`` sets tried first; Optuna's own log
    lines are silenced while it runs (``progress`` reports instead)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                               n_warmup_steps=warmup_epochs))
        for params in queued:
            study.enqueue_trial(params)
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[progress])
    finally:
        optuna.logging.set_verbosity(verbosity)
        progress.bar.close()
    return study


def tune(df: pd.DataFrame, split: pd.Series, base: TrainConfig, cache_dir: Path | str, *,
         trials: int = 20, timeout: float | None = None, seed: int = 0,
         space: SearchSpace | None = None, metric: Metric = "val_balanced_accuracy",
         startup_trials: int = 3, warmup_epochs: int = 3, first: Sequence[dict] | None = None,
         progress: bool = True) -> TuneResult:
    """Search hyperparameters on the ``train``/``val`` rows of ``split``; see the module docstring.

    ``trials`` and ``timeout`` (seconds) bound the search (whichever comes first). ``seed`` seeds the
    sampler; every trial trains with ``base.seed``. The pruner waits for ``startup_trials`` finished
    trials and ``warmup_epochs`` epochs before it stops a trial. ``first`` gives hyperparameter sets
    to try before sampling (default: the base config's, when inside ``space``). Progress (one line
    per trial and a bar) goes to stderr."""
    _check(metric, trials, timeout)
    space = space or SearchSpace()
    base_params = space.params_of(base)
    queued = list(first) if first is not None else ([base_params] if base_params else [])
    start = time.perf_counter()
    study = _run_study(_objective(df, split, base, space, cache_dir, metric), queued,
                       _Progress(trials, metric, show=progress), trials=trials, timeout=timeout,
                       seed=seed, startup_trials=startup_trials, warmup_epochs=warmup_epochs)
    records = [_record(t) for t in study.trials]
    if not any(r.state == "COMPLETE" for r in records):
        raise ValueError(f"no trial finished in {len(records)} trials; allow more trials, a longer "
                         "timeout, or fewer warmup epochs")
    best = study.best_trial
    base_value = records[0].value if queued and base_params and queued[0] == base_params else None
    return TuneResult(metric=metric, best_value=best.value, best_trial=best.number,
                      best_config=with_params(base, best.params), base_value=base_value,
                      trials=records, seconds=time.perf_counter() - start)
