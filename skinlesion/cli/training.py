"""``skinlesion train``, ``tune`` and ``distill``: fit a version (or search a recipe) and register it.

The three share their training options (:mod:`skinlesion.cli.options`) and one way of building the
run's TrainConfig (:func:`train_config`: a ``--config`` file with the typed options on top).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skinlesion.cli.options import (Backbone, ConfigFile, DataDir, Device, Epochs, Format, Inputs, Mode,
                                    ModelsDir, Seed, Weights, fail, models_folder, settings)
from skinlesion.errors import SkinLesionError

if TYPE_CHECKING:
    import pandas as pd

    from skinlesion.train import TrainConfig

app = typer.Typer()


def read_data(data: Path, fmt: str) -> pd.DataFrame:
    from skinlesion.data.readers import read_dataset

    return read_dataset(data, format=fmt)


def typed_options(ctx: typer.Context) -> set[str]:
    """Names of the parameters typed on the command line (not defaults)."""
    # typer vendors click: compare the parameter source by name
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


def train_config(ctx: typer.Context, config_file: Path | None, *, epochs: int | None,
                 weights: Path | None, **fields) -> TrainConfig:
    """The run's TrainConfig: the ``--config`` file's, with the options typed on the command line on
    top; without a file, the options (epochs defaulting to 30 in head mode, 8 in finetune)."""
    from skinlesion.train import TrainConfig

    options = fields | {"epochs": epochs, "weights_path": str(weights) if weights else None}
    if config_file is None:
        return TrainConfig(**options | {"epochs": epochs or (30 if fields["mode"] == "head" else 8)})
    typed = typed_options(ctx)
    overrides = {k: v for k, v in options.items()
                 if {"weights_path": "weights"}.get(k, k) in typed}
    base = TrainConfig.model_validate_json(config_file.read_text())
    return TrainConfig.model_validate(base.model_dump() | overrides)


#: ``train`` options of the neural modes, refused in rules mode (by parameter name -> flag)
_NEURAL_OPTIONS = {"backbone": "--backbone", "inputs": "--inputs", "epochs": "--epochs",
                   "weights": "--weights", "device": "--device", "config_file": "--config"}


def _train_rules(ctx: typer.Context, data: Path, fmt: str, seed: int,
                 folder: Path | None) -> None:
    """``train --mode rules``: fit the ABCD-rule fallback on the train split, calibrate it and
    choose its threshold (sensitivity >= 0.95) on validation, register it; prints its id last."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.register import register_fallback

    refused = [flag for name, flag in _NEURAL_OPTIONS.items() if name in typed_options(ctx)]
    if refused:
        raise fail(ValueError(f"--mode rules fits the rule-based fallback (no network): drop "
                              f"{', '.join(refused)}"))
    try:
        df = read_data(data, fmt)
        card = register_fallback(models_folder(folder), df, split_dataset(df, seed=seed),
                                 data_name=str(data), seed=seed, n_jobs=2)
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    val = card.metrics["val"]
    typer.echo(f"validation AUROC {val['auroc']:.3f}, sensitivity {val['recall']:.3f} at threshold "
               f"{card.threshold:.3f}; serve it with `skinlesion models fallback on --version "
               f"{card.id} --reason ...`", err=True)
    typer.echo(card.id)


@app.command()
def train(ctx: typer.Context, data: DataDir, fmt: Format = "auto",
          backbone: Backbone = "efficientnet_lite0", inputs: Inputs = "image+metadata",
          mode: Annotated[str, typer.Option(help="head (frozen backbone, seconds) | finetune (last "
                                            "blocks trained on cached activations) | rules (the "
                                            "rule-based ABCD fallback, no network)")] = "finetune",
          epochs: Epochs = None, seed: Seed = 0, weights: Weights = None, device: Device = "auto",
          config_file: ConfigFile = None, models_dir: ModelsDir = None) -> None:
    """Train a model version on a dataset and register it; prints the new version id last."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.register import register
    from skinlesion.train import fit, training_summary

    if mode == "rules":
        _train_rules(ctx, data, fmt, seed, models_dir)
        return
    try:
        config = train_config(ctx, config_file, epochs=epochs, weights=weights, backbone=backbone,
                              inputs=inputs, mode=mode, seed=seed, device=device)
        df = read_data(data, fmt)
        split = split_dataset(df, seed=config.seed)
        result = fit(df, split, config, settings().cache_dir)
        card = register(models_folder(models_dir), result.classifier, df, split,
                        threshold=result.threshold, val_probs=result.val_probs,
                        data_name=str(data), history=result.history,
                        training=training_summary(result),
                        target_sensitivity=config.target_sensitivity)
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    best = result.history[result.best_epoch - 1]
    typer.echo(f"validation AUROC {best['val_auroc']:.3f}, balanced accuracy "
               f"{best['val_balanced_accuracy']:.3f} (epoch {result.best_epoch})", err=True)
    typer.echo(card.id)


@app.command()
def tune(ctx: typer.Context, data: DataDir, fmt: Format = "auto",
         trials: Annotated[int, typer.Option(min=1, help="Trials at most.")] = 20,
         timeout: Annotated[float | None, typer.Option(min=1, help="Start no new trial after this "
                                                       "many seconds.")] = None,
         metric: Annotated[str, typer.Option(help="Validation score to maximise: "
                                             "val_balanced_accuracy | val_auroc.")
                           ] = "val_balanced_accuracy",
         backbone: Backbone = "efficientnet_lite0", inputs: Inputs = "image+metadata",
         mode: Mode = "head", epochs: Epochs = None, seed: Seed = 0, weights: Weights = None,
         device: Device = "auto", config_file: ConfigFile = None,
         out: Annotated[Path, typer.Option(help="Where to write the best config (trials beside it "
                                           "as <name>.trials.json).")] = Path("best.json")) -> None:
    """Search learning rate, weight decay, head width, dropout and class weighting with Optuna
    (pruning, lesion-grouped validation); write the best TrainConfig for `train --config`. Prints
    its path last."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.tune import tune as search

    try:
        base = train_config(ctx, config_file, epochs=epochs, weights=weights, backbone=backbone,
                            inputs=inputs, mode=mode, seed=seed, device=device)
        df = read_data(data, fmt)
        result = search(df, split_dataset(df, seed=base.seed), base, settings().cache_dir,
                        trials=trials, timeout=timeout, seed=seed, metric=metric)
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.best_config.model_dump_json(indent=2) + "\n")
    out.with_suffix(".trials.json").write_text(result.model_dump_json(indent=2) + "\n")
    base_text = "" if result.base_value is None else f"; base config {result.base_value:.4f}"
    typer.echo(f"best {result.metric} {result.best_value:.4f} (trial {result.best_trial}"
               f"{base_text}); {result.n_pruned} of {len(result.trials)} trials pruned; "
               f"{result.seconds:.0f} s", err=True)
    typer.echo(str(out))


@app.command()
def distill(ctx: typer.Context,
            teacher: Annotated[list[str], typer.Option(help="Teacher version id or alias; repeat "
                                                       "for an ensemble.")],
            data: DataDir, fmt: Format = "auto",
            alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of the teacher's "
                                                 "soft targets (1 - alpha: the true labels).")
                             ] = 0.5,
            temperature: Annotated[float, typer.Option(min=0.05, help="Softening temperature T.")
                                   ] = 4.0,
            backbone: Backbone = "efficientnet_lite0", inputs: Inputs = "image+metadata",
            mode: Mode = "head", epochs: Epochs = None, seed: Seed = 0, weights: Weights = None,
            device: Device = "auto", config_file: ConfigFile = None,
            models_dir: ModelsDir = None) -> None:
    """Distil a registered teacher (or an ensemble) into a small student and register the student
    (its card records the teachers, alpha and T); prints the new version id last. Use the
    teachers' split seed (--seed)."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.distill import distill as run_distillation
    from skinlesion.distill import register_student
    from skinlesion.registry import load_version

    folder = models_folder(models_dir)
    try:
        teachers = [load_version(t, folder, device=device) for t in teacher]
        config = train_config(ctx, config_file, epochs=epochs, weights=weights, backbone=backbone,
                              inputs=inputs, mode=mode, seed=seed, device=device)
        df = read_data(data, fmt)
        split = split_dataset(df, seed=config.seed)
        student = run_distillation(df, split, teachers, config, settings().cache_dir,
                                   alpha=alpha, temperature=temperature)
        card = register_student(folder, student, df, split, data_name=str(data))
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    result = student.fit
    best = result.history[result.best_epoch - 1]
    typer.echo(f"validation AUROC {best['val_auroc']:.3f}, balanced accuracy "
               f"{best['val_balanced_accuracy']:.3f} (epoch {result.best_epoch}); teachers "
               f"{', '.join(student.info.teachers)}", err=True)
    typer.echo(card.id)
