"""The dashboard server's session-cookie routes (dashboard/server.py): a sign-in's pass becomes an
HttpOnly, SameSite=Strict cookie holding the session's token; renewing moves its last-seen time;
a forged pass or a dead cookie is refused and clears the cookie; ending clears it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from skinlesion.sessions import COOKIE, COOKIE_PATH, IDLE_TIMEOUT, SessionSigner, load_secret

import server  # noqa: E402  (dashboard/ is on the path: tests.dashboard.conftest)

ROLES = {"ops": "viewer"}


@pytest.fixture
def signer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SessionSigner:
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path))
    return SessionSigner(load_secret(tmp_path / "session.secret"))


@pytest.fixture
def client() -> TestClient:
    return TestClient(Starlette(routes=list(server.ROUTES)), base_url="https://cockpit.test")


def _set_cookie_header(response) -> str:
    return response.headers.get("set-cookie", "")


def test_a_pass_becomes_an_http_only_session_cookie(signer, client):
    session, token = signer.issue("ops", "viewer", time.time())
    answer = client.post(f"{COOKIE_PATH}/set", content=signer.cookie_pass(token))
    assert answer.status_code == 204
    header = _set_cookie_header(answer)
    assert f"{COOKIE}={token}" in header
    assert all(flag in header for flag in ("HttpOnly", "SameSite=strict", "Secure", "Path=/"))
    assert signer.read(client.cookies.get(COOKIE), time.time(), roles=ROLES) == session


def test_forged_passes_and_dead_cookies_are_refused_and_cleared(signer, client):
    _, token = signer.issue("ops", "viewer", time.time())
    for body in (token, "junk", ""):
        answer = client.post(f"{COOKIE_PATH}/set", content=body)
        assert answer.status_code == 403 and f'{COOKIE}="";' in _set_cookie_header(answer)
    stale = time.time() - IDLE_TIMEOUT.total_seconds() - 5
    _, idle = signer.issue("ops", "viewer", stale)
    client.cookies.set(COOKIE, idle, domain="cockpit.test")
    assert client.post(f"{COOKIE_PATH}/renew").status_code == 403


def test_renewing_and_ending(signer, client):
    issued = time.time() - 60
    _, token = signer.issue("ops", "viewer", issued)
    client.cookies.set(COOKIE, token, domain="cockpit.test")
    answer = client.post(f"{COOKIE_PATH}/renew")
    assert answer.status_code == 204 and "HttpOnly" in _set_cookie_header(answer)
    renewed = signer.read(client.cookies.get(COOKIE), time.time(), roles=ROLES)
    assert renewed.issued == issued and renewed.seen > issued + 30
    answer = client.post(f"{COOKIE_PATH}/end")
    assert answer.status_code == 204 and f'{COOKIE}="";' in _set_cookie_header(answer)
