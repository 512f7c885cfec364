"""Progress on stderr: a bar (rows done, rate, ETA) on a terminal, JSON lines otherwise."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class Progress:
    """``update(n)`` after each written part; ``close()`` prints the final line."""

    def __init__(self, total: int | None, stream: TextIO | None = None, every_s: float = 1.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.start = time.monotonic()
        self.every_s = every_s
        self._last = 0.0
        self._printed = -1

    def _figures(self) -> dict[str, float | int | None]:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if self.total is not None and rate > 0 else None
        return {
            "done": self.done,
            "total": self.total,
            "rate_per_s": round(rate, 2),
            "elapsed_s": round(elapsed, 1),
            "eta_s": round(eta, 1) if eta is not None else None,
        }

    def update(self, rows: int, force: bool = False) -> None:
        self.done += rows
        now = time.monotonic()
        if not force and now - self._last < self.every_s and self.done != self.total:
            return
        self._last = now
        self._printed = self.done
        f = self._figures()
        if self.tty:
            total = self.total or 0
            width = 30
            filled = int(width * self.done / total) if total else 0
            bar = "#" * filled + "." * (width - filled)
            eta = f"{f['eta_s']:.0f}s" if f["eta_s"] is not None else "?"
            of = f"/{total}" if self.total is not None else ""
            self.stream.write(
                f"\r[{bar}] {self.done}{of} rows  {f['rate_per_s']:.1f}/s  ETA {eta}   "
            )
        else:
            self.stream.write(json.dumps({"event": "progress", **f}) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._printed != self.done or self.done == 0:
            self.update(0, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
