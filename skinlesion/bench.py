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


def _counter_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}_total(?:{{[^}}]*}})? (\S+)$", text, re.M))


def server_counts(text: str) -> dict[str, float]:
    """What the server's /metrics says so far: seconds of request time and of log wait, network
    forwards and the images they carried."""
    return {"request_s": _histogram_sum(text, "skinlesion_request_latency_seconds"),
            "log_wait_s": _histogram_sum(text, "skinlesion_log_wait_seconds"),
            "answer_s": _histogram_sum(text, "skinlesion_answer_seconds"),
            "forwards": _counter_sum(text, "skinlesion_inference_forwards"),
            "images": _counter_sum(text, "skinlesion_inference_images")}


def phase_counts(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """One phase of a run from the server's counts before and after it: the shares of request time
    spent being answered by the model and waiting for the log commit (the rest: HTTP, upload
    parsing, checks, hand-over to a worker thread), and the images per network forward (above 1:
    concurrent requests shared forwards)."""
    d = {k: after[k] - before[k] for k in after}
    return {"answer_share": d["answer_s"] / d["request_s"] if d["request_s"] else None,
            "log_wait_share": d["log_wait_s"] / d["request_s"] if d["request_s"] else None,
            "images_per_forward": d["images"] / d["forwards"] if d["forwards"] else None}


def bench_api(models_dir: Path, version: str, images: list[bytes], *, runtime: str = "auto",
              n_single: int = 60, n_concurrent: int = 240, clients: int = 8,
              burst_clients: int = 32, burst_per_client: int = 10,
              server_log: Path = Path("bench/api-server.log")) -> dict:
    """A real server (``skinlesion serve``, ``SKINLESION_RUNTIME=runtime``) on loopback over a
    fresh store: single-request latency, throughput with ``clients`` concurrent clients, a burst of
    ``burst_clients`` clients x ``burst_per_client`` requests (errors counted), the share of server
    time spent waiting for the log commit, and accepted vs logged predictions (must be equal). The
    server's output goes to ``server_log``."""
    with tempfile.TemporaryDirectory() as home:
        env = os.environ | {"SKINLESION_HOME": home, "SKINLESION_MODELS_DIR": str(models_dir),
                            "SKINLESION_DEVICE": "cpu", "SKINLESION_RUNTIME": runtime,
                            # one client sends every request: the rate limits are not under test
                            "SKINLESION_RATE_LIMIT_PER_ADDRESS": "1000000/minute",
                            "SKINLESION_RATE_LIMIT_PER_KEY": "1000000/minute"}
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
        devices: set[str] = set()
        try:
            _wait_ready(base, server)

            def post(client: httpx.Client, i: int) -> tuple[int, float]:
                t = time.perf_counter()
                r = client.post(f"{base}/v1/predictions", headers={"X-API-Key": key},
                                files={"image": ("x.jpg", images[i % len(images)], "image/jpeg")},
                                data={"age_approx": "50", "sex": "female",
                                      "anatom_site_general": "posterior torso"})
                if r.status_code == 200:
                    devices.add(r.json()["device"])
                return r.status_code, (time.perf_counter() - t) * 1000

            def counts() -> dict[str, float]:
                return server_counts(httpx.get(f"{base}/metrics", timeout=30).text)

            with httpx.Client(timeout=120) as client:
                post(client, 0)  # warm-up (loads the model), not counted
                start_counts = counts()
                single = [post(client, i) for i in range(n_single)]
            single_counts = counts()

            def run(n_clients: int, n_requests: int) -> tuple[list[tuple[int, float]], float]:
                def worker(w: int) -> list[tuple[int, float]]:
                    with httpx.Client(timeout=120) as client:
                        return [post(client, i) for i in range(w, n_requests, n_clients)]

                start = time.perf_counter()
                with ThreadPoolExecutor(n_clients) as pool:
                    out = [r for rs in pool.map(worker, range(n_clients)) for r in rs]
                return out, time.perf_counter() - start

            results, wall = run(clients, n_concurrent)
            concurrent_counts = counts()
            burst, burst_wall = run(burst_clients, burst_clients * burst_per_client)
            end_counts = counts()
        finally:
            server.terminate()
            server.wait(timeout=60)
        accepted = 1 + sum(code == 200 for code, _ in single + results + burst)
        logged = store.count_predictions()
        return {
            "what": "POST /v1/predictions through a local uvicorn server on CPU, one image each",
            "runtime_setting": runtime,
            "answered_on": sorted(devices),
            "single_request": percentiles([ms for _, ms in single])
                              | phase_counts(start_counts, single_counts),
            "concurrent": {"clients": clients, "requests": n_concurrent,
                           "throughput_rps": n_concurrent / wall,
                           **percentiles([ms for _, ms in results]),
                           **phase_counts(single_counts, concurrent_counts)},
            "burst": {"clients": burst_clients, "requests": len(burst),
                      "errors": sum(code != 200 for code, _ in burst),
                      "throughput_rps": len(burst) / burst_wall,
                      **percentiles([ms for _, ms in burst]),
                      **phase_counts(concurrent_counts, end_counts)},
            "logging_share_of_server_time": phase_counts(start_counts, end_counts)["log_wait_share"],
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


def no_gpu(previous: dict | None) -> dict:
    """The ``gpu`` section of a run without CUDA: says so, and keeps the last run that had a GPU
    (with its own date and machine) under ``earlier_run``."""
    earlier = previous if previous and "cuda_latency" in previous else (previous or {}).get(
        "earlier_run")
    return {"what": "reference model on the GPU against the CPU",
            "gpu": "no GPU present (torch.cuda.is_available() is False)",
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            **({"earlier_run": earlier} if earlier else {})}


# --- serving at the speed of the hardware (issue 15) -----------------------------------------------


def bench_exports(models_dir: Path, version: str, real_data: Path) -> dict:
    """Export the version to every runtime and gate each on its reference images (done once: an
    export made before under the same key is reused); the gate reports."""
    from skinlesion.export import export_version

    return {r.runtime: r.summary() for r in export_version(models_dir, version, real_data)}


def bench_predictor(models_dir: Path, version: str, images: list[bytes], *,
                    runtimes: tuple[str, ...], rounds: int = 3) -> dict:
    """``Predictor.predict`` (JPEG bytes to answer, all the version's views) in each runtime against
    one bare eager forward of its network on one view (the folded inference network, batch 1,
    ``inference_mode``, on the same preprocessed input and the same threads), the views as separate
    eager forwards (the path before they were batched), and each runtime's network alone (all
    views, one image: what ``predict`` spends outside it is decoding, preprocessing, image
    statistics, OOD and decision). Interleaved image by image, so load from other processes falls
    on all alike."""
    import pandas as pd

    from skinlesion.data.images import load_image
    from skinlesion.data.transforms import apply_view
    from skinlesion.predict import Predictor
    from skinlesion.schema import Metadata

    meta = Metadata.from_raw(50, "female", "posterior torso")
    predictors = {rt: Predictor.from_registry(version, models_dir, device="cpu", runtime=rt)
                  for rt in ("torch", *runtimes)}
    auto = Predictor.from_registry(version, models_dir, device="cpu", runtime="auto").runtime
    clf = predictors["torch"].version.classifier
    net = clf._network()
    frame = pd.DataFrame([meta.as_dict()]).astype({"age_approx": float})
    inputs = [(clf.preprocessing([load_image(b)]), clf._metadata(frame, 1)) for b in images]

    @torch.inference_mode()
    def bare(x: torch.Tensor, m: torch.Tensor) -> None:
        net(x, m)

    @torch.inference_mode()
    def sequential(x: torch.Tensor, m: torch.Tensor) -> None:
        sum(net.classify(net.embed(apply_view(x, v)), m) for v in clf.tta)

    engines = {rt: p.version.classifier.engine() for rt, p in predictors.items()}
    times: dict[str, list[float]] = {"bare_forward_1_view": [], "eager_sequential_views": [],
                                     **{f"network_{rt}": [] for rt in predictors},
                                     **{f"predict_{rt}": [] for rt in predictors}}
    for image, (x, m) in zip(images[:2], inputs[:2], strict=True):  # warm-up
        bare(x, m)
        for p in predictors.values():
            p.predict(image, meta)
    for _ in range(rounds):
        for image, (x, m) in zip(images, inputs, strict=True):
            times["bare_forward_1_view"].append(timed(lambda x=x, m=m: bare(x, m))[1] * 1000)
            times["eager_sequential_views"].append(
                timed(lambda x=x, m=m: sequential(x, m))[1] * 1000)
            for rt, p in predictors.items():
                times[f"network_{rt}"].append(
                    timed(lambda e=engines[rt], x=x, m=m: e(x, m))[1] * 1000)
                times[f"predict_{rt}"].append(
                    timed(lambda p=p, image=image: p.predict(image, meta))[1] * 1000)
    out = {name: percentiles(ms) for name, ms in times.items()}
    bare_p50 = out["bare_forward_1_view"]["p50_ms"]
    return {"what": f"version {version}, {len(clf.tta)} views ({', '.join(clf.tta)}), "
                    f"{len(images)} JPEGs x {rounds} rounds, CPU, interleaved",
            "auto_picks": auto, "timings": out,
            "ratio_to_bare_forward": {name: v["p50_ms"] / bare_p50 for name, v in out.items()}}


def bench_agreement(models_dir: Path, version: str, real_data: Path, *,
                    runtimes: tuple[str, ...], n_images: int | None = None) -> dict:
    """Each runtime against eager torch on the version's test split of the real data (or a seeded
    sample of ``n_images`` of it): largest |Δp|, changed referral decisions and predicted
    classes, and the AUROC (malignant vs benign) of each."""
    from skinlesion import metrics
    from skinlesion.data.images import load_image
    from skinlesion.data.readers import read_dataset
    from skinlesion.evaluate import select_rows
    from skinlesion.model.runtime import Agreement, answers, select_runtime
    from skinlesion.registry import load_version
    from skinlesion.schema import METADATA_FIELDS, class_index, malignant_mask

    v = load_version(version, models_dir, device="cpu")
    rows, description = select_rows(v, read_dataset(real_data), models_dir, "test")
    if n_images is not None and n_images < len(rows):
        rows = rows.sample(n_images, random_state=0)
        description = f"a seeded sample of {n_images} of {description}"
    images = [load_image(p) for p in rows["path"]]
    meta = rows.loc[:, list(METADATA_FIELDS)]
    y = np.array([class_index(d) for d in rows["diagnosis"]])
    mask = np.array(malignant_mask(v.card.malignant))
    eager, _ = answers(v.classifier, None, images, meta)
    out = {"torch": {"auroc": metrics.summary(y, eager, threshold=v.card.threshold)["auroc"]}}
    for rt in runtimes:
        engine = select_runtime(v.classifier, v.id, v.path, rt).engine
        probs, _ = answers(v.classifier, engine, images, meta)
        agreement = Agreement.of(eager, probs, threshold=v.card.threshold, malignant=mask)
        out[rt] = {"auroc": metrics.summary(y, probs, threshold=v.card.threshold)["auroc"],
                   "max_abs_dp": agreement.max_abs_dp,
                   "changed_decisions": agreement.changed_decisions,
                   "changed_classes": agreement.changed_classes}
    return {"data": f"{real_data}: {description}", "n": len(rows), "by_runtime": out}


def serving_ratios(predictor: dict, api: dict, api_eager: dict) -> dict:
    """The issue's targets as ratios of one run (the API's answers say which runtime served)."""
    answered = api["answered_on"][0].split("/")[-1] if api["answered_on"] else "torch"
    runtime = answered if answered in ("openvino", "onnxruntime") else "torch"
    predict_p50 = predictor["timings"][f"predict_{runtime}"]["p50_ms"]
    eager_rps = api_eager["concurrent"]["throughput_rps"]
    return {
        "served_by": runtime,
        "predict_over_bare_forward": predictor["ratio_to_bare_forward"][f"predict_{runtime}"],
        "api_p50_over_predict_p50": api["single_request"]["p50_ms"] / predict_p50,
        "log_wait_share": api["logging_share_of_server_time"],
        "throughput_8_clients_rps": api["concurrent"]["throughput_rps"],
        "throughput_over_eager_path": api["concurrent"]["throughput_rps"] / eager_rps,
        "images_per_forward_8_clients": api["concurrent"].get("images_per_forward"),
        "log_wait_share_single_request": api["single_request"].get("log_wait_share"),
        "answer_share_single_request": api["single_request"].get("answer_share"),
        "burst_32x10": {k: api["burst"][k] for k in ("clients", "requests", "errors")}
                       | {"accepted": api["accepted"], "logged": api["logged"]},
        "targets": {"predict_over_bare_forward": "<= 0.8", "api_p50_over_predict_p50": "<= 1.2",
                    "log_wait_share": "<= 0.10", "throughput_8_clients_rps": ">= 30 (quiet)",
                    "throughput_over_eager_path": ">= 4", "burst_32x10": "0 errors, accepted == logged"},
    }


def bench_serving(models_dir: Path, real_data: Path, *, n_images: int = 20,
                  agreement_images: int | None = None) -> dict:
    """The reference model served: its exports and their gate, ``Predictor.predict`` against a
    bare forward, the API in the eager (``runtime=torch``) and default (``auto``) runtimes, the
    issue's ratios, and each runtime's agreement with eager on the real test split. The machine's
    load average is recorded before and after (other processes share it)."""
    from skinlesion.data.readers import read_dataset

    load_before = os.getloadavg()
    exports = bench_exports(models_dir, "reference", real_data)
    gated = tuple(rt for rt, report in exports.items() if report["passed"])
    paths = read_dataset(real_data)["path"].sort_values().iloc[:n_images]
    images = [Path(p).read_bytes() for p in paths]
    predictor = bench_predictor(models_dir, "reference", images, runtimes=gated)
    api = bench_api(models_dir, "reference", images, runtime="auto")
    api_eager = bench_api(models_dir, "reference", images, runtime="torch",
                          server_log=Path("bench/api-server-eager.log"))
    return {"load_average_before": load_before, "exports": exports, "predictor": predictor,
            "api_auto": api, "api_eager": api_eager,
            "ratios": serving_ratios(predictor, api, api_eager),
            "agreement": bench_agreement(models_dir, "reference", real_data, runtimes=gated,
                                         n_images=agreement_images),
            "load_average_after": os.getloadavg()}


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


def bench_monitoring_validation(models_dir: Path, real_data: Path, out: Path) -> dict:
    """The monitoring validation replay (:mod:`skinlesion.monitoring.replay`) of the reference
    model on the real data, written to ``out`` (bench/monitoring_validation.json); bench/results.json
    keeps a summary per scenario."""
    from skinlesion.monitoring.policy import load_policy
    from skinlesion.monitoring.replay import validate_monitoring
    from skinlesion.settings import Settings

    results = validate_monitoring(real_data, models_dir, Settings().cache_dir / "monitoring-validation",
                                  policy=load_policy())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return {"file": str(out), "ood_gate": results["ood_gate"],
            "scenarios": {s["scenario"]: {k: s[k] for k in ("drift_red_rate", "drift_yellow_rate",
                                                           "quality_red_rate", "detection_delay_hours")}
                          for s in results["scenarios"]}}


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
                        "ml,serving,api,gpu,reference,monitoring,validation,demo (serving, which needs the "
                        "reference model and --real-data, measures the API itself)")
    parser.add_argument("--agreement-images", type=int, default=None,
                        help="runtime agreement on a seeded sample of this many test images "
                             "(default: the whole test split)")
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
        real = has_reference and args.real_data is not None and args.real_data.is_dir()
        if "serving" not in skip and real:
            print("bench: serving (exports, Predictor, API in the eager and auto runtimes)",
                  file=sys.stderr)
            results["serving"] = bench_serving(args.models_dir, args.real_data,
                                               agreement_images=args.agreement_images)
            results["api"] = results["serving"]["api_auto"] | {"model": "reference"}
            save()
        elif "api" not in skip:
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
        elif "gpu" not in skip:
            results["gpu"] = no_gpu(results.get("gpu"))
            save()
        if "reference" not in skip and has_reference and args.real_data and args.real_data.is_dir():
            print("bench: reference model on real data", file=sys.stderr)
            results["reference"] = bench_reference(args.models_dir, args.real_data)
            save()
    if "monitoring" not in skip:
        print("bench: monitoring at scale", file=sys.stderr)
        results["monitoring"] = bench_monitoring()
        save()
    if "validation" not in skip and has_reference and args.real_data and args.real_data.is_dir():
        print("bench: monitoring validation (real-image replays)", file=sys.stderr)
        results["monitoring_validation"] = bench_monitoring_validation(
            args.models_dir, args.real_data, args.out.parent / "monitoring_validation.json")
        save()
    if "demo" not in skip:
        from skinlesion.settings import Settings

        results["demo_estimates"] = bench_demo_estimates(
            Settings().data_dir / "demo" / "data" / "skinlesion.duckdb")
    save()
    print(str(args.out))


if __name__ == "__main__":
    main()
