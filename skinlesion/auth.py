"""Who may do what in the dashboard: users with salted password hashes, roles and a permission table.

Three roles (DESIGN.md "Users"): ``viewer`` (clinical operations: is the model healthy?),
``clinician`` (dermatologists: spot predictions, label the review queue) and ``ml_lead`` (model
actions: fallback, rollback, promotion, retraining). :data:`PERMISSIONS` says which role may take
which action; :func:`can` answers it and the dashboard's pages ask it before showing a control.

Users live in a TOML file (``Settings().users_file``, default ``users.toml`` at the home,
overridable by ``SKINLESION_USERS_FILE``)::

    [users."alice"]
    role = "clinician"
    password_hash = "scrypt$16384$8$1$<salt>$<hash>"

written by ``skinlesion users add --name alice --role clinician`` (the password is prompted).
Passwords are hashed with scrypt from the standard library (``hashlib.scrypt``): a memory-hard,
salted key-derivation function, so no extra dependency (bcrypt/argon2 packages) is needed. Hashes
are compared in constant time.

Sign-in does equal work for every name: an unknown name is checked against a fixed hash of the same
cost (one scrypt either way), so response time does not tell which names exist.
:class:`SignInThrottle` slows guessing down: after each failed sign-in for a user name, and from a
client address, the next attempt must wait (after two free failures: doubling from 1 s up to a
minute), and 5 failures for a name (20 from an address) within 15 minutes lock it out for 15
minutes. Unknown names are throttled exactly like known ones.

Pure: no streamlit, no SQL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, field_validator

from skinlesion.errors import DataError, PermissionDeniedError

Role = Literal["viewer", "clinician", "ml_lead"]
ROLES: tuple[str, ...] = get_args(Role)

#: Which roles may take each action. ``view``: the monitoring pages; ``predict``: ask the model
#: about an image; ``label``: record ground truth in the review queue; ``manage_models``: change
#: the serving route (fallback, restrict, activate, rollback), promote, launch retraining;
#: ``manage_alerts``: acknowledge / resolve alerts.
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),
    "predict": frozenset({"clinician", "ml_lead"}),
    "label": frozenset({"clinician", "ml_lead"}),
    "manage_models": frozenset({"ml_lead"}),
    "manage_alerts": frozenset({"ml_lead"}),
}
ACTIONS: tuple[str, ...] = tuple(PERMISSIONS)

#: scrypt cost: n=2**14, r=8, p=1 takes 16 MiB and tens of milliseconds per check (the
#: interactive-login parameters recommended for scrypt); stored with each hash so they can grow.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCHEME = "scrypt"
_SALT_BYTES = 16
_KEY_BYTES = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
#: What an unknown name's password is checked against: a hash at the current cost whose password is
#: nobody's (``hash_password("not-a-password-of-anyone", salt=b"skinlesion-dummy")``).
_UNKNOWN_USER_HASH = ("scrypt$16384$8$1$c2tpbmxlc2lvbi1kdW1teQ$"
                      "q5iVvGFPxS8PsQPXl5h4IRGcGtHkO8t3V0PsSQv2nKc")


class User(BaseModel):
    """A signed-in person: a name and a role."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role


class Account(BaseModel):
    """A line of the users file: a user and the hash of their password."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    password_hash: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value)

    @property
    def user(self) -> User:
        return User(name=self.name, role=self.role)


def validate_name(name: str) -> str:
    """``name`` if it is a valid user name (letters, digits, ``_ . @ -``; up to 64 characters)."""
    if not _NAME.match(name):
        raise DataError(f"a user name is 1-64 letters, digits or _ . @ - (starting with a letter or "
                        f"digit), got {name!r}", field="name")
    return name


def can(role: str, action: str) -> bool:
    """Whether ``role`` may take ``action`` (see :data:`PERMISSIONS`); KeyError for an unknown action
    (a typo in a page must not silently deny or allow)."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    return role in PERMISSIONS[action]


def require(role: str, action: str) -> None:
    """PermissionDeniedError unless ``role`` may take ``action`` (:func:`can`), naming the roles
    that may."""
    if not can(role, action):
        allowed = " or ".join(r for r in ROLES if can(r, action))
        raise PermissionDeniedError(f"the role {role!r} may not {action.replace('_', ' ')}; this "
                                    f"needs {allowed}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The salted scrypt hash of ``password``: ``scrypt$n$r$p$salt$key`` (base64url parts).

    A fresh random salt is drawn unless one is given, so equal passwords get different hashes."""
    if not password:
        raise DataError("the password must not be empty", field="password")
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         dklen=_KEY_BYTES)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (from :func:`hash_password`); False for a
    malformed hash, never an exception, so a corrupt entry only refuses its user."""
    parts = password_hash.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
        key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                             maxmem=256 * 2**20)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(key, expected)


def load_users(path: Path | str) -> dict[str, Account]:
    """The accounts in the users file ``path`` by name; an empty dict when it does not exist.
    DataError naming the file and the entry for bad TOML, an unknown role or a missing hash."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise DataError(f"not valid TOML: {err}", source=str(path)) from None
    accounts: dict[str, Account] = {}
    for name, entry in data.get("users", {}).items():
        if not isinstance(entry, dict):
            raise DataError("each user is a table with role and password_hash", source=str(path),
                            field=f"users.{name}")
        if entry.get("role") not in ROLES:
            raise DataError(f"role must be one of {', '.join(ROLES)}, got {entry.get('role')!r}",
                            source=str(path), field=f"users.{name}.role")
        if not isinstance(entry.get("password_hash"), str):
            raise DataError("missing password_hash; set the password with `skinlesion users add`",
                            source=str(path), field=f"users.{name}.password_hash")
        accounts[name] = Account(name=name, role=entry["role"], password_hash=entry["password_hash"])
    return accounts


def authenticate(accounts: dict[str, Account], name: str, password: str) -> User | None:
    """The user ``name`` when ``password`` is theirs, else None (unknown name or wrong password:
    the caller cannot tell which, so names cannot be probed)."""
    account = accounts.get(name.strip())
    # one scrypt check either way, so timing does not reveal which names exist
    matches = verify_password(password, account.password_hash if account else _UNKNOWN_USER_HASH)
    return account.user if account is not None and matches else None


@dataclass(frozen=True)
class SignInPolicy:
    """How failed sign-ins slow the next attempt down (see the module docstring)."""

    #: failures before the first delay (a typo costs nothing)
    free_failures: int = 2
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    #: failures within ``window_s`` that lock a user name out, and a client address (higher: a
    #: clinic's staff may share one address)
    max_failures_per_user: int = 5
    max_failures_per_client: int = 20
    window_s: float = 15 * 60.0
    lockout_s: float = 15 * 60.0


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class SignInThrottle:
    """Failed sign-ins per user name and per client address, in this process's memory (one per
    dashboard server; :meth:`wait_s` before checking a password, :meth:`failed` /
    :meth:`succeeded` after). Thread-safe enough for Streamlit: each call works on its own keys'
    lists and tolerates a lost update (at worst one attempt less throttled)."""

    def __init__(self, policy: SignInPolicy | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        self.policy = policy or SignInPolicy()
        self._clock = clock
        self._failures: dict[tuple[str, str], _Failures] = {}

    @staticmethod
    def _keys(name: str, client: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("user", name.strip().lower()), ("client", client)

    def _wait(self, key: tuple[str, str], now: float) -> float:
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        recent = [t for t in entry.times if now - t < self.policy.window_s]
        extra = len(recent) - self.policy.free_failures
        if extra <= 0:
            return max(0.0, entry.locked_until - now)
        delay = min(self.policy.max_delay_s, self.policy.base_delay_s * 2 ** (extra - 1))
        return max(0.0, entry.locked_until - now, recent[-1] + delay - now)

    def wait_s(self, name: str, client: str) -> float:
        """Seconds before ``name`` may try again from ``client`` (0: now)."""
        now = self._clock()
        return max(self._wait(key, now) for key in self._keys(name, client))

    def failed(self, name: str, client: str) -> bool:
        """Count a failed sign-in against the name and the client; lock out the one that reached
        its maximum within the window. True when this failure started a lockout."""
        now = self._clock()
        self._forget_old(now)
        limits = (self.policy.max_failures_per_user, self.policy.max_failures_per_client)
        locked = False
        for key, limit in zip(self._keys(name, client), limits, strict=True):
            entry = self._failures.setdefault(key, _Failures())
            entry.times = [t for t in entry.times if now - t < self.policy.window_s] + [now]
            if len(entry.times) >= limit and entry.locked_until <= now:
                entry.locked_until = now + self.policy.lockout_s
                locked = True
        return locked

    def succeeded(self, name: str, client: str) -> None:
        """Clear the name's and the client's failures."""
        for key in self._keys(name, client):
            self._failures.pop(key, None)

    def _forget_old(self, now: float) -> None:
        horizon = max(self.policy.window_s, self.policy.lockout_s)
        stale = [k for k, e in self._failures.items()
                 if (not e.times or now - e.times[-1] >= horizon) and e.locked_until <= now]
        for key in stale:
            self._failures.pop(key, None)


def _dump_users(accounts: dict[str, Account]) -> str:
    # JSON string literals (ASCII-escaped) are valid TOML basic strings.
    lines = ["# skinlesion dashboard users: edit with `skinlesion users add`; passwords are scrypt "
             "hashes", ""]
    for account in sorted(accounts.values(), key=lambda a: a.name):
        lines += [f"[users.{json.dumps(account.name)}]", f"role = {json.dumps(account.role)}",
                  f"password_hash = {json.dumps(account.password_hash)}", ""]
    return "\n".join(lines)


def add_user(path: Path | str, name: str, role: str, password: str) -> Account:
    """Add user ``name`` with ``role`` to the users file ``path`` (created if needed), or replace
    their role and password; returns the account. The file is written atomically and readable by
    its owner only."""
    if role not in ROLES:
        raise DataError(f"role must be one of {', '.join(ROLES)}, got {role!r}", field="role")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DataError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters",
                        field="password")
    account = Account(name=validate_name(name), role=role, password_hash=hash_password(password))
    path = Path(path)
    accounts = load_users(path) | {account.name: account}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(_dump_users(accounts), encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return account
