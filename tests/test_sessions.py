"""Dashboard sessions: a signed token that survives a refresh, and ends when forged, too old, idle,
signed out, or its user was removed or re-roled."""

from __future__ import annotations

import stat
import time

import pytest

from skinlesion.sessions import (COOKIE_PATH, IDLE_TIMEOUT, MAX_AGE, PASS_MAX_AGE, SessionSigner,
                                 cookie_script, load_secret)

ROLES = {"lead": "ml_lead", "ops": "viewer"}
T0 = 1_800_000_000.0


@pytest.fixture
def signer(tmp_path) -> SessionSigner:
    return SessionSigner(load_secret(tmp_path / "secret"))


def test_a_token_reads_back_as_its_session(signer):
    session, token = signer.issue("lead", "ml_lead", T0)
    assert signer.read(token, T0 + 5, roles=ROLES) == session


def test_forged_or_foreign_tokens_are_refused(signer, tmp_path):
    _, token = signer.issue("lead", "ml_lead", T0)
    assert signer.read(token[:-2] + "xx", T0, roles=ROLES) is None
    other = SessionSigner(load_secret(tmp_path / "other"))
    assert other.read(token, T0, roles=ROLES) is None
    assert signer.read(None, T0, roles=ROLES) is None and signer.read("junk", T0, roles=ROLES) is None


def test_idle_sessions_end_and_renewal_keeps_them_alive_up_to_the_max_age(signer):
    session, token = signer.issue("lead", "ml_lead", T0)
    idle = IDLE_TIMEOUT.total_seconds()
    assert signer.read(token, T0 + idle + 1, roles=ROLES) is None
    t = T0
    while t + idle / 2 < T0 + MAX_AGE.total_seconds():
        t += idle / 2
        session, token = signer.renew(session, t)
        assert signer.read(token, t, roles=ROLES) is not None
    assert signer.read(token, T0 + MAX_AGE.total_seconds() + 1, roles=ROLES) is None


def test_signed_out_removed_or_reroled_users_cannot_resume(signer):
    session, token = signer.issue("ops", "viewer", T0)
    assert signer.read(token, T0, roles=ROLES, revoked={session.sid}) is None
    assert signer.read(token, T0, roles={"lead": "ml_lead"}) is None
    assert signer.read(token, T0, roles={"ops": "ml_lead"}) is None


def test_the_secret_is_private_and_stable(tmp_path):
    path = tmp_path / "secret"
    first = load_secret(path)
    assert load_secret(path) == first and len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_pass_carries_its_token_briefly_and_only_for_this_installation(signer, tmp_path):
    now = time.time()
    _, token = signer.issue("lead", "ml_lead", now - MAX_AGE.total_seconds() - 1)
    assert signer.redeem(signer.cookie_pass(token), now) is None  # its token is no longer live
    _, token = signer.issue("lead", "ml_lead", now)
    cookie_pass = signer.cookie_pass(token)
    assert token not in cookie_pass and signer.redeem(cookie_pass, now + 1) == token
    assert signer.redeem(cookie_pass, now + PASS_MAX_AGE.total_seconds() + 1) is None
    assert signer.redeem(token, now) is None  # a token is not a pass
    assert SessionSigner(load_secret(tmp_path / "other")).redeem(cookie_pass, now) is None


def test_renewing_a_token_moves_its_last_seen_time_but_not_its_age(signer):
    session, token = signer.issue("lead", "ml_lead", T0)
    idle = IDLE_TIMEOUT.total_seconds()
    renewed = signer.renew_token(token, T0 + idle - 1)
    assert signer.read(renewed, T0 + 2 * idle - 2, roles=ROLES).issued == T0
    assert signer.renew_token(token, T0 + idle + 1) is None  # too late: idle already
    assert signer.renew_token("junk", T0) is None


def test_the_cookie_script_only_asks_the_server(signer):
    script = cookie_script("set", "a.b-c_d")
    assert f"fetch('{COOKIE_PATH}/set'" in script and "body: 'a.b-c_d'" in script
    assert "document.cookie" not in script
    assert f"{COOKIE_PATH}/end" in cookie_script("end") and "body" not in cookie_script("renew")
    for bad in (("set", "x'; alert(1); '"), ("set", None), ("end", "a"), ("drop", None)):
        with pytest.raises(ValueError):
            cookie_script(*bad)
