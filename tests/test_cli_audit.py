"""``skinlesion audit verify`` and ``apikey create --scope`` (issue 16, items 2 and 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.store import Store


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    return tmp_path


def test_audit_verify_passes_then_names_the_first_rewritten_row(home: Path):
    runner = CliRunner()
    for name in ("clinic-a", "clinic-b", "clinic-c"):
        assert runner.invoke(app, ["apikey", "create", "--name", name]).exit_code == 0
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "intact: 3 rows" in ok.output
    store = Store(home / "data" / "skinlesion.duckdb")
    victim = store.query_audit(target="clinic-b").iloc[0]
    with store.backend.write() as con:  # someone with database access rewrites who acted
        con.run("UPDATE audit_log SET actor = 'nobody' WHERE id = ?", [victim["id"]])
    store.release()
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert victim["id"] in broken.output and "content changed" in broken.output
    assert "the 1 rows before it verified (3 rows in all)" in broken.output


def test_apikey_create_with_scopes(home: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["apikey", "create", "--name", "pathology-lab", "--scope", "labeller"])
    assert result.exit_code == 0
    key = result.output.strip().splitlines()[-1]
    assert Store(home / "data" / "skinlesion.duckdb").api_key_scopes(key) == ("pathology-lab",
                                                                              ("labeller",))
    refused = runner.invoke(app, ["apikey", "create", "--name", "x", "--scope", "root"])
    assert refused.exit_code == 2 and "unknown API key scope root" in refused.output
