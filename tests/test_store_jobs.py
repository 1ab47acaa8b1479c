"""Job liveness per host, on each backend: a job records the machine it runs on and its process's
heartbeat; a host judges a job by its pid only on that machine, and by the heartbeat's age
elsewhere (a pid from another machine names nothing here, or an unrelated process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from skinlesion.errors import JobConflictError
from skinlesion.lifecycle import jobs
from skinlesion.records import JOB_STALE_AFTER, this_host
from skinlesion.store import JobHeartbeat, JobRecord, Store
from tests.test_store import duckdb_store_before

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    yield store
    store.release()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A live process on this machine that is not any job's (its command line names no job)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def _job(**changes: object) -> JobRecord:
    return JobRecord(**{"model": "v1", "trigger": "manual", "requested_by": "ana", "role": "ml_lead",
                        **changes})


def test_a_job_records_its_host_and_heartbeat(store: Store) -> None:
    job = store.create_job(_job(), is_live=lambda _: True)
    assert job.host == this_host() and store.get_job(job.id).host == this_host()
    assert store.get_job(job.id).heartbeat_at is None
    assert store.beat_job(job.id, at=T0)
    assert store.get_job(job.id).heartbeat_at == T0
    store.update_job(job.id, status="succeeded")
    assert not store.beat_job(job.id)  # a finished job has nothing to keep alive
    assert store.get_job(job.id).heartbeat_at == T0
    assert not store.beat_job("no-such-job")


def test_a_job_on_another_host_is_judged_by_its_heartbeat(store: Store, sleeper) -> None:
    """The pid of a live local process that is not the job's: here that pid is dead for the job,
    on another host it says nothing, and the heartbeat decides."""
    now = datetime.now(UTC)
    local = store.create_job(_job(pid=sleeper.pid, status="running", started_at=now,
                                  heartbeat_at=now), is_live=jobs.process_alive)
    assert not jobs.process_alive(local)  # fresh heartbeat, but the pid here is not the job
    remote = local.model_copy(update={"host": "replica-b.clinic.internal"})
    assert jobs.process_alive(remote)
    stale = remote.model_copy(update={"heartbeat_at": now - JOB_STALE_AFTER - timedelta(seconds=1)})
    assert not jobs.process_alive(stale)
    # before its first beat a remote job counts from its start
    assert jobs.process_alive(remote.model_copy(update={"heartbeat_at": None}))
    assert not jobs.process_alive(stale.model_copy(update={"heartbeat_at": None,
                                                           "started_at": stale.heartbeat_at}))


def test_launching_beside_a_remote_job_follows_its_heartbeat(store: Store, sleeper) -> None:
    """A launcher on this host meets a running job of another host: refused while its heartbeat
    is fresh, and the job is marked failed once the beats stop."""
    remote = store.create_job(_job(host="replica-b", pid=sleeper.pid, status="running",
                                   started_at=datetime.now(UTC)), is_live=jobs.process_alive)
    store.beat_job(remote.id)
    with pytest.raises(JobConflictError, match=remote.id):
        store.create_job(_job(requested_by="ben"), is_live=jobs.process_alive)
    store.beat_job(remote.id, at=datetime.now(UTC) - JOB_STALE_AFTER - timedelta(seconds=5))
    launched = store.create_job(_job(requested_by="ben"), is_live=jobs.process_alive)
    gone = store.get_job(remote.id)
    assert gone.status == "failed" and "gone" in gone.error
    assert store.get_job(launched.id).status == "queued"


def test_cancelling_a_remote_job_sets_its_flag_and_signals_nothing_here(store: Store, sleeper) -> None:
    remote = store.create_job(_job(host="replica-b", pid=sleeper.pid, status="running",
                                   started_at=datetime.now(UTC)), is_live=jobs.process_alive)
    store.beat_job(remote.id)
    job = jobs.cancel_job(store, remote.id, actor="ana", role="ml_lead", reason="wrong data")
    assert job.cancel_requested and job.status == "running"  # its own host stops it
    time.sleep(0.2)
    assert sleeper.poll() is None  # the local process with that pid was not signalled


def test_the_heartbeat_beats_while_the_job_runs_and_stops_after(store: Store) -> None:
    job = store.create_job(_job(status="running", pid=os.getpid()), is_live=lambda _: True)
    with JobHeartbeat(store, job.id, interval_s=0.05) as heartbeat:
        deadline = time.monotonic() + 30
        while heartbeat.beats < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert heartbeat.beats >= 3
    first = store.get_job(job.id).heartbeat_at
    assert first is not None and datetime.now(UTC) - first < timedelta(seconds=30)
    store.update_job(job.id, status="succeeded")
    ended = JobHeartbeat(store, job.id, interval_s=0.05).start()
    ended._thread.join(30)  # a finished job: the first beat is refused and the thread ends
    assert not ended._thread.is_alive() and ended.beats == 0


def test_jobs_stored_before_hosts_were_recorded_count_as_local(tmp_path) -> None:
    """A store one migration behind (no ``jobs.host``): its jobs read back without a host and are
    judged by pid on this machine, as before."""
    path = tmp_path / "old.duckdb"
    con = duckdb_store_before(path, "job hosts")
    con.execute("INSERT INTO jobs (id, kind, model, trigger, status, requested_by, role, created_at, "
                "pid) VALUES ('old', 'retrain', 'v1', 'manual', 'running', 'ana', 'ml_lead', ?, ?)",
                [T0, os.getpid()])
    con.close()
    job = Store(path).get_job("old")
    assert job.host is None and job.heartbeat_at is None and job.runs_on(this_host())
