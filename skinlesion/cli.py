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
models_app = typer.Typer(help="Model versions: list, show, alias.", no_args_is_help=True)
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


def _read_data(data: Path, fmt: str):
    from skinlesion.data.readers import read_dataset

    return read_dataset(data, format=fmt)


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
            device: str = typer.Option("auto", help="auto|cpu|cuda")) -> None:
    """Write ISIC-format predictions (image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC) for every image."""
    from skinlesion.data.isic_csv import write_predictions_csv
    from skinlesion.evaluate import predict_dataset
    from skinlesion.registry import load_version

    try:
        loaded = load_version(version, _models_dir(models_dir), device=device)
        df = _read_data(data, fmt)
        probs = predict_dataset(loaded, df)
    except SkinLesionError as err:
        raise _fail(err) from err
    write_predictions_csv(out, df["image"].tolist(), probs)
    typer.echo(str(out))


if __name__ == "__main__":  # pragma: no cover
    app()
