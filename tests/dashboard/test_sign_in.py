"""Dashboard sign-in under attack (issue 16, item 8): failed attempts are audited without the text
typed for unknown names, repeated failures are throttled before any password is checked, and a
refused action is audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from skinlesion.auth import User, add_user
from skinlesion.store import Store
from tests.dashboard.conftest import DASHBOARD, PASSWORD
from tests.dashboard.test_app import _gated_page, _sign_in


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own (users and an empty store): the throttle and the audit start empty."""
    for name, role in (("ops", "viewer"), ("derm", "clinician")):
        add_user(tmp_path / "users.toml", name, role, PASSWORD)
    Store(tmp_path / "data" / "skinlesion.duckdb")
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    return tmp_path


def _audit(home: Path, action: str):
    return Store(home / "data" / "skinlesion.duckdb").query_audit(action=action)


def test_failed_sign_ins_are_audited_then_throttled(home: Path):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=60).run()
    at = _sign_in(at, "ops", "not the password")
    at = _sign_in(at, "patient John Smith", "guess")  # an unknown name: its text is not kept
    at = _sign_in(at, "derm", "guess again")
    assert "Wrong user name or password." in [e.value for e in at.error]
    failed = _audit(home, "sign_in_failed")
    assert sorted(failed["actor"]) == ["(unknown user)", "derm", "ops"]
    assert not failed.astype(str).apply(lambda c: c.str.contains("John")).any().any()
    at = _sign_in(at, "ops", PASSWORD)  # the right password, but this client must wait first
    assert any(e.value.startswith("Too many failed sign-ins") for e in at.error)
    assert "skinlesion_user" not in at.session_state
    assert len(_audit(home, "sign_in_failed")) == 3  # refused before any password check


def test_a_refused_action_is_audited(home: Path):
    at = AppTest.from_function(_gated_page, default_timeout=30)
    at.session_state["skinlesion_user"] = User(name="ops", role="viewer")
    at.run()
    assert not at.success
    refused = _audit(home, "action_refused")
    assert list(zip(refused["actor"], refused["role"], refused["target"], strict=True)) == [
        ("ops", "viewer", "manage_models")]
