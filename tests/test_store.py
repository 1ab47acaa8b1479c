"""The DuckDB store: schema, round trips, idempotence, labels, route + audit, API keys, group commit,
and several OS processes sharing one file."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import threading
import uuid
from datetime import UTC, datetime, timedelta
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
from pydantic import ValidationError

import skinlesion.store.migrations as migrations
import skinlesion.store.route as route_sql
from skinlesion.errors import StoreBusyError, StoreError
from skinlesion.schema import CLASSES
from skinlesion.store import (
    SCHEMA_VERSION,
    LabelRecord,
    PredictionRecord,
    PredictionWriter,
    ServingRoute,
    Store,
)
from skinlesion.store.connection import parse_store_url

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _sha(n: int) -> str:
    return hashlib.sha256(f"image-{n}".encode()).hexdigest()


def _rid(tag: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{n}"))


def record(n: int, *, tag: str = "r", **overrides: object) -> PredictionRecord:
    """A valid prediction, deterministic in ``n``; its time is T0 + n minutes."""
    probs = dict(zip(CLASSES, (0.40, 0.30, 0.10, 0.05, 0.05, 0.04, 0.03, 0.03), strict=True))
    fields: dict[str, object] = dict(
        request_id=_rid(tag, n), ts=T0 + timedelta(minutes=n), source="api", model_version="v1",
        age_approx=None if n % 3 == 0 else 40 + n % 40, sex="female", anatom_site_general="lower extremity",
        image_sha256=_sha(n), width=600, height=450, brightness=0.5, contrast=0.2, saturation=0.3,
        mean_r=0.6, mean_g=0.4, mean_b=0.3, sharpness=12.5, probabilities=probs, p_malignant=0.58,
        predicted_class="MEL", decision="refer", decision_reason="p_malignant >= threshold",
        threshold=0.3, latency_ms=35.0, device="cpu",
        embedding=[0.1 * n, -0.2, 0.3] if n % 2 else None,
        texture_distance=None if n % 4 == 0 else 1.5 + n)
    fields.update(overrides)
    return PredictionRecord(**fields)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated, empty store on each backend (see ``store_url`` in conftest)."""
    store = Store(store_url)
    yield store
    store.release()


duckdb_only = pytest.mark.parametrize("store_url", ["duckdb"], indirect=True)


def _raw(store: Store, sql: str) -> list[tuple]:
    """Inspect the store directly (tests only; the package speaks SQL in skinlesion/store/ alone)."""
    if store.dialect == "postgresql":
        with psycopg.connect(store.url.dsn) as con:
            return con.execute(sql).fetchall()
    store.release()  # the process's kept connection gives the file up
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# --- schema ---------------------------------------------------------------------------------------------


def duckdb_store_before(path: Path, migration: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB file at ``path`` migrated up to the migration whose description starts with
    ``migration`` (not included), as an older release left it; its connection, open."""
    con = duckdb.connect(str(path))
    con.execute(migrations.SCHEMA_VERSION_DDL)
    for version, step in enumerate(migrations.MIGRATIONS, start=1):
        if step.description.startswith(migration):
            return con
        con.execute(migrations.migration_sql(step, "duckdb"))
        con.execute("INSERT INTO schema_version VALUES (?, now(), ?)", [version, step.description])
    raise AssertionError(f"no migration {migration!r}")


def test_schema_is_created_and_migrate_is_idempotent(store: Store, store_url: str) -> None:
    tables = {name for (name,) in _raw(store, "SELECT table_name FROM information_schema.tables")}
    assert {"schema_version", "predictions", "labels", "serving_route", "audit_log", "api_keys"} <= tables
    store.log_predictions([record(1)])

    assert store.migrate() == SCHEMA_VERSION
    reopened = Store(store_url)
    assert reopened.migrate() == SCHEMA_VERSION
    assert _raw(store, "SELECT count(*) FROM schema_version") == [(SCHEMA_VERSION,)]
    assert reopened.count_predictions() == 1


def test_snapshots_stored_before_the_simulated_flag_read_as_not_simulated(tmp_path: Path) -> None:
    """A store one migration behind (no ``health_snapshots.simulated``) keeps its snapshots: after
    the migration they read back as not simulated."""
    path = tmp_path / "old.duckdb"
    con = duckdb_store_before(path, "health snapshots: simulated flag")
    con.execute("INSERT INTO health_snapshots (id, ts, window_name, window_start, window_end, "
                "status) VALUES ('old', ?, '24h', ?, ?, 'green')", [T0, T0 - timedelta(days=1), T0])
    con.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.get_snapshot("old").simulated is False
    assert store.list_snapshots()["simulated"].tolist() == [False]


def _insert_before_texture(store_url: str, row: dict[str, object]) -> None:
    """A store at ``store_url`` migrated up to the texture column (not included), as the release
    before it left it, holding ``row`` in predictions."""
    url = parse_store_url(store_url)
    names = ", ".join(f'"{k}"' for k in row)
    if url.dialect == "duckdb":
        url.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb_store_before(url.path, "texture distance")
        con.execute(f"INSERT INTO predictions ({names}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))
        con.close()
        return
    with psycopg.connect(url.dsn) as con:
        con.execute(migrations.SCHEMA_VERSION_DDL)
        for version, step in enumerate(migrations.MIGRATIONS, start=1):
            if step.description.startswith("texture distance"):
                break
            con.execute(migrations.migration_sql(step, "postgresql"))
            con.execute("INSERT INTO schema_version VALUES (%s, now(), %s)", [version, step.description])
        con.execute(f"INSERT INTO predictions ({names}) VALUES ({', '.join('%s' for _ in row)})",
                    list(row.values()))


def test_predictions_stored_before_the_texture_column_migrate_with_it_null(store_url: str) -> None:
    """A store at the schema version before ``texture_distance`` (on each backend) opens, migrates,
    keeps its answers (the new column NULL) and takes answers with a texture distance."""
    old = record(1)
    _insert_before_texture(store_url, {k: v for k, v in old.to_row().items() if k != "texture_distance"})

    store = Store(store_url)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert _raw(store, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
        assert store.get_prediction(old.request_id) == old.model_copy(update={"texture_distance": None})
        store.log_predictions([record(2)])
        stored = store.query_predictions()["texture_distance"]
        assert stored.isna().tolist() == [True, False] and stored.iloc[1] == pytest.approx(3.5)
    finally:
        store.release()


@duckdb_only
def test_a_store_newer_than_the_code_is_refused(store: Store) -> None:
    store.release()
    con = duckdb.connect(str(store.path))
    con.execute("INSERT INTO schema_version VALUES (?, now(), 'from the future')", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="upgrade skinlesion"):
        Store(store.path)


# --- predictions ----------------------------------------------------------------------------------------


def test_log_get_query_round_trip(store: Store) -> None:
    rows = [record(n) for n in range(6)] + [record(6, model_version="v2", source="batch")]
    assert store.log_predictions(rows) == 7

    for row in rows:
        assert store.get_prediction(row.request_id) == row
    assert store.get_prediction(_rid("absent", 0)) is None

    window = store.query_predictions(T0 + timedelta(minutes=2), T0 + timedelta(minutes=5))
    assert list(window["request_id"]) == [r.request_id for r in rows[2:5]]  # [start, end)
    assert "embedding" not in window.columns
    assert window["p_MEL"].tolist() == pytest.approx([0.40] * 3)
    assert str(window["ts"].dt.tz) == "UTC"

    v2 = store.query_predictions(model_version="v2")
    assert list(v2["request_id"]) == [rows[6].request_id] and list(v2["source"]) == ["batch"]
    assert store.count_predictions(source="api") == 6
    newest = store.query_predictions(limit=2, newest_first=True, include_embedding=True)
    assert list(newest["request_id"]) == [rows[6].request_id, rows[5].request_id]
    assert list(newest["embedding"].iloc[1]) == pytest.approx([0.5, -0.2, 0.3])
    assert window["texture_distance"].tolist() == pytest.approx([3.5, 4.5, float("nan")], nan_ok=True)
    assert store.query_predictions()["texture_distance"].isna().tolist() == [r.texture_distance is None
                                                                              for r in rows]


def test_same_request_id_logged_twice_stays_one_row(store: Store) -> None:
    rows = [record(n) for n in range(3)]
    assert store.log_predictions(rows) == 3
    assert store.log_predictions(rows) == 0  # a retried transaction
    assert store.log_predictions([record(1, model_version="v9"), record(1), record(3)]) == 1
    assert store.count_predictions() == 4
    assert store.get_prediction(rows[1].request_id).model_version == "v1"  # first write wins


def test_invalid_records_are_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="probabilities"):
        record(1, probabilities=dict.fromkeys(CLASSES, 0.5))
    with pytest.raises(ValidationError, match="anatom_site_general"):
        record(1, anatom_site_general="elbow")
    with pytest.raises(ValidationError, match="returned"):
        record(1, model_role="shadow")  # shadow answers are not returned
    with pytest.raises(ValidationError, match="request_id"):
        LabelRecord(diagnosis="MEL", source="review", labelled_by="dr")
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ValidationError, match="texture_distance"):
            record(1, texture_distance=bad)


# --- labels ---------------------------------------------------------------------------------------------


def test_labels_join_by_request_id_and_image_hash_latest_wins(store: Store) -> None:
    answered = record(1)
    shadow = record(1, tag="shadow", model_role="shadow", model_version="v2", returned=False)
    by_hash = record(2)
    unlabelled = record(3)
    store.log_predictions([answered, shadow, by_hash, unlabelled])

    matched = store.add_labels([
        LabelRecord(request_id=answered.request_id, diagnosis="NV", source="review", labelled_by="dr a",
                    ts=T0 + timedelta(days=1)),
        LabelRecord(image_sha256=by_hash.image_sha256, diagnosis="BCC", source="histopathology",
                    labelled_by="lab", ts=T0 + timedelta(days=2)),
        LabelRecord(image_sha256=_sha(99), diagnosis="DF", source="import", labelled_by="csv"),
    ])
    assert matched == 2
    # histopathology arriving later but dated after the review overrides it; an older one does not
    store.add_labels([
        LabelRecord(image_sha256=answered.image_sha256, diagnosis="MEL", source="histopathology",
                    labelled_by="lab", ts=T0 + timedelta(days=3)),
        LabelRecord(request_id=by_hash.request_id, diagnosis="SCC", source="review", labelled_by="dr b",
                    ts=T0 + timedelta(days=1)),
    ])

    joined = store.labelled_predictions().set_index("request_id")
    assert set(joined.index) == {answered.request_id, shadow.request_id, by_hash.request_id}
    assert joined.loc[answered.request_id, "diagnosis"] == "MEL"
    assert joined.loc[answered.request_id, "label_source"] == "histopathology"
    assert joined.loc[shadow.request_id, "diagnosis"] == "MEL"  # same image, labelled via its hash
    assert joined.loc[by_hash.request_id, "diagnosis"] == "BCC"
    only_v2 = store.labelled_predictions(model_version="v2")
    assert list(only_v2["request_id"]) == [shadow.request_id]


def test_label_before_its_prediction_is_kept(store: Store) -> None:
    early = record(5)
    assert store.add_labels([LabelRecord(request_id=early.request_id, diagnosis="AK", source="review",
                                         labelled_by="dr")]) == 0
    store.log_predictions([early])
    assert list(store.labelled_predictions()["diagnosis"]) == ["AK"]


# --- serving route and audit -------------------------------------------------------------------------------


def test_default_route_then_change_is_audited_with_it(store: Store) -> None:
    assert store.get_route() == ServingRoute()
    assert store.get_route().active_version == "reference"
    route = ServingRoute(active_version="v1", fallback_version="fallback-1", challenger_version="v2",
                         challenger_share=0.1)
    entry = store.set_route(route, actor="ana", role="ml_lead", reason="canary for v2")

    assert store.get_route() == route
    audit = store.query_audit(action="set_route")
    assert list(audit["id"]) == [entry.id]
    assert audit["actor"].iloc[0] == "ana" and audit["reason"].iloc[0] == "canary for v2"
    assert audit["details"].iloc[0]["previous"]["active_version"] == "reference"
    assert audit["details"].iloc[0]["route"]["challenger_share"] == 0.1

    engaged = route.model_copy(update={"fallback_engaged": True})
    store.set_route(engaged, actor="bo", role="ml_lead", reason="red: recall below 0.75")
    assert store.get_route().fallback_engaged
    history = store.route_history()
    assert list(history["actor"]) == ["bo", "ana"]


def test_route_is_not_changed_when_its_audit_row_fails(store: Store, monkeypatch) -> None:
    def broken_audit(con, entry):
        raise RuntimeError("disk full")

    monkeypatch.setattr(route_sql, "insert_audit", broken_audit)
    with pytest.raises(RuntimeError, match="disk full"):
        store.set_route(ServingRoute(active_version="v9"), actor="ana", role="ml_lead", reason="x")
    monkeypatch.undo()
    assert store.get_route() == ServingRoute()
    assert store.route_history().empty


def test_inconsistent_route_is_rejected() -> None:
    with pytest.raises(ValidationError, match="challenger_version"):
        ServingRoute(challenger_share=0.2)
    with pytest.raises(ValidationError, match="fallback_version"):
        ServingRoute(fallback_engaged=True)
    with pytest.raises(ValidationError, match="threshold of 'v1' must lie in"):
        ServingRoute(threshold_overrides={"v1": 1.5})


def test_threshold_overrides_round_trip_with_their_history(store: Store) -> None:
    tuned = ServingRoute(active_version="v1", threshold_overrides={"v1": 0.31})
    store.set_route(ServingRoute(active_version="v1"), actor="ana", role="ml_lead", reason="deploy")
    store.set_route(tuned, actor="ana", role="ml_lead", reason="sensitivity 0.95")
    assert store.get_route() == tuned and store.get_route().threshold_for("v1") == 0.31
    assert store.get_route().threshold_for("v2") is None
    history = store.route_history()
    assert history["threshold_overrides"].tolist() == [{"v1": 0.31}, {}]
    assert store.query_audit(limit=1)["details"].iloc[0]["previous"]["threshold_overrides"] == {}


def test_audit_log_is_append_only(store: Store) -> None:
    audit_methods = sorted(m for m in dir(Store) if "audit" in m and not m.startswith("_"))
    assert audit_methods == ["append_audit", "query_audit", "verify_audit"]  # verify only reads
    first = store.append_audit("cleo", "dermatologist", "label", target="req-1", reason="biopsy result",
                               details={"diagnosis": "MEL"})
    second = store.append_audit("dan", "clinical_ops", "acknowledge_alert", target="alert-7")
    log = store.query_audit()
    assert list(log["id"]) == [second.id, first.id]  # newest first
    assert log["details"].iloc[1] == {"diagnosis": "MEL"}
    assert list(store.query_audit(actor="cleo")["action"]) == ["label"]


# --- API keys -------------------------------------------------------------------------------------------


def test_api_key_hash_only_verify_and_revoke(store: Store) -> None:
    key = store.create_api_key("mobile-app")
    other = store.create_api_key("web-app")

    stored = _raw(store, "SELECT * FROM api_keys")
    assert not any(key in str(value) for row in stored for value in row)
    assert hashlib.sha256(key.encode()).hexdigest() in {row[1] for row in stored}
    if store.path is not None:
        assert key.encode() not in store.path.read_bytes()

    assert store.verify_api_key(key) == "mobile-app"
    assert store.verify_api_key(key + "x") is None
    store.revoke_api_key("mobile-app", reason="phone lost")
    assert store.verify_api_key(key) is None
    assert store.verify_api_key(other) == "web-app"
    with pytest.raises(StoreError, match="already exists"):
        store.create_api_key("mobile-app")
    with pytest.raises(StoreError, match="known: mobile-app, web-app"):
        store.revoke_api_key("tablet")
    assert list(store.query_audit(target="mobile-app")["action"]) == ["revoke_api_key", "create_api_key"]


# --- group commit -------------------------------------------------------------------------------------------


class _GatedStore(Store):
    """A store whose first write waits at a gate, to observe what callers see meanwhile."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.entered, self.gate = threading.Event(), threading.Event()
        self.batches: list[int] = []

    def log_predictions(self, rows):  # type: ignore[override]
        rows = list(rows)
        self.batches.append(len(rows))
        self.entered.set()
        self.gate.wait(10)
        return super().log_predictions(rows)


def test_writer_acks_only_after_commit_and_batches_waiting_rows(tmp_path: Path) -> None:
    store = _GatedStore(tmp_path / "gated.duckdb")
    with PredictionWriter(store, max_batch=64) as writer:
        first = writer.submit_async(record(0))
        assert store.entered.wait(10)
        assert not first.done() and store.count_predictions() == 0

        futures: list = []
        threads = [threading.Thread(target=lambda n=n: futures.append(writer.submit_async(record(n))))
                   for n in range(1, 20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not any(f.done() for f in futures)
        store.gate.set()
        first.result(10)
        assert store.count_predictions() >= 1
        for f in futures:
            f.result(10)
    assert store.batches == [1, 19]
    assert store.count_predictions() == 20


def test_writer_concurrent_submits_land_exactly_once(store: Store) -> None:
    errors: list[BaseException] = []

    def submit(n: int) -> None:
        try:
            writer.submit(record(n), timeout=20)
        except (StoreError, TimeoutError) as err:
            errors.append(err)

    with PredictionWriter(store) as writer:
        threads = [threading.Thread(target=submit, args=(n,)) for n in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        writer.submit(record(3), timeout=20)  # a client retry of an acknowledged row
    assert errors == []
    frame = store.query_predictions()
    assert sorted(frame["request_id"]) == sorted(_rid("r", n) for n in range(24))
    assert writer.rows_written == 25


def test_writer_failure_reaches_every_waiting_caller(store: Store, monkeypatch) -> None:
    def busy(rows):
        raise StoreBusyError("locked by another process")

    writer = PredictionWriter(store, linger_s=0.05)
    monkeypatch.setattr(store, "log_predictions", busy)
    futures = [writer.submit_async(record(n)) for n in range(5)]
    for f in futures:
        with pytest.raises(StoreBusyError):
            f.result(10)
    monkeypatch.undo()
    writer.submit(record(7), timeout=10)  # the writer survives a failed batch
    writer.close()
    with pytest.raises(StoreError, match="closed"):
        writer.submit(record(8))
    assert list(store.query_predictions()["request_id"]) == [_rid("r", 7)]


def test_flush_and_close_write_what_was_queued(store: Store) -> None:
    writer = PredictionWriter(store, linger_s=0.05)
    first = [writer.submit_async(record(n)) for n in range(2)]
    writer.flush(timeout=10)
    assert all(f.done() for f in first) and store.count_predictions() == 2
    futures = [writer.submit_async(record(n)) for n in range(2, 6)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert store.count_predictions() == 6


# --- several processes ------------------------------------------------------------------------------------


def _hold_write_lock(path: str, holding, release) -> None:
    con = duckdb.connect(path)
    holding.set()
    release.wait(30)
    con.close()


@duckdb_only
def test_lock_conflicts_are_retried_then_reported_busy(store: Store) -> None:
    impatient = Store(store.path, busy_timeout_s=0.3)
    ctx = mp.get_context("spawn")
    holding, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_write_lock, args=(str(store.path), holding, release))
    store.release()
    holder.start()
    try:
        assert holding.wait(30)
        with pytest.raises(StoreBusyError, match="retry later"):
            impatient.count_predictions()

        threading.Timer(0.5, release.set).start()
        assert store.log_predictions([record(1)]) == 1  # waits for the holder, then succeeds
    finally:
        release.set()
        holder.join(30)
    assert holder.exitcode == 0
    assert store.count_predictions() == 1


def _log_in_small_transactions(path: str, tag: str, n: int, chunk: int) -> None:
    store = Store(path, busy_timeout_s=60)
    rows = [record(i, tag=tag) for i in range(n)]
    for start in range(0, n, chunk):
        store.log_predictions(rows[start:start + chunk])
    store.log_predictions(rows[:chunk])  # a retried transaction must not duplicate


def _read_counts(path: str, stop, counts) -> None:
    store = Store(path, busy_timeout_s=60)
    seen: list[int] = []
    while not stop.is_set():
        seen.append(store.count_predictions())
        stop.wait(0.01)
    counts.put(seen)


@duckdb_only
def test_two_writer_processes_and_a_reader_share_one_file(store: Store) -> None:
    ctx = mp.get_context("spawn")
    path, n = str(store.path), 200
    stop, counts = ctx.Event(), ctx.Queue()
    writers = [ctx.Process(target=_log_in_small_transactions, args=(path, tag, n, 10))
               for tag in ("writer-a", "writer-b")]
    reader = ctx.Process(target=_read_counts, args=(path, stop, counts))
    for p in (reader, *writers):
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    seen = counts.get(timeout=60)
    reader.join(60)

    assert [p.exitcode for p in (*writers, reader)] == [0, 0, 0]
    frame = store.query_predictions()
    expected = {_rid(tag, i) for tag in ("writer-a", "writer-b") for i in range(n)}
    assert len(frame) == 2 * n and set(frame["request_id"]) == expected
    assert seen and seen == sorted(seen) and seen[-1] <= 2 * n  # readers saw only committed growth
