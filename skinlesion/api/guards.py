"""What stands in front of the API's routes.

:class:`Gate` is ASGI middleware for every ``/v1/`` request. Before a byte of the body is read it
checks, in order: the client address's rate limit, the address's failed key checks, the API key
(missing: 401, unknown or revoked: 403), the key's rate limit, and the declared body size
(``Content-Length`` required for writes: 411 without it, 413 over the limit). A refused request costs
no database write: it is answered in the project's JSON error shape and counted in Prometheus
(``skinlesion_refused_total`` by reason, and ``skinlesion_requests_total`` for a counted endpoint).

Rate limits use the ``limits`` library (the engine of slowapi), moving windows kept in this process's
memory: with several replicas each enforces its own, so a proxy in front (nginx ``limit_req``) is the
place for one limit over all of them. Behind a proxy, run uvicorn with ``--proxy-headers
--forwarded-allow-ips=<proxy address>`` so the client's address, not the proxy's, is limited.

:class:`KeyVerifier` caches checked keys for ``key_cache_ttl_s`` (0.5 s by default), so a key revoked
by another process stops working within it; in the revoking process (the store object counts the
revocations made through it) the cache is dropped at once.

:class:`PixelBudget` bounds the pixels decoded at once across requests: a request reserves its
image's pixel count (read from the header) before decoding and waits for room, or is answered 503
with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from skinlesion.api.errors import allowed_values, error_body, size_text
from skinlesion.errors import DataError

#: The paths the gate guards.
GUARDED_PREFIX = "/v1/"
#: Form overhead (boundaries, part headers, the metadata fields) allowed over the image's bytes.
FORM_OVERHEAD_BYTES = 64 * 1024
#: Largest JSON body (10,000 labels of about 200 bytes each fit).
MAX_JSON_BYTES = 4 * 1024 * 1024
#: Why the gate refused a request (the ``reason`` label of ``skinlesion_refused_total``).
REFUSAL_REASONS = ("missing_key", "unknown_key", "address_rate", "key_rate", "auth_failures",
                   "length_required", "too_large")


@dataclass(frozen=True)
class ApiClient:
    """The caller of an API request: its key's name and scopes (skinlesion.records.API_SCOPES)."""

    name: str
    scopes: tuple[str, ...] = ()

    @property
    def reads_any(self) -> bool:
        """Whether it may read other clients' answers (``admin``)."""
        return "admin" in self.scopes

    @property
    def labels_any(self) -> bool:
        """Whether it may label other clients' answers (``labeller`` or ``admin``)."""
        return bool({"labeller", "admin"} & set(self.scopes))


class KeyVerifier:
    """``verify(key) -> (name, scopes) | None`` as an :class:`ApiClient`, cached for ``ttl_s``
    seconds by the key's hash (unknown keys are not cached: the address's failure limit bounds
    them). ``revocations()`` counts the revocations made in this process; when it moves, the cache
    is dropped."""

    def __init__(self, verify: Callable[[str], tuple[str, tuple[str, ...]] | None], ttl_s: float,
                 revocations: Callable[[], int] = lambda: 0):
        if not 0 <= ttl_s <= 1:
            raise DataError(f"key_cache_ttl_s must be between 0 and 1 s (a revoked key must stop "
                            f"working within a second), got {ttl_s}", field="key_cache_ttl_s")
        self._verify = verify
        self._revocations = revocations
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[ApiClient, float]] = {}
        self._seen_revocations = revocations()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> ApiClient | None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            revocations = self._revocations()
            if revocations != self._seen_revocations:
                self._cache, self._seen_revocations = {}, revocations
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        found = self._verify(key)
        client = None if found is None else ApiClient(name=found[0], scopes=tuple(found[1]))
        with self._lock:
            if client is None:
                self._cache.pop(digest, None)
            else:
                self._cache[digest] = (client, time.monotonic() + self.ttl_s)
        return client


def parse_limit(text: str, field: str) -> RateLimitItem:
    """A rate limit from ``limits`` notation ("600/minute"); DataError naming ``field`` otherwise."""
    try:
        return parse(text)
    except ValueError as err:
        raise DataError(f"not a rate limit ({err}); write it as N/second, N/minute or N/hour",
                        field=field) from None


class RateLimits:
    """Moving-window limits per client address, per API key and on failed key checks per address."""

    def __init__(self, per_address: str, per_key: str, auth_failures: str):
        self.per_address = parse_limit(per_address, "rate_limit_per_address")
        self.per_key = parse_limit(per_key, "rate_limit_per_key")
        self.auth_failures = parse_limit(auth_failures, "auth_failures_per_address")
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, item: RateLimitItem, *ids: str) -> float | None:
        """Count one request; None when within ``item``, else the seconds until there is room."""
        if self._limiter.hit(item, *ids):
            return None
        return self.retry_after(item, *ids)

    def exhausted(self, item: RateLimitItem, *ids: str) -> float | None:
        """Without counting: None while ``item`` has room, else the seconds until it has."""
        return None if self._limiter.test(item, *ids) else self.retry_after(item, *ids)

    def retry_after(self, item: RateLimitItem, *ids: str) -> float:
        return max(0.0, self._limiter.get_window_stats(item, *ids).reset_time - time.time())


class DecodeBusy(Exception):
    """No room in the pixel budget within the wait; retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"busy decoding other images; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class PixelBudget:
    """At most ``capacity`` pixels decoded at once, across threads."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise DataError(f"the decode budget must be positive, got {capacity}",
                            field="decode_budget_px")
        self.capacity = capacity
        self.in_use = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, pixels: int, wait_s: float) -> Iterator[None]:
        """Reserve ``pixels`` (at most the whole budget) for the block; DecodeBusy when there is no
        room within ``wait_s`` seconds."""
        need = min(max(pixels, 1), self.capacity)
        with self._room:
            if not self._room.wait_for(lambda: self.in_use + need <= self.capacity, timeout=wait_s):
                raise DecodeBusy(max(1, math.ceil(wait_s)))
            self.in_use += need
        try:
            yield
        finally:
            with self._room:
                self.in_use -= need
                self._room.notify_all()


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def body_limit(method: str, path: str, max_upload_bytes: int) -> int | None:
    """The largest body a request may declare (None: no body expected)."""
    if method not in ("POST", "PUT", "PATCH"):
        return None
    return max_upload_bytes + FORM_OVERHEAD_BYTES if path == "/v1/predictions" else MAX_JSON_BYTES


class Refusal(Exception):
    """A request the gate answers itself: status, the reason label, the field and the message."""

    def __init__(self, status: int, reason: str, field: str | None, message: str,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.reason, self.field, self.message = status, reason, field, message
        self.retry_after_s = retry_after_s


class Gate:
    """ASGI middleware: the checks of the module docstring, before the body is read. The accepted
    caller is put in ``request.state.api_client``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        try:
            scope.setdefault("state", {})["api_client"] = await self._admit(scope, state)
        except Refusal as refusal:
            await self._refuse(scope, receive, send, refusal)
            return
        await self.app(scope, receive, send)

    async def _admit(self, scope: Scope, state) -> ApiClient:
        limits: RateLimits = state.rate_limits
        address = client_address(scope)
        wait = limits.hit(limits.per_address, "address", address)
        if wait is not None:
            raise Refusal(429, "address_rate", None, f"too many requests from this address "
                          f"(limit {limits.per_address}); retry after {math.ceil(wait)} s", wait)
        key = _header(scope, b"x-api-key")
        if not key:
            raise Refusal(401, "missing_key", "X-API-Key", "missing API key: send it in the "
                          "X-API-Key header (create one with `skinlesion apikey create --name "
                          "NAME`)")
        wait = limits.exhausted(limits.auth_failures, "auth", address)
        if wait is not None:
            raise Refusal(429, "auth_failures", "X-API-Key", "too many failed API key checks from "
                          f"this address (limit {limits.auth_failures}); retry after "
                          f"{math.ceil(wait)} s", wait)
        client = await run_in_threadpool(state.key_verifier, key)
        if client is None:
            limits.hit(limits.auth_failures, "auth", address)
            raise Refusal(403, "unknown_key", "X-API-Key", "API key not recognised or revoked")
        wait = limits.hit(limits.per_key, "key", client.name)
        if wait is not None:
            raise Refusal(429, "key_rate", None, f"too many requests with this API key (limit "
                          f"{limits.per_key}); retry after {math.ceil(wait)} s", wait)
        self._check_length(scope, state.settings.max_upload_bytes)
        return client

    @staticmethod
    def _check_length(scope: Scope, max_upload_bytes: int) -> None:
        limit = body_limit(scope["method"], scope["path"], max_upload_bytes)
        if limit is None:
            return
        field = "image" if scope["path"] == "/v1/predictions" else "body"
        declared = _header(scope, b"content-length")
        if declared is None or not declared.isdigit():
            raise Refusal(411, "length_required", field, "send the body with a Content-Length "
                          "header (chunked uploads are not accepted)")
        if int(declared) > limit:
            raise Refusal(413, "too_large", field, f"the request body is {int(declared):,} bytes, "
                          f"over the {limit:,}-byte limit; send one JPEG or PNG of at most "
                          f"{size_text(max_upload_bytes)}")

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
        request = Request(scope, receive)
        state = scope["app"].state
        state.metrics.refused.labels(refusal.reason).inc()
        state.metrics.observe(request, refusal.status)
        headers = ({"Retry-After": str(max(1, math.ceil(refusal.retry_after_s)))}
                   if refusal.retry_after_s is not None else None)
        allowed = allowed_values(refusal.field, state.settings.max_upload_bytes)
        response = JSONResponse(error_body(refusal.field, refusal.message, allowed),
                                status_code=refusal.status, headers=headers)
        await response(scope, receive, send)

