"""Dashboard sessions that survive a refresh: a signed, expiring token kept in a browser cookie.

The token (itsdangerous, HMAC-SHA1 over a per-installation secret) names the user, their role, a
random session id, when it was issued and when it was last renewed. :meth:`SessionSigner.read`
accepts it only when the signature holds, it is younger than :data:`MAX_AGE`, it was renewed
within :data:`IDLE_TIMEOUT` (idle sessions end), its session id has not been signed out, and the
user still exists in the users file with the same role (a removed or re-roled user cannot resume).
Pure but for :func:`load_secret`, which creates the secret file (mode 0600) on first use.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "skinlesion_session"
#: a session ends this long after sign-in, whatever happens
MAX_AGE = timedelta(hours=12)
#: ... or this long after the last page view
IDLE_TIMEOUT = timedelta(minutes=30)
#: a page view renews the cookie when its last renewal is older than this
RENEW_AFTER = timedelta(minutes=1)
_SALT = "skinlesion-dashboard-session"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: ``name`` in ``role``, session id ``sid``, ``issued`` and last
    ``seen`` (POSIX seconds)."""

    name: str
    role: str
    sid: str
    issued: float
    seen: float


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
             revoked: Collection[str] = ()) -> Session | None:
        """The session ``token`` holds, or None when it is missing, forged, older than
        :data:`MAX_AGE`, idle beyond :data:`IDLE_TIMEOUT`, signed out (its id in ``revoked``), or
        its user is no longer in ``roles`` (user name -> role) with the same role."""
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
        if session.sid in revoked or roles.get(session.name) != session.role:
            return None
        return session

    @staticmethod
    def due(session: Session, now: float) -> bool:
        """Whether a page view at ``now`` should renew the cookie."""
        return now - session.seen > RENEW_AFTER.total_seconds()


def cookie_script(token: str | None) -> str:
    """The script that stores ``token`` in the session cookie (SameSite=Strict, for
    :data:`MAX_AGE`), or deletes the cookie when ``token`` is None."""
    if token is None:
        return f"<script>document.cookie = '{COOKIE}=; path=/; max-age=0; SameSite=Strict';</script>"
    if not all(c.isalnum() or c in "-_.:" for c in token):
        raise ValueError("a session token is URL-safe text")
    return (f"<script>document.cookie = '{COOKIE}={token}; path=/; "
            f"max-age={int(MAX_AGE.total_seconds())}; SameSite=Strict';</script>")
