"""The byte budget's waits cannot form a cycle: claims held in parts by two requests resolve
at once (the younger request is refused), not after the admission timeout."""

from __future__ import annotations

import threading
import time

from app.limiter import ByteBudget


def test_a_younger_claim_does_not_wait_behind_an_older_waiting_one() -> None:
    budget = ByteBudget(1000)
    assert budget.take(600, 1, seq=0) and budget.take(300, 1, seq=1)  # each holds a part
    got: list[bool] = []
    older = threading.Thread(target=lambda: got.append(budget.take(300, 10, seq=0)))
    older.start()
    time.sleep(0.2)  # the older request is waiting for room
    started = time.monotonic()
    assert budget.take(300, 10, seq=1) is False  # would wait on the older: refused at once
    assert time.monotonic() - started < 1
    budget.give(300)  # the younger request's part is released as it is refused
    older.join(5)
    assert got == [True] and budget.used == 900


def test_an_older_wait_wakes_and_refuses_a_younger_waiter() -> None:
    budget = ByteBudget(1000)
    assert budget.take(500, 1, seq=0) and budget.take(400, 1, seq=1)
    got: dict[str, bool] = {}

    def younger() -> None:
        got["younger"] = budget.take(200, 10, seq=1)
        budget.give(400)  # refused: the request ends and its part is released

    waiter = threading.Thread(target=younger)
    waiter.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert budget.take(200, 10, seq=0) is True  # after the younger gave up, not after 10 s
    waiter.join(5)
    assert got == {"younger": False} and time.monotonic() - started < 2
    assert budget.used == 700


def test_a_claim_that_fits_is_taken_at_once_and_a_timeout_still_bounds_a_wait() -> None:
    budget = ByteBudget(100)
    assert budget.take(60, 1, seq=5)
    started = time.monotonic()
    assert budget.take(60, 0.3, seq=6) is False  # no older waiter, nothing frees: the timeout
    assert 0.25 < time.monotonic() - started < 2
    assert budget.used == 60
