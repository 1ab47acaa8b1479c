"""Dashboard sessions (skinlesion.sessions) in the app: signing in has the server set a signed,
HttpOnly cookie (dashboard/server.py's routes), signing out clears it and refuses its session id
from then on, also after a restart (the sign-out is in the store's audit log), and an idle session
ends with a message. (A refresh keeping the session and deep links are checked in a real browser:
tests/e2e.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from skinlesion.auth import add_user
from skinlesion.sessions import (COOKIE_PATH, IDLE_TIMEOUT, Session, SessionSigner,
                                 load_secret)
from skinlesion.store import Store
from tests.dashboard.conftest import DASHBOARD, PASSWORD
from tests.dashboard.test_app import _sign_in

import components  # noqa: E402  (dashboard/ is on the path: tests.dashboard.conftest)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    add_user(tmp_path / "users.toml", "ops", "viewer", PASSWORD)
    Store(tmp_path / "data" / "skinlesion.duckdb")
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    return tmp_path


def _scripts(at: AppTest) -> list[str]:
    return [str(e.proto.body) for e in at.get("html")]


def test_signing_in_sets_a_signed_cookie_and_signing_out_ends_the_session_for_good(home: Path):
    at = _sign_in(AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=60).run(), "ops",
                  PASSWORD)
    assert not at.exception
    script = next(s for s in _scripts(at) if f"{COOKIE_PATH}/set" in s)
    cookie_pass = script.split("body: '", 1)[1].split("'", 1)[0]
    signer = SessionSigner(load_secret(home / "session.secret"))
    token = signer.redeem(cookie_pass, time.time())
    session = signer.read(token, time.time(), roles={"ops": "viewer"})
    assert session is not None and (session.name, session.role) == ("ops", "viewer")
    assert session.sid not in components.SignedOut(Store(home / "data" / "skinlesion.duckdb"))
    at = at.button(key="sign_out").click().run()
    assert any(f"{COOKIE_PATH}/end" in s for s in _scripts(at))
    assert "skinlesion_user" not in at.session_state
    assert any(i.value == "Signed out." for i in at.info)
    # a restarted dashboard (a new store object on the same file) still refuses the session
    restarted = Store(home / "data" / "skinlesion.duckdb")
    assert session.sid in components.SignedOut(restarted)
    assert signer.read(token, time.time(), roles={"ops": "viewer"},
                       revoked=components.SignedOut(restarted)) is None
    audit = restarted.query_audit(action="sign_out")
    assert list(audit["actor"]) == ["ops"]


def test_an_idle_session_ends_with_a_message(home: Path):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=60)
    stale = time.time() - IDLE_TIMEOUT.total_seconds() - 60
    at.session_state["skinlesion_session"] = Session("ops", "viewer", "sid", stale, stale)
    at = at.run()
    assert any("without activity" in i.value for i in at.info)
    assert at.text_input(key="sign_in_name") is not None  # the sign-in form again
