"""Versioned schema migrations, applied once each and in order, the same on both backends.

Migration i brings the schema to version i + 1, recorded in ``schema_version``; both backends have
the same versions with the same meaning (a store copied between them keeps its version). Append
only: never edit one that has shipped. Each is written once: where the dialects spell a type
differently the SQL names it (``$DOUBLE``, ``$FLOATS``, ``$JSON``: :data:`TYPES`), and mixed-case
column names are quoted (PostgreSQL folds unquoted names to lower case; DuckDB keeps them either
way). What only one backend needs is added for it alone: PostgreSQL's constraints that keep a rule
across hosts (at most one unfinished job per model, at most one open alert per key; DuckDB has one
writer at a time, so its store methods keep those rules themselves).
"""

from __future__ import annotations

from string import Template
from typing import NamedTuple

from skinlesion.errors import StoreError
from skinlesion.records import now
from skinlesion.store.connection import Connection, Dialect

SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL,
    description TEXT NOT NULL
)"""

#: The types the two dialects spell differently, by the name the migrations use for them.
TYPES: dict[Dialect, dict[str, str]] = {
    "duckdb": {"DOUBLE": "DOUBLE", "FLOATS": "FLOAT[]", "JSON": "JSON"},
    "postgresql": {"DOUBLE": "DOUBLE PRECISION", "FLOATS": "REAL[]", "JSON": "JSONB"},
}


class Migration(NamedTuple):
    """One schema version: what it brings, its SQL (with :data:`TYPES` names), and what only
    PostgreSQL adds (a constraint keeping a rule across hosts)."""

    description: str
    sql: str
    postgresql_only: str = ""


_INITIAL = """
CREATE TABLE predictions (
    request_id TEXT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_role TEXT NOT NULL,
    age_approx $DOUBLE,
    sex TEXT NOT NULL,
    anatom_site_general TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    width $DOUBLE, height $DOUBLE, brightness $DOUBLE, contrast $DOUBLE, saturation $DOUBLE,
    mean_r $DOUBLE, mean_g $DOUBLE, mean_b $DOUBLE, sharpness $DOUBLE,
    "p_MEL" $DOUBLE NOT NULL, "p_NV" $DOUBLE NOT NULL, "p_BCC" $DOUBLE NOT NULL,
    "p_AK" $DOUBLE NOT NULL, "p_BKL" $DOUBLE NOT NULL, "p_DF" $DOUBLE NOT NULL,
    "p_VASC" $DOUBLE NOT NULL, "p_SCC" $DOUBLE NOT NULL,
    p_malignant $DOUBLE NOT NULL,
    predicted_class TEXT NOT NULL,
    decision TEXT NOT NULL,
    decision_reason TEXT NOT NULL DEFAULT '',
    threshold $DOUBLE NOT NULL,
    latency_ms $DOUBLE NOT NULL,
    device TEXT NOT NULL,
    embedding $FLOATS,
    image_path TEXT,
    simulated BOOLEAN NOT NULL DEFAULT false,
    returned BOOLEAN NOT NULL DEFAULT true
);
CREATE INDEX predictions_ts ON predictions (ts);
CREATE INDEX predictions_image ON predictions (image_sha256);
CREATE INDEX predictions_model_version ON predictions (model_version);

CREATE SEQUENCE labels_seq;
CREATE TABLE labels (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('labels_seq'),
    request_id TEXT,
    image_sha256 TEXT,
    diagnosis TEXT NOT NULL,
    source TEXT NOT NULL,
    labelled_by TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    simulated BOOLEAN NOT NULL DEFAULT false,
    CHECK (request_id IS NOT NULL OR image_sha256 IS NOT NULL)
);
CREATE INDEX labels_request ON labels (request_id);
CREATE INDEX labels_image ON labels (image_sha256);

CREATE SEQUENCE audit_seq;
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('audit_seq'),
    ts TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    reason TEXT NOT NULL DEFAULT '',
    details $JSON
);
CREATE INDEX audit_ts ON audit_log (ts);

CREATE SEQUENCE serving_route_seq;
CREATE TABLE serving_route (
    id BIGINT PRIMARY KEY DEFAULT nextval('serving_route_seq'),
    ts TIMESTAMPTZ NOT NULL,
    active_version TEXT NOT NULL,
    fallback_version TEXT,
    fallback_engaged BOOLEAN NOT NULL,
    restricted_to_clear_cases BOOLEAN NOT NULL,
    challenger_version TEXT,
    challenger_share $DOUBLE NOT NULL,
    shadow_version TEXT,
    audit_id TEXT NOT NULL
);

CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    created TIMESTAMPTZ NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false,
    revoked_at TIMESTAMPTZ
);
"""

#: Health snapshots: one header row per monitoring run and window (worst status, the full report as
#: JSON) and one long row per metric (so the dashboard plots a metric over time with one scan of
#: ``health_metrics``). Alerts: one row per alert, updated in place as it escalates and resolves;
#: the key (metric@scope) has at most one open alert.
_MONITORING = """
CREATE SEQUENCE health_snapshots_seq;
CREATE TABLE health_snapshots (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('health_snapshots_seq'),
    ts TIMESTAMPTZ NOT NULL,
    window_name TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    model_version TEXT,
    source TEXT,
    status TEXT NOT NULL CHECK (status IN ('green', 'yellow', 'red', 'unknown')),
    report $JSON
);
CREATE INDEX health_snapshots_ts ON health_snapshots (ts);

CREATE TABLE health_metrics (
    snapshot_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value $DOUBLE,
    status TEXT NOT NULL CHECK (status IN ('green', 'yellow', 'red', 'unknown')),
    estimated $DOUBLE,
    estimated_status TEXT NOT NULL CHECK (estimated_status IN ('green', 'yellow', 'red', 'unknown')),
    n BIGINT,
    note TEXT NOT NULL DEFAULT '',
    previous_value $DOUBLE,
    PRIMARY KEY (snapshot_id, metric)
);

CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    metric TEXT NOT NULL,
    scope TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('yellow', 'red')),
    opened_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    message TEXT NOT NULL,
    details $JSON,
    last_event TEXT NOT NULL CHECK (last_event IN ('opened', 'escalated', 'resolved')),
    last_event_at TIMESTAMPTZ NOT NULL,
    notified BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX alerts_key ON alerts (key);
"""

#: Retraining jobs with their log lines; retraining triggers that fired (one row per incident key,
#: so an event fires at most once); versions archived (the latest row per version wins).
_JOBS = """
CREATE SEQUENCE jobs_seq;
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('jobs_seq'),
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'event', 'active_learning')),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    reason TEXT NOT NULL DEFAULT '',
    requested_by TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    pid BIGINT,
    progress $DOUBLE NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    config $JSON,
    result $JSON,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_model ON jobs (model);

CREATE SEQUENCE job_log_seq;
CREATE TABLE job_log (
    seq BIGINT PRIMARY KEY DEFAULT nextval('job_log_seq'),
    job_id TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX job_log_job ON job_log (job_id);

CREATE TABLE retrain_triggers (
    key TEXT PRIMARY KEY,
    trigger TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    job_id TEXT,
    outcome TEXT NOT NULL DEFAULT '',
    details $JSON
);

CREATE SEQUENCE version_archive_seq;
CREATE TABLE version_archive (
    seq BIGINT PRIMARY KEY DEFAULT nextval('version_archive_seq'),
    version TEXT NOT NULL,
    archived BOOLEAN NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    audit_id TEXT NOT NULL
);
"""

#: Prediction requests answered with an error (no request body, no message: see FailureRecord).
_FAILURES = """
CREATE TABLE request_failures (
    request_id TEXT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL,
    model_version TEXT,
    http_status INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rejected', 'unauthorized', 'unavailable', 'error')),
    field TEXT
);
CREATE INDEX request_failures_ts ON request_failures (ts);
"""

#: Every answer records the API key that asked (its name; NULL for other sources); keys carry
#: scopes (comma-separated, see records.API_SCOPES); each audit row carries the hash of the row
#: before it and its own (store.route's hash chain).
_CLIENTS_AND_AUDIT_CHAIN = """
ALTER TABLE predictions ADD COLUMN api_client TEXT;
ALTER TABLE api_keys ADD COLUMN scopes TEXT DEFAULT '';
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN row_hash TEXT;
"""

#: What operators did about alerts (acknowledge, silence, unsilence, assign; records.AlertAction),
#: each row pointing at its audit entry.
_ALERT_ACTIONS = """
CREATE TABLE alert_actions (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('acknowledge', 'silence', 'unsilence', 'assign')),
    note TEXT NOT NULL,
    silenced_until TIMESTAMPTZ,
    assignee TEXT,
    audit_id TEXT NOT NULL
);
CREATE INDEX alert_actions_alert ON alert_actions (alert_id, ts);
"""

#: Which machine runs each job and when its process last said it is alive (a pid means nothing on
#: another host: there a job is judged by its heartbeat).
_JOB_HOSTS = """
ALTER TABLE jobs ADD COLUMN host TEXT;
ALTER TABLE jobs ADD COLUMN heartbeat_at TIMESTAMPTZ;
"""

#: The OOD gate's texture check of each answer (a Mahalanobis distance of the image's early-block
#: activation statistics, ``Prediction.texture_distance``); NULL for answers of a version whose
#: gate has no texture check, and for every answer logged before this column.
_TEXTURE = "ALTER TABLE predictions ADD COLUMN texture_distance $DOUBLE"

MIGRATIONS: tuple[Migration, ...] = (
    Migration("initial schema: predictions, labels, audit_log, serving_route, api_keys", _INITIAL),
    Migration("monitoring: health_snapshots, health_metrics, alerts", _MONITORING,
              postgresql_only="CREATE UNIQUE INDEX alerts_one_open_per_key ON alerts (key) "
                              "WHERE resolved_at IS NULL;"),
    Migration("retraining: jobs, job_log, retrain_triggers, version_archive", _JOBS,
              postgresql_only="CREATE UNIQUE INDEX jobs_one_unfinished_per_model ON jobs (model) "
                              "WHERE status IN ('queued', 'running');"),
    Migration("serving route: per-version threshold overrides",
              "ALTER TABLE serving_route ADD COLUMN threshold_overrides $JSON DEFAULT '{}'"),
    Migration("request failures: prediction requests answered with an error", _FAILURES),
    Migration("health snapshots: simulated flag (snapshots of the demo's simulated traffic)",
              "ALTER TABLE health_snapshots ADD COLUMN simulated BOOLEAN DEFAULT false"),
    Migration("clients and tamper evidence: the API key that asked each answer, key scopes, audit "
              "hash chain", _CLIENTS_AND_AUDIT_CHAIN),
    Migration("alert actions: acknowledge, silence, assign (audited)", _ALERT_ACTIONS),
    Migration("job hosts: the machine running each job and its heartbeat", _JOB_HOSTS),
    Migration("texture distance: the OOD gate's texture check of each answer", _TEXTURE),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migration_sql(migration: Migration, dialect: Dialect) -> str:
    """The SQL of ``migration`` for ``dialect``: its types spelled out, then what only that
    backend adds."""
    sql = Template(migration.sql).substitute(TYPES[dialect])
    return f"{sql}\n{migration.postgresql_only}" if dialect == "postgresql" else sql


def schema_version(con: Connection) -> int:
    """The version recorded in the store (0 for an empty one)."""
    exists = con.one("SELECT count(*) FROM information_schema.tables "
                     "WHERE table_name = 'schema_version' AND table_schema = current_schema()")
    if not exists or not exists[0]:
        return 0
    row = con.one("SELECT coalesce(max(version), 0) FROM schema_version")
    return int(row[0]) if row else 0


def check_not_newer(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"the store {where} has schema version {version}, newer than this code "
                         f"knows ({SCHEMA_VERSION}); upgrade skinlesion")


def apply_pending(con: Connection, where: str) -> int:
    """Apply the pending migrations of ``con``'s backend inside its write transaction; returns the
    version reached. Concurrent starts on PostgreSQL take turns on an advisory lock."""
    con.lock("skinlesion:migrate")
    con.script(SCHEMA_VERSION_DDL)
    current = schema_version(con)
    check_not_newer(current, where)
    for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
        con.script(migration_sql(migration, con.dialect))
        con.run("INSERT INTO schema_version VALUES (?, ?, ?)",
                [version, now(), migration.description])
    return SCHEMA_VERSION


def touch(con: Connection) -> None:
    """A real write that changes nothing (the newest ``schema_version`` row set to itself): whether
    the store takes writes, for readiness probes."""
    con.run("UPDATE schema_version SET applied_at = applied_at "
            "WHERE version = (SELECT max(version) FROM schema_version)")
