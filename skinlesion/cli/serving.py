"""``skinlesion serve``, ``apikey create|revoke`` and ``labels import``: the prediction API, the keys
of the clinic's apps, and ground truth arriving after the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import Reason, actor, fail, open_store
from skinlesion.errors import DataError, SkinLesionError
from skinlesion.model.threads import ThreadPolicy

app = typer.Typer()
apikey_app = typer.Typer(help="API keys for the clinic's apps.", no_args_is_help=True)
labels_app = typer.Typer(help="Ground truth arriving after the answer.", no_args_is_help=True)


@app.command()
def serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port.")] = 8000,
          workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1) -> None:
    """Run the prediction API (OpenAPI docs at /docs). Inference threads follow the thread policy
    (skinlesion.model.threads): the usable cores shared among the workers, idle threads sleeping
    (OMP_WAIT_POLICY=PASSIVE); OMP_NUM_THREADS or OMP_WAIT_POLICY set in the environment win."""
    ThreadPolicy.for_machine(processes=workers).apply()
    import uvicorn

    uvicorn.run("skinlesion.api:create_app", factory=True, host=host, port=port, workers=workers)


@apikey_app.command("create")
def apikey_create(name: Annotated[str, typer.Option(help="Name of the client app, e.g. "
                                                    "clinic-web.")],
                  scope: Annotated[list[str] | None, typer.Option(
                      help="labeller: may label every client's answers; admin: may also read "
                           "them (repeatable). Without, the key reaches its own answers only.")]
                  = None) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    try:
        key = open_store().create_api_key(name, actor=actor(), role="admin", scopes=scope or ())
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(key)


@apikey_app.command("revoke")
def apikey_revoke(name: Annotated[str, typer.Option(help="Name of the key to revoke.")],
                  reason: Reason) -> None:
    """Revoke an API key (audited)."""
    try:
        open_store().revoke_api_key(name, actor=actor(), role="admin", reason=reason)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(f"revoked {name}")


def _image_file(folder: Path, name: str) -> Path:
    for ext in (".jpg", ".jpeg", ".png", ""):
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    raise DataError(f"image {name!r} named in the ground truth is not in {folder}", source=str(folder))


@labels_app.command("import")
def labels_import(truth: Annotated[Path, typer.Argument(help="Ground truth CSV in ISIC format.")],
                  images: Annotated[Path | None, typer.Option(
                      help="Folder of the images it names (default: ISIC_2019_Training_Input "
                      "beside the CSV).")] = None,
                  source: Annotated[str, typer.Option(help="Label source, e.g. histopathology.")
                                    ] = "import") -> None:
    """Join ground truth to logged answers by image content (the images are hashed, never stored)."""
    from skinlesion.data.images import file_sha256
    from skinlesion.data.isic_csv import read_ground_truth_csv
    from skinlesion.schema import CLASSES
    from skinlesion.store import LabelRecord

    folder = images or truth.parent / "ISIC_2019_Training_Input"
    try:
        names, y = read_ground_truth_csv(truth)
        labels = [LabelRecord(image_sha256=file_sha256(_image_file(folder, n)),
                              diagnosis=CLASSES[int(k)], source=source, labelled_by=actor())
                  for n, k in zip(names, y, strict=True)]
        matched = open_store().add_labels(labels)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(f"stored {len(labels)} labels; {matched} matched logged predictions")
