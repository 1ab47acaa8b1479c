"""Inside a retraining job's process (``skinlesion jobs run JOB_ID --store URL``, started by
:mod:`skinlesion.lifecycle.jobs` with its store's URL, DuckDB or PostgreSQL).

:func:`run_job` marks the job running with its pid, runs :func:`skinlesion.lifecycle.retrain.retrain`,
and writes progress (0..1 and a message) and log lines to the store as it goes (at most about once
a second, :class:`JobReporter`), then the result (the candidate version and the gate) or the error.
A cancel flag set meanwhile, or SIGTERM, stops the run (:class:`JobCancelled`); the job ends as
``cancelled``.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from datetime import UTC, datetime
from types import FrameType

from skinlesion.errors import SkinLesionError
from skinlesion.lifecycle.jobs import find_job
from skinlesion.lifecycle.operations import OperationError
from skinlesion.lifecycle.retrain import retrain
from skinlesion.lifecycle.spec import RetrainSpec
from skinlesion.store import JobHeartbeat, JobRecord, Store

#: at most one progress write to the store per this many seconds (the last one always goes)
REPORT_INTERVAL_S = 1.0


class JobCancelled(SkinLesionError):  # noqa: N818 (a signal to stop, not a failure)
    """Raised inside a job process when its job is cancelled; the job ends as ``cancelled``."""


class JobReporter:
    """The retrain's :class:`~skinlesion.lifecycle.spec.Reporter` inside a job: buffers log lines and the
    latest progress and writes them at most every ``interval_s`` seconds; each write reads back
    the cancel flag and raises :class:`JobCancelled` when it is set."""

    def __init__(self, store: Store, job_id: str, *, interval_s: float = REPORT_INTERVAL_S):
        self.store, self.job_id, self.interval_s = store, job_id, interval_s
        self._lines: list[str] = []
        self._state: tuple[float, str] | None = None
        self._written: tuple[float, str] | None = None
        self._last = 0.0
        self.finishing = False

    def log(self, line: str) -> None:
        self._lines.append(line)
        self._flush_if_due()

    def progress(self, fraction: float, message: str) -> None:
        self._state = (min(max(fraction, 0.0), 1.0), message)
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffered log lines and the latest progress (also as a log line, when it
        changed); JobCancelled when the job was cancelled meanwhile."""
        self._last = time.monotonic()
        lines, self._lines = self._lines, []
        if self._state is not None and self._state != self._written:
            lines.append(f"{self._state[0]:4.0%} {self._state[1]}")
            self._written = self._state
        self.store.append_job_log(self.job_id, lines)
        changes = {} if self._state is None else {"progress": self._state[0],
                                                  "message": self._state[1]}
        job = self.store.update_job(self.job_id, expect=("running",), **changes)
        if (job is None or job.cancel_requested) and not self.finishing:
            raise JobCancelled("the job was cancelled")


def run_job(store: Store, job_id: str) -> JobRecord:
    """Run the queued job ``job_id`` in this process (what ``skinlesion jobs run`` does) and
    return it finished. SIGTERM cancels it (see the module docstring)."""
    job = store.update_job(job_id, expect=("queued",), status="running", pid=os.getpid(),
                           started_at=datetime.now(UTC), message="started")
    if job is None:
        raise OperationError(f"job {job_id} is not queued (it is {find_job(store, job_id).status}); "
                             "a job runs once")
    reporter = JobReporter(store, job_id)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if not reporter.finishing:
            raise JobCancelled("the job's process received SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    heartbeat = JobHeartbeat(store, job_id).start()  # how other hosts see that it is alive
    try:
        if job.cancel_requested:
            raise JobCancelled("the job was cancelled before it started")
        result = retrain(store, RetrainSpec.model_validate(job.config), reporter)
        reporter.finishing = True
        reporter.progress(1.0, f"done: candidate {result.version}")
        reporter.flush()
        finished = store.update_job(job_id, expect=("running",), status="succeeded",
                                    finished_at=datetime.now(UTC),
                                    result=result.model_dump(mode="json"))
    except JobCancelled as err:
        reporter.finishing = True
        reporter.log(f"cancelled: {err}")
        reporter.flush()
        finished = store.update_job(job_id, expect=("running",), status="cancelled",
                                    finished_at=datetime.now(UTC), message="cancelled")
    # Whatever stops the run (bad data, a bug, out of memory), the job's row must say it failed
    # and why; the error is then re-raised so the process exits non-zero with its traceback.
    except Exception as err:
        reporter.finishing = True
        reporter.log("".join(traceback.format_exception_only(err)).strip())
        reporter.flush()
        store.update_job(job_id, expect=("running",), status="failed",
                         finished_at=datetime.now(UTC), error=str(err) or type(err).__name__,
                         message="failed")
        raise
    finally:
        heartbeat.stop()
        signal.signal(signal.SIGTERM, previous)
    return finished or store.get_job(job_id)
