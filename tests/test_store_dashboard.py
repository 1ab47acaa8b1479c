"""Store queries written for the dashboard (on each backend): the versions that answered, and
operations per hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skinlesion.store import FailureRecord, Store
from tests.monitoring.traffic import traffic

T0 = datetime(2024, 3, 1, 8, tzinfo=UTC)


def _store(store_url: str) -> Store:
    store = Store(store_url)
    first, _ = traffic(T0, n=30, seed=1, span=timedelta(hours=3), model_version="v1")
    second, _ = traffic(T0 + timedelta(hours=2), n=10, seed=2, span=timedelta(hours=1), model_version="v2")
    second = [p.model_copy(update={"source": "batch", "latency_ms": 900.0, "decision": "uncertain"})
              for p in second]
    store.log_predictions([*first, *second])
    return store


def test_version_counts_lists_the_versions_that_answered(store_url: str):
    store = _store(store_url)
    counts = store.version_counts()
    assert dict(zip(counts["model_version"], counts["n"], strict=True)) == {"v1": 30, "v2": 10}
    assert counts.set_index("model_version").loc["v2", "roles"] == "active"
    early = store.version_counts(T0, T0 + timedelta(hours=2))  # before v2 answered
    assert early["model_version"].tolist() == ["v1"]


def test_hourly_operations_counts_latency_and_decisions_per_hour(store_url: str):
    store = _store(store_url)
    hourly = store.hourly_operations(T0, T0 + timedelta(hours=3))
    assert hourly["n"].sum() == 40
    assert len(hourly) == 3
    last = hourly.iloc[-1]  # 10:00-11:00 holds every batch answer: slow and uncertain
    assert last["uncertain"] == 10 and last["latency_p99_ms"] > 800
    assert hourly.iloc[0]["uncertain"] == 0 and hourly.iloc[0]["latency_p95_ms"] < 100
    by_source = store.hourly_operations(T0, T0 + timedelta(hours=3), by_source=True)
    assert by_source.groupby("source")["n"].sum().to_dict() == {"api": 30, "batch": 10}
    only_batch = store.hourly_operations(T0, T0 + timedelta(hours=3), source="batch")
    assert only_batch["n"].tolist() == [10]


def test_hourly_operations_and_failure_counts_include_failed_requests(store_url: str):
    store = _store(store_url)
    plant = [(T0 + timedelta(minutes=10), "api", "rejected", 422, None),
             (T0 + timedelta(minutes=20), "api", "error", 500, "v1"),
             (T0 + timedelta(minutes=30), "api", "unauthorized", 401, None),  # not in the rate
             (T0 + timedelta(hours=5), "api", "unavailable", 503, None)]  # an hour without answers
    for ts, source, kind, status, version in plant:
        store.log_failure(FailureRecord(ts=ts, source=source, kind=kind, http_status=status,
                                        model_version=version))
    hourly = store.hourly_operations(T0, T0 + timedelta(hours=6)).set_index("hour")
    first = hourly.loc[T0]
    assert (first["failures"], first["error_rate"]) == (2, 2 / (2 + first["n"]))
    down = hourly.loc[T0 + timedelta(hours=5)]
    assert (down["n"], down["failures"], down["error_rate"]) == (0, 1, 1.0)
    assert hourly["n"].sum() == 40 and hourly["failures"].sum() == 3
    by_source = store.hourly_operations(T0, T0 + timedelta(hours=6), by_source=True)
    assert by_source.groupby("source")["failures"].sum().to_dict() == {"api": 3, "batch": 0}
    assert store.failure_counts(T0, T0 + timedelta(hours=6)) == {
        "rejected": 1, "unauthorized": 1, "unavailable": 1, "error": 1}
    assert store.failure_counts(T0, T0 + timedelta(hours=6), model_version="v1")["error"] == 1
    assert sum(store.failure_counts(T0, T0 + timedelta(hours=6), source="batch").values()) == 0
    assert store.log_failure(FailureRecord(request_id=store.query_failures().iloc[0]["request_id"],
                                           kind="error", http_status=500)) is False  # idempotent
