"""How much server memory concurrent large images add (issue 16, item 5), measured on a real server.

``python -m skinlesion.api.memory_bench [--models-dir models] [--version reference] [--out FILE]``
starts a uvicorn server on the given model version, warms it with one small image, then sends
``--concurrent`` (8) PNGs of 6300x6300 pixels (about 120 KB each on the wire, 40 Mpx decoded, under
the pixel limit) at once and samples the server's resident memory every 10 ms. It does so twice:
with the default decode budget (one such image decoded at a time) and with a budget large enough
for all of them (no bound), and prints (and writes) the peak increase over the warm baseline, the
statuses and the wall time of each run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from PIL import Image, ImageDraw

from skinlesion.data.images import MAX_PIXELS
from skinlesion.store import ServingRoute, Store

SIDE = 6300
MIB = 2**20


def large_png(side: int = SIDE) -> bytes:
    """A skin-coloured square with a dark lesion: compresses to about 120 KB, decodes to side² px."""
    image = Image.new("RGB", (side, side), (196, 150, 128))
    ImageDraw.Draw(image).ellipse((side // 3, side // 3, 2 * side // 3, 2 * side // 3),
                                  fill=(92, 60, 48))
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (180, 120, 100)).save(buf, "PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(base: str, key: str, image: bytes) -> int:
    with httpx.Client(timeout=300) as client:
        return client.post(f"{base}/v1/predictions", headers={"X-API-Key": key},
                           files={"image": ("lesion.png", image, "image/png")}).status_code


def measure(models_dir: Path, version: str, budget_px: int, concurrent: int, image: bytes) -> dict:
    """Peak RSS increase of a fresh server answering ``concurrent`` copies of ``image`` at once."""
    with tempfile.TemporaryDirectory() as home:
        store = Store(Path(home) / "data" / "skinlesion.duckdb")
        key = store.create_api_key("memory-bench")
        store.set_route(ServingRoute(active_version=version), actor="memory-bench", role="ml_lead",
                        reason="memory measurement")
        port = _free_port()
        env = {**os.environ, "SKINLESION_HOME": home, "SKINLESION_MODELS_DIR": str(models_dir),
               "SKINLESION_DECODE_BUDGET_PX": str(budget_px), "SKINLESION_DECODE_WAIT_S": "120",
               "SKINLESION_MAX_UPLOAD_BYTES": str(20 * MIB), "OMP_NUM_THREADS": "1"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "skinlesion.api:create_app", "--port",
             str(port), "--log-level", "warning"], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert _post(base, key, small_png()) == 200, "warm-up request failed"
            proc = psutil.Process(server.pid)
            time.sleep(1.0)
            baseline = proc.memory_info().rss
            peak, done = baseline, threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, proc.memory_info().rss)
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrent) as pool:
                statuses = list(pool.map(lambda _: _post(base, key, image), range(concurrent)))
            wall = time.perf_counter() - start
            done.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(30)
    return {"decode_budget_px": budget_px, "concurrent": concurrent, "statuses": statuses,
            "baseline_rss_mib": round(baseline / MIB, 1),
            "peak_added_mib": round((peak - baseline) / MIB, 1),
            "wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--version", default="reference")
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    image = large_png()
    runs = [measure(args.models_dir.resolve(), args.version, budget, args.concurrent, image)
            for budget in (MAX_PIXELS, MAX_PIXELS * args.concurrent)]
    result = {"image": f"PNG {SIDE}x{SIDE}, {len(image) / 1024:.0f} KiB", "runs": runs}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
