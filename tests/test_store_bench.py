"""The store bench (`python -m skinlesion.store_bench`) on tiny sizes: every backend that can run
here is measured, each writers run stores every row without an error, and the health part loads
and reads its rows."""

from __future__ import annotations

import pytest

from skinlesion import store_bench
from skinlesion.store import local_server


def test_the_store_bench_measures_each_backend_and_loses_no_row() -> None:
    backends = store_bench.bench_store(3000, one_row_n=10, writer_rows=64)["backends"]
    expected = {"duckdb"} | ({"postgresql"} if local_server.unavailable_reason() is None else set())
    assert set(backends) == expected
    for measured in backends.values():
        for writers in (8, 32):
            run = measured[f"writers_{writers}"]
            assert (run["errors"], run["stored"], run["rows"]) == (0, 64, 64)
            assert run["rows_per_s"] > 0 and 1 <= run["batches"] <= 64
        assert measured["health"]["rows"] == 3000 and measured["health"]["health_30d_s"] > 0
    assert backends["duckdb"]["one_row_kept_over_reopened"] == pytest.approx(
        backends["duckdb"]["one_row_kept_ms"]["median_ms"]
        / backends["duckdb"]["one_row_reopened_ms"]["median_ms"])
