"""``skinlesion users add|list``, ``dashboard`` and ``demo``: the cockpit, who may sign in to it, and
the embedded demo behind it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from skinlesion.cli.options import fail, settings
from skinlesion.errors import SkinLesionError

app = typer.Typer()
users_app = typer.Typer(help="Dashboard users (viewer, clinician, ml_lead).", no_args_is_help=True)

#: The cockpit's server (the Streamlit app and its session-cookie routes), next to the package in a
#: source checkout.
DASHBOARD_APP = Path(__file__).resolve().parents[2] / "dashboard" / "server.py"

Port = Annotated[int, typer.Option(min=1, max=65535, help="Port (another free one is picked, and "
                                   "said, when it is taken).")]


def available_port(host: str, preferred: int) -> int:
    """``preferred`` when nothing listens on it at ``host``, else a port the system says is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, preferred))
        except OSError:
            sock.bind((host, 0))
        return int(sock.getsockname()[1])


@users_app.command("add")
def users_add(name: Annotated[str, typer.Option(help="User name (letters, digits, _ . @ -).")],
              role: Annotated[str, typer.Option(help="viewer (clinical ops) | clinician (predict, "
                                                "label) | ml_lead (model actions).")],
              password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                                    confirmation_prompt=True,
                                                    help="Prompted when not given (never echoed).")]
              ) -> None:
    """Add a dashboard user, or replace a user's role and password (stored as a scrypt hash in
    users.toml at the home, or SKINLESION_USERS_FILE)."""
    from skinlesion.auth import add_user

    path = settings().users_file
    try:
        account = add_user(path, name, role, password)
    except SkinLesionError as err:
        raise fail(err) from err
    typer.echo(f"{account.name} ({account.role}) saved in {path}")


@users_app.command("list")
def users_list() -> None:
    """List the dashboard users and their roles."""
    from skinlesion.auth import load_users

    path = settings().users_file
    try:
        accounts = load_users(path)
    except SkinLesionError as err:
        raise fail(err) from err
    if not accounts:
        typer.echo(f"no users in {path}; add one with `skinlesion users add --name N --role R`")
    for account in accounts.values():
        typer.echo(f"{account.name}\t{account.role}")


@app.command()
def dashboard(port: Port = 8501,
              host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1"
              ) -> None:
    """Run the monitoring cockpit (Streamlit) on http://HOST:PORT; sign in as a user added with
    `skinlesion users add`."""
    current = settings()
    if not DASHBOARD_APP.is_file():
        raise fail(FileNotFoundError(f"the dashboard app is not at {DASHBOARD_APP}; run from a "
                                     "source checkout of skinlesion"))
    if not current.users_file.is_file():
        typer.secho(f"note: no users in {current.users_file} yet; add one with "
                    "`skinlesion users add --name N --role R` before signing in", err=True,
                    fg=typer.colors.YELLOW)
    # the app reads the same settings: pass the resolved home on, run from the project root so
    # .streamlit/config.toml applies
    env = {**os.environ, "SKINLESION_HOME": str(current.home)}
    chosen = available_port(host, port)
    if chosen != port:
        typer.secho(f"note: port {port} is taken; using {chosen}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"cockpit: http://{host}:{chosen}")
    command = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--server.port",
               str(chosen), "--server.address", host]
    raise typer.Exit(subprocess.call(command, env=env, cwd=DASHBOARD_APP.parent.parent))


@app.command()
def demo(data: Annotated[Path | None, typer.Option(
             help="Real images in the ISIC 2019 layout, served by the shipped reference model "
             "[default: data/sample, the shipped sample of its test split]")] = None,
         synthetic: Annotated[bool, typer.Option(help="Synthetic images and a demo model trained "
                                                 "on them instead (as the tests use).")] = False,
         rebuild: Annotated[bool, typer.Option(help="Rebuild even if a recent demo exists (one "
                                               "older than 12 h is rebuilt anyway).")] = False,
         build_only: Annotated[bool, typer.Option(help="Build, do not start the dashboard.")
                               ] = False,
         port: Port = 8501) -> None:
    """The embedded demo: the shipped reference model serving the shipped sample of real images
    (or synthetic data and a demo model), the fallback, 30 days of simulated traffic with an
    incident, monitoring history; then the dashboard over it (everything marked simulated)."""
    from skinlesion.demo import DEMO_USERS, build_demo, demo_home, is_built
    from skinlesion.demo_sample import SAMPLE_DIR

    current = settings()
    home = demo_home(current)
    if rebuild or not is_built(home):
        try:
            result = build_demo(current, data=None if synthetic else data or SAMPLE_DIR)
        except SkinLesionError as err:
            raise fail(err) from err
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
