"""Retraining jobs with their log lines, and the retraining triggers that fired.

At most one unfinished (queued or running) job per model: :func:`create_job` checks and inserts in
one transaction under an advisory lock on the model (PostgreSQL also enforces it with a partial
unique index), so two launchers racing on different hosts cannot both pass. A trigger fires at most
once per key: its claim is an ``INSERT ... ON CONFLICT DO NOTHING`` on the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from skinlesion.errors import DataError, JobConflictError, StoreError
from skinlesion.records import JOB_COLUMNS, JobRecord, json_safe, non_blank, now, utc
from skinlesion.store.connection import Connection
from skinlesion.store.query import equals, json_dict, limit

_JSON_COLUMNS = ("config", "result")


def _values(job: JobRecord) -> dict[str, Any]:
    values = job.model_dump()
    for column in _JSON_COLUMNS:
        values[column] = json.dumps(values[column])
    return values


def _write(con: Connection, job: JobRecord) -> None:
    """Overwrite the stored row of ``job`` (every column but the id, model and creation time)."""
    values = _values(job)
    columns = [c for c in JOB_COLUMNS if c not in ("id", "model", "created_at")]
    con.run(f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
            [*(values[c] for c in columns), job.id])


def read_jobs(con: Connection, tail: str, params: list[object]) -> list[JobRecord]:
    """The jobs ``SELECT ... FROM jobs {tail}`` finds, as records."""
    rows = con.rows(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs {tail}", params)
    jobs = []
    for row in rows:
        values = dict(zip(JOB_COLUMNS, row, strict=True))
        for column in _JSON_COLUMNS:
            values[column] = json_dict(values[column])
        jobs.append(JobRecord(**values))
    return jobs


def create_job(con: Connection, job: JobRecord, *, is_live: Callable[[JobRecord], bool]) -> JobRecord:
    job = JobRecord.model_validate(job.model_dump())
    con.lock(f"skinlesion:jobs:{job.model}")
    unfinished = read_jobs(con, "WHERE model = ? AND status IN ('queued', 'running') ORDER BY seq",
                           [job.model])
    for other in unfinished:
        if is_live(other):
            raise JobConflictError(
                f"a {other.kind} job for {other.model} is already {other.status} (job "
                f"{other.id}, started by {other.requested_by} at "
                f"{other.created_at:%Y-%m-%d %H:%M} UTC); wait for it or cancel it "
                f"(`skinlesion jobs cancel {other.id}`)")
        gone = other.model_copy(update=dict(
            status="failed", finished_at=now(),
            error=f"its process{f' (pid {other.pid})' if other.pid else ''} is gone; "
                  f"marked failed when job {job.id} was launched"))
        _write(con, gone)
    values = _values(job)
    con.run(f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' for _ in JOB_COLUMNS)})",
            [values[c] for c in JOB_COLUMNS])
    return job


def get_job(con: Connection, job_id: str) -> JobRecord | None:
    found = read_jobs(con, "WHERE id = ? OR id LIKE ? ORDER BY seq", [job_id, f"{job_id}%"])
    exact = [j for j in found if j.id == job_id]
    return exact[0] if exact else (found[0] if len(found) == 1 else None)


def list_jobs(con: Connection, *, model: str | None, status: str | None,
              limit_rows: int | None) -> list[JobRecord]:
    clause, params = equals(dict(model=model, status=status))
    return read_jobs(con, f"{clause} ORDER BY seq DESC{limit(limit_rows)}", params)


def update_job(con: Connection, job_id: str, *, expect: Iterable[str] | None,
               changes: Mapping[str, Any]) -> JobRecord | None:
    if {"id", "model", "created_at"} & set(changes):
        raise DataError("a job's id, model and creation time never change", field="changes")
    found = read_jobs(con, "WHERE id = ?", [job_id])
    if not found:
        raise StoreError(f"no job with id {job_id!r}; list them with `skinlesion jobs list`")
    con.lock(f"skinlesion:jobs:{found[0].model}")
    found = read_jobs(con, "WHERE id = ?", [job_id])  # read again under the lock
    if expect is not None and found[0].status not in tuple(expect):
        return None
    job = JobRecord.model_validate({**found[0].model_dump(), **changes})
    _write(con, job)
    return job


def beat(con: Connection, job_id: str, at: datetime | None) -> bool:
    """Record that the unfinished job ``job_id``'s process is alive at ``at`` (default now); False
    when the job has finished (or is unknown)."""
    return bool(con.run("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status IN ('queued', "
                        "'running')", [utc(at or now()), job_id]))


def append_log(con: Connection, job_id: str, lines: Iterable[str]) -> int:
    rows = [[job_id, now(), str(line)] for line in lines]
    if rows:
        con.run_many("INSERT INTO job_log (job_id, ts, line) VALUES (?, ?, ?)", rows)
    return len(rows)


def job_log(con: Connection, job_id: str, *, tail: int | None) -> pd.DataFrame:
    return con.frame("SELECT ts, line FROM (SELECT seq, ts, line FROM job_log WHERE job_id = ? "
                     f"ORDER BY seq DESC{limit(tail)}) last ORDER BY seq", [job_id])


# --- retraining triggers ---


def claim_trigger(con: Connection, key: str, trigger: str, *, details: Mapping[str, Any] | None,
                  at: datetime | None) -> bool:
    return bool(con.run(
        "INSERT INTO retrain_triggers (key, trigger, ts, details) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [non_blank(key, "key"), trigger, utc(at or now()), json.dumps(json_safe(dict(details or {})))]))


def settle_trigger(con: Connection, key: str, *, job_id: str | None, outcome: str) -> None:
    con.run("UPDATE retrain_triggers SET job_id = ?, outcome = ? WHERE key = ?", [job_id, outcome, key])


def list_triggers(con: Connection, *, trigger: str | None) -> pd.DataFrame:
    clause, params = equals(dict(trigger=trigger))
    frame = con.frame("SELECT key, trigger, ts, job_id, outcome, details FROM "
                      f"retrain_triggers{clause} ORDER BY ts DESC, key", params)
    frame["details"] = [json_dict(d) for d in frame["details"]]
    return frame
