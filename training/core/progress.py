"""Progress of long work (synthesis, data loading, evaluation, studies): a tqdm bar with rate
and ETA on a terminal, JSON lines otherwise (one object per line on stderr, e.g.
``{"progress": "synth", "done": 120, "total": 1200, "rate_per_s": 1.6, "eta_s": 675.0}``), so
logs and CI show it too. ``MEDSERVE_PROGRESS=bar|json|off`` forces one. Keras keeps its own
per-epoch output during training."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

JSON_EVERY_S = 10.0  # at most one JSON line per this many seconds (besides 5 % steps)


def _mode(stream: IO[str]) -> str:
    forced = os.environ.get("MEDSERVE_PROGRESS", "").strip().lower()
    if forced in ("bar", "json", "off"):
        return forced
    return "bar" if stream.isatty() else "json"


class Progress:
    """Count ``done`` of ``total`` items of work called ``desc``; ``update(n)`` after each."""

    def __init__(
        self, desc: str, total: int | None, *, unit: str = "it", stream: IO[str] | None = None
    ) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.mode = _mode(self.stream)
        self.done = 0
        self.start = time.monotonic()
        self._last_line = 0.0
        self._last_step = -1
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=True)

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else None
        eta = (
            (self.total - self.done) / rate
            if rate and self.total is not None and self.total >= self.done
            else None
        )
        record: dict[str, Any] = {"progress": self.desc, "done": self.done, "total": self.total}
        record["unit"] = self.unit
        record["rate_per_s"] = round(rate, 3) if rate else None
        record["eta_s"] = round(eta, 1) if eta is not None else None
        if final:
            record["elapsed_s"] = round(elapsed, 1)
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
        self._last_line = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.mode == "bar":
            self._bar.update(n)
        elif self.mode == "json":
            step = self.done * 20 // self.total if self.total else -1
            now = time.monotonic()
            if step != self._last_step or now - self._last_line >= JSON_EVERY_S:
                self._last_step = step
                self._line()

    def close(self) -> None:
        if self.mode == "bar":
            self._bar.close()
        elif self.mode == "json":
            self._line(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    items: Iterable[T], desc: str, total: int | None = None, *, unit: str = "it"
) -> Iterator[T]:
    """``items`` unchanged, reporting each one as done (``total``: ``len(items)`` if it has
    one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit=unit) as bar:
        for item in items:
            yield item
            bar.update()
