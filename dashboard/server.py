"""The cockpit's server: ``skinlesion dashboard`` runs ``streamlit run dashboard/server.py``, which
serves ``app.py`` (st.App) plus the session cookie's routes.

The session cookie is HttpOnly, so no page script can read it (skinlesion.sessions): a page asks
this server, at ``/_skinlesion/session/{set,renew,end}``, to set it from a sign-in's pass, renew it
or clear it. Each answer is 204 with the cookie header, or 403 when the pass or the cookie is not
good (and the cookie is then cleared). The cookie is also marked Secure when the page came over
HTTPS. ``streamlit run dashboard/app.py`` still serves the pages, but without these routes a
refresh signs the person out.
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skinlesion.sessions import (COOKIE, COOKIE_PATH, MAX_AGE, SessionSigner, load_secret,
                                 secret_path)
from skinlesion.settings import Settings

APP = Path(__file__).resolve().parent / "app.py"


def _signer() -> SessionSigner:
    return SessionSigner(load_secret(secret_path(Path(Settings().users_file))))


def _cleared(status: int) -> Response:
    """An answer with ``status`` that clears the session cookie."""
    response = Response(status_code=status)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _answer(request: Request, token: str | None) -> Response:
    """204 setting the cookie to ``token``; 403 clearing it when there is none."""
    if token is None:
        return _cleared(403)
    response = Response(status_code=204)
    response.set_cookie(COOKIE, token, max_age=int(MAX_AGE.total_seconds()), path="/",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


async def set_cookie(request: Request) -> Response:
    """Exchange a sign-in's pass (the request body) for the session cookie."""
    return _answer(request, _signer().redeem((await request.body()).decode(errors="replace"),
                                             time.time()))


async def renew_cookie(request: Request) -> Response:
    """The session cookie seen now (the page asks once a minute while the person is active)."""
    return _answer(request, _signer().renew_token(request.cookies.get(COOKIE), time.time()))


async def end_cookie(request: Request) -> Response:
    """Clear the session cookie (signing out; its session id is refused anyway, see components)."""
    return _cleared(204)


#: the session cookie's routes, served beside the app
ROUTES = (Route(f"{COOKIE_PATH}/set", set_cookie, methods=["POST"]),
          Route(f"{COOKIE_PATH}/renew", renew_cookie, methods=["POST"]),
          Route(f"{COOKIE_PATH}/end", end_cookie, methods=["POST"]))

app = st.App(APP, routes=ROUTES)
