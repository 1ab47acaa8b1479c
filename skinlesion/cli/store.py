"""``skinlesion store migrate``: move a deployment's store (a DuckDB file) into PostgreSQL, verified."""

from __future__ import annotations

from typing import Annotated

import typer

from skinlesion.cli.options import fail, settings
from skinlesion.errors import SkinLesionError

store_app = typer.Typer(help="The store: moving it between backends.", no_args_is_help=True)


@store_app.command("migrate")
def store_migrate(
        to: Annotated[str, typer.Option("--to", help="The empty PostgreSQL store to copy into: "
                                        "postgresql://USER@HOST:PORT/DB (its schema is created).")],
        source: Annotated[str | None, typer.Option(
            "--from", help="The store to copy (default: SKINLESION_STORE_URL, i.e. the home's "
                           "DuckDB file).")] = None) -> None:
    """Copy every table into PostgreSQL in one transaction, then verify each (row count and
    sha256 of its rows); the source is left unchanged. Point SKINLESION_STORE_URL at the new
    store afterwards."""
    from skinlesion.store.transfer import migrate_store

    current = settings()
    try:
        checks = migrate_store(source or current.store_url, to, busy_timeout_s=current.busy_timeout_s,
                               progress=lambda line: typer.echo(line, err=True))
    except SkinLesionError as err:
        raise fail(err) from err
    for check in checks:
        typer.echo(f"{check.table:<18} {check.target_rows:>10} rows  sha256 {check.target_sha256[:16]}  ok")
    typer.echo(f"copied and verified {len(checks)} tables; now set SKINLESION_STORE_URL to the new store",
               err=True)
