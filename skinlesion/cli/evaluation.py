"""``skinlesion evaluate``, ``predict`` and ``score``: a version's answers on a dataset, and the
metrics of ISIC-format prediction files."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import (DataDir, Device, Format, ModelsDir, VersionRef, fail, models_folder,
                                    open_store, settings)
from skinlesion.cli.training import read_data
from skinlesion.errors import SkinLesionError
from skinlesion.schema import DEFAULT_MALIGNANT

app = typer.Typer()


@app.command()
def evaluate(version: VersionRef, data: DataDir, fmt: Format = "auto",
             split: Annotated[str, typer.Option(help="unseen (images the version never trained "
                                                "on), test (its own test split) or all.")
                              ] = "unseen",
             out: Annotated[Path | None, typer.Option(help="Report folder (default "
                                                      "reports/<version>).")] = None,
             models_dir: ModelsDir = None, device: Device = "auto") -> None:
    """Score a version: metrics.json plus confusion matrix, ROC, calibration, learning curves and a
    gallery of the most confident mistakes."""
    from skinlesion.evaluate import evaluate_version, select_rows
    from skinlesion.registry import load_version

    folder = models_folder(models_dir)
    try:
        loaded = load_version(version, folder, device=device)
        rows, description = select_rows(loaded, read_data(data, fmt), folder, split)
        typer.echo(f"scoring {description}", err=True)
        report = evaluate_version(loaded, rows, out or Path("reports") / loaded.id,
                                  description=f"{data}: {description}")
    except SkinLesionError as err:
        raise fail(err) from err
    s = report.metrics["summary"]
    typer.echo(f"AUROC {s['auroc']:.3f}  balanced accuracy {s['balanced_accuracy_shown']:.3f} "
               f"(shown diagnosis; {s['balanced_accuracy_file']:.3f} the predictions file's argmax)  "
               f"sensitivity {s['recall']:.3f}  specificity {s['specificity']:.3f}  (n={s['n']})")
    typer.echo(str(report.out_dir))


@app.command()
def predict(version: VersionRef, data: DataDir,
            out: Annotated[Path, typer.Option(help="Predictions CSV (ISIC challenge format).")],
            fmt: Format = "auto", models_dir: ModelsDir = None, device: Device = "auto",
            log: Annotated[bool, typer.Option(
                "--log", help="Send every image through the serving path and log its answer "
                "(source batch), as the API does: the version answers in its role in the route "
                "(offline when the route does not name it), at the route's threshold and "
                "restriction.")] = False,
            on_error: Annotated[str, typer.Option(
                "--on-error", help="Images that cannot be read: stop (name every one, write "
                "nothing, exit 2) or skip (answer the others; name the bad ones on stderr and in "
                "<out>.bad.csv with the reason each).")] = "stop") -> None:
    """Write ISIC-format predictions (image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC) for every image: the
    version's calibrated probabilities, re-weighted inside the malignant and the benign classes by
    its diagnosis rule (so the malignant columns still sum to the calibrated p_malignant, and the
    file's argmax comes closer to the shown diagnosis)."""
    from skinlesion.data.isic_csv import write_predictions_csv
    from skinlesion.evaluate import (ON_ERROR, BadImagesError, card_file_probs, predict_images,
                                     screen_images, write_bad_images)
    from skinlesion.registry import load_version, read_card, resolve_version
    from skinlesion.serving import ServingService, log_dataset

    if on_error not in ON_ERROR:
        raise typer.BadParameter(f"must be one of {', '.join(ON_ERROR)}", param_hint="--on-error")
    folder = models_folder(models_dir)
    try:
        df = read_data(data, fmt)
        vid = resolve_version(folder, version)
        card = read_card(folder / vid)
        if log:
            good, bad = screen_images(df)
            if bad and on_error == "stop":
                raise BadImagesError(bad)
            with ServingService(open_store(), folder, device=device,
                                retention_dir=settings().retention_dir) as service:
                probs = log_dataset(service, vid, good)
            images = good["image"].tolist()
        else:
            answered = predict_images(load_version(vid, folder, device=device), df,
                                      on_error=on_error)
            images, probs, bad = answered.images, answered.probs, answered.bad
    except SkinLesionError as err:
        raise fail(err) from err
    write_predictions_csv(out, images, card_file_probs(card, probs))
    if bad:
        report = write_bad_images(out.with_suffix(".bad.csv"), bad)
        typer.secho(f"skipped {len(bad)} image(s) that cannot be read (listed in {report}):",
                    err=True, fg=typer.colors.YELLOW)
        for b in bad:
            typer.echo(f"  {b.image}: {b.reason}", err=True)
    typer.echo(str(out))


#: the summary rows of ``score``: (metric key, label)
_SCORE_ROWS = [("auroc", "AUROC"), ("pauc_80", "partial AUC, sensitivity >= 80% (ISIC)"),
               ("recall", "sensitivity (recall)"), ("specificity", "specificity"),
               ("precision", "precision (PPV)"), ("fnr", "false-negative rate"),
               ("accuracy", "accuracy"), ("f1", "F1"), ("log_loss", "log loss"),
               ("ece", "calibration error (ECE)"),
               ("balanced_accuracy", "balanced multiclass accuracy (ISIC 2019)"),
               ("log_loss_multiclass", "multiclass log loss")]


def _fmt(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


def _print_score(result: dict, threshold: float) -> None:
    """The summary and per-class tables of a :func:`skinlesion.scoring.score_files` result."""
    from rich.console import Console
    from rich.table import Table

    s = result["summary"]
    head = Table("metric (positive = malignant)", "value",
                 title=f"{s['n']} images, {s['n_malignant']} malignant "
                       f"({', '.join(result['malignant'])}); threshold {threshold:g}")
    for key, label in _SCORE_ROWS:
        head.add_row(label, _fmt(s[key]))
    per = Table("class", "diagnosis", "n", "sensitivity", "specificity", "AUC", "pAUC80", "AP",
                title="per class (one vs rest; sensitivity of the top prediction)")
    for r in result["per_class"]:
        per.add_row(r["class"], r["name"], str(r["n"]), *(_fmt(r[k]) for k in (
            "sensitivity", "specificity", "auc", "pauc_80", "ap")))
    console = Console()
    console.print(head)
    console.print(per)


@app.command()
def score(truth: Annotated[Path, typer.Option(help="Ground-truth CSV (ISIC format, one-hot; UNK "
                                              "column allowed).")],
          predictions: Annotated[Path, typer.Option(help="Predictions CSV (image,MEL,NV,BCC,AK,"
                                                    "BKL,DF,VASC,SCC).")],
          threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Operating threshold on "
                                                   "p(malignant) for the binary metrics.")] = 0.5,
          malignant: Annotated[str, typer.Option(help="Comma-separated classes counted as "
                                                 "malignant.")] = ",".join(DEFAULT_MALIGNANT),
          json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON "
                                                        "to this file ('-' for stdout) instead of "
                                                        "tables.")] = None) -> None:
    """Score ISIC-format predictions against ground truth (the files the official scorer reads)."""
    from skinlesion.metrics import UndefinedMetricWarning
    from skinlesion.scoring import score_files, to_json

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UndefinedMetricWarning)
            result = score_files(truth, predictions, threshold=threshold,
                                 malignant=[c.strip() for c in malignant.split(",") if c.strip()])
    except (SkinLesionError, ValueError) as err:
        raise fail(err) from err
    for w in caught:
        typer.secho(f"note: {w.message}", err=True, fg=typer.colors.YELLOW)
    if json_out is None:
        _print_score(result, threshold)
    elif str(json_out) == "-":
        typer.echo(to_json(result), nl=False)
    else:
        json_out.write_text(to_json(result))
        typer.echo(str(json_out))
