"""``skinlesion synth`` and ``skinlesion data fetch``: the datasets a version is trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import fail, settings
from skinlesion.errors import SkinLesionError

app = typer.Typer()
data_app = typer.Typer(help="Datasets: download published data.", no_args_is_help=True)


@app.command()
def synth(out: Annotated[Path, typer.Option(help="Folder to write the ISIC 2019 layout into.")],
          n: Annotated[int, typer.Option(min=8, help="Number of images.")] = 400,
          seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
          size: Annotated[int, typer.Option(min=32, help="Image width in pixels (height is 3/4 of "
                                            "it).")] = 200) -> None:
    """Write a seeded synthetic dataset in the ISIC 2019 layout (class-dependent images and metadata)."""
    from skinlesion.data.synthetic import write_synthetic_dataset

    try:
        path = write_synthetic_dataset(out, n=n, seed=seed, width=size)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(str(path))


@data_app.command("fetch")
def data_fetch(dataset: Annotated[str, typer.Argument(help="Dataset name: isic2019.")],
               out: Annotated[Path | None, typer.Option(help="Folder to download and unpack into "
                                                        "(default <data_dir>/<dataset>).")] = None,
               base_url: Annotated[str | None, typer.Option(help="Server to download from instead "
                                                            "of the published one (a mirror).")
                                   ] = None,
               keep_archive: Annotated[bool, typer.Option(help="Keep zip files after unpacking.")
                                       ] = False) -> None:
    """Download a published dataset (resumable, checksummed) and unpack it into its layout."""
    from skinlesion.data.fetch import fetch_dataset

    try:
        path = fetch_dataset(dataset, out or settings().data_dir / dataset.lower(),
                             base_url=base_url, keep_archives=keep_archive)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(str(path))
