"""What the sub-commands share: settings, the store, the operator's name, the error exit, and the
option types (``Annotated``), so an option that several commands take (train, tune and distill's
training options, the dataset, the models folder, the audited reason) is declared once."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skinlesion.settings import Settings

if TYPE_CHECKING:
    from skinlesion.store import Store


def settings() -> Settings:
    return Settings()


def fail(err: Exception) -> typer.Exit:
    """Print ``err`` to stderr and return the exit (code 2) to raise."""
    typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def models_folder(folder: Path | None) -> Path:
    """``folder``, or the settings' models folder."""
    return folder or settings().models_dir


def open_store() -> Store:
    """The store the settings name (imported here: the store pulls in DuckDB, which commands
    that never touch it should not wait for)."""
    from skinlesion.store import Store

    current = settings()
    return Store(current.store_url, busy_timeout_s=current.busy_timeout_s)


def actor() -> str:
    """Who acts from this shell: the login name (audited)."""
    return getpass.getuser()


def on_off(state: str) -> bool:
    """``on`` -> True, ``off`` -> False; exit with an error otherwise."""
    if state not in ("on", "off"):
        raise fail(ValueError(f"state must be 'on' or 'off', got {state!r}"))
    return state == "on"


# --- option types ---------------------------------------------------------------------------------------

ModelsDir = Annotated[Path | None, typer.Option(help="Models folder.")]
Reason = Annotated[str, typer.Option(help="Why (audited).")]
VersionRef = Annotated[str, typer.Argument(help="Version id or alias.")]
Device = Annotated[str, typer.Option(help="auto|cpu|cuda")]
PolicyFile = Annotated[Path | None, typer.Option("--policy", help="Thresholds file (default: "
                                                 "thresholds.toml at the home).")]

# datasets
DataDir = Annotated[Path, typer.Option(help="Dataset folder (ISIC 2019 or HAM10000 layout).")]
Format = Annotated[str, typer.Option("--format", help="auto|isic2019|ham10000")]

# training (train, tune, distill)
Backbone = Annotated[str, typer.Option(help="Image backbone (see "
                                       "skinlesion.model.available_models()).")]
Inputs = Annotated[str, typer.Option(help="image+metadata|image|metadata")]
Mode = Annotated[str, typer.Option(help="head (frozen backbone, cached embeddings, seconds) | "
                                   "finetune (last blocks trained on cached activations)")]
Epochs = Annotated[int | None, typer.Option(min=1, help="Epochs (default: 30 head, 8 finetune).")]
Seed = Annotated[int, typer.Option(help="Seed of the split and of training (and of tune's "
                                   "sampler).")]
Weights = Annotated[Path | None, typer.Option(help="Local ImageNet .pth for torchvision backbones "
                                              "(nothing is downloaded).")]
ConfigFile = Annotated[Path | None, typer.Option(
    "--config", exists=True, dir_okay=False,
    help="A TrainConfig JSON, e.g. the best config of `skinlesion tune`; options typed on the "
         "command line override its fields.")]
