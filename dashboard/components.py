"""Shared widgets of the dashboard: access to settings, store, policy and models (cached), the
sign-in gate and roles, the sidebar's window and model filters, status badges, metric tiles and the
active-model banner.

Pages are thin: they call :func:`page_setup`, read the store through the typed, cached queries of
``queries.py``, compute through ``skinlesion`` library functions (via the cached helpers here) and
render. Caching: the store, the policy and loaded models are resources (``st.cache_resource``, one
per process, keyed on their paths); query results are data (``st.cache_data``) kept
:data:`QUERY_TTL_S` seconds, so a page refresh within that time does not hit the database again.
Every cache key includes the database path, so two homes never share entries.
"""

from __future__ import annotations

import math
import time as clock
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import io

import pandas as pd
import streamlit as st
from matplotlib.figure import Figure

from skinlesion.auth import ROLES, Account, SignInThrottle, User, authenticate, can, load_users
from skinlesion.monitoring import cockpit
from skinlesion import display
from skinlesion.display import MISSING, MISSING_HELP
from skinlesion.monitoring.cockpit import ActiveModel, Tile, WindowHealth, active_model
from skinlesion.monitoring.estimate import BAND_LEVEL
from skinlesion.monitoring.health import MetricValue
from skinlesion.monitoring.policy import Policy, load_policy
from skinlesion.registry import ModelVersion, load_version, resolve_version
from skinlesion.sessions import (COOKIE, IDLE_TIMEOUT, Session, SessionSigner, cookie_script,
                                 load_secret, secret_path)
from skinlesion.settings import Settings
from skinlesion.store import Store
from skinlesion.thresholds import Threshold
from skinlesion.thresholds import status as threshold_status

#: Seconds a query result is reused before the store is asked again.
QUERY_TTL_S = 30
#: Seconds the slower computations (health window, drift) are reused.
SLOW_TTL_S = 120
#: Window choices of the sidebar (the policy's windows) plus a custom range.
WINDOWS: dict[str, timedelta] = {"24 h": timedelta(hours=24), "7 d": timedelta(days=7),
                                 "30 d": timedelta(days=30)}
CUSTOM = "custom"
ALL_VERSIONS = "all returned answers"
STATUS_COLOURS: dict[str, str] = {"green": "green", "yellow": "orange", "red": "red", "unknown": "gray"}
STATUS_ICONS: dict[str, str] = {"green": "🟢", "yellow": "🟡", "red": "🔴", "unknown": "⚪"}
#: Hex colours of the statuses for charts (threshold bands, points).
STATUS_HEX: dict[str, str] = {"green": "#2e7d32", "yellow": "#f9a825", "red": "#c62828",
                              "unknown": "#9e9e9e"}
_USER_KEY = "skinlesion_user"
_SESSION_KEY = "skinlesion_session"
_COOKIE_KEY = "skinlesion_cookie_pending"
_SIGNED_OUT_KEY = "skinlesion_signed_out"
_WANTED_KEY = "skinlesion_linked_params"
#: the audit action of a sign-out; its target names the session (:func:`session_target`), whose id
#: is refused from then on
SIGN_OUT = "sign_out"
_WINDOW_KEY = "filter_window"
_RANGE_KEY = "filter_range"
_MODEL_KEY = "filter_model"


# --- settings, store, policy, models ----------------------------------------------------------------


def settings() -> Settings:
    """The settings of this run (environment read afresh: cheap, and tests change it)."""
    return Settings()


@st.cache_resource(show_spinner=False)
def _store(db_path: str, busy_timeout_s: float) -> Store:
    return Store(db_path, busy_timeout_s=busy_timeout_s)


def store() -> Store:
    """The store of the current settings (one per database file and process)."""
    s = settings()
    return _store(s.store_url, s.busy_timeout_s)


@st.cache_resource(show_spinner=False)
def _policy(path: str, mtime: float) -> Policy:
    return load_policy(path)


def _policy_key() -> tuple[str, float]:
    path = Path(settings().thresholds_file)
    return str(path), path.stat().st_mtime if path.exists() else 0.0


def policy() -> Policy:
    """The health policy (thresholds.toml), re-read when the file changes."""
    return _policy(*_policy_key())


def models_dir() -> Path:
    return Path(settings().models_dir)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _loaded_model(models_dir_: str, version_id: str, device: str) -> ModelVersion:
    return load_version(version_id, Path(models_dir_), device=device)


def loaded_model(ref: str) -> ModelVersion:
    """The model version ``ref`` names, loaded once per process (by resolved id)."""
    s = settings()
    return _loaded_model(str(s.models_dir), resolve_version(s.models_dir, ref), s.device)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _version_counts(db_path: str, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    return store().version_counts(start, end)


def clear_caches() -> None:
    """Forget cached query results (after an action changed the store)."""
    st.cache_data.clear()


@st.cache_data(ttl=SLOW_TTL_S, show_spinner="Computing the window's health and drift…")
def _window_health(db_path: str, models_dir_: str, policy_key: tuple[str, float], start: datetime,
                   end: datetime, model_version: str | None, source: str | None,
                   drift: bool) -> WindowHealth:
    return cockpit.window_health(store(), Path(models_dir_), policy(), start, end,
                                 model_version=model_version, source=source, drift=drift)


def window_health(filters: Filters, *, drift: bool = True, source: str | None = None) -> WindowHealth:
    """The health of the sidebar's window (answers of ``source`` only, when given), with its data
    drift when ``drift``; cached for :data:`SLOW_TTL_S` seconds."""
    s = settings()
    return _window_health(s.store_url, str(s.models_dir), _policy_key(), filters.start,
                          filters.end, filters.model_version, source, drift)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def _reference_answers(models_dir_: str, version: str) -> tuple[pd.DataFrame | None, str]:
    return cockpit.reference_for(Path(models_dir_), version)


def reference_answers(version: str) -> tuple[pd.DataFrame | None, str]:
    """The reference answers stored with ``version`` (what its drift compares with) and, when
    there are none, why."""
    return _reference_answers(str(settings().models_dir), version)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _active_model(db_path: str, models_dir_: str) -> ActiveModel:
    return active_model(store(), Path(models_dir_))


def current_model() -> ActiveModel:
    """The serving route and the card of the version answering now (cached briefly)."""
    s = settings()
    return _active_model(s.store_url, str(s.models_dir))


# --- users and roles ------------------------------------------------------------------------------


def current_user() -> User | None:
    """The person signed in during this browser visit, or None."""
    return st.session_state.get(_USER_KEY)


@st.cache_resource(show_spinner=False)
def _sign_in_throttle(users_file: str) -> SignInThrottle:
    """The failed sign-ins of this dashboard process (one per users file)."""
    return SignInThrottle()


def _client_address() -> str:
    """The browser's address as Streamlit sees it ("unknown" where it cannot tell, e.g. in tests)."""
    address = st.context.ip_address
    return address if isinstance(address, str) and address else "unknown"


def _audit_sign_in(accounts: dict[str, Account], name: str, client: str, *, action: str,
                   locked_out: bool = False) -> None:
    """Audit a refused sign-in: the account's name and role when the name exists (never the text
    typed for an unknown one: it may be a password or a patient's name), and the client address."""
    account = accounts.get(name.strip())
    store().append_audit(account.name if account else "(unknown user)",
                         account.role if account else "none", action, target="dashboard",
                         details={"client": client, "locked_out": locked_out})


class SignedOut:
    """The session ids signed out, as the audit log of ``store`` records them (``sid in
    SignedOut(store)``): kept in the store, so a sign-out holds across dashboard restarts and
    processes."""

    def __init__(self, store_: Store):
        self._store = store_

    def __contains__(self, sid: object) -> bool:
        return isinstance(sid, str) and not self._store.query_audit(
            action=SIGN_OUT, target=session_target(sid), limit=1).empty


def session_target(sid: str) -> str:
    """How the audit log names a dashboard session (the target of a sign-out)."""
    return f"session {sid}"


def _signer() -> SessionSigner:
    """The installation's session signer (its secret beside the users file)."""
    return SessionSigner(load_secret(secret_path(Path(settings().users_file))))


def _write_cookie() -> None:
    """Have the server set, renew or clear the session cookie when this run has that pending
    (skinlesion.sessions: the cookie is HttpOnly, so the page only asks), renewing it when due."""
    session: Session | None = st.session_state.get(_SESSION_KEY)
    if session is not None and _COOKIE_KEY not in st.session_state and \
            SessionSigner.due(session, clock.time()):
        st.session_state[_SESSION_KEY] = _signer().renew(session, clock.time())[0]
        st.session_state[_COOKIE_KEY] = cookie_script("renew")
    if _COOKIE_KEY in st.session_state:
        st.html(st.session_state.pop(_COOKIE_KEY), unsafe_allow_javascript=True)


def _resume(accounts: dict[str, Account]) -> User | None:
    """The user of this browser's session cookie, when it is still valid (see skinlesion.sessions);
    a session idle too long in this visit ends here."""
    now = clock.time()
    session: Session | None = st.session_state.get(_SESSION_KEY)
    if session is not None and now - session.seen > IDLE_TIMEOUT.total_seconds():
        _end_session("Signed out after "
                     f"{IDLE_TIMEOUT.total_seconds() / 60:.0f} minutes without activity.")
        return None
    cookie = st.context.cookies.get(COOKIE) if session is None else None
    if session is None:
        session = _signer().read(cookie, now, roles={n: a.role for n, a in accounts.items()},
                                 revoked=SignedOut(store()))
    if session is None:
        return None
    st.session_state[_SESSION_KEY] = session
    return User(name=session.name, role=session.role)


def _end_session(message: str | None = None, *, signed_out: bool = False) -> None:
    """End the session: the cookie cleared, the user forgotten; when the person ``signed_out``,
    the sign-out audited with the session id, which is refused from then on (:class:`SignedOut`)."""
    session: Session | None = st.session_state.pop(_SESSION_KEY, None)
    if session is not None and signed_out:
        store().append_audit(session.name, session.role, SIGN_OUT,
                             target=session_target(session.sid),
                             details={"client": _client_address()})
    st.session_state.pop(_USER_KEY, None)
    st.session_state[_COOKIE_KEY] = cookie_script("end")
    if message:
        st.session_state[_SIGNED_OUT_KEY] = message


def signed_in_user(accounts: dict[str, Account] | None = None) -> User | None:
    """The person signed in (resumed from this browser's session cookie, or signed in within this
    visit), or None; renders nothing but the end of an idle session. ``accounts`` default to the
    users file's."""
    if accounts is None:
        accounts = load_users(Path(settings().users_file))
    user = _resume(accounts) if accounts else None
    if user is None and _SESSION_KEY not in st.session_state:
        user = current_user()  # signed in within this visit without a session (tests, bare mode)
    if user is not None:
        st.session_state[_USER_KEY] = user
    return user


def sign_in() -> User:
    """The signed-in user; otherwise render the sign-in form and stop the page.

    A signed-in browser keeps its session across refreshes and deep links through a signed,
    expiring cookie (skinlesion.sessions: 12 h at most, 30 min idle, ended by signing out). Failed
    attempts slow the next ones down per name and per client address (skinlesion.auth's
    SignInThrottle) and are audited (``sign_in_failed``); an attempt while throttled is refused
    without checking the password."""
    path = Path(settings().users_file)
    accounts = load_users(path)
    user = signed_in_user(accounts)
    _write_cookie()
    if user is not None:
        return user
    st.session_state.setdefault(_WANTED_KEY, st.query_params.to_dict())
    st.title("skinlesion cockpit")
    if _SIGNED_OUT_KEY in st.session_state:
        st.info(st.session_state.pop(_SIGNED_OUT_KEY))
    if not accounts:
        st.error(f"No dashboard users yet ({path}). Add one on the server with "
                 "`skinlesion users add --name NAME --role viewer|clinician|ml_lead`, then reload.")
        st.stop()
    with st.form("sign_in"):
        st.subheader("Sign in")
        name = st.text_input("User name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        client, throttle = _client_address(), _sign_in_throttle(str(path))
        wait = throttle.wait_s(name, client)
        if wait > 0:
            st.error(f"Too many failed sign-ins; try again in {math.ceil(wait)} s.")
            st.stop()
        user = authenticate(accounts, name, password)
        if user is None:
            locked_out = throttle.failed(name, client)
            _audit_sign_in(accounts, name, client, action="sign_in_failed", locked_out=locked_out)
            st.error("Wrong user name or password.")
        else:
            throttle.succeeded(name, client)
            st.session_state[_USER_KEY] = user
            signer = _signer()
            session, token = signer.issue(user.name, user.role, clock.time())
            st.session_state[_COOKIE_KEY] = cookie_script("set", signer.cookie_pass(token))
            st.session_state[_SESSION_KEY] = session
            st.session_state.pop("sign_in_password", None)
            st.rerun()
    st.stop()
    raise AssertionError("unreachable: st.stop() ends the script")


def restore_link() -> None:
    """Put back the query parameters (the window) of a link opened before signing in: the
    sign-in drops them, while the page itself stays in the URL path."""
    params = st.session_state.pop(_WANTED_KEY, None)
    if params:
        st.query_params.update(params)


#: seconds between reloads when a page's auto-refresh is on
AUTO_REFRESH_S = 60


def auto_refresh() -> None:
    """A sidebar switch that reloads the page every :data:`AUTO_REFRESH_S` seconds (kept in the URL
    as ``?refresh=on``, so it survives the reload; the session cookie keeps the person signed in)."""
    on = st.sidebar.toggle(f"Auto-refresh every {AUTO_REFRESH_S} s", key="auto_refresh",
                           value=st.query_params.get("refresh") == "on")
    if on:
        st.query_params["refresh"] = "on"
        st.html(f"<script>setTimeout(() => window.location.reload(), {AUTO_REFRESH_S * 1000});"
                "</script>", unsafe_allow_javascript=True)
    else:
        st.query_params.pop("refresh", None)


def sign_out_button(user: User) -> None:
    """Who is signed in, and a button to sign out (in the sidebar)."""
    with st.sidebar:
        st.caption(f"Signed in as **{user.name}** ({user.role})")
        if st.button("Sign out", key="sign_out"):
            _end_session("Signed out.", signed_out=True)
            st.rerun()


def require_role(action: str) -> User:
    """The signed-in user if their role may take ``action`` (skinlesion.auth.PERMISSIONS); otherwise
    the sign-in form, or a refusal naming the roles that may, and the page stops."""
    user = sign_in()
    if not can(user.role, action):
        store().append_audit(user.name, user.role, "action_refused", target=action,
                             details={"client": _client_address()})
        allowed = [r for r in ROLES if can(r, action)]
        st.error(f"Your role ({user.role}) may not {action.replace('_', ' ')}; this needs "
                 f"{' or '.join(allowed)}.")
        st.stop()
    return user


# --- sidebar filters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The sidebar's choices: the window ``[start, end)`` (UTC), its ``label``, and the model
    version to look at (None: every answer returned to callers)."""

    start: datetime
    end: datetime
    label: str
    model_version: str | None

    @property
    def length(self) -> timedelta:
        return self.end - self.start


def now_floor() -> datetime:
    """Now (UTC) rounded down to the minute: the end of the rolling windows, stable across reruns
    within a minute so cached results are reused."""
    return datetime.now(UTC).replace(second=0, microsecond=0)


def _keep(*keys: str) -> None:
    """Keep widget values when the person switches pages (Streamlit drops the state of widgets not
    drawn in a run; re-assigning it marks it as the app's own)."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def window_selector() -> tuple[datetime, datetime, str]:
    """The window chosen in the sidebar: 24 h / 7 d / 30 d ending now, or a custom date range."""
    _keep(_WINDOW_KEY, _RANGE_KEY)
    linked = st.query_params.get("window")  # a shared link's window, until the person picks one
    if _WINDOW_KEY not in st.session_state and linked in WINDOWS:
        st.session_state[_WINDOW_KEY] = linked
    choice = st.sidebar.radio("Window", [*WINDOWS, CUSTOM], key=_WINDOW_KEY, horizontal=True)
    if choice in WINDOWS:
        st.query_params["window"] = choice  # kept in the URL, so the link can be shared
    end = now_floor()
    if choice != CUSTOM:
        return end - WINDOWS[choice], end, f"last {choice}"
    today = end.date()
    picked = st.sidebar.date_input("From – to (UTC days)", value=(today - timedelta(days=7), today),
                                   max_value=today, key=_RANGE_KEY)
    first, last = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else (today, today)
    start = datetime.combine(first, time(), UTC)
    stop = min(datetime.combine(last + timedelta(days=1), time(), UTC), end)
    if stop <= start:
        stop = start + timedelta(days=1)
    return start, stop, f"{first:%d %b %Y} – {last:%d %b %Y}"


def model_filter(start: datetime | None = None, end: datetime | None = None) -> str | None:
    """The model version chosen in the sidebar among those that answered in ``[start, end)``
    (None: every answer returned to callers)."""
    _keep(_MODEL_KEY)
    versions = _version_counts(settings().store_url, start, end)
    options = [ALL_VERSIONS, *versions["model_version"].tolist()] if len(versions) else [ALL_VERSIONS]
    if st.session_state.get(_MODEL_KEY) not in options:
        st.session_state.pop(_MODEL_KEY, None)
    choice = st.sidebar.selectbox("Model version", options, key=_MODEL_KEY,
                                  help="Answers of one model version (shadow answers included), or "
                                       "every answer returned to the clinic's apps.")
    return None if choice == ALL_VERSIONS else choice


def sidebar_filters() -> Filters:
    """The window selector and the model-version filter, drawn in the sidebar."""
    start, end, label = window_selector()
    return Filters(start=start, end=end, label=label, model_version=model_filter(start, end))


# --- page frame -------------------------------------------------------------------------------------


def page_setup(title: str, *, action: str = "view", filters: bool = False,
               caption: str | None = None) -> tuple[User, Filters | None]:
    """Start a page: sign-in gate and role check for ``action``, the signed-in user and sign-out in
    the sidebar, the title, the active-model banner, and (with ``filters``) the sidebar filters."""
    user = require_role(action)
    sign_out_button(user)
    chosen = sidebar_filters() if filters else None
    st.title(title)
    if caption:
        st.caption(caption)
    active_model_banner()
    return user, chosen


# --- status, tiles, banner --------------------------------------------------------------------------


def badge(status: str, text: str | None = None) -> str:
    """A coloured markdown badge for a status (green / yellow / red / unknown), reading ``text``
    (default: the status)."""
    status = str(status)
    return f":{STATUS_COLOURS.get(status, 'gray')}-background[**{(text or status).upper()}**]"


def fmt(value: float | None, kind: str = "ratio") -> str:
    """A metric value for display: ratios with 3 decimals, ``ms`` as milliseconds, ``count`` as an
    integer, ``percent`` as a percentage; an em dash when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if kind == "ms":
        return f"{value:,.0f} ms"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "percent":
        return f"{value:.0%}"
    return f"{value:.3f}"


def metric_tile(label: str, value: float | None, status: str, *, kind: str = "ratio",
                change: float | None = None, higher_is_better: bool = True,
                estimated: float | None = None, estimated_status: str | None = None,
                band: tuple[float | None, float | None] | None = None, unreliable: bool = False,
                coverage: float | None = None, n: int | None = None, lag_hours: float | None = None,
                note: str = "", help: str | None = None, badge_text: str | None = None) -> None:
    """One metric as a tile: its status badge and headline — the realised value when labels
    suffice, else the estimate marked "estimated" with its ``band`` (:data:`BAND_LEVEL`) (and "unreliable" while
    drift or out-of-distribution answers are high or the malignant share moved), else "—" with a tooltip — the change against
    the previous window (green when it improved), label coverage and median label lag."""
    headline_estimated = value is None and estimated is not None
    with st.container(border=True):
        st.markdown(f"{badge(status, badge_text)}  **{label}**", help=help)
        delta = None if change is None else (
            f"{change:+,.0f} ms" if kind == "ms" else f"{change:+,.0f}" if kind == "count"
            else f"{change:+.3f}")
        shown = f"≈ {fmt(estimated, kind)}" if headline_estimated else fmt(value, kind)
        st.metric(label, shown, delta=delta, label_visibility="collapsed",
                  delta_color="normal" if higher_is_better else "inverse",
                  help=MISSING_HELP if shown == MISSING else None)
        lines = []
        if headline_estimated:
            est = "**estimated** (too few labels)"
            if band is not None and band[0] is not None and band[1] is not None:
                est += f", {BAND_LEVEL:.0%} band {fmt(band[0], kind)}–{fmt(band[1], kind)}"
            lines.append(est + (" · **estimate unreliable**: drift, unfamiliar images or a changed "
                                "share of malignant cases" if unreliable else ""))
        elif estimated is not None:
            est = f"estimated {fmt(estimated, kind)}"
            if estimated_status and estimated_status != "unknown":
                est += f" {STATUS_ICONS.get(estimated_status, '')}"
            lines.append(est)
        if coverage is not None:
            lines.append(f"labels {coverage:.0%}" + (f" (n={n:,})" if n is not None else ""))
        if lag_hours is not None:
            lines.append(f"median lag {cockpit.lag_text(lag_hours)}")
        if note:
            lines.append(note)
        if lines:
            st.caption(" · ".join(lines))


def tile(t: Tile, metric: MetricValue | None = None) -> None:
    """Render a :class:`~skinlesion.monitoring.cockpit.Tile` with :func:`metric_tile`; ``metric``
    (the report's value behind it) adds the estimate's band and reliability."""
    note = t.note
    if t.status_estimated:
        note = f"{note} · colour from the estimate" if note else "colour from the estimate"
    metric_tile(display.metric_name(t.metric) if t.metric != "volume" else t.label, t.value,
                t.status, kind=t.kind, change=t.change,
                higher_is_better=t.higher_is_better, estimated=t.estimated,
                estimated_status=t.estimated_status,
                band=(metric.estimated_low, metric.estimated_high) if metric else None,
                unreliable=bool(metric and metric.estimate_unreliable),
                coverage=t.coverage, n=t.n,
                lag_hours=t.lag_hours, note=note,
                help=t.bands or None,
                badge_text="no threshold" if not t.bands and t.metric != "volume" else None)


def active_model_banner() -> ActiveModel:
    """A banner with the model answering now: its version, whether the fallback is engaged or the
    model is restricted to clear cases, and a clear warning when it is a demo model trained on
    synthetic data."""
    active = current_model()
    route = active.route
    parts = [f"Active model **{route.active_version}**"]
    if route.fallback_engaged:
        parts.append(f"fallback **{route.fallback_version}** engaged — it answers every request")
    elif route.fallback_version:
        parts.append(f"fallback {route.fallback_version} ready")
    if route.restricted_to_clear_cases:
        parts.append("restricted to clear cases (others are referred)")
    if route.challenger_version:
        parts.append(f"challenger {route.challenger_version} ({route.challenger_share:.0%})")
    if route.shadow_version:
        parts.append(f"shadow {route.shadow_version}")
    text = " · ".join(parts)
    if route.fallback_engaged or route.restricted_to_clear_cases:
        st.warning(text, icon=":material/warning:")
    else:
        st.info(text, icon=":material/model_training:")
    if active.problem:
        st.warning(f"The serving version's card cannot be read: {active.problem}")
    if active.synthetic:
        st.error("**Demo model trained on synthetic data — not for clinical use.** "
                 f"Version {active.serving_version} was trained on "
                 f"“{active.card.data.name if active.card else '?'}”; its answers say nothing about "
                 "real lesions.", icon=":material/science:")
    elif active.demo:
        st.info(f"Demo installation: the traffic, labels and incidents behind these numbers are "
                f"simulated (version {active.serving_version}).", icon=":material/science:")
    return active


def status_of(value: float | None, threshold: Threshold) -> str:
    """The colour of ``value`` under ``threshold`` (unknown for no value)."""
    return threshold_status(value, threshold).value


#: The one date format of tables (UTC), as Streamlit's datetime column reads it.
TIME_COLUMN = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")


def status_text(status: str) -> str:
    """A status with its coloured dot, for table cells and captions."""
    return f"{STATUS_ICONS.get(str(status), '⚪')} {status}"


# --- charts -----------------------------------------------------------------------------------------

#: Resolution of the matplotlib figures (skinlesion.plots) shown in the pages: sharp on screen,
#: quicker to draw than Streamlit's default of 200.
FIGURE_DPI = 110


def figure(fig: Figure, *, dpi: int = FIGURE_DPI) -> None:
    """Show a matplotlib figure (e.g. from skinlesion.plots) as a PNG drawn at ``dpi``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    st.image(buffer.getvalue(), width="stretch")
