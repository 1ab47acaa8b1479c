"""Prometheus metrics of the API, on a registry of the app's own (no global state, so several apps can
live in one process, as in tests). Labels are low-cardinality only: no request or patient ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("skinlesion_requests_total", "API requests by endpoint and outcome.",
                                ["endpoint", "model_version", "outcome"], registry=self.registry)
        self.latency = Histogram("skinlesion_request_latency_seconds",
                                 "End-to-end latency of prediction requests.", ["model_version"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.log_wait = Histogram("skinlesion_log_wait_seconds",
                                  "Time a prediction request waits for its log row to commit.",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.decisions = Counter("skinlesion_decisions_total", "Answers by decision and class.",
                                 ["model_version", "decision", "predicted_class"],
                                 registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
