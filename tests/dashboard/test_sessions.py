"""Dashboard sessions (skinlesion.sessions) in the app: signing in stores a signed cookie, signing
out clears it and refuses its session id from then on, and an idle session ends with a message.
(A refresh keeping the session and deep links are checked in a real browser: tests/e2e.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from skinlesion.auth import add_user
from skinlesion.sessions import COOKIE, IDLE_TIMEOUT, Session, SessionSigner, load_secret
from skinlesion.store import Store
from tests.dashboard.conftest import DASHBOARD, PASSWORD
from tests.dashboard.test_app import _sign_in


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    add_user(tmp_path / "users.toml", "ops", "viewer", PASSWORD)
    Store(tmp_path / "data" / "skinlesion.duckdb")
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    return tmp_path


def _scripts(at: AppTest) -> list[str]:
    return [str(e.proto.body) for e in at.get("html")]


def test_signing_in_stores_a_signed_cookie_and_signing_out_ends_the_session(home: Path):
    at = _sign_in(AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=60).run(), "ops",
                  PASSWORD)
    assert not at.exception
    cookie = next(s for s in _scripts(at) if f"{COOKIE}=" in s and "max-age=0" not in s)
    token = cookie.split(f"{COOKIE}=", 1)[1].split(";", 1)[0]
    signer = SessionSigner(load_secret(home / "session.secret"))
    session = signer.read(token, time.time(), roles={"ops": "viewer"})
    assert session is not None and (session.name, session.role) == ("ops", "viewer")
    at = at.button(key="sign_out").click().run()
    assert any("max-age=0" in s for s in _scripts(at))
    assert "skinlesion_user" not in at.session_state
    assert any(i.value == "Signed out." for i in at.info)


def test_an_idle_session_ends_with_a_message(home: Path):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=60)
    stale = time.time() - IDLE_TIMEOUT.total_seconds() - 60
    at.session_state["skinlesion_session"] = Session("ops", "viewer", "sid", stale, stale)
    at = at.run()
    assert any("without activity" in i.value for i in at.info)
    assert at.text_input(key="sign_in_name") is not None  # the sign-in form again
