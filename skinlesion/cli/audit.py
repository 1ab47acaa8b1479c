"""``skinlesion audit verify``: check the audit log's hash chain (skinlesion.store.route)."""

from __future__ import annotations

import typer

from skinlesion.cli.options import fail, open_store
from skinlesion.errors import SkinLesionError

audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Verify the audit log's hash chain: exit 0 when intact, 1 naming the first row rewritten,
    inserted or deleted with direct database access."""
    try:
        check = open_store().verify_audit()
    except SkinLesionError as err:
        raise fail(err) from err
    if check.intact:
        typer.echo(f"audit log intact: {check.rows} rows, hash chain verified")
        return
    typer.secho(f"audit log broken at row {check.broken_seq} (id {check.broken_id}): "
                f"{check.problem}; the {check.checked} rows before it verified ({check.rows} rows "
                "in all)", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)
