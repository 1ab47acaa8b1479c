"""`make bench` store section: each backend (DuckDB file; PostgreSQL on a throwaway local server),
measured in one run on this machine.

- one 1-row transaction: DuckDB on its kept connection, against opening and closing the file for
  it (what every unit of work did before the kept connection), and PostgreSQL on a pooled one;
- logged rows/s through group commit (:class:`PredictionWriter`, as the API logs) at 8 and 32
  concurrent writers, every submit waiting for its durable commit; errors counted;
- health over a 30-day window of a calibrated synthetic log of ``--rows`` answers (1M by default):
  ``compute_health`` with its aggregates running in the database.

Results go under ``"store"`` in ``--out`` (``bench/store.json``; other keys there are kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from skinlesion.bench import machine, synthetic_log
from skinlesion.errors import SkinLesionError
from skinlesion.monitoring.health import compute_health
from skinlesion.monitoring.policy import load_policy
from skinlesion.records import PREDICTION_COLUMNS, PredictionRecord
from skinlesion.store import PredictionWriter, Store, local_server


def _records(n: int, tag: str) -> list[PredictionRecord]:
    frame, _ = _log(n, days=1, seed=sum(tag.encode()))
    frame["ts"] = frame["ts"].dt.floor("us")
    return [PredictionRecord.from_row({**row, "embedding": None, "ts": row["ts"].to_pydatetime()})
            for row in frame.drop(columns=["embedding"]).to_dict("records")]


def _log(n: int, **kwargs: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``skinlesion.bench.synthetic_log`` with every predictions column (NULL where it has none)."""
    frame, labels = synthetic_log(n, **kwargs)
    return frame.assign(**{c: None for c in PREDICTION_COLUMNS if c not in frame}), labels


def one_row_transactions(store: Store, rows: list[PredictionRecord], *,
                         reopen: bool) -> dict[str, float]:
    """Milliseconds per 1-row ``log_predictions``; with ``reopen`` the connection is given up
    before each (the open-per-unit-of-work way)."""
    times = []
    for row in rows:
        if reopen:
            store.release()
        start = time.perf_counter()
        store.log_predictions([row])
        times.append((time.perf_counter() - start) * 1000)
    return {"n": len(times), "median_ms": statistics.median(times),
            "p95_ms": sorted(times)[int(0.95 * (len(times) - 1))]}


def concurrent_writers(store: Store, rows: list[PredictionRecord], writers: int) -> dict[str, float]:
    """``writers`` threads submit ``rows`` (split between them) through one group-commit writer,
    each waiting for its row's commit; rows/s over the whole run, errors, batches."""
    errors: list[str] = []
    share = [rows[i::writers] for i in range(writers)]
    with PredictionWriter(store) as writer:
        def work(mine: list[PredictionRecord]) -> None:
            for row in mine:
                try:
                    writer.submit(row, timeout=60)
                except (SkinLesionError, TimeoutError) as err:
                    errors.append(type(err).__name__)

        threads = [threading.Thread(target=work, args=(mine,)) for mine in share]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        batches = writer.batches_written
    return {"writers": writers, "rows": len(rows), "rows_per_s": len(rows) / elapsed,
            "errors": len(errors), "batches": batches, "stored": store.count_predictions()}


def health_over(store: Store, n: int) -> dict[str, float]:
    frame, labels = _log(n)
    start_load = time.perf_counter()
    store.bulk_load(frame, labels)
    load_s = time.perf_counter() - start_load
    start = frame["ts"].min().floor("us").to_pydatetime()
    end = frame["ts"].max().ceil("us").to_pydatetime() + timedelta(seconds=1)
    begin = time.perf_counter()
    compute_health(store, start, end, policy=load_policy(None), resources=False)
    return {"rows": n, "bulk_load_s": load_s, "health_30d_s": time.perf_counter() - begin}


@contextmanager
def _stores(work: Path) -> Iterator[Callable[[str], Store]]:
    """A factory of empty stores per backend; PostgreSQL ones are fresh databases on one throwaway
    local server. Everything is released and removed on exit."""
    with ExitStack() as stack:
        server = (stack.enter_context(local_server.running_server())
                  if local_server.unavailable_reason() is None else None)
        made: list[Store] = []

        def make(backend: str) -> Store:
            if backend == "duckdb" or server is None:
                url: str | Path = work / f"{len(made)}.duckdb"
            else:
                url = stack.enter_context(server.database())
            store = Store(url, busy_timeout_s=60, pool_size=4)
            made.append(store)
            stack.callback(store.release)
            return store

        yield make


def bench_store(rows: int, *, one_row_n: int = 200, writer_rows: int = 3200) -> dict:
    """The store section (see the module docstring)."""
    backends = ["duckdb"] + (["postgresql"] if local_server.unavailable_reason() is None else [])
    out: dict = {"what": __doc__.split("\n\n")[1].strip(), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp, _stores(Path(tmp)) as make:
        for backend in backends:
            print(f"bench store: {backend}", file=sys.stderr)
            result: dict = {}
            store = make(backend)
            result["one_row_kept_ms"] = one_row_transactions(store, _records(one_row_n, "kept"),
                                                              reopen=False)
            if backend == "duckdb":
                result["one_row_reopened_ms"] = one_row_transactions(
                    store, _records(one_row_n, "reopened"), reopen=True)
                result["one_row_kept_over_reopened"] = (result["one_row_kept_ms"]["median_ms"]
                                                         / result["one_row_reopened_ms"]["median_ms"])
            for writers in (8, 32):
                result[f"writers_{writers}"] = concurrent_writers(
                    make(backend), _records(writer_rows, f"w{writers}"), writers)
            if rows:
                result["health"] = health_over(make(backend), rows)
            out["backends"][backend] = result
    if "postgresql" not in backends:
        out["postgresql_skipped"] = local_server.unavailable_reason()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/store.json"))
    parser.add_argument("--rows", type=int, default=1_000_000, help="answers in the health store (0: skip the health part)")
    parser.add_argument("--writer-rows", type=int, default=3200, help="rows logged per writers run")
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["store"] = bench_store(args.rows, writer_rows=args.writer_rows) | {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(json.dumps(results["store"], indent=2, default=float))


if __name__ == "__main__":
    main()
