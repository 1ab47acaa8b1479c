"""``skinlesion models list|show|export|alias|diff|recalibrate``: the registered versions (and their
runtime exports). The route commands of the same sub-app (activate, rollback, fallback, ...) are in
:mod:`skinlesion.cli.lifecycle`."""

from __future__ import annotations

from typing import Annotated

import typer

from skinlesion.cli.options import (DataDir, Format, ModelsDir, VersionRef, fail, models_folder,
                                    settings)
from skinlesion.errors import SkinLesionError

models_app = typer.Typer(help="Model versions and the serving route: list, show, export, alias, "
                         "diff, recalibrate, "
                         "activate, rollback, fallback, restrict, archive, challenger, shadow, "
                         "threshold.",
                         no_args_is_help=True)


@models_app.command("list")
def models_list(models_dir: ModelsDir = None) -> None:
    """List model versions with their headline test metrics and aliases."""
    from rich.console import Console
    from rich.table import Table

    from skinlesion.registry import list_versions, read_aliases

    folder = models_folder(models_dir)
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
def models_show(version: VersionRef, models_dir: ModelsDir = None) -> None:
    """Print a version's model card (JSON)."""
    from skinlesion.registry import read_card, resolve_version

    folder = models_folder(models_dir)
    try:
        vid = resolve_version(folder, version)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(read_card(folder / vid).model_dump_json(indent=2))


@models_app.command("export")
def models_export(version: VersionRef, data: DataDir,
                  runtime: Annotated[str, typer.Option(
                      help="openvino|onnxruntime|all")] = "all",
                  images: Annotated[int, typer.Option(
                      min=1, help="Validation images the accuracy gate compares on.")] = 200,
                  models_dir: ModelsDir = None) -> None:
    """Export a version to the inference runtimes (OpenVINO, ONNX Runtime; fp32) and gate each
    against eager torch on its validation images from DATA (the dataset it was trained on): max
    |Δp| <= 1e-4, no changed decision, monitoring embedding within 1e-4, the OOD gate's texture
    statistics within 1e-3 (relative). Done once per weights and
    settings; servers use a passed export as SKINLESION_RUNTIME (auto by default) allows."""
    from skinlesion.export import export_version
    from skinlesion.model.runtime import EXPORTED_RUNTIMES

    if runtime not in (*EXPORTED_RUNTIMES, "all"):
        raise typer.BadParameter(f"must be one of {', '.join(EXPORTED_RUNTIMES)}, all",
                                 param_hint="--runtime")
    try:
        reports = export_version(models_folder(models_dir), version, data, n_images=images,
                                 runtimes=EXPORTED_RUNTIMES if runtime == "all" else (runtime,))
    except SkinLesionError as err:
        raise fail(err) from err
    for r in reports:
        verdict = "passed" if r.passed else f"REFUSED ({r.reason})"
        texture = (f", texture statistics off by {r.max_rel_texture:.2g} (relative)"
                   if r.max_rel_texture is not None else "")
        figures = (f" on {r.n_images} images: max |Δp| {r.max_abs_dp:.2g}, "
                   f"{r.changed_decisions} changed decisions, embedding off by "
                   f"{r.max_abs_embedding:.2g}{texture}" if r.max_abs_dp is not None else "")
        typer.echo(f"{r.runtime}: {verdict}{figures}")


@models_app.command("alias")
def models_alias(alias: Annotated[str, typer.Argument(help="Alias to set.")],
                 version: Annotated[str, typer.Argument(help="Version id or alias it points to.")],
                 models_dir: ModelsDir = None) -> None:
    """Point an alias at a version."""
    from skinlesion.registry import set_alias

    try:
        vid = set_alias(models_folder(models_dir), alias, version)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(f"{alias} -> {vid}")


@models_app.command("diff")
def models_diff(first: Annotated[str, typer.Argument(help="Version id or alias (e.g. the parent).")],
                second: Annotated[str, typer.Argument(help="Version id or alias to compare with it.")],
                limit: Annotated[int, typer.Option(min=0, help="Images listed per kind of change at "
                                                   "most (0: counts only).")] = 50,
                models_dir: ModelsDir = None) -> None:
    """What the training data of SECOND adds to, removes from, relabels or resplits in FIRST's:
    counts first, then the images."""
    from skinlesion.registry import (describe_manifest_changes, manifest_changes, read_card,
                                     read_manifest, resolve_version)

    folder = models_folder(models_dir)
    try:
        ids = [resolve_version(folder, ref) for ref in (first, second)]
    except SkinLesionError as err:
        raise fail(err) from err
    data = [read_card(folder / vid).data for vid in ids]
    typer.echo(f"data of {ids[0]} ({data[0].n_images} images, fingerprint "
               f"{data[0].fingerprint[:12]}) -> {ids[1]} ({data[1].n_images} images, fingerprint "
               f"{data[1].fingerprint[:12]})")
    changes = manifest_changes(*(read_manifest(folder, vid) for vid in ids))
    typer.echo("\n".join(describe_manifest_changes(changes, limit=limit)))


@models_app.command("recalibrate")
def models_recalibrate(version: VersionRef, data: DataDir, fmt: Format = "auto",
                       method: Annotated[str | None, typer.Option(
                           help="temperature|bcts|vector (default: chosen out of fold on "
                           "validation)")] = None,
                       rule: Annotated[str | None, typer.Option(
                           help="Shown diagnosis: argmax|balanced (default: chosen on "
                           "validation)")] = None,
                       models_dir: ModelsDir = None) -> None:
    """Run the calibration step on a trained neural version, without training it again: compare
    temperature, BCTS and vector scaling out of fold on its validation split (from DATA, the
    dataset it was trained on), fold the chosen one into its weights, refit the threshold, and
    rewrite its card metrics and reference answers in place."""
    from skinlesion.calibration import DIAGNOSIS_RULES, METHODS
    from skinlesion.cli.training import read_data
    from skinlesion.recalibration import recalibrate_version

    if method is not None and method not in METHODS:
        raise typer.BadParameter(f"must be one of {', '.join(METHODS)}", param_hint="--method")
    if rule is not None and rule not in DIAGNOSIS_RULES:
        raise typer.BadParameter(f"must be one of {', '.join(DIAGNOSIS_RULES)}", param_hint="--rule")
    try:
        out = recalibrate_version(models_folder(models_dir), version, read_data(data, fmt),
                                  settings().cache_dir, method=method, rule=rule)
    except SkinLesionError as err:
        raise fail(err) from err
    s, ece = out.report["summary"], out.report["intervals"]["per_image"]["ece_15"]["value"]
    typer.echo(f"{out.card.id}: {out.step.calibrator.method} calibration "
               f"(T {out.step.calibrator.temperature:.3f}), shown diagnosis "
               f"{out.step.diagnosis.rule}, threshold {out.step.threshold:.3f}; test ECE (15 bins) "
               f"{ece:.3f}, balanced accuracy {s['balanced_accuracy']:.3f} (argmax) / "
               f"{s['balanced_accuracy_shown']:.3f} (shown), sensitivity {s['recall']:.3f}, "
               f"specificity {s['specificity']:.3f}")
