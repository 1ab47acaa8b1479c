"""Retraining jobs: each runs in its own background process and reports through the store.

:func:`launch_retrain` (an ML lead: role-checked, reasoned, audited) or :func:`submit_retrain` (the
monitor's triggers) stores a queued job — refused with :class:`~skinlesion.errors.JobConflictError`
while another job of the same model is queued or running — and starts
``python -m skinlesion jobs run JOB_ID --store URL`` (:func:`job_command`: the store's URL, DuckDB
or PostgreSQL; a password in it goes to the process's ``PGPASSWORD``, not its command line) in a
new session, detached from its launcher (no shared terminal, pipes or process group), so it
survives the dashboard or CLI that launched it. Its output goes to ``<data_dir>/jobs/<id>.log``
under the home (:class:`~skinlesion.settings.Settings`; with the default DuckDB store, beside its
file as before).

What runs inside that process is :mod:`skinlesion.lifecycle.job_process` (which imports the
training stack; this module does not). A job is cancelled by :func:`cancel_job`: the cancel flag,
checked at every progress report (between steps and epochs), and SIGTERM to the process, whose
handler stops the run at once.

A job whose process is gone (killed, machine restarted) is not counted as running: launching
another marks it failed, and :func:`refresh` does the same for the listings. Processes are
identified by pid and command line (which names the job id), so a recycled pid is not mistaken
for the job. A job runs on the machine that launched it (recorded as its ``host``); from another
machine it is judged by the heartbeat its process records (:class:`~skinlesion.store.JobHeartbeat`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import psutil

from skinlesion.auth import require
from skinlesion.lifecycle.operations import OperationError
from skinlesion.lifecycle.spec import RetrainSpec, plan
from skinlesion.records import this_host
from skinlesion.settings import Settings
from skinlesion.store import JobRecord, Store, StoreURL

#: the skinlesion.auth action launching and cancelling retraining needs
JOB_ACTION = "manage_models"
#: a queued job whose launcher has not yet recorded its process counts as live this long
QUEUE_GRACE = timedelta(seconds=60)


# --- which jobs are live ----------------------------------------------------------------------------


def process_alive(job: JobRecord) -> bool:
    """Whether ``job`` may still be working: its process exists, is not a zombie and runs this
    job (its command line names the job id); a job without a process yet counts for
    :data:`QUEUE_GRACE` after it was queued. A job on another machine is judged by its heartbeat
    (its pid means nothing here)."""
    if job.pid is None:
        return job.status == "queued" and datetime.now(UTC) - job.created_at < QUEUE_GRACE
    if not job.runs_on(this_host()):
        return job.heartbeat_fresh(datetime.now(UTC))
    try:
        process = psutil.Process(job.pid)
        return (process.status() != psutil.STATUS_ZOMBIE
                and any(job.id in part for part in process.cmdline()))
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process with this pid: not ours
        return False


def refresh(store: Store, job: JobRecord) -> JobRecord:
    """``job`` as it stands: an unfinished job whose process is gone is marked failed (or
    cancelled, when a cancel was asked for) and returned so."""
    if job.is_finished or process_alive(job):
        return job
    gone = "cancelled" if job.cancel_requested else "failed"
    updated = store.update_job(job.id, expect=("queued", "running"), status=gone,
                               finished_at=datetime.now(UTC),
                               error="" if gone == "cancelled" else
                               "its process ended without reporting (killed, or the machine "
                               "restarted); see its log")
    return updated or store.get_job(job.id) or job


def find_job(store: Store, job_id: str) -> JobRecord:
    """The job ``job_id`` names (an id or a unique prefix), refreshed; OperationError otherwise."""
    job = store.get_job(job_id)
    if job is None:
        raise OperationError(f"no job {job_id!r}; list them with `skinlesion jobs list`")
    return refresh(store, job)


def log_file(settings: Settings, job_id: str) -> Path:
    """Where the job process's own output (stdout and stderr) goes: ``<data_dir>/jobs/<id>.log``."""
    return settings.data_dir / "jobs" / f"{job_id}.log"


def _password(url: StoreURL) -> str | None:
    """The password written in a PostgreSQL URL (``USER:PASSWORD@HOST``), or None."""
    password = urlsplit(url.dsn).password if url.dialect == "postgresql" else None
    return None if password is None else unquote(password)


def _public_url(url: StoreURL) -> str:
    """``url`` as the job process opens it, without a password (command lines are visible to
    every user of the machine)."""
    if url.dialect == "duckdb":
        return str(url)
    parts = urlsplit(url.dsn)
    if parts.password is None:
        return url.dsn
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}@{host}").geturl()


def job_command(url: StoreURL, job_id: str) -> list[str]:
    """The job process's command line: ``python -m skinlesion jobs run JOB_ID --store URL``, the
    store's URL without its password (see :func:`job_environment`)."""
    return [sys.executable, "-m", "skinlesion", "jobs", "run", job_id, "--store", _public_url(url)]


def job_environment(url: StoreURL, environ: Mapping[str, str]) -> dict[str, str]:
    """The job process's environment: ``environ``, plus the URL's password as ``PGPASSWORD``
    (which PostgreSQL clients read) when the URL carries one."""
    password = _password(url)
    return dict(environ) if password is None else {**environ, "PGPASSWORD": password}


def _spawn(store: Store, job: JobRecord) -> JobRecord:
    """Start the job's process, detached from this one, and record its pid."""
    settings = Settings()
    path = log_file(settings, job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        process = subprocess.Popen(
            job_command(store.url, job.id), env=job_environment(store.url, os.environ),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, cwd=str(settings.home))
    return store.update_job(job.id, expect=("queued",), pid=process.pid) or store.get_job(job.id)


def submit_retrain(store: Store, spec: RetrainSpec, *, trigger: str, requested_by: str,
                   role: str, reason: str) -> JobRecord:
    """Queue a retraining job of ``spec.base_version`` and start its process (no role check: the
    monitor's triggers use it; people go through :func:`launch_retrain`). JobConflictError while
    another job of that model is live; OperationError, saying why, when it would have nothing to
    train on (:func:`skinlesion.lifecycle.spec.plan`)."""
    refusal = plan(store, spec).refusal
    if refusal:
        raise OperationError(refusal)
    job = store.create_job(JobRecord(model=spec.base_version, trigger=trigger, reason=reason,
                                     requested_by=requested_by, role=role,
                                     config=spec.model_dump(mode="json"),
                                     message="waiting for its process to start"),
                           is_live=process_alive)
    store.append_audit(requested_by, role, "launch_retraining", target=spec.base_version,
                       reason=reason, details={"job_id": job.id, "trigger": trigger})
    return _spawn(store, job)


def launch_retrain(store: Store, spec: RetrainSpec, *, actor: str, role: str, reason: str,
                   trigger: str = "manual") -> JobRecord:
    """An ML lead launches retraining: role-checked, needs a reason, audited; see
    :func:`submit_retrain`."""
    require(role, JOB_ACTION)
    if not reason.strip():
        raise OperationError("give a reason: launching retraining is audited with why")
    return submit_retrain(store, spec, trigger=trigger, requested_by=actor, role=role,
                          reason=reason.strip())


def cancel_job(store: Store, job_id: str, *, actor: str, role: str, reason: str) -> JobRecord:
    """Cancel a queued or running job (role-checked, audited): its cancel flag is set and its
    process gets SIGTERM; a job without a live process is marked cancelled at once."""
    require(role, JOB_ACTION)
    if not reason.strip():
        raise OperationError("give a reason: cancelling a job is audited with why")
    job = find_job(store, job_id)
    if job.is_finished:
        raise OperationError(f"job {job.id} has already {job.status}; nothing to cancel")
    job = store.update_job(job.id, expect=("queued", "running"), cancel_requested=True,
                           message="cancelling") or store.get_job(job.id)
    store.append_audit(actor, role, "cancel_job", target=job.model, reason=reason.strip(),
                       details={"job_id": job.id})
    if job.pid is not None and process_alive(job):
        if job.runs_on(this_host()):  # elsewhere the flag stops it at its next progress report
            os.kill(job.pid, signal.SIGTERM)
        return job
    return store.update_job(job.id, expect=("queued", "running"), status="cancelled",
                            finished_at=datetime.now(UTC), message="cancelled") or store.get_job(job.id)


def wait(store: Store, job_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None,
         on_update: Callable[[JobRecord], None] | None = None) -> JobRecord:
    """Poll the job until it has finished (or ``timeout_s`` passed); ``on_update`` sees each
    change of progress or status. Returns the job as last read."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen: tuple | None = None
    while True:
        job = find_job(store, job_id)
        state = (job.status, job.progress, job.message)
        if state != seen and on_update is not None:
            on_update(job)
        seen = state
        if job.is_finished or (deadline is not None and time.monotonic() >= deadline):
            return job
        time.sleep(poll_s)


def jobs_table(listed: list[JobRecord]) -> pd.DataFrame:
    """The jobs as rows for a listing: ``job`` (short id), ``model``, ``trigger``, ``status``,
    ``progress``, ``message`` (or the error), ``queued``, ``by``, ``candidate``."""
    return pd.DataFrame(
        [{"job": j.id[:8], "model": j.model, "trigger": j.trigger, "status": j.status,
          "progress": j.progress, "message": j.error or j.message, "queued": j.created_at,
          "by": j.requested_by, "candidate": j.result.get("version", "")} for j in listed],
        columns=["job", "model", "trigger", "status", "progress", "message", "queued", "by",
                 "candidate"])
