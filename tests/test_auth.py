"""skinlesion.auth: scrypt password hashes, the users file, authentication and the permission table."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinlesion import auth
from skinlesion.auth import (ACTIONS, PERMISSIONS, ROLES, SignInPolicy, SignInThrottle, add_user,
                             authenticate, can, hash_password, load_users, verify_password)
from skinlesion.errors import DataError


def test_a_hash_verifies_its_password_only_and_is_salted():
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first != second  # a fresh salt each time
    assert verify_password("s3cret-pass", first) and verify_password("s3cret-pass", second)
    assert not verify_password("s3cret-pasS", first)
    assert "s3cret" not in first


@pytest.mark.parametrize("broken", ["", "plain", "scrypt$1$2$3", "md5$16384$8$1$abc$def",
                                    "scrypt$x$8$1$abc$def", "scrypt$16384$8$1$!!$??"])
def test_a_malformed_hash_refuses_instead_of_raising(broken: str):
    assert verify_password("anything", broken) is False


def test_add_user_writes_a_private_file_that_load_users_reads(tmp_path: Path):
    path = tmp_path / "conf" / "users.toml"
    add_user(path, "alice", "clinician", "correct horse")
    add_user(path, "bob.lead@clinic", "ml_lead", "battery staple")
    add_user(path, "alice", "viewer", "new password!")  # replaces alice's role and password
    accounts = load_users(path)
    assert {a.name: a.role for a in accounts.values()} == {"alice": "viewer", "bob.lead@clinic": "ml_lead"}
    assert path.stat().st_mode & 0o077 == 0
    assert authenticate(accounts, "alice", "new password!").role == "viewer"
    assert authenticate(accounts, "alice", "correct horse") is None
    assert authenticate(accounts, "carol", "correct horse") is None
    assert authenticate(accounts, " bob.lead@clinic ", "battery staple").name == "bob.lead@clinic"


@pytest.mark.parametrize(("name", "role", "password", "field"), [
    ("alice", "admin", "long enough", "role"),
    ("alice", "viewer", "short", "password"),
    ("al ice", "viewer", "long enough", "name"),
    ('x"]\n[users.y', "viewer", "long enough", "name"),
])
def test_add_user_rejects_bad_input_naming_the_field(tmp_path: Path, name, role, password, field):
    with pytest.raises(DataError) as err:
        add_user(tmp_path / "users.toml", name, role, password)
    assert err.value.field == field
    assert not (tmp_path / "users.toml").exists()


def test_load_users_names_the_bad_entry(tmp_path: Path):
    assert load_users(tmp_path / "absent.toml") == {}
    path = tmp_path / "users.toml"
    path.write_text('[users.eve]\nrole = "root"\npassword_hash = "x"\n')
    with pytest.raises(DataError, match="users.eve.role"):
        load_users(path)
    path.write_text("[users.eve\n")
    with pytest.raises(DataError, match="not valid TOML"):
        load_users(path)


def test_permissions_follow_the_roles():
    assert all(can(role, "view") for role in ROLES)
    assert can("clinician", "label") and can("clinician", "predict")
    assert not can("viewer", "predict") and not can("viewer", "label")
    assert not can("clinician", "manage_models") and can("ml_lead", "manage_models")
    assert not can("intruder", "view")
    assert set(ACTIONS) == set(PERMISSIONS)
    with pytest.raises(KeyError, match="unknown action"):
        can("ml_lead", "manage_model")


def test_cli_users_add_prompts_for_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from skinlesion.cli import app

    path = tmp_path / "users.toml"
    monkeypatch.setenv("SKINLESION_USERS_FILE", str(path))
    result = CliRunner().invoke(app, ["users", "add", "--name", "dana", "--role", "clinician"],
                                input="long password\nlong password\n")
    assert result.exit_code == 0, result.output
    assert "long password" not in result.output  # never echoed
    assert authenticate(load_users(path), "dana", "long password").role == "clinician"
    refused = CliRunner().invoke(app, ["users", "add", "--name", "eve", "--role", "root"],
                                 input="long password\nlong password\n")
    assert refused.exit_code == 2
    assert "eve" not in load_users(path)


def test_sign_in_does_equal_work_for_known_and_unknown_names(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """One scrypt check at the same cost whether the name exists or not (issue 16, item 8): the
    unknown name's 121 vs 77 ms came from hashing twice."""
    path = tmp_path / "users.toml"
    add_user(path, "alice", "clinician", "correct horse")
    accounts = load_users(path)
    calls: list[tuple[int, int, int]] = []
    real = auth.hashlib.scrypt

    def counting(password, *, salt, n, r, p, dklen, **kw):
        calls.append((n, r, p))
        return real(password, salt=salt, n=n, r=r, p=p, dklen=dklen, **kw)

    monkeypatch.setattr(auth.hashlib, "scrypt", counting)
    work = {}
    for name, password in (("alice", "wrong one"), ("alice", "correct horse"), ("mallory", "x" * 9)):
        calls.clear()
        authenticate(accounts, name, password)
        work[name, password] = list(calls)
    assert len(set(map(tuple, work.values()))) == 1  # the same calls, at the same cost
    assert next(iter(work.values())) == [(auth.SCRYPT_N, auth.SCRYPT_R, auth.SCRYPT_P)]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_sign_ins_back_off_then_lock_the_name_out():
    clock = Clock()
    throttle = SignInThrottle(SignInPolicy(), clock=clock)
    waits = []
    for i in range(5):
        assert throttle.wait_s("alice", f"10.0.0.{i}") == pytest.approx(waits[-1] if waits else 0)
        locked = throttle.failed("alice", f"10.0.0.{i}")  # a new address each time: the name counts
        waits.append(throttle.wait_s("alice", "10.0.0.99"))
        assert locked is (i == 4)
    assert waits[:4] == [0, 0, 1, 2]  # two free failures, then doubling
    assert waits[4] == pytest.approx(15 * 60)  # the fifth locks the name out for 15 minutes
    assert throttle.wait_s("bob", "10.0.0.99") == 0  # other names from other addresses are free
    clock.now += 15 * 60
    assert throttle.wait_s("alice", "10.0.0.99") == 0


def test_unknown_names_are_throttled_like_known_ones_and_success_clears():
    clock = Clock()
    throttle = SignInThrottle(clock=clock)
    for name in ("alice", "nobody"):
        for _ in range(3):
            throttle.failed(name, f"client-{name}")
    assert throttle.wait_s("alice", "x") == throttle.wait_s("nobody", "y") == 1
    throttle.succeeded("alice", "client-alice")
    assert throttle.wait_s("alice", "client-alice") == 0


def test_one_address_trying_many_names_is_slowed_and_locked_out():
    clock = Clock()
    throttle = SignInThrottle(clock=clock)
    for i in range(20):  # a new name each time, waiting out each backoff (at most 32 s here)
        clock.now += throttle.wait_s(f"name{i}", "203.0.113.9")
        throttle.failed(f"name{i}", "203.0.113.9")
    assert throttle.wait_s("name0", "203.0.113.9") > 0  # slowed although each name failed once
    assert throttle.wait_s("fresh-name", "203.0.113.9") == pytest.approx(15 * 60)
    assert throttle.wait_s("fresh-name", "198.51.100.1") == 0
