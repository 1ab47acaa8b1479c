"""The one ``skinlesion`` command. Each sub-command validates its input, calls one library function,
and prints; progress goes to stderr, results (e.g. a new version id) to stdout."""

from __future__ import annotations

from pathlib import Path

import typer

from skinlesion.errors import SkinLesionError
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


if __name__ == "__main__":  # pragma: no cover
    app()
