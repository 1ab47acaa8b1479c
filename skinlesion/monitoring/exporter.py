"""Prometheus gauges of the monitor: the latest health snapshot and the open alerts.

On a registry of its own (no global state). Labels are low-cardinality only: ``metric`` and
``status``, never request, patient or alert ids. The gauges:

* ``skinlesion_health_metric{metric}`` — each metric's value in the latest snapshot (metrics
  without a value in the window are left out rather than exported as NaN);
* ``skinlesion_health_metric_status{metric,status}`` — 1 for the metric's status, 0 for the
  others (green, yellow, red, unknown), so ``== 1`` selects the current colour;
* ``skinlesion_health_status{status}`` — the same for the worst status of the snapshot;
* ``skinlesion_health_snapshot_timestamp_seconds`` — when the snapshot was taken (stale monitor
  alarms: ``time() - ... > 3600``);
* ``skinlesion_alerts_open{metric,status}`` — how many alerts are open per metric and status.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from skinlesion.store import ALERT_STATUSES, HEALTH_STATUSES, Alert, HealthSnapshot

PREFIX = "skinlesion"


def health_gauges(snapshot: HealthSnapshot | None, alerts: Iterable[Alert]) -> list[Metric]:
    """The gauge families for ``snapshot`` (None before the first run: alerts only) and ``alerts``."""
    families: list[Metric] = []
    if snapshot is not None:
        values = GaugeMetricFamily(f"{PREFIX}_health_metric",
                                   "Value of each health metric in the latest snapshot window.",
                                   labels=["metric"])
        statuses = GaugeMetricFamily(f"{PREFIX}_health_metric_status",
                                     "1 for the status of each health metric, 0 for the others.",
                                     labels=["metric", "status"])
        for row in snapshot.metrics:
            if row.value is not None:
                values.add_metric([row.metric], row.value)
            for status in HEALTH_STATUSES:
                statuses.add_metric([row.metric, status], float(row.status == status))
        overall = GaugeMetricFamily(f"{PREFIX}_health_status",
                                    "1 for the worst status of the latest snapshot, 0 for the others.",
                                    labels=["status"])
        for status in HEALTH_STATUSES:
            overall.add_metric([status], float(snapshot.status == status))
        families += [values, statuses, overall,
                     GaugeMetricFamily(f"{PREFIX}_health_snapshot_timestamp_seconds",
                                       "When the latest health snapshot was taken (Unix time).",
                                       value=snapshot.ts.timestamp())]
    open_alerts = GaugeMetricFamily(f"{PREFIX}_alerts_open", "Open alerts by metric and status.",
                                    labels=["metric", "status"])
    counts = Counter((a.metric, a.status) for a in alerts if a.is_open)
    for metric in sorted({m for m, _ in counts}):
        for status in ALERT_STATUSES:
            open_alerts.add_metric([metric, status], float(counts[(metric, status)]))
    families.append(open_alerts)
    return families


class HealthCollector(Collector):
    """Yields :func:`health_gauges` of the state last given to :meth:`update` (thread-safe: the
    HTTP server's thread collects while the monitor loop updates)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: HealthSnapshot | None = None
        self._alerts: tuple[Alert, ...] = ()

    def update(self, snapshot: HealthSnapshot | None, alerts: Sequence[Alert]) -> None:
        with self._lock:
            self._snapshot, self._alerts = snapshot, tuple(alerts)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot, alerts = self._snapshot, self._alerts
        yield from health_gauges(snapshot, alerts)


class HealthExporter:
    """The monitor's gauges on their own registry: :meth:`update` after each run, :meth:`render`
    for the text exposition format, :meth:`serve` to expose ``/metrics`` over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = HealthCollector()
        self.registry.register(self.collector)
        self._server: WSGIServer | None = None

    def update(self, snapshot: HealthSnapshot | None, alerts: Sequence[Alert]) -> None:
        self.collector.update(snapshot, alerts)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve the gauges on ``addr:port`` in a daemon thread; returns the bound port (so port 0
        picks a free one)."""
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving (no-op when not serving)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def render_health(snapshot: HealthSnapshot | None, alerts: Sequence[Alert]) -> bytes:
    """The Prometheus text exposition of ``snapshot`` and ``alerts`` (one-off, e.g. for a file)."""
    exporter = HealthExporter()
    exporter.update(snapshot, alerts)
    return exporter.render()
