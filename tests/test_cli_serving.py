"""CLI commands that change the serving route or keys: each change lands in the audit log."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from skinlesion.cli import app
from skinlesion.store import Store
from tests.standins import standin_home

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    return standin_home(tmp_path, monkeypatch, ("main-v1", "rules-v1"))


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_activate_and_fallback_are_audited(home):
    assert run("models", "activate", "main-v1", "--reason", "first deployment")[0] == 0
    code, out = run("models", "fallback", "on", "--reason", "AUROC red", "--version", "rules-v1")
    assert code == 0, out
    store = Store(home.db_path)
    route = store.get_route()
    assert route.active_version == "main-v1" and route.fallback_engaged
    audit = store.query_audit()
    assert {"first deployment", "AUROC red"} <= set(audit["reason"])
    assert run("models", "fallback", "off", "--reason", "recovered")[0] == 0
    assert not Store(home.db_path).get_route().fallback_engaged


def test_fallback_without_a_version_is_refused_clearly(home):
    code, out = run("models", "fallback", "on", "--reason", "red")
    assert code == 2 and "fallback" in out


def test_unknown_version_is_refused_listing_known_ones(home):
    code, out = run("models", "activate", "nope", "--reason", "x")
    assert code == 2 and "main-v1" in out


def test_apikey_create_prints_a_key_that_verifies(home):
    code, out = run("apikey", "create", "--name", "clinic-web")
    key = out.strip().splitlines()[-1]
    assert code == 0 and Store(home.db_path).verify_api_key(key) == "clinic-web"
