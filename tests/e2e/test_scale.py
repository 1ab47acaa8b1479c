"""Several machines, simulated on loopback (`make test-scale`): PostgreSQL, three API replicas (the
app `skinlesion serve` runs, under uvicorn) on their own ports behind a real haproxy, the monitor on
the same database, and the dashboard (`streamlit run dashboard/app.py`) on it too. 32 clients x 20
requests: every accepted answer is logged exactly once, zero errors after client retries, while one
replica is killed with SIGKILL mid-load; a route change is served by every surviving replica within
the route TTL; the dashboard's Overview shows the answers the replicas logged and the new route."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from skinlesion.auth import User
from skinlesion.data.readers import read_dataset
from skinlesion.data.splits import split_dataset
from skinlesion.data.synthetic import write_synthetic_dataset
from skinlesion.monitoring.policy import load_policy
from skinlesion.monitoring.runner import run_once
from skinlesion.register import register_fallback
from skinlesion.store import ServingRoute, Store
from skinlesion.store.local_server import free_port

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("haproxy") is None,
                                 reason="haproxy missing (Debian package `haproxy`; `make test-scale` "
                                        "installs it with apt-get where it can)")]

CLIENTS, PER_CLIENT, KILL_AFTER = 32, 20, 200
ROUTE_TTL_S = 2.0
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboard"

if str(DASHBOARD) not in sys.path:  # the pages import `components` as `streamlit run` allows
    sys.path.insert(0, str(DASHBOARD))


def _wait(url: str, timeout_s: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready within {timeout_s} s")


@pytest.fixture
def cluster(tmp_path: Path, postgres_server) -> Iterator[dict]:
    home = tmp_path / "home"
    models = home / "models"
    # big enough that the monitor's drift reference (the test split) holds its 20 rows
    data = write_synthetic_dataset(tmp_path / "isic", n=200, seed=0, width=96)
    frame = read_dataset(data)
    split = split_dataset(frame, seed=0)
    for version in ("reference", "rules-b"):
        register_fallback(models, frame, split, data_name="synthetic", version_id=version,
                          progress=False)
    with postgres_server.database() as url:
        store = Store(url)
        key = store.create_api_key("scale-test")
        env = {**os.environ, "SKINLESION_HOME": str(home), "SKINLESION_STORE_URL": url,
               "SKINLESION_ROUTE_TTL_S": str(ROUTE_TTL_S), "OMP_NUM_THREADS": "1",
               "OMP_WAIT_POLICY": "PASSIVE", "SKINLESION_RATE_LIMIT_PER_ADDRESS": "100000/minute",
               "SKINLESION_RATE_LIMIT_PER_KEY": "100000/minute"}
        ports = [free_port() for _ in range(3)]
        replicas = [subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "skinlesion.api:create_app", "--factory", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env,
            stdout=subprocess.DEVNULL, stderr=(tmp_path / f"replica-{port}.log").open("w"))
            for port in ports]
        lb_port = free_port()
        servers = "\n".join(f"    server r{i} 127.0.0.1:{port} check inter 500ms fall 1 rise 2"
                            for i, port in enumerate(ports))
        (tmp_path / "haproxy.cfg").write_text(f"""
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{lb_port}
    default_backend api
backend api
    balance roundrobin
    option httpchk GET /readyz
{servers}
""")
        balancer = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dashboard_port = free_port()
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(DASHBOARD / "app.py"), "--server.port",
             str(dashboard_port), "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "dashboard.log").open("w"))
        try:
            for port in ports:
                _wait(f"http://127.0.0.1:{port}/readyz")
            _wait(f"http://127.0.0.1:{lb_port}/readyz")
            yield {"store": store, "key": key, "ports": ports, "replicas": replicas, "home": home,
                   "url": url, "lb": f"http://127.0.0.1:{lb_port}", "image": next(data.rglob("*.jpg")),
                   "dashboard": f"http://127.0.0.1:{dashboard_port}"}
        finally:
            for process in (*replicas, balancer, dashboard):
                process.kill()
                process.wait(30)
            store.release()


def _overview(home: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The dashboard's Overview page run once on the store at ``url`` (what the dashboard process
    renders for a signed-in viewer), its query caches empty."""
    monkeypatch.setenv("SKINLESION_HOME", str(home))
    monkeypatch.setenv("SKINLESION_STORE_URL", url)
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(DASHBOARD / "views" / "overview.py"), default_timeout=180)
    at.session_state["skinlesion_user"] = User(name="ops", role="viewer")
    return at.run()


def test_replicas_behind_a_load_balancer_lose_nothing(cluster: dict,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store: Store = cluster["store"]
    image = cluster["image"].read_bytes()
    accepted: list[str] = []
    raw_errors: list[int] = []
    final_errors: list[str] = []
    done = threading.Semaphore(0)
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=cluster["lb"], headers={"X-API-Key": cluster["key"]},
                          timeout=60) as http:
            for _ in range(PER_CLIENT):
                for attempt in range(6):
                    try:
                        response = http.post("/v1/predictions", files={"image": ("i.jpg", image, "image/jpeg")},
                                             data={"age_approx": "55", "sex": "female",
                                                   "anatom_site_general": "posterior torso"})
                    except httpx.HTTPError as err:
                        status = type(err).__name__
                    else:
                        if response.status_code == 200:
                            with lock:
                                accepted.append(response.json()["request_id"])
                            break
                        status = response.status_code
                    with lock:
                        raw_errors.append(status)
                    time.sleep(0.2 * (attempt + 1))
                else:
                    with lock:
                        final_errors.append(str(status))
                done.release()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for _ in range(KILL_AFTER):
        done.acquire()
    victim = cluster["replicas"][1]
    victim.send_signal(signal.SIGKILL)  # mid-load: answers in flight there are never acknowledged
    for t in threads:
        t.join(600)

    assert final_errors == []
    assert len(accepted) == CLIENTS * PER_CLIENT and len(set(accepted)) == len(accepted)
    rows = store.query_predictions(source="api")
    logged = set(rows["request_id"])
    assert set(accepted) <= logged  # every accepted answer was durable before it was returned
    assert len(logged) - len(accepted) <= CLIENTS  # at most the answers lost in flight at the kill
    assert victim.poll() == -signal.SIGKILL

    # the monitor on the same database
    result = run_once(store, cluster["home"] / "models", load_policy(None))
    assert store.latest_snapshot() is not None and result is not None

    # a route change reaches every surviving replica within the route TTL
    store.set_route(ServingRoute(active_version="rules-b"), actor="ana", role="ml_lead",
                    reason="scale test: switch")
    changed_at = time.monotonic()
    survivors = [p for p, r in zip(cluster["ports"], cluster["replicas"], strict=True) if r is not victim]
    pending = set(survivors)
    while pending and time.monotonic() - changed_at < ROUTE_TTL_S + 3:
        for port in sorted(pending):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json().get("model_version") == "rules-b":
                pending.discard(port)
        time.sleep(0.1)
    assert pending == set(), f"replicas still on the old route after {ROUTE_TTL_S + 3} s: {pending}"

    # the dashboard on the same database: its server answers, and its Overview (whose windows end at
    # the last whole minute) shows every answer the replicas logged and the route set above
    assert _wait(f"{cluster['dashboard']}/_stcore/health", timeout_s=60).text == "ok"
    last_minute_over = rows["ts"].max().floor("min") + pd.Timedelta(minutes=1)
    time.sleep(max(0.0, (last_minute_over - pd.Timestamp.now(tz="UTC")).total_seconds()) + 0.5)
    overview = _overview(cluster["home"], cluster["url"], monkeypatch)
    assert not overview.exception, [e.value for e in overview.exception]
    assert any(f"{len(logged):,} answers" in c.value for c in overview.caption), \
        [c.value for c in overview.caption]
    assert any("Active model **rules-b**" in i.value for i in overview.info), \
        [i.value for i in overview.info]


def _count_until(url: str, stop_file: str, out_file: str) -> None:
    """Another process reading the DuckDB file while the API writes it (the dashboard's part)."""
    store = Store(url, busy_timeout_s=30)
    counts = []
    while not os.path.exists(stop_file):
        counts.append(store.count_predictions())
        time.sleep(0.05)
    Path(out_file).write_text(",".join(map(str, counts)))


def test_one_host_on_duckdb_answers_32_clients_without_errors(tmp_path: Path) -> None:
    """One API process on the embedded DuckDB store, a second process reading the file meanwhile:
    32 clients x 10 requests, every one answered (no 503 from the store lock), every answer
    logged, and the reader never fails."""
    home = tmp_path / "home"
    data = write_synthetic_dataset(tmp_path / "isic", n=64, seed=0, width=96)
    frame = read_dataset(data)
    register_fallback(home / "models", frame, split_dataset(frame, seed=0), data_name="synthetic",
                      version_id="reference", progress=False)
    url = f"duckdb://{home / 'data' / 'skinlesion.duckdb'}"
    store = Store(url)
    key = store.create_api_key("one-host")
    store.release()
    port = free_port()
    env = {**os.environ, "SKINLESION_HOME": str(home), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "SKINLESION_RATE_LIMIT_PER_ADDRESS": "100000/minute",
           "SKINLESION_RATE_LIMIT_PER_KEY": "100000/minute"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "skinlesion.api:create_app", "--factory",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                              env=env, stdout=subprocess.DEVNULL,
                              stderr=(tmp_path / "server.log").open("w"))
    stop, out = str(tmp_path / "stop"), str(tmp_path / "counts")
    reader = subprocess.Popen([sys.executable, "-c", "import sys; from tests.e2e.test_scale import "
                               "_count_until as c; c(*sys.argv[1:])", url, stop, out],
                              cwd=Path(__file__).resolve().parents[2])
    image = next(data.rglob("*.jpg")).read_bytes()
    statuses: list[int] = []
    accepted: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key},
                          timeout=120) as http:
            for _ in range(10):
                response = http.post("/v1/predictions", files={"image": ("i.jpg", image, "image/jpeg")},
                                     data={"age_approx": "40", "sex": "male",
                                           "anatom_site_general": "head/neck"})
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        accepted.append(response.json()["request_id"])

    try:
        _wait(f"http://127.0.0.1:{port}/readyz")
        threads = [threading.Thread(target=client) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
    finally:
        Path(stop).touch()
        reader_code = reader.wait(120)
        server.kill()
        server.wait(30)
    assert sorted(set(statuses)) == [200] and len(statuses) == 320
    assert reader_code == 0
    counts = [int(c) for c in Path(out).read_text().split(",") if c]
    assert counts and counts == sorted(counts)  # the reader only ever saw committed growth
    logged = Store(url).query_predictions(source="api")["request_id"]
    assert sorted(logged) == sorted(accepted)
