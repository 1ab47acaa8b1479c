"""The serving section of ``make bench``: what it reads from the server's /metrics and how it
reports a machine without a GPU (the timings themselves are never asserted)."""

from __future__ import annotations

import pytest

from skinlesion.api.metrics import ApiMetrics
from skinlesion.bench import no_gpu, phase_counts, server_counts


def _scrape(log_wait_s: list[float], forwards: int, images: int) -> dict[str, float]:
    metrics = ApiMetrics()
    metrics.watch_batching(lambda: {("v1", "active"): (forwards, images)})
    for seconds in log_wait_s:
        metrics.log_wait.observe(seconds)
        metrics.answer_time.observe(seconds * 3)
        metrics.latency.labels("predictions", "v1", "ok").observe(seconds * 5)
    return server_counts(metrics.render().decode())


def test_phase_counts_take_the_log_wait_share_and_the_batching_of_one_phase():
    before = _scrape([0.01, 0.03], forwards=4, images=4)
    after = _scrape([0.01, 0.03, 0.02, 0.02], forwards=6, images=12)
    assert before == pytest.approx({"request_s": 0.2, "log_wait_s": 0.04, "answer_s": 0.12,
                                    "forwards": 4, "images": 4})
    phase = phase_counts(before, after)
    assert phase["log_wait_share"] == pytest.approx(0.2)  # 0.04 s of 0.2 s in the phase
    assert phase["answer_share"] == pytest.approx(0.6)
    assert phase["images_per_forward"] == pytest.approx(4.0)  # 8 images in 2 forwards
    assert set(phase_counts(after, after).values()) == {None}


def test_without_a_gpu_the_section_says_so_and_keeps_the_last_gpu_run():
    measured = {"gpu": "NVIDIA H100 80GB HBM3", "cuda_latency": {"p50_ms": 24.6}}
    first = no_gpu(measured)
    assert first["gpu"].startswith("no GPU present") and first["earlier_run"] == measured
    assert no_gpu(first)["earlier_run"] == measured  # a second run without one keeps it too
    assert "earlier_run" not in no_gpu(None)
