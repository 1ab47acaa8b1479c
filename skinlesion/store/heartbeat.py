"""A running job's heartbeat: a background thread of the job's process records every few seconds
that the process is alive (``jobs.heartbeat_at``), so a host that cannot see the process (the job
runs on another machine) can still tell a live job from one whose process or machine stopped."""

from __future__ import annotations

import threading

from skinlesion.errors import StoreError
from skinlesion.records import JOB_HEARTBEAT_S
from skinlesion.store.facade import Store


class JobHeartbeat:
    """Beats for the job ``job_id`` every ``interval_s`` seconds (the first at once) from
    :meth:`start` until :meth:`stop` or the job has finished. A beat the store refuses (busy, or
    down for a moment) is skipped: the next one may get through, and a job that misses beats for
    long enough is judged gone, which is what it looks like from outside."""

    def __init__(self, store: Store, job_id: str, *, interval_s: float = JOB_HEARTBEAT_S):
        self.store, self.job_id, self.interval_s = store, job_id, interval_s
        self.beats = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-heartbeat-{job_id[:8]}",
                                        daemon=True)

    def start(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> JobHeartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                if not self.store.beat_job(self.job_id):
                    return  # the job has finished: nothing to keep alive
                self.beats += 1
            except StoreError:
                pass  # skipped; see the class docstring
            self._stopped.wait(self.interval_s)
