"""Prometheus metrics of the API, on a registry of the app's own (no global state, so several apps can
live in one process, as in tests). Labels are low-cardinality only: no request or patient ids.

The writing endpoints (:data:`COUNTED`) are counted and timed by endpoint, model version (``none``
when no model answered) and outcome: ``ok`` or, for a request answered with an error, the failure
kinds of the store (:data:`skinlesion.store.FAILURE_KINDS`: rejected, unauthorized, unavailable,
error), or ``throttled`` (429, rate limited). Unauthorized and throttled requests are counted here
only, never written to the store (an attacker's guesses must not cost a database write each).
``skinlesion_refused_total{reason}`` counts the requests the gate (:mod:`skinlesion.api.guards`)
refused before reading their body, on every ``/v1/`` endpoint. Latency runs from the moment the
request reached the app (:class:`StartStamp`). ``skinlesion_inference_forwards_total`` and
``skinlesion_inference_images_total`` (by model version and role) show how much concurrent requests
share network forwards (:class:`BatchingCollector`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0)
#: The model-version label of a request no model answered.
NO_VERSION = "none"
#: The counted endpoints: (method, route path) -> endpoint label.
COUNTED: dict[tuple[str, str], str] = {("POST", "/v1/predictions"): "predictions",
                                       ("POST", "/v1/labels"): "labels"}


#: Outcomes counted in Prometheus only, never recorded in the store.
UNRECORDED_OUTCOMES = ("unauthorized", "throttled")


def outcome_of(status: int) -> str:
    """The outcome of an HTTP status: ``ok`` below 400, ``unauthorized`` for 401/403, ``throttled``
    for 429, ``unavailable`` for 503, ``error`` for other 5xx, ``rejected`` for other 4xx (bad
    input)."""
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "unauthorized"
    if status == 429:
        return "throttled"
    if status == 503:
        return "unavailable"
    return "error" if status >= 500 else "rejected"


def endpoint_of(request: Request) -> str | None:
    """The endpoint label of a request to a :data:`COUNTED` route, else None (before routing, as
    in the gate, the request's path stands for the route's)."""
    route = request.scope.get("route")
    return COUNTED.get((request.method, getattr(route, "path", request.url.path)))


class StartStamp:
    """ASGI middleware noting when each HTTP request reached the app (``request.state.started``,
    :func:`time.perf_counter`), so latency also covers requests that fail before a route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["started"] = time.perf_counter()
        await self.app(scope, receive, send)


#: Per (model version, role): the forwards its network ran and the images they carried.
BatchingCounts = Callable[[], dict[tuple[str, str], tuple[int, int]]]


class BatchingCollector:
    """``skinlesion_inference_forwards_total`` and ``skinlesion_inference_images_total`` by model
    version and role, read from the serving service when scraped: images per forward above 1 means
    concurrent requests shared forwards (skinlesion.model.runtime.BatchingEngine)."""

    def __init__(self, counts: BatchingCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        forwards = CounterMetricFamily("skinlesion_inference_forwards", "Forwards of the network "
                                       "(concurrent requests share them).",
                                       labels=["model_version", "model_role"])
        images = CounterMetricFamily("skinlesion_inference_images", "Images answered by those "
                                     "forwards.", labels=["model_version", "model_role"])
        for (version, role), (n_forwards, n_images) in sorted(self.counts().items()):
            forwards.add_metric([version, role], n_forwards)
            images.add_metric([version, role], n_images)
        yield forwards
        yield images


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("skinlesion_requests_total", "API requests by endpoint and outcome.",
                                ["endpoint", "model_version", "outcome"], registry=self.registry)
        self.latency = Histogram("skinlesion_request_latency_seconds",
                                 "End-to-end latency of API requests by endpoint and outcome.",
                                 ["endpoint", "model_version", "outcome"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.log_wait = Histogram("skinlesion_log_wait_seconds",
                                  "Time a prediction request waits for its log row to commit.",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.answer_time = Histogram("skinlesion_answer_seconds", "Time a prediction request spends "
                                     "being answered by the model (decode, preprocessing, network, "
                                     "checks; a shared forward included).",
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.decisions = Counter("skinlesion_decisions_total", "Answers by decision and class.",
                                 ["model_version", "decision", "predicted_class"],
                                 registry=self.registry)
        self.refused = Counter("skinlesion_refused_total", "API requests refused before their body "
                               "was read, by reason.", ["reason"], registry=self.registry)

    def watch_batching(self, counts: BatchingCounts) -> None:
        """Export the serving service's forward and image counts (:class:`BatchingCollector`)."""
        self.registry.register(BatchingCollector(counts))

    def observe(self, request: Request, status: int, model_version: str | None = None) -> None:
        """Count a finished request to a :data:`COUNTED` endpoint (others are left out) and observe
        its latency."""
        endpoint = endpoint_of(request)
        if endpoint is None:
            return
        outcome = outcome_of(status)
        version = model_version or NO_VERSION
        self.requests.labels(endpoint, version, outcome).inc()
        self.latency.labels(endpoint, version, outcome).observe(
            time.perf_counter() - request.state.started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
