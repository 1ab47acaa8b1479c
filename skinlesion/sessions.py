"""Dashboard sessions that survive a refresh: a signed, expiring token kept in a browser cookie.

The token (itsdangerous, HMAC-SHA1 over a per-installation secret) names the user, their role, a
random session id, when it was issued and when it was last renewed. :meth:`SessionSigner.read`
accepts it only when the signature holds, it is younger than :data:`MAX_AGE`, it was renewed
within :data:`IDLE_TIMEOUT` (idle sessions end), its session id has not been signed out, and the
user still exists in the users file with the same role (a removed or re-roled user cannot resume).

The cookie is HttpOnly, so page scripts never read it: the dashboard's server (dashboard/server.py)
sets, renews and clears it at :data:`COOKIE_PATH`. The page asks it to with :func:`cookie_script`:
after sign-in it posts a *pass* (:meth:`SessionSigner.cookie_pass`: the token signed again, valid
:data:`PASS_MAX_AGE`), which the server exchanges for the cookie (:meth:`SessionSigner.redeem`);
renewing and clearing need no token in the page at all.
Pure but for :func:`load_secret`, which creates the secret file (mode 0600) on first use.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Container, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "skinlesion_session"
#: a session ends this long after sign-in, whatever happens
MAX_AGE = timedelta(hours=12)
#: ... or this long after the last page view
IDLE_TIMEOUT = timedelta(minutes=30)
#: a page view renews the cookie when its last renewal is older than this
RENEW_AFTER = timedelta(minutes=1)
#: a sign-in's pass is exchanged for the cookie within this long
PASS_MAX_AGE = timedelta(seconds=60)
#: where the dashboard's server sets (``/set``), renews (``/renew``) and clears (``/end``) the cookie
COOKIE_PATH = "/_skinlesion/session"
#: what the page may ask of the server at :data:`COOKIE_PATH`
CookieAction = Literal["set", "renew", "end"]
#: the session secret's file name (see :func:`secret_path`)
SECRET_FILE = "session.secret"
_SALT = "skinlesion-dashboard-session"
_PASS_SALT = "skinlesion-dashboard-cookie-pass"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: ``name`` in ``role``, session id ``sid``, ``issued`` and last
    ``seen`` (POSIX seconds)."""

    name: str
    role: str
    sid: str
    issued: float
    seen: float


def secret_path(users_file: Path) -> Path:
    """Where an installation keeps its session secret: beside its users file (never committed)."""
    return Path(users_file).parent / SECRET_FILE


def load_secret(path: Path) -> bytes:
    """The installation's session secret at ``path``, created (32 random bytes, mode 0600) when
    missing. Changing or deleting it signs everyone out."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    return path.read_bytes()


class SessionSigner:
    """Issues, renews and checks session tokens signed with ``secret``."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("a session secret needs at least 16 bytes")
        self._secret = secret
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)

    def issue(self, name: str, role: str, now: float) -> tuple[Session, str]:
        """A new session for ``name`` in ``role`` and its token."""
        session = Session(name=name, role=role, sid=secrets.token_urlsafe(16), issued=now, seen=now)
        return session, self.token(session)

    def token(self, session: Session) -> str:
        return self._serializer.dumps([session.name, session.role, session.sid, session.issued,
                                       session.seen])

    def renew(self, session: Session, now: float) -> tuple[Session, str]:
        """``session`` seen at ``now``, and its new token."""
        renewed = replace(session, seen=now)
        return renewed, self.token(renewed)

    def read(self, token: str | None, now: float, *, roles: Mapping[str, str],
             revoked: Container[str] = ()) -> Session | None:
        """The session ``token`` holds, or None when it is missing, forged, older than
        :data:`MAX_AGE`, idle beyond :data:`IDLE_TIMEOUT`, signed out (its id in ``revoked``), or
        its user is no longer in ``roles`` (user name -> role) with the same role."""
        session = self._live(token, now)
        if session is None or session.sid in revoked or roles.get(session.name) != session.role:
            return None
        return session

    def _live(self, token: str | None, now: float) -> Session | None:
        """The session of a genuine ``token`` neither older than :data:`MAX_AGE` nor idle."""
        if not token:
            return None
        try:
            name, role, sid, issued, seen = self._serializer.loads(token)
        except (BadSignature, ValueError, TypeError):
            return None
        session = Session(str(name), str(role), str(sid), float(issued), float(seen))
        if now - session.issued > MAX_AGE.total_seconds() or \
                now - session.seen > IDLE_TIMEOUT.total_seconds():
            return None
        return session

    def renew_token(self, token: str | None, now: float) -> str | None:
        """``token`` seen at ``now`` (what the server sets when the page asks to renew), or None
        when it is not a live token. Whether it was signed out is checked when it is read."""
        session = self._live(token, now)
        return None if session is None else self.renew(session, now)[1]

    def cookie_pass(self, token: str) -> str:
        """A pass the page posts to the server to have ``token`` set as the HttpOnly cookie; it is
        good for :data:`PASS_MAX_AGE`."""
        return URLSafeTimedSerializer(self._secret, salt=_PASS_SALT).dumps(token)

    def redeem(self, cookie_pass: str, now: float) -> str | None:
        """The token a genuine, unexpired pass carries, or None; the token itself must be live."""
        serializer = URLSafeTimedSerializer(self._secret, salt=_PASS_SALT)
        try:
            token, signed_at = serializer.loads(cookie_pass, return_timestamp=True)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(token, str) or now - signed_at.timestamp() > PASS_MAX_AGE.total_seconds():
            return None
        return token if self._live(token, now) is not None else None

    @staticmethod
    def due(session: Session, now: float) -> bool:
        """Whether a page view at ``now`` should renew the cookie."""
        return now - session.seen > RENEW_AFTER.total_seconds()


def cookie_script(action: CookieAction, cookie_pass: str | None = None) -> str:
    """The page script that asks the dashboard's server to ``set`` the session cookie (posting
    ``cookie_pass``), ``renew`` it, or ``end`` it (clear it)."""
    if action not in ("set", "renew", "end"):
        raise ValueError(f"unknown cookie action {action!r}; one of set, renew, end")
    if (action == "set") != (cookie_pass is not None):
        raise ValueError("a pass goes with 'set', and only with it")
    if cookie_pass is not None and not all(c.isalnum() or c in "-_.:" for c in cookie_pass):
        raise ValueError("a cookie pass is URL-safe text")
    body = f", body: '{cookie_pass}'" if cookie_pass else ""
    return (f"<script>fetch('{COOKIE_PATH}/{action}', {{method: 'POST', credentials: 'same-origin'"
            f"{body}}});</script>")
