"""Dashboard sessions: a signed token that survives a refresh, and ends when forged, too old, idle,
signed out, or its user was removed or re-roled."""

from __future__ import annotations

import stat

import pytest

from skinlesion.sessions import (COOKIE, IDLE_TIMEOUT, MAX_AGE, SessionSigner, cookie_script,
                                 load_secret)

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


def test_the_cookie_script_sets_or_clears_only_the_session_cookie(signer):
    _, token = signer.issue("lead", "ml_lead", T0)
    assert f"{COOKIE}={token};" in cookie_script(token) and "SameSite=Strict" in cookie_script(token)
    assert "max-age=0" in cookie_script(None)
    with pytest.raises(ValueError):
        cookie_script("x'; alert(1); '")
