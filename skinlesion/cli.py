"""The one ``skinlesion`` command. Each sub-command validates its input, calls one library function,
and prints; progress goes to stderr, results (e.g. a new version id) to stdout."""

from __future__ import annotations

from pathlib import Path

import typer

from skinlesion.errors import SkinLesionError
from skinlesion.schema import DEFAULT_MALIGNANT
from skinlesion.settings import Settings

app = typer.Typer(help="Skin-lesion classifier: data, training, evaluation, serving, monitoring.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: download published data.", no_args_is_help=True)
models_app = typer.Typer(help="Model versions and the serving route: list, show, alias, diff, "
                         "activate, rollback, fallback, restrict, archive, challenger, shadow, "
                         "threshold.",
                         no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")


def _settings() -> Settings:
    return Settings()


def _fail(err: Exception) -> typer.Exit:
    typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


# --- data -------------------------------------------------------------------------------------------


@app.command()
def synth(out: Path = typer.Option(..., help="Folder to write the ISIC 2019 layout into."),
          n: int = typer.Option(400, min=8, help="Number of images."),
          seed: int = typer.Option(0, help="Random seed."),
          size: int = typer.Option(200, min=32, help="Image width in pixels (height is 3/4 of it).")) -> None:
    """Write a seeded synthetic dataset in the ISIC 2019 layout (class-dependent images and metadata)."""
    from skinlesion.data.synthetic import write_synthetic_dataset

    try:
        path = write_synthetic_dataset(out, n=n, seed=seed, width=size)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(str(path))


@data_app.command("fetch")
def data_fetch(dataset: str = typer.Argument(..., help="Dataset name: isic2019."),
               out: Path | None = typer.Option(None, help="Folder to download and unpack into "
                                               "(default <data_dir>/<dataset>)."),
               base_url: str | None = typer.Option(None, help="Server to download from instead of "
                                                   "the published one (a mirror)."),
               keep_archive: bool = typer.Option(False, help="Keep zip files after unpacking.")
               ) -> None:
    """Download a published dataset (resumable, checksummed) and unpack it into its layout."""
    from skinlesion.data.fetch import fetch_dataset

    try:
        path = fetch_dataset(dataset, out or _settings().data_dir / dataset.lower(),
                             base_url=base_url, keep_archives=keep_archive)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(str(path))


@app.command()
def score(truth: Path = typer.Option(..., help="Ground-truth CSV (ISIC format, one-hot; UNK column "
                                     "allowed)."),
          predictions: Path = typer.Option(..., help="Predictions CSV (image,MEL,NV,BCC,AK,BKL,DF,"
                                           "VASC,SCC)."),
          threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="Operating threshold on "
                                          "p(malignant) for the binary metrics."),
          malignant: str = typer.Option(",".join(DEFAULT_MALIGNANT), help="Comma-separated classes "
                                        "counted as malignant."),
          json_out: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON to "
                                               "this file ('-' for stdout) instead of tables.")) -> None:
    """Score ISIC-format predictions against ground truth (the files the official scorer reads)."""
    import math
    import warnings

    from rich.console import Console
    from rich.table import Table

    from skinlesion.metrics import UndefinedMetricWarning
    from skinlesion.scoring import score_files, to_json

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UndefinedMetricWarning)
            result = score_files(truth, predictions, threshold=threshold,
                                 malignant=[c.strip() for c in malignant.split(",") if c.strip()])
    except (SkinLesionError, ValueError) as err:
        raise _fail(err) from err
    for w in caught:
        typer.secho(f"note: {w.message}", err=True, fg=typer.colors.YELLOW)
    if json_out is not None:
        text = to_json(result)
        if str(json_out) == "-":
            typer.echo(text, nl=False)
        else:
            json_out.write_text(text)
            typer.echo(str(json_out))
        return

    def fmt(v: float) -> str:
        return "n/a" if math.isnan(v) else f"{v:.3f}"

    s = result["summary"]
    head = Table("metric (positive = malignant)", "value",
                 title=f"{s['n']} images, {s['n_malignant']} malignant "
                       f"({', '.join(result['malignant'])}); threshold {threshold:g}")
    for key, label in [("auroc", "AUROC"), ("pauc_80", "partial AUC, sensitivity >= 80% (ISIC)"),
                       ("recall", "sensitivity (recall)"), ("specificity", "specificity"),
                       ("precision", "precision (PPV)"), ("fnr", "false-negative rate"),
                       ("accuracy", "accuracy"), ("f1", "F1"), ("log_loss", "log loss"),
                       ("ece", "calibration error (ECE)"), ("balanced_accuracy",
                       "balanced multiclass accuracy (ISIC 2019)"),
                       ("log_loss_multiclass", "multiclass log loss")]:
        head.add_row(label, fmt(s[key]))
    per = Table("class", "diagnosis", "n", "sensitivity", "specificity", "AUC", "pAUC80", "AP",
                title="per class (one vs rest; sensitivity of the top prediction)")
    for r in result["per_class"]:
        per.add_row(r["class"], r["name"], str(r["n"]), *(fmt(r[k]) for k in (
            "sensitivity", "specificity", "auc", "pauc_80", "ap")))
    console = Console()
    console.print(head)
    console.print(per)


# --- model versions, evaluation, prediction ----------------------------------------------------------


def _models_dir(models_dir: Path | None) -> Path:
    return models_dir or _settings().models_dir


@models_app.command("list")
def models_list(models_dir: Path | None = typer.Option(None, help="Models folder.")) -> None:
    """List model versions with their headline test metrics and aliases."""
    from rich.console import Console
    from rich.table import Table

    from skinlesion.registry import list_versions, read_aliases

    folder = _models_dir(models_dir)
    cards = list_versions(folder)
    if not cards:
        typer.echo(f"no model versions in {folder}")
        return
    by_id: dict[str, list[str]] = {}
    for alias, vid in read_aliases(folder).items():
        by_id.setdefault(vid, []).append(alias)
    by_id.setdefault(cards[-1].id, []).append("latest")
    table = Table("id", "kind", "architecture", "created", "test AUROC", "test bal. acc.", "aliases")
    for c in cards:
        test = c.metrics.get("test", {})
        table.add_row(c.id, c.kind, c.architecture, c.created,
                      f"{test['auroc']:.3f}" if "auroc" in test else "-",
                      f"{test['balanced_accuracy']:.3f}" if "balanced_accuracy" in test else "-",
                      ", ".join(by_id.get(c.id, [])))
    Console().print(table)


@models_app.command("show")
def models_show(version: str = typer.Argument(..., help="Version id or alias."),
                models_dir: Path | None = typer.Option(None, help="Models folder.")) -> None:
    """Print a version's model card (JSON)."""
    from skinlesion.registry import read_card, resolve_version

    folder = _models_dir(models_dir)
    try:
        vid = resolve_version(folder, version)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(read_card(folder / vid).model_dump_json(indent=2))


@models_app.command("alias")
def models_alias(alias: str = typer.Argument(..., help="Alias to set."),
                 version: str = typer.Argument(..., help="Version id or alias it points to."),
                 models_dir: Path | None = typer.Option(None, help="Models folder.")) -> None:
    """Point an alias at a version."""
    from skinlesion.registry import set_alias

    try:
        vid = set_alias(_models_dir(models_dir), alias, version)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(f"{alias} -> {vid}")


@models_app.command("diff")
def models_diff(first: str = typer.Argument(..., help="Version id or alias (e.g. the parent)."),
                second: str = typer.Argument(..., help="Version id or alias to compare with it."),
                limit: int = typer.Option(50, min=0, help="Images listed per kind of change at "
                                          "most (0: counts only)."),
                models_dir: Path | None = typer.Option(None, help="Models folder.")) -> None:
    """What the training data of SECOND adds to, removes from, relabels or resplits in FIRST's:
    counts first, then the images."""
    from skinlesion.registry import (describe_manifest_changes, manifest_changes, read_card,
                                     read_manifest, resolve_version)

    folder = _models_dir(models_dir)
    try:
        ids = [resolve_version(folder, ref) for ref in (first, second)]
    except SkinLesionError as err:
        raise _fail(err) from err
    data = [read_card(folder / vid).data for vid in ids]
    typer.echo(f"data of {ids[0]} ({data[0].n_images} images, fingerprint "
               f"{data[0].fingerprint[:12]}) -> {ids[1]} ({data[1].n_images} images, fingerprint "
               f"{data[1].fingerprint[:12]})")
    changes = manifest_changes(*(read_manifest(folder, vid) for vid in ids))
    typer.echo("\n".join(describe_manifest_changes(changes, limit=limit)))


def _read_data(data: Path, fmt: str):
    from skinlesion.data.readers import read_dataset

    return read_dataset(data, format=fmt)


_CONFIG_HELP = ("A TrainConfig JSON, e.g. the best config of `skinlesion tune`; options typed on "
                "the command line override its fields.")


def _train_config(ctx: typer.Context, config_file: Path | None, *, epochs: int | None,
                  weights: Path | None, **fields):
    """The run's TrainConfig: the ``--config`` file's, with the options typed on the command line on
    top; without a file, the options (epochs defaulting to 30 in head mode, 8 in finetune)."""
    from skinlesion.train import TrainConfig

    options = fields | {"epochs": epochs, "weights_path": str(weights) if weights else None}
    if config_file is None:
        return TrainConfig(**options | {"epochs": epochs or (30 if fields["mode"] == "head" else 8)})
    typed = _typed_options(ctx)
    overrides = {k: v for k, v in options.items()
                 if {"weights_path": "weights"}.get(k, k) in typed}
    base = TrainConfig.model_validate_json(config_file.read_text())
    return TrainConfig.model_validate(base.model_dump() | overrides)


def _typed_options(ctx: typer.Context) -> set[str]:
    """Names of the parameters typed on the command line (not defaults)."""
    # typer vendors click: compare the parameter source by name
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


#: ``train`` options of the neural modes, refused in rules mode (by parameter name -> flag)
_NEURAL_OPTIONS = {"backbone": "--backbone", "inputs": "--inputs", "epochs": "--epochs",
                   "weights": "--weights", "device": "--device", "config_file": "--config"}


def _train_rules(ctx: typer.Context, data: Path, fmt: str, seed: int,
                 models_dir: Path | None) -> None:
    """``train --mode rules``: fit the ABCD-rule fallback on the train split, calibrate it and
    choose its threshold (sensitivity >= 0.95) on validation, register it; prints its id last."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.register import register_fallback

    typed = _typed_options(ctx)
    refused = [flag for name, flag in _NEURAL_OPTIONS.items() if name in typed]
    if refused:
        raise _fail(ValueError(f"--mode rules fits the rule-based fallback (no network): drop "
                               f"{', '.join(refused)}"))
    try:
        df = _read_data(data, fmt)
        card = register_fallback(_models_dir(models_dir), df, split_dataset(df, seed=seed),
                                 data_name=str(data), seed=seed, n_jobs=2)
    except (SkinLesionError, ValueError) as err:
        raise _fail(err) from err
    val = card.metrics["val"]
    typer.echo(f"validation AUROC {val['auroc']:.3f}, sensitivity {val['recall']:.3f} at threshold "
               f"{card.threshold:.3f}; serve it with `skinlesion models fallback on --version "
               f"{card.id} --reason ...`", err=True)
    typer.echo(card.id)


@app.command()
def train(ctx: typer.Context,
          data: Path = typer.Option(..., help="Dataset folder (ISIC 2019 or HAM10000 layout)."),
          fmt: str = typer.Option("auto", "--format", help="auto|isic2019|ham10000"),
          backbone: str = typer.Option("efficientnet_lite0", help="Image backbone (see "
                                       "skinlesion.model.available_models())."),
          inputs: str = typer.Option("image+metadata", help="image+metadata|image|metadata"),
          mode: str = typer.Option("finetune", help="head (frozen backbone, seconds) | finetune "
                                   "(last blocks trained on cached activations) | rules (the "
                                   "rule-based ABCD fallback, no network)"),
          epochs: int | None = typer.Option(None, min=1, help="Epochs (default: 8 finetune, "
                                            "30 head)."),
          seed: int = typer.Option(0, help="Seed of the split and of training."),
          weights: Path | None = typer.Option(None, help="Local ImageNet .pth for torchvision "
                                              "backbones (nothing is downloaded)."),
          device: str = typer.Option("auto", help="auto|cpu|cuda"),
          config_file: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                                  help=_CONFIG_HELP),
          models_dir: Path | None = typer.Option(None, help="Models folder.")) -> None:
    """Train a model version on a dataset and register it; prints the new version id last."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.register import register
    from skinlesion.train import fit, training_summary

    if mode == "rules":
        _train_rules(ctx, data, fmt, seed, models_dir)
        return
    try:
        config = _train_config(ctx, config_file, epochs=epochs, weights=weights, backbone=backbone,
                               inputs=inputs, mode=mode, seed=seed, device=device)
        df = _read_data(data, fmt)
        split = split_dataset(df, seed=config.seed)
        result = fit(df, split, config, _settings().cache_dir)
        card = register(_models_dir(models_dir), result.classifier, df, split,
                        threshold=result.threshold, val_probs=result.val_probs,
                        data_name=str(data), history=result.history,
                        training=training_summary(result),
                        target_sensitivity=config.target_sensitivity)
    except (SkinLesionError, ValueError) as err:
        raise _fail(err) from err
    best = result.history[result.best_epoch - 1]
    typer.echo(f"validation AUROC {best['val_auroc']:.3f}, balanced accuracy "
               f"{best['val_balanced_accuracy']:.3f} (epoch {result.best_epoch})", err=True)
    typer.echo(card.id)


@app.command()
def evaluate(version: str = typer.Argument(..., help="Version id or alias."),
             data: Path = typer.Option(..., help="Dataset folder (ISIC 2019 or HAM10000 layout)."),
             fmt: str = typer.Option("auto", "--format", help="auto|isic2019|ham10000"),
             split: str = typer.Option("unseen", help="unseen (images the version never trained "
                                       "on), test (its own test split) or all."),
             out: Path | None = typer.Option(None, help="Report folder (default "
                                             "reports/<version>)."),
             models_dir: Path | None = typer.Option(None, help="Models folder."),
             device: str = typer.Option("auto", help="auto|cpu|cuda")) -> None:
    """Score a version: metrics.json plus confusion matrix, ROC, calibration, learning curves and a
    gallery of the most confident mistakes."""
    from skinlesion.evaluate import evaluate_version, select_rows
    from skinlesion.registry import load_version

    folder = _models_dir(models_dir)
    try:
        loaded = load_version(version, folder, device=device)
        rows, description = select_rows(loaded, _read_data(data, fmt), folder, split)
        typer.echo(f"scoring {description}", err=True)
        report = evaluate_version(loaded, rows, out or Path("reports") / loaded.id,
                                  description=f"{data}: {description}")
    except SkinLesionError as err:
        raise _fail(err) from err
    s = report.metrics["summary"]
    typer.echo(f"AUROC {s['auroc']:.3f}  balanced accuracy {s['balanced_accuracy']:.3f}  "
               f"sensitivity {s['recall']:.3f}  specificity {s['specificity']:.3f}  (n={s['n']})")
    typer.echo(str(report.out_dir))


@app.command()
def predict(version: str = typer.Argument(..., help="Version id or alias."),
            data: Path = typer.Option(..., help="Dataset folder (ISIC 2019 or HAM10000 layout)."),
            out: Path = typer.Option(..., help="Predictions CSV (ISIC challenge format)."),
            fmt: str = typer.Option("auto", "--format", help="auto|isic2019|ham10000"),
            models_dir: Path | None = typer.Option(None, help="Models folder."),
            device: str = typer.Option("auto", help="auto|cpu|cuda"),
            log: bool = typer.Option(False, "--log", help="Send every image through the serving "
                                     "path and log its answer (source batch), as the API does: "
                                     "the version answers in its role in the route (offline when "
                                     "the route does not name it), at the route's threshold and "
                                     "restriction.")) -> None:
    """Write ISIC-format predictions (image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC) for every image."""
    from skinlesion.data.isic_csv import write_predictions_csv
    from skinlesion.evaluate import predict_dataset
    from skinlesion.registry import load_version, resolve_version

    folder = _models_dir(models_dir)
    try:
        df = _read_data(data, fmt)
        if log:
            from skinlesion.serving import ServingService, log_dataset

            with ServingService(_store(), folder, device=device,
                                retention_dir=_settings().retention_dir) as service:
                probs = log_dataset(service, resolve_version(folder, version), df)
        else:
            probs = predict_dataset(load_version(version, folder, device=device), df)
    except SkinLesionError as err:
        raise _fail(err) from err
    write_predictions_csv(out, df["image"].tolist(), probs)
    typer.echo(str(out))


# --- tuning and distillation ---------------------------------------------------------------------------


@app.command()
def tune(ctx: typer.Context,
         data: Path = typer.Option(..., help="Dataset folder (ISIC 2019 or HAM10000 layout)."),
         fmt: str = typer.Option("auto", "--format", help="auto|isic2019|ham10000"),
         trials: int = typer.Option(20, min=1, help="Trials at most."),
         timeout: float | None = typer.Option(None, min=1, help="Start no new trial after this "
                                              "many seconds."),
         metric: str = typer.Option("val_balanced_accuracy", help="Validation score to maximise: "
                                    "val_balanced_accuracy | val_auroc."),
         backbone: str = typer.Option("efficientnet_lite0", help="Image backbone."),
         inputs: str = typer.Option("image+metadata", help="image+metadata|image|metadata"),
         mode: str = typer.Option("head", help="head (frozen backbone, cached embeddings) | "
                                  "finetune"),
         epochs: int | None = typer.Option(None, min=1, help="Epochs per trial (default: 30 head, "
                                           "8 finetune)."),
         seed: int = typer.Option(0, help="Seed of the split, the sampler and training."),
         weights: Path | None = typer.Option(None, help="Local ImageNet .pth for torchvision "
                                             "backbones."),
         device: str = typer.Option("auto", help="auto|cpu|cuda"),
         config_file: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                                 help="Base TrainConfig JSON (fields not searched "
                                                 "come from it); typed options override it."),
         out: Path = typer.Option(Path("best.json"), help="Where to write the best config "
                                  "(trials beside it as <name>.trials.json).")) -> None:
    """Search learning rate, weight decay, head width, dropout and class weighting with Optuna
    (pruning, lesion-grouped validation); write the best TrainConfig for `train --config`. Prints
    its path last."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.tune import tune as search

    try:
        base = _train_config(ctx, config_file, epochs=epochs, weights=weights, backbone=backbone,
                             inputs=inputs, mode=mode, seed=seed, device=device)
        df = _read_data(data, fmt)
        result = search(df, split_dataset(df, seed=base.seed), base, _settings().cache_dir,
                        trials=trials, timeout=timeout, seed=seed, metric=metric)
    except (SkinLesionError, ValueError) as err:
        raise _fail(err) from err
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
            teacher: list[str] = typer.Option(..., help="Teacher version id or alias; repeat for "
                                              "an ensemble."),
            data: Path = typer.Option(..., help="Dataset folder (ISIC 2019 or HAM10000 layout)."),
            fmt: str = typer.Option("auto", "--format", help="auto|isic2019|ham10000"),
            alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Weight of the teacher's soft "
                                        "targets (1 - alpha: the true labels)."),
            temperature: float = typer.Option(4.0, min=0.05, help="Softening temperature T."),
            backbone: str = typer.Option("efficientnet_lite0", help="The student's backbone."),
            inputs: str = typer.Option("image+metadata", help="image+metadata|image|metadata"),
            mode: str = typer.Option("head", help="head | finetune"),
            epochs: int | None = typer.Option(None, min=1, help="Epochs (default: 30 head, 8 "
                                              "finetune)."),
            seed: int = typer.Option(0, help="Seed of the split and of training (use the "
                                     "teacher's split seed)."),
            weights: Path | None = typer.Option(None, help="Local ImageNet .pth for torchvision "
                                                "backbones."),
            device: str = typer.Option("auto", help="auto|cpu|cuda"),
            config_file: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                                    help="The student's " + _CONFIG_HELP),
            models_dir: Path | None = typer.Option(None, help="Models folder.")) -> None:
    """Distil a registered teacher (or an ensemble) into a small student and register the student
    (its card records the teachers, alpha and T); prints the new version id last."""
    from skinlesion.data.splits import split_dataset
    from skinlesion.distill import distill as run_distillation
    from skinlesion.distill import register_student
    from skinlesion.registry import load_version

    folder = _models_dir(models_dir)
    try:
        teachers = [load_version(t, folder, device=device) for t in teacher]
        config = _train_config(ctx, config_file, epochs=epochs, weights=weights, backbone=backbone,
                               inputs=inputs, mode=mode, seed=seed, device=device)
        df = _read_data(data, fmt)
        split = split_dataset(df, seed=config.seed)
        student = run_distillation(df, split, teachers, config, _settings().cache_dir,
                                   alpha=alpha, temperature=temperature)
        card = register_student(folder, student, df, split, data_name=str(data))
    except (SkinLesionError, ValueError) as err:
        raise _fail(err) from err
    result = student.fit
    best = result.history[result.best_epoch - 1]
    typer.echo(f"validation AUROC {best['val_auroc']:.3f}, balanced accuracy "
               f"{best['val_balanced_accuracy']:.3f} (epoch {result.best_epoch}); teachers "
               f"{', '.join(student.info.teachers)}", err=True)
    typer.echo(card.id)


# --- serving: API, keys, route, labels ----------------------------------------------------------------

apikey_app = typer.Typer(help="API keys for the clinic's apps.", no_args_is_help=True)
labels_app = typer.Typer(help="Ground truth arriving after the answer.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
app.add_typer(labels_app, name="labels")


def _store():
    from skinlesion.store import Store

    settings = _settings()
    return Store(settings.db_path, busy_timeout_s=settings.busy_timeout_s)


def _actor() -> str:
    import getpass

    return getpass.getuser()


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8000, help="Port."),
          workers: int = typer.Option(1, help="Uvicorn worker processes.")) -> None:
    """Run the prediction API (OpenAPI docs at /docs)."""
    import uvicorn

    uvicorn.run("skinlesion.api:create_app", factory=True, host=host, port=port, workers=workers)


@apikey_app.command("create")
def apikey_create(name: str = typer.Option(..., help="Name of the client app, e.g. clinic-web.")
                  ) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    try:
        key = _store().create_api_key(name, actor=_actor(), role="admin")
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(key)


@apikey_app.command("revoke")
def apikey_revoke(name: str = typer.Option(..., help="Name of the key to revoke."),
                  reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Revoke an API key (audited)."""
    try:
        _store().revoke_api_key(name, actor=_actor(), role="admin", reason=reason)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(f"revoked {name}")


def _route_action(action) -> None:
    """Run a skinlesion.operations route action as the ml_lead on this server (audited under the
    login name) and print the new route; project errors exit with code 2."""
    from skinlesion.lifecycle import operations

    store = _store()
    try:
        action(operations, store, _settings().models_dir, {"actor": _actor(), "role": "ml_lead"})
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(store.get_route().model_dump_json(indent=2))


def _on_off(state: str) -> bool:
    if state not in ("on", "off"):
        raise _fail(ValueError(f"state must be 'on' or 'off', got {state!r}"))
    return state == "on"


@models_app.command("activate")
def models_activate(version: str = typer.Argument(..., help="Version id or alias to serve."),
                    reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Make a version the active model: promote a candidate (audited; servers follow within
    seconds)."""
    _route_action(lambda ops, store, models, who: ops.activate(store, models, version,
                                                              reason=reason, **who))


@models_app.command("rollback")
def models_rollback(reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Serve the previously active version again, in one step (audited)."""
    _route_action(lambda ops, store, models, who: ops.rollback(store, models, reason=reason, **who))


@models_app.command("fallback")
def models_fallback(state: str = typer.Argument(..., help="on | off"),
                    reason: str = typer.Option(..., help="Why (audited)."),
                    version: str | None = typer.Option(None, help="Fallback version to use "
                                                       "(default: the route's, else the newest "
                                                       "fallback version).")) -> None:
    """Switch answers to the rule-based fallback model, or back (audited)."""
    if _on_off(state):
        _route_action(lambda ops, store, models, who: ops.engage_fallback(
            store, models, version=version, reason=reason, **who))
    else:
        _route_action(lambda ops, store, models, who: ops.release_fallback(store, reason=reason,
                                                                          **who))


@models_app.command("restrict")
def models_restrict(state: str = typer.Argument(..., help="on | off"),
                    reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Answer only clear cases (everything else is referred), or lift that (audited)."""
    on = _on_off(state)
    _route_action(lambda ops, store, models, who: ops.restrict(store, on, reason=reason, **who))


@models_app.command("challenger")
def models_challenger(version: str = typer.Argument(..., help="Version id or alias, or 'off'."),
                      reason: str = typer.Option(..., help="Why (audited)."),
                      share: float | None = typer.Option(None, help="Share of the requests it "
                                                         "answers, between 0 and 1 (e.g. 0.1).")
                      ) -> None:
    """A/B test: a challenger answers a share of the requests, the same image always by the same
    arm; 'off' ends it (audited; servers follow within seconds)."""
    if version == "off":
        _route_action(lambda ops, store, models, who: ops.stop_challenger(store, reason=reason,
                                                                         **who))
        return
    if share is None:
        raise _fail(ValueError("give --share, e.g. --share 0.1 for 10% of the requests"))
    _route_action(lambda ops, store, models, who: ops.start_challenger(
        store, models, version, share, reason=reason, **who))


@models_app.command("shadow")
def models_shadow(version: str = typer.Argument(..., help="Version id or alias, or 'off'."),
                  reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Shadow: a version answers every request in the background, its answers logged (role
    shadow) and never returned; 'off' stops it (audited)."""
    if version == "off":
        _route_action(lambda ops, store, models, who: ops.stop_shadow(store, reason=reason, **who))
    else:
        _route_action(lambda ops, store, models, who: ops.start_shadow(store, models, version,
                                                                      reason=reason, **who))


def _point(label: str, point) -> str:
    return (f"{label} {point.threshold:.4f}: sensitivity {point.sensitivity:.3f}, specificity "
            f"{point.specificity:.3f}")


@models_app.command("threshold")
def models_threshold(
        version: str = typer.Argument(..., help="Version id or alias."),
        sensitivity: float | None = typer.Option(None, help="Target sensitivity: the largest "
                                                 "threshold reaching it on the labelled answers."),
        value: float | None = typer.Option(None, help="A threshold to serve at (0-1)."),
        revert: bool = typer.Option(False, "--revert", help="Back to the threshold before the "
                                    "current one."),
        card: bool = typer.Option(False, "--card", help="Back to the model card's threshold."),
        days: float = typer.Option(30.0, min=0.01, help="Labelled answers of the last DAYS days."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the trade-off (and the "
                                     "proposal); change nothing."),
        reason: str | None = typer.Option(None, help="Why (audited); needed unless --dry-run.")
        ) -> None:
    """The operating threshold of a version: its sensitivity/specificity on recent labelled
    answers, and a new threshold served from now on (a serving configuration in the route,
    audited and reversible; the model card is not edited)."""
    from datetime import UTC, datetime, timedelta

    from skinlesion.lifecycle import operations

    chosen = [flag for flag, on in (("--sensitivity", sensitivity is not None),
                                    ("--value", value is not None), ("--revert", revert),
                                    ("--card", card)) if on]
    if len(chosen) > 1 or (not chosen and not dry_run):
        raise _fail(ValueError("give one of --sensitivity, --value, --revert or --card (or "
                               "--dry-run to only look)"))
    if not dry_run and not (reason or "").strip():
        raise _fail(ValueError("give --reason: every threshold change is audited with why"))
    store, models = _store(), _settings().models_dir
    end = datetime.now(UTC)
    study = None
    try:
        if sensitivity is not None or dry_run:
            study = operations.threshold_study(store, models, version, end - timedelta(days=days),
                                               end, target_sensitivity=sensitivity)
    except SkinLesionError as err:
        raise _fail(err) from err
    if study is not None:
        typer.echo(f"{study.version}: {study.n} labelled answers ({study.current.n_malignant} "
                   f"malignant) in the last {days:g} days")
        typer.echo(_point("serving threshold" + (" (tuned)" if study.tuned else " (card)"),
                          study.current))
        if study.proposed is not None:
            typer.echo(_point(f"proposed for sensitivity ≥ {sensitivity:g}", study.proposed))
    if dry_run:
        return
    if study is not None and study.proposed is not None:
        _route_action(lambda ops, s, m, who: ops.set_threshold(
            s, m, version, study.proposed.threshold, reason=reason, evidence=study.evidence(),
            **who))
    elif value is not None or card:
        _route_action(lambda ops, s, m, who: ops.set_threshold(s, m, version, value, reason=reason,
                                                               **who))
    else:
        _route_action(lambda ops, s, m, who: ops.revert_threshold(s, m, version, reason=reason,
                                                                  **who))


@labels_app.command("import")
def labels_import(truth: Path = typer.Argument(..., help="Ground truth CSV in ISIC format."),
                  images: Path | None = typer.Option(None, help="Folder of the images it names "
                                                     "(default: ISIC_2019_Training_Input beside "
                                                     "the CSV)."),
                  source: str = typer.Option("import", help="Label source, e.g. histopathology.")
                  ) -> None:
    """Join ground truth to logged answers by image content (the images are hashed, never stored)."""
    from skinlesion.data.images import file_sha256
    from skinlesion.data.isic_csv import read_ground_truth_csv
    from skinlesion.schema import CLASSES
    from skinlesion.store import LabelRecord

    folder = images or truth.parent / "ISIC_2019_Training_Input"
    try:
        names, y = read_ground_truth_csv(truth)
        labels = [LabelRecord(image_sha256=file_sha256(_image_file(folder, n)),
                              diagnosis=CLASSES[int(k)], source=source, labelled_by=_actor())
                  for n, k in zip(names, y, strict=True)]
        matched = _store().add_labels(labels)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(f"stored {len(labels)} labels; {matched} matched logged predictions")


def _image_file(folder: Path, name: str) -> Path:
    from skinlesion.errors import DataError

    for ext in (".jpg", ".jpeg", ".png", ""):
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    raise DataError(f"image {name!r} named in the ground truth is not in {folder}", source=str(folder))


# --- model lifecycle: retraining jobs, archiving ------------------------------------------------------

jobs_app = typer.Typer(help="Background retraining jobs: list, show, cancel.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def _print_job(job, *, log_tail: int = 0) -> None:
    from skinlesion.lifecycle.gate import gate_table

    typer.echo(f"job {job.id}  {job.status}  {job.progress:.0%}  {job.message}")
    typer.echo(f"  {job.kind} of {job.model} · trigger {job.trigger} · by {job.requested_by} "
               f"({job.role}) · queued {job.created_at:%Y-%m-%d %H:%M:%S} UTC"
               + (f" · reason: {job.reason}" if job.reason else ""))
    if job.error:
        typer.echo(f"  error: {job.error}")
    if job.result.get("version"):
        typer.echo(f"  candidate {job.result['version']} (not active: promote it with `skinlesion "
                   f"models activate {job.result['version']} --reason ...`)")
        typer.echo(gate_table(job.result["gate"]).to_string(index=False, float_format="%.3f"))
    if log_tail:
        for line in _store().job_log(job.id, tail=log_tail)["line"]:
            typer.echo(f"  | {line}")


@app.command()
def retrain(reason: str = typer.Option(..., help="Why (audited)."),
            trigger: str = typer.Option("manual", help="manual | scheduled | event | "
                                        "active_learning"),
            data: Path | None = typer.Option(None, help="The active version's original dataset "
                                             "folder (default: the folder its card names)."),
            mode: str | None = typer.Option(None, help="head | finetune (default: the policy's)."),
            epochs: int | None = typer.Option(None, min=1, help="Epochs (default: the policy's)."),
            wait: bool = typer.Option(False, "--wait", help="Follow the job until it ends; exit 1 "
                                      "unless it succeeded."),
            policy_file: Path | None = typer.Option(None, "--policy", help="Thresholds file "
                                                    "(default: thresholds.toml at the home).")
            ) -> None:
    """Retrain the active model in a background job (its original data + labelled production
    cases with kept images); the new version is a candidate, compared with the active one. Prints
    the job id last (with --wait: the candidate's id)."""
    from skinlesion.lifecycle import jobs
    from skinlesion.lifecycle.spec import active_spec
    from skinlesion.monitoring.policy import load_policy

    settings = _settings()
    store = _store()
    overrides = {k: v for k, v in {"mode": mode, "epochs": epochs}.items() if v is not None}
    try:
        spec = active_spec(store, load_policy(policy_file).retraining,
                           models_dir=settings.models_dir, cache_dir=settings.cache_dir,
                           data_dir=str(data.resolve()) if data else None, **overrides)
        job = jobs.launch_retrain(store, spec, actor=_actor(), role="ml_lead", reason=reason,
                                  trigger=trigger)
    except (SkinLesionError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(f"retraining {spec.base_version} in job {job.id} (pid {job.pid}); follow it with "
               f"`skinlesion jobs show {job.id[:8]}`", err=True)
    if not wait:
        typer.echo(job.id)
        return
    job = jobs.wait(store, job.id, on_update=lambda j: typer.echo(
        f"{j.status:9} {j.progress:5.0%} {j.message}", err=True))
    _print_job(job)
    if job.status != "succeeded":
        raise typer.Exit(code=1)
    typer.echo(job.result["version"])


@jobs_app.command("list")
def jobs_list(limit: int = typer.Option(20, min=1, help="Newest jobs shown.")) -> None:
    """Retraining jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from skinlesion.lifecycle.jobs import refresh

    store = _store()
    table = Table("id", "model", "trigger", "status", "progress", "message", "queued (UTC)", "by",
                  "candidate")
    for job in store.list_jobs(limit=limit):
        job = refresh(store, job)
        table.add_row(job.id[:8], job.model, job.trigger, job.status, f"{job.progress:.0%}",
                      job.error or job.message, f"{job.created_at:%Y-%m-%d %H:%M}",
                      job.requested_by, job.result.get("version", ""))
    Console().print(table)


@jobs_app.command("show")
def jobs_show(job_id: str = typer.Argument(..., help="Job id (or its first characters)."),
              log: int = typer.Option(20, min=0, help="Last log lines shown.")) -> None:
    """A job's status, progress, result (the candidate and its comparison with the active model)
    and log tail."""
    from skinlesion.lifecycle.jobs import find_job

    try:
        job = find_job(_store(), job_id)
    except SkinLesionError as err:
        raise _fail(err) from err
    _print_job(job, log_tail=log)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str = typer.Argument(..., help="Job id (or its first characters)."),
                reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Cancel a queued or running job (it stops at its next step or epoch)."""
    from skinlesion.lifecycle.jobs import cancel_job

    try:
        job = cancel_job(_store(), job_id, actor=_actor(), role="ml_lead", reason=reason)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(f"job {job.id}: {job.status}" + (" (stopping)" if not job.is_finished else ""))


@jobs_app.command("run", hidden=True)
def jobs_run(job_id: str = typer.Argument(..., help="Job id."),
             db: Path = typer.Option(..., help="The store holding the job.")) -> None:
    """Run a queued job in this process (what a launched job's background process does)."""
    from skinlesion.lifecycle.job_process import run_job
    from skinlesion.store import Store

    try:
        job = run_job(Store(db, busy_timeout_s=_settings().busy_timeout_s), job_id)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(f"job {job.id}: {job.status}")
    if job.status != "succeeded":
        raise typer.Exit(code=1)


@models_app.command("archive")
def models_archive(version: str = typer.Argument(..., help="Version id or alias to archive."),
                   reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Archive a version that serves no role (e.g. a candidate not promoted); audited."""
    _route_action(lambda ops, store, models, who: ops.archive(store, models, version,
                                                             reason=reason, **who))


@models_app.command("unarchive")
def models_unarchive(version: str = typer.Argument(..., help="Version id or alias to restore."),
                     reason: str = typer.Option(..., help="Why (audited).")) -> None:
    """Restore an archived version; audited."""
    _route_action(lambda ops, store, models, who: ops.unarchive(store, models, version,
                                                               reason=reason, **who))


# --- monitoring ---------------------------------------------------------------------------------------

_STATUS_COLOURS = {"green": typer.colors.GREEN, "yellow": typer.colors.YELLOW, "red": typer.colors.RED}


@app.command()
def monitor(once: bool = typer.Option(False, "--once", help="Run once and exit."),
            every: str | None = typer.Option(None, help="Run now and then on this cadence until "
                                             "Ctrl-C: 30s, 15m, 1h, 1d."),
            window: str = typer.Option("24h", help="Health window ending at each run: one the "
                                       "policy names (24h, 7d, 30d) or a duration (12h)."),
            webhook: str | None = typer.Option(None, help="POST a JSON body to this URL for every "
                                               "alert opened, escalated or resolved (retried on "
                                               "the next run when it fails)."),
            metrics_port: int | None = typer.Option(None, min=0, max=65535, help="Serve the health "
                                                    "gauges for Prometheus on this port (/metrics)."),
            metrics_host: str = typer.Option("127.0.0.1", help="Interface for --metrics-port."),
            runs: int | None = typer.Option(None, min=1, help="With --every: stop after this many "
                                            "runs."),
            policy_file: Path | None = typer.Option(None, "--policy", help="Thresholds file "
                                                    "(default: thresholds.toml at the home)."),
            models_dir: Path | None = typer.Option(None, help="Models folder."),
            retrain: bool = typer.Option(True, "--retrain/--no-retrain", help="Launch retraining "
                                         "jobs on the policy's triggers (schedule, events, active "
                                         "learning) after each run.")) -> None:
    """Snapshot the service's health (metrics, drift, worst status), update alerts and notify;
    prints one line per run; then launches retraining when a trigger of the policy is due. Give
    --once, or --every to keep monitoring."""
    from skinlesion.monitoring.alerts import WebhookNotifier
    from skinlesion.monitoring.exporter import HealthExporter
    from skinlesion.monitoring.policy import load_policy
    from skinlesion.monitoring.runner import parse_interval, run_every, run_once, window_length

    if once == (every is not None):
        raise _fail(ValueError("give either --once or --every INTERVAL (e.g. --every 15m)"))
    if once and (metrics_port is not None or runs is not None):
        raise _fail(ValueError("--metrics-port and --runs go with --every, not --once"))
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise _fail(ValueError(f"--webhook must be an http(s) URL, got {webhook!r}"))
    try:
        interval = parse_interval(every) if every is not None else None
        policy = load_policy(policy_file)
        window_length(policy, window)
        store = _store()
    except (SkinLesionError, ValueError) as err:
        raise _fail(err) from err
    folder = _models_dir(models_dir)
    notifier = WebhookNotifier(webhook) if webhook else None

    cache_dir = _settings().cache_dir if retrain else None

    def show(result) -> None:
        typer.secho(result.summary(), fg=_STATUS_COLOURS.get(result.snapshot.status))
        for outcome in result.retraining:
            typer.echo(outcome.describe())

    if interval is None:
        try:
            show(run_once(store, folder, policy, window=window, notifier=notifier,
                          retrain_cache_dir=cache_dir))
        except SkinLesionError as err:
            raise _fail(err) from err
        return
    exporter = HealthExporter()
    callbacks = [show]
    if metrics_port is not None:
        try:
            port = exporter.serve(metrics_port, addr=metrics_host)
        except OSError as err:
            raise _fail(OSError(f"cannot serve the gauges on {metrics_host}:{metrics_port} ({err}); "
                                "choose another --metrics-port")) from err
        exporter.update(store.latest_snapshot(window), store.open_alerts())
        callbacks.append(lambda result: exporter.update(result.snapshot, result.open_alerts))
        typer.echo(f"gauges on http://{metrics_host}:{port}/metrics", err=True)
    try:
        run_every(store, folder, policy, every=interval, window=window, notifier=notifier,
                  retrain_cache_dir=cache_dir, on_result=callbacks, runs=runs,
                  on_error=lambda err: typer.secho(f"run failed: {err}; retrying next run", err=True,
                                                   fg=typer.colors.RED))
    except KeyboardInterrupt:
        typer.echo("monitor stopped", err=True)
    finally:
        exporter.close()


# --- dashboard and its users --------------------------------------------------------------------------

users_app = typer.Typer(help="Dashboard users (viewer, clinician, ml_lead).", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(name: str = typer.Option(..., help="User name (letters, digits, _ . @ -)."),
              role: str = typer.Option(..., help="viewer (clinical ops) | clinician (predict, "
                                       "label) | ml_lead (model actions)."),
              password: str = typer.Option(..., prompt=True, hide_input=True,
                                           confirmation_prompt=True,
                                           help="Prompted when not given (never echoed).")) -> None:
    """Add a dashboard user, or replace a user's role and password (stored as a scrypt hash in
    users.toml at the home, or SKINLESION_USERS_FILE)."""
    from skinlesion.auth import add_user

    path = _settings().users_file
    try:
        account = add_user(path, name, role, password)
    except SkinLesionError as err:
        raise _fail(err) from err
    typer.echo(f"{account.name} ({account.role}) saved in {path}")


@users_app.command("list")
def users_list() -> None:
    """List the dashboard users and their roles."""
    from skinlesion.auth import load_users

    path = _settings().users_file
    try:
        accounts = load_users(path)
    except SkinLesionError as err:
        raise _fail(err) from err
    if not accounts:
        typer.echo(f"no users in {path}; add one with `skinlesion users add --name N --role R`")
    for account in accounts.values():
        typer.echo(f"{account.name}\t{account.role}")


#: The Streamlit app, next to the package in a source checkout.
DASHBOARD_APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


@app.command()
def dashboard(port: int = typer.Option(8501, min=1, max=65535, help="Port."),
              host: str = typer.Option("127.0.0.1", help="Interface to listen on.")) -> None:
    """Run the monitoring cockpit (Streamlit) on http://HOST:PORT; sign in as a user added with
    `skinlesion users add`."""
    import os
    import subprocess
    import sys

    settings = _settings()
    if not DASHBOARD_APP.is_file():
        raise _fail(FileNotFoundError(f"the dashboard app is not at {DASHBOARD_APP}; run from a "
                                      "source checkout of skinlesion"))
    if not settings.users_file.is_file():
        typer.secho(f"note: no users in {settings.users_file} yet; add one with "
                    "`skinlesion users add --name N --role R` before signing in", err=True,
                    fg=typer.colors.YELLOW)
    # the app reads the same settings: pass the resolved home on, run from the project root so
    # .streamlit/config.toml applies
    env = {**os.environ, "SKINLESION_HOME": str(settings.home)}
    command = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--server.port",
               str(port), "--server.address", host]
    raise typer.Exit(subprocess.call(command, env=env, cwd=DASHBOARD_APP.parent.parent))


@app.command()
def demo(data: Path | None = typer.Option(None, help="Real images in the ISIC 2019 layout (served "
                                          "by the shipped reference model) instead of synthetic."),
         rebuild: bool = typer.Option(False, help="Rebuild even if a recent demo exists (one older "
                                      "than 12 h is rebuilt anyway)."),
         build_only: bool = typer.Option(False, help="Build, do not start the dashboard."),
         port: int = typer.Option(8501, help="Dashboard port.")) -> None:
    """The embedded demo: synthetic data, a demo model, the fallback, 30 days of simulated traffic
    with an incident, monitoring history; then the dashboard over it (everything marked simulated)."""
    import os

    from skinlesion.demo import DEMO_USERS, build_demo, demo_home, is_built

    settings = _settings()
    home = demo_home(settings)
    if rebuild or not is_built(home):
        try:
            result = build_demo(settings, data=data)
        except SkinLesionError as err:
            raise _fail(err) from err
        typer.echo(f"demo built in {result.seconds:.0f} s: {result.predictions} simulated "
                   f"predictions, {result.labels} labels, {result.open_alerts} open alerts "
                   f"(model {result.model}, fallback {result.fallback}) in {home}")
    if build_only:
        return
    typer.echo("demo sign-ins (demo only): " + ", ".join(f"{n} / {p} ({r})"
                                                        for n, r, p in DEMO_USERS))
    os.environ["SKINLESION_HOME"] = str(home)
    os.environ.pop("SKINLESION_MODELS_DIR", None)
    dashboard(port=port, host="127.0.0.1")


if __name__ == "__main__":  # pragma: no cover
    app()
