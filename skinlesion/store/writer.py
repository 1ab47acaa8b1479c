"""Group commit: rows from concurrent callers share one transaction, each acknowledged only once
its transaction has committed (durable before the answer), on either backend."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from skinlesion.errors import DataError, StoreError
from skinlesion.records import PredictionRecord
from skinlesion.store.facade import Store


class PredictionWriter:
    """Group commit for the API: rows from concurrent callers share one transaction.

    A background thread takes the first waiting row, lingers ``linger_s`` for more (up to
    ``max_batch``) and writes them with :meth:`Store.log_predictions`; rows arriving meanwhile form
    the next batch. :meth:`submit` returns only once its row's transaction has committed (a durable
    acknowledgement) and raises that transaction's error otherwise, so the API can answer 5xx.
    On DuckDB the transaction runs on the process's kept connection; on PostgreSQL on a pooled one.
    Hand-written because neither DuckDB (one synchronous transaction per call) nor psycopg offers
    group commit across callers.
    """

    def __init__(self, store: Store, *, max_batch: int = 256, linger_s: float = 0.002):
        if max_batch < 1:
            raise DataError(f"must be 1 or more, got {max_batch}", field="max_batch")
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.batches_written = 0
        self.rows_written = 0
        # An item is a row with its future, or (None, future): a flush marker resolved once every
        # row queued before it is written.
        self._queue: queue.SimpleQueue[tuple[PredictionRecord | None, Future[None]]] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit_async(self, row: PredictionRecord) -> Future[None]:
        """Queue ``row``; the future completes when its transaction commits (or fails).

        Cancelling the future before the writer takes the row drops the row."""
        return self._put(row)

    def submit(self, row: PredictionRecord, timeout: float | None = None) -> None:
        """Queue ``row`` and wait until it is committed; raises the write's error if it failed."""
        self._put(row).result(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every row submitted before this call is written (committed or failed)."""
        self._put(None).result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting rows, write those queued, and stop the thread."""
        with self._state:
            already = self._closed
            self._closed = True
        if not already:
            self._queue.put((None, Future()))  # wakes the thread if it waits for work
        self._thread.join(timeout)

    def _put(self, row: PredictionRecord | None) -> Future[None]:
        future: Future[None] = Future()
        with self._state:
            if self._closed:
                raise StoreError("the prediction writer is closed; the service is shutting down")
            self._queue.put((row, future))
        return future

    def _next_batch(self) -> list[tuple[PredictionRecord | None, Future[None]]]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.linger_s
        while len(batch) < self.max_batch and batch[-1][0] is not None:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            pending = [(row, future) for row, future in batch if row is not None]
            if pending:
                self._write(pending)
            for row, future in batch:
                if row is None:
                    future.set_result(None)
            with self._state:
                if self._closed and self._queue.empty():
                    return

    def _write(self, pending: list[tuple[PredictionRecord, Future[None]]]) -> None:
        pending = [(row, future) for row, future in pending if future.set_running_or_notify_cancel()]
        if not pending:
            return
        try:
            self.store.log_predictions([row for row, _ in pending])
        # Any failure (busy store, full disk...) must reach every waiting caller, or they would wait
        # forever and the writer thread would die; nothing is swallowed.
        except Exception as err:
            for _, future in pending:
                future.set_exception(err)
            return
        self.batches_written += 1
        self.rows_written += len(pending)
        for _, future in pending:
            future.set_result(None)
