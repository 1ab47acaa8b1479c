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
from datetime import UTC, datetime, timedelta
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
              n_concurrent: int = 240, clients: int = 8,
              server_log: Path = Path("bench/api-server.log")) -> dict:
    """A real server (``skinlesion serve``) on loopback over a fresh store: single-request latency,
    throughput with ``clients`` concurrent clients, the share of server time spent waiting for the
    log commit, and accepted vs logged predictions (must be equal). The server's output goes to
    ``server_log``."""
    with tempfile.TemporaryDirectory() as home:
        env = os.environ | {"SKINLESION_HOME": home, "SKINLESION_MODELS_DIR": str(models_dir),
                            "SKINLESION_DEVICE": "cpu"}
        store = Store(Path(home) / "data" / "skinlesion.duckdb")
        store.set_route(ServingRoute(active_version=version), actor="bench", role="ml_lead",
                        reason="benchmark")
        key = store.create_api_key("bench")
        port = _free_port()
        server_log.parent.mkdir(parents=True, exist_ok=True)
        server = subprocess.Popen([sys.executable, "-m", "skinlesion", "serve", "--port",
                                   str(port)], env=env, stdout=server_log.open("w"),
                                  stderr=subprocess.STDOUT)
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


# --- ML core ---------------------------------------------------------------------------------------


def bench_ml(work: Path, *, n_images: int = 240, n_latency: int = 40) -> tuple[dict, Path, str]:
    """Embedding extraction rate, head-training time and single-image end-to-end latency of a
    Lite0 model trained in head mode on a small synthetic set. Returns (results, models_dir, id)."""
    from skinlesion.data.readers import read_dataset
    from skinlesion.data.splits import split_dataset
    from skinlesion.data.synthetic import write_synthetic_dataset
    from skinlesion.register import register
    from skinlesion.train import TrainConfig, fit

    df = read_dataset(write_synthetic_dataset(work / "synthetic", n=n_images, seed=0))
    split = split_dataset(df, seed=0)
    config = TrainConfig(mode="head", epochs=20, train_views=("identity",), tta=("identity",),
                         device="cpu")
    cold, cold_s = timed(lambda: fit(df, split, config, work / "cache", progress=False))
    _, warm_s = timed(lambda: fit(df, split, config, work / "cache", progress=False))
    models_dir = work / "models"
    card = register(models_dir, cold.classifier, df, split, threshold=cold.threshold,
                    val_probs=cold.val_probs, data_name="bench synthetic", progress=False)
    return ({
        "what": f"EfficientNet-Lite0 {config.width}x{config.height}, {n_images} synthetic images, "
                "CPU",
        "embedding_extraction_images_per_s": n_images / max(cold_s - warm_s, 1e-9),
        "head_training_s": warm_s,
        "single_image_latency": single_image_latency(
            models_dir, card.id, [Path(p).read_bytes() for p in df["path"].iloc[:n_latency]]),
    }, models_dir, card.id)


def single_image_latency(models_dir: Path, version: str, images: list[bytes], *,
                         device: str = "cpu") -> dict:
    """Predictor.predict on JPEG bytes: decode, checks, preprocessing, model, statistics."""
    from skinlesion.predict import Predictor
    from skinlesion.schema import Metadata

    predictor = Predictor.from_registry(version, models_dir, device=device)
    meta = Metadata.from_raw(50, "female", "posterior torso")
    predictor.predict(images[0], meta)  # warm-up
    times = []
    for image in images:
        _, seconds = timed(lambda image=image: predictor.predict(image, meta))
        times.append(seconds * 1000)
    return percentiles(times)


def bench_gpu(models_dir: Path, images: list[bytes]) -> dict:
    """The shipped reference model on the GPU against the CPU: single-image latency on each, and
    the largest difference between their probabilities on the same images."""
    from skinlesion.predict import Predictor
    from skinlesion.schema import Metadata

    meta = [Metadata.from_raw(50, "female", "posterior torso")] * len(images)
    answers = {device: Predictor.from_registry("reference", models_dir, device=device)
               .predict_batch(images, meta) for device in ("cpu", "cuda")}
    diff = max(abs(a.probabilities[c] - b.probabilities[c])
               for a, b in zip(answers["cpu"], answers["cuda"], strict=True) for c in a.probabilities)
    return {"what": "reference model, Predictor.predict on JPEG bytes, one image at a time",
            "gpu": torch.cuda.get_device_name(0),
            "cuda_latency": single_image_latency(models_dir, "reference", images, device="cuda"),
            "cpu_latency": single_image_latency(models_dir, "reference", images, device="cpu"),
            "max_abs_probability_diff_cpu_vs_cuda": diff}


def bench_reference(models_dir: Path, real_data: Path) -> dict:
    """The shipped reference model on the lesions it never saw (its test split)."""
    from skinlesion.data.readers import read_dataset
    from skinlesion.evaluate import evaluate_version, select_rows
    from skinlesion.registry import load_version

    version = load_version("reference", models_dir, device="cpu")
    rows, description = select_rows(version, read_dataset(real_data), models_dir, "test")
    report, seconds = timed(lambda: evaluate_version(
        version, rows, Path(tempfile.mkdtemp()), description=description, progress=False))
    s = report.metrics["summary"]
    return {"data": f"{real_data}: {description}", "auroc": s["auroc"],
            "balanced_accuracy": s["balanced_accuracy"], "sensitivity": s["recall"],
            "specificity": s["specificity"], "pauc_80": s["pauc_80"], "n": s["n"],
            "evaluation_s": seconds}


# --- monitoring at scale ---------------------------------------------------------------------------


def synthetic_log(n: int, *, days: int = 30, label_share: float = 0.3, seed: int = 0,
                  end: datetime | None = None):
    """``n`` logged answers over ``days`` days from a calibrated model (labels drawn from its
    probabilities), with labels for ``label_share`` of them and a monitoring embedding each:
    vectorised, for benchmarks."""
    import pandas as pd

    from skinlesion.model.neural import MONITORING_DIM
    from skinlesion.schema import CLASSES, DEFAULT_MALIGNANT, SITES
    from skinlesion.store import IMAGE_STAT_COLUMNS

    rng = np.random.default_rng(seed)
    end = end or datetime.now(UTC)
    ts = pd.to_datetime(end.timestamp() - rng.uniform(0, days * 86400, n), unit="s", utc=True)
    probs = rng.dirichlet(np.full(len(CLASSES), 0.3), n)
    y = (probs.cumsum(1) > rng.random((n, 1))).argmax(1)  # calibrated: y ~ probs
    mal = np.isin(np.arange(len(CLASSES)), [CLASSES.index(c) for c in DEFAULT_MALIGNANT])
    frame = pd.DataFrame({
        "request_id": [f"{seed:08x}-0000-4000-8000-{i:012x}" for i in range(n)], "ts": ts,
        "source": "api", "model_version": "bench", "model_role": "active",
        "age_approx": rng.choice(np.arange(20, 90, 5), n).astype(float),
        "sex": rng.choice(["male", "female"], n), "anatom_site_general": rng.choice(SITES[:-1], n),
        "image_sha256": [f"{i:064x}" for i in range(n)],
        **{c: rng.normal(0.5, 0.1, n) for c in IMAGE_STAT_COLUMNS},
        **{f"p_{c}": probs[:, i] for i, c in enumerate(CLASSES)},
        "p_malignant": probs[:, mal].sum(1), "predicted_class": np.array(CLASSES)[probs.argmax(1)],
        "decision_reason": "", "threshold": 0.3, "latency_ms": rng.gamma(4, 20, n), "device": "cpu",
        "embedding": list(rng.normal(size=(n, MONITORING_DIM)).astype(np.float32)),
        "image_path": None, "simulated": True, "returned": True})
    frame["decision"] = np.where(frame["p_malignant"] >= 0.3, "refer", "no referral")
    labelled = rng.random(n) < label_share
    labels = pd.DataFrame({
        "id": [f"{seed:08x}-0000-4000-9000-{i:012x}" for i in np.flatnonzero(labelled)],
        "request_id": frame["request_id"][labelled].values, "image_sha256": None,
        "diagnosis": np.array(CLASSES)[y[labelled]], "source": "bench", "labelled_by": "bench",
        "ts": ts[labelled] + pd.Timedelta(days=2), "simulated": True})
    return frame, labels


def bench_monitoring(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)) -> dict:
    """Health (30-day window) and drift times over stores of growing size: DuckDB aggregates."""
    from skinlesion.monitoring.drift import compute_drift
    from skinlesion.monitoring.health import compute_health
    from skinlesion.monitoring.policy import load_policy

    policy = load_policy(None)
    out = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "bench.duckdb")
            frame, labels = synthetic_log(n)
            _, load_s = timed(lambda frame=frame, labels=labels: store.bulk_load(frame, labels))
            start = frame["ts"].min().to_pydatetime()
            end = frame["ts"].max().to_pydatetime() + timedelta(seconds=1)
            report, health_s = timed(lambda start=start, end=end: compute_health(
                store, start, end, policy=policy, resources=False))
            reference, _ = synthetic_log(5_000, seed=1)
            current, current_s = timed(lambda: store.sample_predictions(n=5_000, seed=0,
                                                                     include_embedding=True))
            _, drift_s = timed(lambda current=current: compute_drift(reference, current))
            out[f"{n}"] = {"bulk_load_s": load_s, "health_30d_s": health_s,
                           "drift_sample_s": current_s, "drift_s": drift_s,
                           "labelled": int(len(labels)),
                           "estimate_vs_realised_accuracy": _est_error(report, "accuracy"),
                           "estimate_vs_realised_recall": _est_error(report, "recall")}
    return {"what": "compute_health over a 30-day window and drift (monitoring embedding "
                    "included) of a 5,000-row sample against a 5,000-row reference, calibrated "
                    "synthetic log", "by_size": out}


def _est_error(report, metric: str) -> float | None:
    value = report.metrics.get(metric)
    if value is None or value.value is None or value.estimated is None:
        return None
    return abs(value.value - value.estimated)


def bench_demo_estimates(demo_db: Path) -> dict | None:
    """Estimated (before labels) vs realised metrics on the demo's daily snapshots."""
    if not demo_db.is_file():
        return None
    snaps = Store(demo_db).query_snapshots()
    out = {}
    for metric in ("accuracy", "recall", "precision", "auroc", "fnr"):
        rows = snaps[(snaps["metric"] == metric) & snaps["value"].notna()
                     & snaps["estimated"].notna()]
        if len(rows):
            err = (rows["value"] - rows["estimated"]).abs()
            out[metric] = {"mean_abs_error": float(err.mean()), "max_abs_error": float(err.max()),
                           "windows": int(len(rows))}
    return {"what": "daily 24 h demo snapshots with enough labels", "by_metric": out}


def _sample_images(work: Path, n: int = 40) -> list[bytes]:
    """``n`` JPEGs of the bench's synthetic set (written by the ML section, or here if skipped)."""
    if not (work / "synthetic").is_dir():
        from skinlesion.data.synthetic import write_synthetic_dataset

        write_synthetic_dataset(work / "synthetic", n=n, seed=0)
    return [p.read_bytes() for p in sorted(work.glob("synthetic/*/*.jpg"))[:n]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--real-data", type=Path, default=None)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: "
                        "ml,api,gpu,reference,monitoring,demo")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results |= {"generated": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine()}

    def save() -> None:
        """Written after every section: a failing section keeps the numbers measured before it."""
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        if "ml" not in skip:
            print("bench: ML core", file=sys.stderr)
            results["ml"], models_dir, version = bench_ml(Path(tmp))
            save()
        has_reference = (args.models_dir / "reference").is_dir()
        if "api" not in skip:
            print("bench: API", file=sys.stderr)
            api_models, api_version = ((args.models_dir, "reference") if has_reference
                                       else (models_dir, version))
            results["api"] = (bench_api(api_models, api_version, _sample_images(Path(tmp)))
                              | {"model": api_version})
            save()
        if "gpu" not in skip and has_reference and torch.cuda.is_available():
            print("bench: reference model on the GPU", file=sys.stderr)
            results["gpu"] = bench_gpu(args.models_dir, _sample_images(Path(tmp)))
            save()
        if "reference" not in skip and has_reference and args.real_data and args.real_data.is_dir():
            print("bench: reference model on real data", file=sys.stderr)
            results["reference"] = bench_reference(args.models_dir, args.real_data)
            save()
    if "monitoring" not in skip:
        print("bench: monitoring at scale", file=sys.stderr)
        results["monitoring"] = bench_monitoring()
        save()
    if "demo" not in skip:
        from skinlesion.settings import Settings

        results["demo_estimates"] = bench_demo_estimates(
            Settings().data_dir / "demo" / "data" / "skinlesion.duckdb")
    save()
    print(str(args.out))


if __name__ == "__main__":
    main()
