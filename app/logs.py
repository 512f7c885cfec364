"""JSON-lines logging with the request id of the request being served.

What is logged: time, level, logger, message, request id, and for access lines method, path,
status, duration and model. Never file names, DICOM tags, bodies or exception messages from
decoders (they can quote tag values).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import traceback
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "medserve_request_id", default=None
)

# Attributes of a LogRecord that callers may set through ``extra=`` and that we emit.
_FIELDS = ("method", "path", "status", "duration_ms", "model", "event", "reason", "version")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type and the frames, not the message: messages from decoders can quote input.
            out["exception"] = record.exc_info[0].__name__
            out["stack"] = "".join(traceback.format_tb(record.exc_info[2]))
        # orjson writes the line (a tenth of json.dumps's work); a line with other than ASCII
        # characters is written as json.dumps writes it, escaped, as before
        line = orjson.dumps(out, default=str).decode()
        return line if line.isascii() else json.dumps(out, separators=(",", ":"), default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at set-up)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    """Route the root, uvicorn and medserve loggers to one JSON stream on stderr. The lines
    name no source file, function, thread or process, so records do not look them up (the
    logging HOWTO's "Optimization": the caller's frame walk and the thread and process names
    were a third of each access line's work, after every answer; issue 18)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # The access line is ours (with request id and model); uvicorn's would duplicate it.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
