"""Retraining jobs run in their own process: they outlive their launcher, report progress, refuse a
second launch for the same model, can be cancelled, and a dead job does not block the next one; the
process is handed the store's URL, so jobs run on a PostgreSQL store as on a DuckDB one."""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from skinlesion import registry
from skinlesion.errors import JobConflictError, PermissionDeniedError
from skinlesion.lifecycle import jobs
from skinlesion.lifecycle.spec import RetrainSpec
from skinlesion.settings import Settings
from skinlesion.store import JobRecord, Store, parse_store_url
from skinlesion.store.transfer import migrate_store
from tests.lifecycle.seeded_home import lifecycle, lifecycle_template  # noqa: F401 (fixtures)

LEAD = dict(actor="ana", role="ml_lead")
#: long enough for a job to be caught running: metadata-only epochs take milliseconds each
ENDLESS = {"epochs": 1_000_000, "train_overrides": {"patience": 1_000_000}}


def _spec(home: dict, **fields) -> RetrainSpec:
    return RetrainSpec(base_version="base", models_dir=str(home["models_dir"]),
                       cache_dir=str(home["cache_dir"]), device="cpu", **fields)


def _env(home: dict) -> dict[str, str]:
    return {**os.environ, "SKINLESION_HOME": str(home["root"]),
            "SKINLESION_MODELS_DIR": str(home["models_dir"]),
            "SKINLESION_DB_PATH": str(home["store"].path),
            "SKINLESION_CACHE_DIR": str(home["cache_dir"])}


@pytest.fixture
def lifecycle_home(lifecycle: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The lifecycle home as SKINLESION_HOME of this process (and so of the jobs it launches)."""
    monkeypatch.setenv("SKINLESION_HOME", str(lifecycle["root"]))
    return lifecycle


def _wait_for(predicate, timeout_s: float = 90.0, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"not reached within {timeout_s} s")


def test_a_job_survives_its_launcher_and_reports_progress(lifecycle):
    home, store = lifecycle, lifecycle["store"]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "skinlesion", "retrain", "--reason", "quarterly refresh",
         "--epochs", "3"], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    out, err = launcher.communicate(timeout=120)
    launcher_exited = datetime.now(UTC)
    assert launcher.returncode == 0, err
    job_id = out.strip().splitlines()[-1]

    job = jobs.wait(store, job_id, poll_s=0.3, timeout_s=120)
    assert job.status == "succeeded", (job.error, store.job_log(job_id)["line"].tolist())
    assert job.pid != launcher.pid
    assert job.finished_at > launcher_exited  # it kept running after its launcher had gone
    assert (job.trigger, job.model, job.requested_by) == ("manual", "base", getpass.getuser())
    assert job.progress == 1.0 and job.message.startswith("done")
    lines = store.job_log(job_id)["line"].tolist()
    progress = [float(line.split("%")[0]) for line in lines if line[:4].strip().endswith("%")]
    assert progress[0] == 0 and progress[-1] == 100 and progress == sorted(progress)
    assert any(line.startswith("data: 64 original images") for line in lines)
    assert any(line.startswith("gate: recent hold-out") for line in lines)
    candidate = job.result["version"]
    assert registry.read_card(home["models_dir"] / candidate).parent == "base"
    assert store.get_route().active_version == "base"  # a candidate only
    audit = store.query_audit(action="launch_retraining").iloc[0]
    assert audit["details"]["job_id"] == job_id and audit["reason"] == "quarterly refresh"


def test_a_second_launch_for_the_same_model_is_refused_and_cancel_stops_the_first(lifecycle_home):
    lifecycle = lifecycle_home
    store = lifecycle["store"]
    first = jobs.launch_retrain(store, _spec(lifecycle, **ENDLESS), reason="drift", **LEAD)
    with pytest.raises(JobConflictError, match=first.id):
        jobs.launch_retrain(store, _spec(lifecycle), reason="again", **LEAD)
    running = _wait_for(lambda: (j := jobs.find_job(store, first.id)).message.startswith(
        "epoch") or j.is_finished)
    running = store.get_job(first.id)
    assert running.status == "running" and running.progress > 0.05, (
        running, store.job_log(first.id)["line"].tolist())
    with pytest.raises(JobConflictError):  # still refused while it runs
        jobs.launch_retrain(store, _spec(lifecycle), reason="again", **LEAD)
    with pytest.raises(PermissionDeniedError):
        jobs.cancel_job(store, first.id, reason="no", actor="vic", role="viewer")

    jobs.cancel_job(store, first.id, reason="wrong data", **LEAD)
    done = jobs.wait(store, first.id, poll_s=0.2, timeout_s=60)
    assert done.status == "cancelled" and done.finished_at is not None
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(done.pid).wait(timeout=30)  # its process ends (raises if it does not)
    assert any("cancelled" in line for line in store.job_log(first.id)["line"])
    assert store.query_audit(action="cancel_job")["reason"].tolist() == ["wrong data"]
    assert [c.id for c in registry.list_versions(lifecycle["models_dir"])] == ["base"]
    assert "cancelled" in jobs.log_file(Settings(), first.id).read_text()  # the process's output


def test_a_job_whose_process_is_gone_is_not_counted_as_running(lifecycle):
    store = lifecycle["store"]
    job = JobRecord(model="base", trigger="event", requested_by="monitor", role="system")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", job.id])
    try:
        store.create_job(job, is_live=jobs.process_alive)
        store.update_job(job.id, status="running", pid=sleeper.pid)
        assert jobs.process_alive(store.get_job(job.id))
        with pytest.raises(JobConflictError):
            store.create_job(JobRecord(model="base", trigger="manual", requested_by="ana",
                                       role="ml_lead"), is_live=jobs.process_alive)
        # another job's process, or a recycled pid, is not this job
        assert not jobs.process_alive(store.get_job(job.id).model_copy(update={"id": "other"}))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not jobs.process_alive(store.get_job(job.id))
    second = store.create_job(JobRecord(model="base", trigger="manual", requested_by="ana",
                                        role="ml_lead"), is_live=jobs.process_alive)
    stale = store.get_job(job.id)
    assert stale.status == "failed" and "gone" in stale.error
    assert store.get_job(second.id).status == "queued"
    # a queued job whose launcher never recorded a process counts only for a grace period
    assert jobs.process_alive(second)
    old = second.model_copy(update={"created_at": datetime(2020, 1, 1, tzinfo=UTC)})
    assert not jobs.process_alive(old)
    # refresh (used by the listings) settles a dead job the same way
    store.update_job(second.id, status="running", pid=sleeper.pid)
    assert jobs.refresh(store, store.get_job(second.id)).status == "failed"


# --- the store's URL ---------------------------------------------------------------------------


def test_the_job_command_line_carries_the_store_url_and_never_its_password(tmp_path: Path):
    duckdb_file = tmp_path / "data" / "skinlesion.duckdb"
    command = jobs.job_command(parse_store_url(f"duckdb://{duckdb_file}"), "job-1")
    assert command[1:] == ["-m", "skinlesion", "jobs", "run", "job-1", "--store",
                           f"duckdb://{duckdb_file}"]

    plain = parse_store_url("postgresql://skin@db.clinic.internal:5432/skinlesion")
    assert jobs.job_command(plain, "job-2")[-2:] == [
        "--store", "postgresql://skin@db.clinic.internal:5432/skinlesion"]
    assert "PGPASSWORD" not in jobs.job_environment(plain, {"PATH": "/bin"})

    secret = parse_store_url("postgresql://skin:p%40ss@db.clinic.internal:5432/skinlesion"
                             "?sslmode=require")
    command = jobs.job_command(secret, "job-3")
    assert command[-2:] == [
        "--store", "postgresql://skin@db.clinic.internal:5432/skinlesion?sslmode=require"]
    assert not any("p%40ss" in part or "p@ss" in part for part in command)
    assert jobs.job_environment(secret, {"PATH": "/bin"}) == {"PATH": "/bin", "PGPASSWORD": "p@ss"}


def test_the_job_log_lives_under_the_home_not_beside_the_store(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SKINLESION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKINLESION_STORE_URL", "postgresql://skin@db.clinic.internal/skinlesion")
    assert jobs.log_file(Settings(), "job-1") == tmp_path / "home" / "data" / "jobs" / "job-1.log"


@pytest.fixture
def postgres_lifecycle(lifecycle: dict, postgres_server, monkeypatch: pytest.MonkeyPatch):
    """The lifecycle home with its store moved into a fresh PostgreSQL database (as
    ``skinlesion store migrate`` does) and named by SKINLESION_STORE_URL; the DuckDB file is
    gone."""
    with postgres_server.database() as url:
        duckdb_file = lifecycle["store"].path
        lifecycle["store"].release()
        migrate_store(f"duckdb://{duckdb_file}", url)
        duckdb_file.unlink()
        monkeypatch.setenv("SKINLESION_HOME", str(lifecycle["root"]))
        monkeypatch.setenv("SKINLESION_STORE_URL", url)
        store = Store(url)
        try:
            yield {**lifecycle, "store": store, "url": url}
        finally:
            store.release()


@pytest.mark.slow  # about 25 s: a migrated store and a real job process
def test_a_job_runs_to_a_candidate_on_a_postgresql_store(postgres_lifecycle):
    home, store = postgres_lifecycle, postgres_lifecycle["store"]
    job = jobs.launch_retrain(store, _spec(home, epochs=3), reason="quarterly refresh", **LEAD)
    assert store.get_job(job.id).pid == job.pid

    done = jobs.wait(store, job.id, poll_s=0.3, timeout_s=120)
    log = jobs.log_file(Settings(), job.id)
    assert done.status == "succeeded", (done.error, log.read_text())
    candidate = done.result["version"]
    assert registry.read_card(home["models_dir"] / candidate).parent == "base"
    lines = store.job_log(job.id)["line"].tolist()
    assert any(line.startswith("data: 64 original images") for line in lines)
    assert store.get_route().active_version == "base"  # a candidate only
    assert log == home["root"] / "data" / "jobs" / f"{job.id}.log" and log.exists()
    assert not list(home["root"].rglob("*.duckdb"))  # nothing fell back to a DuckDB file
