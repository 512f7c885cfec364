"""The writer thread behind the HTTP inferences' audit rows (``app.store.behind``), against a
recording ``write_many``: order, batches, flush, a failed write logged without its values (and
the thread still writing), a full queue, rows after close."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from app.store.behind import AuditBehind


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        self.gate.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database is gone: " + rows[0]["secret"])
        self.batches.append(list(rows))


def test_rows_are_written_in_order_in_batches_and_flush_waits() -> None:
    rec = Recorder()
    behind = AuditBehind(rec)
    rec.gate.clear()  # the writer takes the first row and waits: the rest queue up
    for i in range(600):
        behind.put({"i": i})
    rec.gate.set()
    behind.flush()
    written = [row["i"] for batch in rec.batches for row in batch]
    assert written == list(range(600))
    assert len(rec.batches) < 600 and max(len(b) for b in rec.batches) <= 256
    behind.close()


def test_a_failed_write_is_logged_without_values_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    behind = AuditBehind(rec)
    caplog.set_level("ERROR", logger="medserve.audit")
    rec.fail_next = True
    behind.put({"secret": "1.2.840.99"})
    behind.flush()
    behind.put({"secret": "later"})
    behind.flush()
    assert [b[0]["secret"] for b in rec.batches] == ["later"]
    (failure,) = [r for r in caplog.records if r.getMessage() == "audit write failed"]
    assert getattr(failure, "error", None) == "RuntimeError" and failure.rows == 1
    assert "1.2.840.99" not in caplog.text
    behind.close()


def test_a_full_queue_and_a_closed_writer_refuse_rows_with_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    behind = AuditBehind(rec, capacity=2)
    caplog.set_level("ERROR", logger="medserve.audit")
    rec.gate.clear()
    behind.put({"i": 0})
    while behind._queue.qsize():  # the writer holds row 0 at the gate
        threading.Event().wait(0.001)
    behind.put({"i": 1})
    behind.put({"i": 2})
    behind.put({"i": 3})  # the queue holds two: refused
    rec.gate.set()
    behind.close()
    behind.put({"i": 4})  # after close: refused
    assert [row["i"] for batch in rec.batches for row in batch] == [0, 1, 2]
    errors = [getattr(r, "error", None) for r in caplog.records]
    assert errors == ["QueueFull", "Closed"]


def test_close_without_a_row_starts_no_thread() -> None:
    behind = AuditBehind(Recorder())
    behind.flush()
    behind.close()
    assert behind._thread is None


def test_flush_waits_for_the_rows_queued_before_it_not_for_later_ones() -> None:
    """Under a steady stream the queue is never empty: a reader (``/audit``) still gets its
    answer once the rows queued before it are written."""
    import time

    def slow(rows: list[dict[str, Any]]) -> None:
        time.sleep(0.05)  # about 5,000 rows/s at most: the stream below outruns it

    behind = AuditBehind(slow)
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            behind.put({"i": 0})
            time.sleep(0.00005)

    producer = threading.Thread(target=stream)
    producer.start()
    try:
        time.sleep(0.1)
        started = time.monotonic()
        assert behind.flush(timeout=10)
        assert time.monotonic() - started < 5 and producer.is_alive()
        assert behind._queue.qsize() > 0  # rows queued after the call were not waited for
    finally:
        stop.set()
        producer.join()
    behind.close()


def test_a_stream_goes_in_one_batch_after_the_linger_which_readers_and_close_cut_short() -> None:
    """A row waits ``linger`` for the next ones (a stream of answers is written in batches,
    away from the moment each answer is handed back); ``flush`` and ``close`` do not wait it."""
    import time

    rec = Recorder()
    exits: list[str] = []

    def on_exit() -> None:
        exits.append(threading.current_thread().name)

    behind = AuditBehind(rec, linger=60, on_exit=on_exit)
    for i in range(5):
        behind.put({"i": i})
    started = time.monotonic()
    assert behind.flush(timeout=30)
    assert rec.batches == [[{"i": i} for i in range(5)]]
    behind.put({"i": 5})
    behind.close()
    assert time.monotonic() - started < 30
    assert rec.batches[1:] == [[{"i": 5}]] and exits == ["medserve-audit"]
