"""``make bench``: measured timings and metrics, written to ``bench/results.json``.

Timings live here, never in pass/fail tests. Every section says what it measured and on what; the
README quotes this file. Run: ``python -m skinlesion.bench --out bench/results.json
[--real-data DIR] [--skip api,...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import torch

from skinlesion.store import ServingRoute, Store


def percentiles(values_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(values_ms, dtype=float)
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
            "p99_ms": float(np.percentile(arr, 99)), "n": int(arr.size)}


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "platform": platform.platform()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _histogram_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", text, re.M))


def bench_api(models_dir: Path, version: str, images: list[bytes], *, n_single: int = 60,
              n_concurrent: int = 240, clients: int = 8) -> dict:
    """A real server (``skinlesion serve``) on loopback over a fresh store: single-request latency,
    throughput with ``clients`` concurrent clients, the share of server time spent waiting for the
    log commit, and accepted vs logged predictions (must be equal)."""
    with tempfile.TemporaryDirectory() as home:
        env = os.environ | {"SKINLESION_HOME": home, "SKINLESION_MODELS_DIR": str(models_dir),
                            "SKINLESION_DEVICE": "cpu"}
        store = Store(Path(home) / "data" / "skinlesion.duckdb")
        store.set_route(ServingRoute(active_version=version), actor="bench", role="ml_lead",
                        reason="benchmark")
        key = store.create_api_key("bench")
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "skinlesion.cli", "serve", "--port",
                                   str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, server)
            accepted = 0

            def post(client: httpx.Client, i: int) -> tuple[int, float]:
                t = time.perf_counter()
                r = client.post(f"{base}/v1/predictions", headers={"X-API-Key": key},
                                files={"image": ("x.jpg", images[i % len(images)], "image/jpeg")},
                                data={"age_approx": "50", "sex": "female",
                                      "anatom_site_general": "posterior torso"})
                return r.status_code, (time.perf_counter() - t) * 1000

            with httpx.Client(timeout=60) as client:
                single = [post(client, i) for i in range(n_single)]
            accepted += sum(code == 200 for code, _ in single)

            def worker(w: int) -> list[tuple[int, float]]:
                with httpx.Client(timeout=60) as client:
                    return [post(client, i) for i in range(w, n_concurrent, clients)]

            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = [r for rs in pool.map(worker, range(clients)) for r in rs]
            wall = time.perf_counter() - start
            accepted += sum(code == 200 for code, _ in results)
            metrics = httpx.get(f"{base}/metrics").text
        finally:
            server.terminate()
            server.wait(timeout=30)
        logged = store.count_predictions()
        log_s = _histogram_sum(metrics, "skinlesion_log_wait_seconds")
        total_s = _histogram_sum(metrics, "skinlesion_request_latency_seconds")
        return {
            "what": "POST /v1/predictions through a local uvicorn server on CPU, one image each",
            "single_request": percentiles([ms for _, ms in single]),
            "concurrent": {"clients": clients, "requests": n_concurrent,
                           "throughput_rps": n_concurrent / wall,
                           **percentiles([ms for _, ms in results])},
            "logging_share_of_server_time": log_s / total_s if total_s else None,
            "accepted": accepted,
            "logged": logged,
        }


def _wait_ready(base: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the API server exited with code {server.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the API server at {base} was not ready within {timeout_s:.0f} s")


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
