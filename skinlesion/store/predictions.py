"""Predictions with their labels and request failures, and the monitoring aggregates over them.

Counts, percentiles and sums run in the database, so a health window over millions of answers never
loads them into memory; only the labelled minority comes back row by row, and only the columns the
label-based metrics need. A prediction's label is the latest (by time, then arrival) of those given
for its request id or its image hash. SQL is written once where DuckDB and PostgreSQL agree; the
few places where they do not (sampling, rounding) ask ``con.dialect``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import pandas as pd

from skinlesion.errors import DataError
from skinlesion.records import (
    DECISIONS,
    ERROR_RATE_KINDS,
    FAILURE_KINDS,
    LABEL_COLUMNS,
    PREDICTION_COLUMNS,
    PROBABILITY_COLUMNS,
    FailureRecord,
    LabelRecord,
    PredictionRecord,
    canonical_uuid,
    utc,
)
from skinlesion.store.connection import Connection
from skinlesion.store.query import cols, limit, where

#: the predictions columns but the embedding (what the row-returning queries give by default)
_PLAIN_COLUMNS = tuple(c for c in PREDICTION_COLUMNS if c != "embedding")
_LABEL_READ_COLUMNS = (*LABEL_COLUMNS, "seq")
#: predictions columns a bulk load may leave out: ``api_client`` (answers not asked through the
#: API) and ``texture_distance`` (answers of a version whose OOD gate has no texture check)
OPTIONAL_BULK_COLUMNS = ("api_client", "texture_distance")


def _columns(include_embedding: bool, alias: str | None = None) -> str:
    return cols(PREDICTION_COLUMNS if include_embedding else _PLAIN_COLUMNS, alias)


def _latest(candidates: str, key: str) -> str:
    """The latest row per ``key`` of the relation ``candidates`` (by ``ts``, then ``seq``)."""
    return (f"SELECT * FROM (SELECT c.*, row_number() OVER (PARTITION BY c.{key} "
            f"ORDER BY c.ts DESC, c.seq DESC) AS rn FROM {candidates} c) ranked WHERE rn = 1")


def _prediction_filters(model_version: str | None, source: str | None, model_role: str | None,
                        simulated: bool | None, returned: bool | None) -> dict[str, object]:
    return dict(model_version=model_version, source=source, model_role=model_role,
                simulated=simulated, returned=returned)


# --- writing ---


def log(con: Connection, rows: Iterable[PredictionRecord]) -> int:
    """Store ``rows``; returns how many were new (idempotent on ``request_id``: first write wins)."""
    unique: dict[str, PredictionRecord] = {}
    for row in rows:
        unique.setdefault(row.request_id, row)
    if not unique:
        return 0
    return con.insert_rows("predictions", PREDICTION_COLUMNS,
                           [tuple(r.to_row().values()) for r in unique.values()], key="request_id")


def bulk_load(con: Connection, predictions: pd.DataFrame, labels: pd.DataFrame | None) -> int:
    """Already-validated rows in bulk (see :meth:`Store.bulk_load`); returns predictions inserted.
    The :data:`OPTIONAL_BULK_COLUMNS` may be left out (stored as NULL)."""
    predictions = predictions.assign(**{c: None for c in OPTIONAL_BULK_COLUMNS if c not in predictions.columns})
    missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
    if missing:
        raise DataError(f"bulk load needs the predictions columns; missing: {sorted(missing)}")
    inserted = con.insert("predictions", predictions.loc[:, list(PREDICTION_COLUMNS)])
    if labels is not None and len(labels):
        con.insert("labels", labels)
    return inserted


def add_labels(con: Connection, labels: Iterable[LabelRecord]) -> int:
    """Store ``labels``; returns how many match a logged prediction (see :meth:`Store.add_labels`)."""
    unique: dict[str, LabelRecord] = {}
    for label in labels:
        unique.setdefault(label.id, label)
    if not unique:
        return 0
    frame = pd.DataFrame([lab.model_dump() for lab in unique.values()], columns=list(LABEL_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    con.stage("incoming", frame, like="labels")
    con.run(f"""
        INSERT INTO labels ({cols(LABEL_COLUMNS)})
        SELECT i.id, i.request_id, coalesce(i.image_sha256, p.image_sha256), i.diagnosis, i.source,
               i.labelled_by, i.ts, i.simulated
        FROM incoming i LEFT JOIN predictions p ON p.request_id = i.request_id
        ON CONFLICT DO NOTHING""")
    (matched,) = con.aggregate("""
        SELECT count(*) FROM incoming i
        WHERE i.request_id IN (SELECT request_id FROM predictions)
           OR i.image_sha256 IN (SELECT image_sha256 FROM predictions)""")
    return int(matched)


def log_failure(con: Connection, failure: FailureRecord) -> bool:
    return bool(con.run(
        "INSERT INTO request_failures (request_id, ts, source, model_version, http_status, kind, "
        "field) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [failure.request_id, failure.ts, failure.source, failure.model_version, failure.http_status,
         failure.kind, failure.field]))


# --- reading rows ---


def get(con: Connection, request_id: str) -> PredictionRecord | None:
    rid = canonical_uuid(request_id, "request_id")
    row = con.first(f"SELECT {cols(PREDICTION_COLUMNS)} FROM predictions WHERE request_id = ?", [rid])
    return None if row is None else PredictionRecord.from_row(row)


def owned(con: Connection, api_client: str, request_ids: Iterable[str],
          image_hashes: Iterable[str]) -> tuple[set[str], set[str]]:
    """Which of ``request_ids`` and ``image_hashes`` belong to answers ``api_client`` asked for."""
    rids = sorted({canonical_uuid(r, "request_id") for r in request_ids})
    hashes = sorted(set(image_hashes))
    own_rids = {r for (r,) in con.rows(
        f"SELECT request_id FROM predictions WHERE api_client = ? AND request_id IN "
        f"({', '.join('?' for _ in rids)})", [api_client, *rids])} if rids else set()
    own_hashes = {h for (h,) in con.rows(
        f"SELECT DISTINCT image_sha256 FROM predictions WHERE api_client = ? AND image_sha256 IN "
        f"({', '.join('?' for _ in hashes)})", [api_client, *hashes])} if hashes else set()
    return own_rids, own_hashes


def query(con: Connection, start: datetime | None, end: datetime | None, *,
          model_version: str | None = None, source: str | None = None, model_role: str | None = None,
          simulated: bool | None = None, returned: bool | None = None, limit_rows: int | None = None,
          newest_first: bool = False, include_embedding: bool = False) -> pd.DataFrame:
    clause, params = where(start, end, _prediction_filters(model_version, source, model_role,
                                                          simulated, returned), "p")
    order = "DESC" if newest_first else "ASC"
    return con.frame(f"SELECT {_columns(include_embedding, 'p')} FROM predictions p{clause} "
                     f"ORDER BY p.ts {order}, p.request_id {order}{limit(limit_rows)}", params)


def count(con: Connection, start: datetime | None, end: datetime | None, **filters: Any) -> int:
    clause, params = where(start, end, _prediction_filters(**filters), "p")
    return int(con.aggregate(f"SELECT count(*) FROM predictions p{clause}", params)[0])


def version_counts(con: Connection, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    clause, params = where(start, end, {}, "p")
    return con.frame(
        "SELECT p.model_version, count(*) AS n, string_agg(DISTINCT p.model_role, ', ' "
        "ORDER BY p.model_role) AS roles, min(p.ts) AS first_ts, max(p.ts) AS last_ts "
        f"FROM predictions p{clause} GROUP BY 1 ORDER BY last_ts DESC, 1", params)


def _percentile(q: float, column: str) -> str:
    return f"percentile_cont({q}) WITHIN GROUP (ORDER BY {column})"


def hourly_operations(con: Connection, start: datetime, end: datetime, *,
                      model_version: str | None, source: str | None, returned: bool | None,
                      by_source: bool) -> pd.DataFrame:
    clause, params = where(start, end, dict(model_version=model_version, source=source,
                                            returned=returned), "p")
    failed, failed_params = where(start, end, dict(model_version=model_version, source=source), "f")
    kinds = ", ".join(f"'{k}'" for k in ERROR_RATE_KINDS)
    failed += f"{' AND' if failed else ' WHERE'} f.kind IN ({kinds})"
    keys = "hour, source" if by_source else "hour"
    groups = "1, 2" if by_source else "1"
    sql = f"""
        WITH a AS (SELECT date_trunc('hour', p.ts) AS hour{", p.source" if by_source else ""},
                          count(*) AS n, {_percentile(0.5, 'p.latency_ms')} AS latency_p50_ms,
                          {_percentile(0.95, 'p.latency_ms')} AS latency_p95_ms,
                          {_percentile(0.99, 'p.latency_ms')} AS latency_p99_ms,
                          count(*) FILTER (WHERE p.decision = 'uncertain') AS uncertain,
                          count(*) FILTER (WHERE p.decision = 'refer') AS refer
                   FROM predictions p{clause} GROUP BY {groups}),
        f AS (SELECT date_trunc('hour', f.ts) AS hour{", f.source" if by_source else ""},
                     count(*) AS failures
              FROM request_failures f{failed} GROUP BY {groups})
        SELECT {keys}, coalesce(a.n, 0) AS n, a.latency_p50_ms, a.latency_p95_ms,
               a.latency_p99_ms, coalesce(a.uncertain, 0) AS uncertain,
               coalesce(a.refer, 0) AS refer, coalesce(f.failures, 0) AS failures,
               CAST(coalesce(f.failures, 0) AS DOUBLE PRECISION)
                   / (coalesce(f.failures, 0) + coalesce(a.n, 0)) AS error_rate
        FROM a FULL OUTER JOIN f USING ({keys}) ORDER BY {keys}"""
    return con.frame(sql, [*params, *failed_params])


def _labelled(con: Connection, start: datetime | None, end: datetime | None,
              filters: dict[str, object], *, columns: str, label_filter: str, order: str,
              limit_rows: int | None = None) -> pd.DataFrame:
    """The predictions matching ``filters`` with their latest label (by request id or image hash)."""
    clause, params = where(start, end, filters, "predictions")
    sql = f"""
        WITH p AS (SELECT {cols(PREDICTION_COLUMNS)} FROM predictions{clause}),
        candidates AS (
            SELECT p.request_id AS prediction_id, {cols(_LABEL_READ_COLUMNS, 'l')}
            FROM p JOIN labels l ON l.request_id = p.request_id
            UNION ALL
            SELECT p.request_id, {cols(_LABEL_READ_COLUMNS, 'l')}
            FROM p JOIN labels l ON l.image_sha256 = p.image_sha256
        ),
        latest AS ({_latest("candidates", "prediction_id")})
        SELECT {columns}
        FROM p LEFT JOIN latest ON latest.prediction_id = p.request_id{label_filter}
        ORDER BY {order}{limit(limit_rows)}"""
    return con.frame(sql, params)


def review_cases(con: Connection, start: datetime | None, end: datetime | None, *,
                 labelled: bool | None, order: Literal["risk", "newest"], model_version: str | None,
                 source: str | None, simulated: bool | None, limit_rows: int | None) -> pd.DataFrame:
    orders = {"risk": "p.p_malignant DESC, p.ts DESC", "newest": "p.ts DESC"}
    if order not in orders:
        raise DataError(f"must be one of {', '.join(orders)}, got {order!r}", field="order")
    label_filter = {None: "", True: " WHERE latest.id IS NOT NULL",
                    False: " WHERE latest.id IS NULL"}[labelled]
    return _labelled(
        con, start, end, dict(model_version=model_version, source=source, simulated=simulated,
                              returned=True),
        columns=f"{_columns(False, 'p')}, latest.diagnosis, latest.labelled_by, latest.ts AS label_ts",
        label_filter=label_filter, order=f"{orders[order]}, p.request_id", limit_rows=limit_rows)


def labelled_predictions(con: Connection, start: datetime | None, end: datetime | None, *,
                         include_embedding: bool, **filters: Any) -> pd.DataFrame:
    return _labelled(
        con, start, end, _prediction_filters(**filters),
        columns=(f"{_columns(include_embedding, 'p')}, latest.diagnosis, latest.source AS label_source, "
                 "latest.labelled_by, latest.ts AS label_ts, latest.id AS label_id, "
                 "latest.simulated AS label_simulated"),
        label_filter=" WHERE latest.id IS NOT NULL", order="p.ts, p.request_id")


def count_labels(con: Connection, *, source: str | None, since: datetime | None) -> int:
    clauses, params = [], []
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    if since is not None:
        clauses.append("ts > ?")
        params.append(utc(since))
    clause = " WHERE " + " AND ".join(clauses) if clauses else ""
    return int(con.aggregate(f"SELECT count(*) FROM labels{clause}", params)[0])


def retained_labelled_cases(con: Connection) -> pd.DataFrame:
    label_columns = cols((c for c in _LABEL_READ_COLUMNS if c != "image_sha256"), "l")
    sql = f"""
        WITH kept AS (
            SELECT request_id, ts, image_sha256, image_path, age_approx, sex, anatom_site_general
            FROM (SELECT p.*, row_number() OVER (PARTITION BY image_sha256
                                                 ORDER BY ts DESC, request_id) AS rn
                  FROM predictions p WHERE image_path IS NOT NULL) ranked
            WHERE rn = 1
        ),
        candidates AS (
            SELECT k.image_sha256, {label_columns} FROM kept k
            JOIN predictions p ON p.image_sha256 = k.image_sha256
            JOIN labels l ON l.request_id = p.request_id
            UNION ALL
            SELECT k.image_sha256, {label_columns} FROM kept k
            JOIN labels l ON l.image_sha256 = k.image_sha256
        ),
        latest AS ({_latest("candidates", "image_sha256")})
        SELECT k.image_sha256, k.image_path, k.request_id, k.ts, k.age_approx, k.sex,
               k.anatom_site_general, latest.diagnosis, latest.source AS label_source,
               latest.labelled_by, latest.ts AS label_ts
        FROM kept k JOIN latest USING (image_sha256) ORDER BY k.ts, k.image_sha256"""
    return con.frame(sql)


def sample(con: Connection, start: datetime | None, end: datetime | None, *, n: int, seed: int,
           model_version: str | None, source: str | None, returned: bool | None,
           include_embedding: bool) -> pd.DataFrame:
    """At most ``n`` rows drawn uniformly, repeatable for one ``seed``: DuckDB's reservoir sample;
    on PostgreSQL the ``n`` rows with the smallest hash of (request id, seed)."""
    if n < 1:
        raise DataError(f"must be 1 or more, got {n}", field="n")
    clause, params = where(start, end, dict(model_version=model_version, source=source,
                                            returned=returned), "p")
    columns = _columns(include_embedding, "p")
    if con.dialect == "duckdb":
        sql = (f"SELECT * FROM (SELECT {columns} FROM predictions p{clause}) "
               f"USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE ({int(seed)}) ORDER BY ts, request_id")
    else:
        sql = (f"SELECT * FROM (SELECT {columns} FROM predictions p{clause} "
               f"ORDER BY md5(p.request_id || ':{int(seed)}') LIMIT {int(n)}) s ORDER BY ts, request_id")
    return con.frame(sql, params)


# --- monitoring aggregates ---


def window_summary(con: Connection, start: datetime, end: datetime, **filters: Any) -> dict[str, Any]:
    clause, params = where(start, end, _prediction_filters(**filters), "predictions")
    decisions = ", ".join(f"count(*) FILTER (WHERE decision = '{d}')" for d in DECISIONS)
    row = con.aggregate(f"SELECT count(*), {_percentile(0.5, 'latency_ms')}, {_percentile(0.95, 'latency_ms')}, "
                  f"{_percentile(0.99, 'latency_ms')}, avg(latency_ms), {decisions} "
                  f"FROM predictions{clause}", params)
    n, p50, p95, p99, mean, *counts = row
    return {"n": int(n), "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_p99_ms": p99,
            "latency_mean_ms": None if mean is None else float(mean),
            "decisions": dict(zip(DECISIONS, map(int, counts), strict=True))}


def hourly_volume(con: Connection, start: datetime, end: datetime, **filters: Any) -> pd.DataFrame:
    """Predictions per UTC hour, every hour from the one holding ``start`` up to ``end`` (0 where
    empty): the counts come from the database, the (short) hour grid from pandas."""
    clause, params = where(start, end, _prediction_filters(**filters), "predictions")
    counts = con.frame(f"SELECT date_trunc('hour', ts) AS hour, count(*) AS n FROM predictions{clause} "
                       "GROUP BY 1", params)
    hours = pd.date_range(pd.Timestamp(utc(start)).floor("h"), pd.Timestamp(utc(end)), freq="h",
                          inclusive="left")
    by_hour = dict(zip(pd.to_datetime(counts["hour"], utc=True), counts["n"], strict=True))
    return pd.DataFrame({"hour": hours, "n": [int(by_hour.get(h, 0)) for h in hours]})


def score_sums(con: Connection, start: datetime, end: datetime, *, decimals: int,
               **filters: Any) -> tuple[dict[str, float], pd.DataFrame]:
    clause, params = where(start, end, _prediction_filters(**filters), "predictions")
    called = "FILTER (WHERE p_malignant >= threshold)"
    benign = "FILTER (WHERE p_malignant < threshold)"
    row = con.aggregate(f"""
        SELECT count(*), coalesce(sum(p_malignant) {called}, 0),
               coalesce(sum(1 - p_malignant) {called}, 0), coalesce(sum(1 - p_malignant) {benign}, 0),
               coalesce(sum(p_malignant) {benign}, 0),
               coalesce(sum(-(q * ln(q) + (1 - q) * ln(1 - q))), 0)
        FROM (SELECT p_malignant, threshold, greatest(least(p_malignant, 1 - 1e-15), 1e-15) AS q
              FROM predictions{clause}) w""", params)
    n, tp, fp, tn, fn, entropy = row
    rounded = (f"round(p_malignant, {int(decimals)})" if con.dialect == "duckdb" else
               f"CAST(round(CAST(p_malignant AS NUMERIC), {int(decimals)}) AS DOUBLE PRECISION)")
    histogram = con.frame(f"SELECT {rounded} AS score, sum(p_malignant) AS pos, "
                          f"sum(1 - p_malignant) AS neg FROM predictions{clause} GROUP BY 1 ORDER BY 1",
                          params)
    totals = {"n": int(n), "tp": float(tp), "fp": float(fp), "tn": float(tn), "fn": float(fn),
              "entropy": float(entropy)}
    return totals, histogram


def labelled_scores(con: Connection, start: datetime, end: datetime, **filters: Any) -> pd.DataFrame:
    clause, params = where(start, end, _prediction_filters(**filters), "predictions")
    probabilities = cols(PROBABILITY_COLUMNS)

    def latest_by(key: str) -> str:
        return (f"SELECT {key}, diagnosis, ts, seq, first_ts FROM (SELECT {key}, diagnosis, ts, seq, "
                f"min(ts) OVER (PARTITION BY {key}) AS first_ts, row_number() OVER (PARTITION BY {key} "
                f"ORDER BY ts DESC, seq DESC) AS rn FROM labels WHERE {key} IN (SELECT {key} FROM p)) "
                "ranked WHERE rn = 1")

    request_wins = "(i.ts IS NULL OR r.ts > i.ts OR (r.ts = i.ts AND r.seq >= i.seq))"
    sql = f"""
        WITH p AS (SELECT request_id, image_sha256, ts, threshold, {probabilities}, p_malignant
                   FROM predictions{clause}),
        by_request AS ({latest_by("request_id")}),
        by_image AS ({latest_by("image_sha256")})
        SELECT p.request_id, p.ts, p.threshold, {cols(PROBABILITY_COLUMNS, 'p')}, p.p_malignant,
               CASE WHEN r.ts IS NOT NULL AND {request_wins} THEN r.diagnosis ELSE i.diagnosis END
                   AS diagnosis,
               CASE WHEN r.ts IS NOT NULL AND {request_wins} THEN r.ts ELSE i.ts END AS label_ts,
               least(r.first_ts, i.first_ts) AS first_label_ts
        FROM p LEFT JOIN by_request r ON r.request_id = p.request_id
               LEFT JOIN by_image i ON i.image_sha256 = p.image_sha256
        WHERE r.ts IS NOT NULL OR i.ts IS NOT NULL
        ORDER BY p.ts, p.request_id"""
    return con.frame(sql, params)


# --- request failures ---


def query_failures(con: Connection, start: datetime | None, end: datetime | None, *,
                   source: str | None, kind: str | None, model_version: str | None,
                   limit_rows: int | None) -> pd.DataFrame:
    clause, params = where(start, end, dict(source=source, kind=kind, model_version=model_version), "f")
    return con.frame(f"SELECT f.* FROM request_failures f{clause} "
                     f"ORDER BY f.ts DESC, f.request_id{limit(limit_rows)}", params)


def failure_counts(con: Connection, start: datetime, end: datetime, *, model_version: str | None,
                   source: str | None) -> dict[str, int]:
    clause, params = where(start, end, dict(model_version=model_version, source=source), "f")
    counts = ", ".join(f"count(*) FILTER (WHERE f.kind = '{k}')" for k in FAILURE_KINDS)
    row = con.aggregate(f"SELECT {counts} FROM request_failures f{clause}", params)
    return dict(zip(FAILURE_KINDS, map(int, row), strict=True))

