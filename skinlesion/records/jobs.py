"""Background jobs (retraining runs): a row of ``jobs`` per job, with the machine it runs on and
its heartbeat."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from typing import Literal, get_args

from pydantic import Field

from skinlesion.records.fields import JsonDict, NonBlank, Record, UtcDatetime, new_id, now

JobTrigger = Literal["manual", "scheduled", "event", "active_learning"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_TRIGGERS: tuple[str, ...] = get_args(JobTrigger)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
#: statuses of a job that may still be working (at most one such job per model)
UNFINISHED_JOB_STATUSES: tuple[str, ...] = ("queued", "running")
#: how often a running job's process records that it is alive (``jobs.heartbeat_at``)
JOB_HEARTBEAT_S = 10.0
#: a job on another host whose heartbeat is older than this counts as gone (missed beats: its
#: process or machine stopped)
JOB_STALE_AFTER = timedelta(seconds=6 * JOB_HEARTBEAT_S)


def this_host() -> str:
    """The name of the machine this process runs on (where a job it launches runs)."""
    return socket.gethostname()


class JobRecord(Record):
    """A background job (a retraining run): a row of ``jobs``.

    ``model`` is the model version the job works on; at most one unfinished (queued or running) job
    per model is stored (:meth:`Store.create_job`). ``pid`` is the job's process once launched, on
    the machine ``host`` (the launcher's: a job runs where it was launched; None on rows stored
    before hosts were recorded, which count as this machine's); ``heartbeat_at`` is when that
    process last said it is alive (every :data:`JOB_HEARTBEAT_S` while it runs), which is how
    another host judges it; ``progress`` (0..1) and ``message`` say how far it got;
    ``cancel_requested`` asks it to stop at its next check; ``result`` holds what it produced (e.g.
    the new version id and the champion/challenger comparison), ``error`` why it failed."""

    id: str = Field(default_factory=new_id)
    kind: NonBlank = "retrain"
    model: NonBlank
    trigger: JobTrigger
    status: JobStatus = "queued"
    reason: str = ""
    requested_by: NonBlank
    role: NonBlank
    created_at: UtcDatetime = Field(default_factory=now)
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    pid: int | None = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    message: str = ""
    cancel_requested: bool = False
    config: JsonDict = Field(default_factory=dict)
    result: JsonDict = Field(default_factory=dict)
    error: str = ""
    host: str | None = Field(default_factory=this_host)
    heartbeat_at: UtcDatetime | None = None

    @property
    def is_finished(self) -> bool:
        return self.status not in UNFINISHED_JOB_STATUSES

    def runs_on(self, host: str) -> bool:
        """Whether the job's process is on the machine ``host`` (so its pid means something there);
        a job stored without a host counts as local."""
        return self.host is None or self.host == host

    def heartbeat_fresh(self, at: datetime, stale_after: timedelta = JOB_STALE_AFTER) -> bool:
        """Whether the job's process said it was alive less than ``stale_after`` before ``at``
        (before its first beat: since it started, or was queued)."""
        last = self.heartbeat_at or self.started_at or self.created_at
        return at - last < stale_after


#: The columns of ``jobs``, in the order of the :class:`JobRecord` fields.
JOB_COLUMNS: tuple[str, ...] = tuple(JobRecord.model_fields)
