"""Route operations shared by the dashboard and the CLI: role checks, audit rows, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinlesion import registry
from skinlesion.errors import ModelNotFoundError, PermissionDeniedError
from skinlesion.lifecycle import operations
from skinlesion.store import ServingRoute, Store
from tests.standins import BrightnessClassifier, save_standin


class RulesStandin(BrightnessClassifier):
    """Stands in for the rule-based fallback in the models folder (only its card is read here)."""

    kind = "fallback"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    for vid in ("v1", "v2", "v3"):
        save_standin(folder, vid)
    card = save_standin(tmp_path / "scratch", "unused")  # reuse its data section for the fallback
    registry.save_version(folder, RulesStandin(), threshold=0.4, data=card.data,
                          manifest=registry.read_manifest(tmp_path / "scratch", "unused"),
                          version_id="rules-1")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "db.duckdb")
    s.set_route(ServingRoute(active_version="v1"), actor="setup", role="ml_lead", reason="initial")
    return s


LEAD = dict(actor="ana", role="ml_lead")


def test_engage_and_release_fallback_are_audited(store, models_dir):
    entry = operations.engage_fallback(store, models_dir, reason="recall red", **LEAD)
    route = store.get_route()
    assert route.fallback_engaged and route.fallback_version == "rules-1"
    assert route.active_version == "v1"
    audit = store.query_audit(action="set_route", actor="ana")
    assert audit["id"].iloc[0] == entry.id and audit["reason"].iloc[0] == "recall red"
    assert audit["details"].iloc[0]["operation"] == "engage_fallback"

    operations.release_fallback(store, reason="recall back to green", **LEAD)
    route = store.get_route()
    assert not route.fallback_engaged and route.fallback_version == "rules-1"
    assert store.query_audit(actor="ana")["details"].iloc[0]["operation"] == "release_fallback"


@pytest.mark.parametrize("role", ["viewer", "clinician"])
def test_other_roles_are_refused_and_nothing_changes(store, models_dir, role):
    before, n_audit = store.get_route(), len(store.query_audit())
    who = dict(actor="vic", role=role)
    with pytest.raises(PermissionDeniedError, match="ml_lead"):
        operations.engage_fallback(store, models_dir, reason="x", **who)
    with pytest.raises(PermissionDeniedError):
        operations.activate(store, models_dir, "v2", reason="x", **who)
    with pytest.raises(PermissionDeniedError):
        operations.rollback(store, models_dir, reason="x", **who)
    with pytest.raises(PermissionDeniedError):
        operations.restrict(store, True, reason="x", **who)
    assert store.get_route() == before
    assert len(store.query_audit()) == n_audit


def test_a_reason_is_required(store, models_dir):
    with pytest.raises(operations.OperationError, match="reason"):
        operations.activate(store, models_dir, "v2", reason="  ", **LEAD)
    assert store.get_route().active_version == "v1"


def test_rollback_restores_the_previous_active_version_in_one_action(store, models_dir):
    operations.activate(store, models_dir, "v2", reason="promote v2", **LEAD)
    operations.engage_fallback(store, models_dir, reason="incident", **LEAD)  # not an active change
    operations.activate(store, models_dir, "v3", reason="promote v3", **LEAD)
    assert operations.previous_active_version(store) == "v2"
    operations.rollback(store, models_dir, reason="v3 misbehaves", **LEAD)
    route = store.get_route()
    assert route.active_version == "v2"
    assert route.fallback_engaged  # the rest of the route is kept
    assert store.query_audit(actor="ana")["details"].iloc[0]["operation"] == "rollback"


def test_rollback_from_the_first_route_goes_to_the_default_version(tmp_path, models_dir):
    store = Store(tmp_path / "fresh.duckdb")
    operations.activate(store, models_dir, "v2", reason="first route", **LEAD)
    with pytest.raises(ModelNotFoundError, match="reference"):  # the default is not in the folder
        operations.rollback(store, models_dir, reason="x", **LEAD)
    assert store.get_route().active_version == "v2"
    save_standin(models_dir, "reference")
    operations.rollback(store, models_dir, reason="back", **LEAD)
    assert store.get_route().active_version == "reference"


def test_nothing_to_roll_back_to(tmp_path, models_dir):
    store = Store(tmp_path / "fresh.duckdb")  # default route: the reference version, no history
    with pytest.raises(operations.OperationError, match="no earlier"):
        operations.rollback(store, models_dir, reason="x", **LEAD)


def test_activating_the_challenger_promotes_it(store, models_dir):
    store.set_route(ServingRoute(active_version="v1", challenger_version="v2", challenger_share=0.1,
                                 shadow_version="v3"), actor="setup", role="ml_lead", reason="canary")
    operations.activate(store, models_dir, "v2", reason="canary held", **LEAD)
    route = store.get_route()
    assert route.active_version == "v2"
    assert route.challenger_version is None and route.challenger_share == 0
    assert route.shadow_version == "v3"


def test_unknown_or_already_active_versions_are_refused(store, models_dir):
    with pytest.raises(ModelNotFoundError, match="v9"):
        operations.activate(store, models_dir, "v9", reason="x", **LEAD)
    with pytest.raises(operations.OperationError, match="already"):
        operations.activate(store, models_dir, "v1", reason="x", **LEAD)
    with pytest.raises(operations.OperationError, match="not engaged"):
        operations.release_fallback(store, reason="x", **LEAD)


def test_no_fallback_version_available(store, tmp_path):
    empty = tmp_path / "empty-models"
    save_standin(empty, "v1")
    with pytest.raises(operations.OperationError, match="no fallback version"):
        operations.engage_fallback(store, empty, reason="x", **LEAD)
    assert not store.get_route().fallback_engaged


def test_restrict_and_lift(store):
    operations.restrict(store, True, reason="red recall", **LEAD)
    assert store.get_route().restricted_to_clear_cases
    with pytest.raises(operations.OperationError, match="already"):
        operations.restrict(store, True, reason="again", **LEAD)
    operations.restrict(store, False, reason="green again", **LEAD)
    assert not store.get_route().restricted_to_clear_cases


def test_the_cli_shares_the_operations(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from skinlesion.cli import app
    from skinlesion.settings import Settings

    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path / "home"))
    settings = Settings()
    for vid in ("v1", "v2"):
        save_standin(settings.models_dir, vid)
    runner = CliRunner()
    for args in (["activate", "v1"], ["activate", "v2"], ["rollback"]):
        result = runner.invoke(app, ["models", *args, "--reason", "cli test"])
        assert result.exit_code == 0, result.output
    store = Store(settings.db_path)
    assert store.get_route().active_version == "v1"
    assert [d["operation"] for d in store.query_audit()["details"]] == ["rollback", "activate",
                                                                       "activate"]
    refused = runner.invoke(app, ["models", "rollback", "--reason", "  "])
    assert refused.exit_code == 2 and "reason" in refused.output


def test_archiving_is_role_checked_audited_and_blocks_activation(store, models_dir):
    with pytest.raises(PermissionDeniedError):
        operations.archive(store, models_dir, "v2", reason="x", actor="vic", role="clinician")
    with pytest.raises(operations.OperationError, match="active"):
        operations.archive(store, models_dir, "v1", reason="serving", **LEAD)
    entry = operations.archive(store, models_dir, "v2", reason="candidate not promoted", **LEAD)
    assert store.archived_versions() == ["v2"]
    audit = store.query_audit(limit=1).iloc[0]
    assert (audit["id"], audit["action"], audit["target"]) == (entry.id, "archive", "v2")
    table = operations.versions_table(registry.list_versions(models_dir), store.get_route(),
                                      store.archived_versions())
    assert dict(zip(table["id"], table["role"], strict=True))["v2"] == "archived"
    with pytest.raises(operations.OperationError, match="archived"):
        operations.activate(store, models_dir, "v2", reason="x", **LEAD)
    operations.unarchive(store, models_dir, "v2", reason="needed after all", **LEAD)
    assert store.archived_versions() == []
    operations.activate(store, models_dir, "v2", reason="promote", **LEAD)
    assert store.get_route().active_version == "v2"
