"""Audit rows written behind the answer: one writer thread per process, rows in batches.

An upload's ``ok`` row used to be committed in the inference's worker thread before the answer
went out: 0.5 ms of a 12 ms MRI request on a 2-core machine (issue #18); a PostgreSQL commit
takes 0.7 ms on a local socket and more across a network. Queued here, the row is committed
after the answer has gone. The writer lingers ``LINGER_SECONDS`` after a row before it writes,
and after a write it lingers again before it waits on the queue: under a stream of requests
the rows go in batches, a ``put`` never wakes the thread, and the write (it holds the GIL for
about 0.1 ms) lands wherever the stream is, most often inside the next inference, which does
not hold the GIL; a row written at once fell at the moment the event loop was handing the
answer back (MRI slice: 0.6 ms of hand-back instead of 0.24 ms). What that gives up: a process
killed in that time loses the rows (never the answers); a reader in another process may not
see a row for that long. Readers in this process wait for the rows queued before they asked
(``flush``, which cuts the linger short), shutdown drains the queue, a full queue (the
database stalled) drops the row with the same error log as a failed write.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("medserve.audit")

Row = dict[str, Any]
_STOP: Row = {}  # the sentinel close() queues (a row always has its columns)
_BATCH = 256  # rows per INSERT at most (a backlog after a stall is written in a few)
LINGER_SECONDS = 0.02


class AuditBehind:
    """Rows queued by ``put`` and written by ``write_many(rows)`` in one thread, in order."""

    def __init__(
        self,
        write_many: Callable[[list[Row]], None],
        capacity: int = 10_000,
        *,
        linger: float = LINGER_SECONDS,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._write_many = write_many
        self._linger = linger
        self._on_exit = on_exit  # called in the writer thread as it stops (a held connection)
        self._hurry = threading.Event()  # a reader or close is waiting: no linger
        self._queue: queue.Queue[Row] = queue.Queue(capacity)
        self._cond = threading.Condition()
        self._queued = 0  # rows accepted by put
        self._settled = 0  # rows written, or whose write failed
        self._thread: threading.Thread | None = None
        self._closed = False

    def put(self, row: Row) -> None:
        """Queue one row (never blocks); refused after ``close``, or when the queue is full."""
        with self._cond:
            if self._closed:
                reason = "Closed"
            else:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="medserve-audit", daemon=True
                    )
                    self._thread.start()
                try:
                    self._queue.put_nowait(row)
                    self._queued += 1
                    return
                except queue.Full:
                    reason = "QueueFull"
        log.error("audit write failed", extra={"event": "audit", "error": reason, "rows": 1})

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row queued before this call is written (or its failure logged),
        at most ``timeout`` seconds (rows queued meanwhile are not waited for); whether they
        were."""
        with self._cond:
            target = self._queued
            if self._settled >= target:
                return True
            self._hurry.set()
            return self._cond.wait_for(lambda: self._settled >= target, timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread; later rows are refused (logged)."""
        with self._cond:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            self._hurry.set()
            thread.join()

    def _run(self) -> None:
        try:
            while True:
                batch = [self._queue.get()]  # idle: the first row wakes the thread
                full = False
                while True:
                    if not full:
                        self._pause()  # rows queued meanwhile join the batch, waking no one
                    while len(batch) < _BATCH:
                        try:
                            batch.append(self._queue.get_nowait())
                        except queue.Empty:
                            break
                    if not batch:
                        break  # a whole linger without a row: idle again
                    full = len(batch) == _BATCH  # a backlog: the next batch at once
                    if not self._write(batch):
                        return
                    batch = []
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _pause(self) -> None:
        if self._hurry.wait(self._linger) and not self._closed:
            self._hurry.clear()

    def _write(self, batch: list[Row]) -> bool:
        """Write ``batch`` in one call; whether to go on (``_STOP`` was not among it)."""
        rows = [r for r in batch if r is not _STOP]
        try:
            if rows:
                self._write_many(rows)
        except Exception as exc:  # logged, never raised: the answers went out already
            log.error(
                "audit write failed",
                extra={"event": "audit", "error": type(exc).__name__, "rows": len(rows)},
            )
        finally:
            with self._cond:
                self._settled += len(rows)
                self._cond.notify_all()
        return len(rows) == len(batch)
