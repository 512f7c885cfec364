"""The JSON log line is the one ``json.dumps`` writes (orjson writes it now; issue 18)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from app.logs import JsonFormatter, request_id_var

SECRET = "-".join(("quoted", "input"))  # not in the source line the stack shows


def _record(message: str, exc: bool = False, **extra: object) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError(SECRET)
        except ValueError:
            info = sys.exc_info()
    record = logging.LogRecord("medserve.access", logging.INFO, __file__, 1, message, (), info)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _as_json_dumps_writes(line: str) -> str:
    return json.dumps(json.loads(line), separators=(",", ":"), default=str)


@pytest.mark.parametrize(
    ("message", "extra"),
    [
        ("request", {"method": "POST", "path": "/segment/mri", "status": 200, "duration_ms": 6.11}),
        ("request", {"status": 413, "duration_ms": 0.1, "model": None, "event": "access"}),
        ("service started", {"event": "startup", "version": "1.2.0"}),
        ("caf\u00e9 \u2192 \u00b5s", {"reason": "r\u00e9sum\u00e9", "duration_ms": 1e16}),
        ("no extras", {}),
    ],
)
def test_log_lines_are_what_json_dumps_writes(message: str, extra: dict[str, object]) -> None:
    token = request_id_var.set("rid-1")
    try:
        line = JsonFormatter().format(_record(message, **extra))
    finally:
        request_id_var.reset(token)
    assert line == _as_json_dumps_writes(line)
    fields = json.loads(line)
    assert fields["message"] == message and fields["request_id"] == "rid-1"
    assert {k: fields[k] for k in extra if extra[k] is not None} == {
        k: v for k, v in extra.items() if v is not None
    }


def test_an_exception_line_names_the_type_and_frames_not_the_message() -> None:
    line = JsonFormatter().format(_record("unhandled error", exc=True, event="error"))
    assert line == _as_json_dumps_writes(line)
    fields = json.loads(line)
    assert fields["exception"] == "ValueError" and SECRET not in line
    assert "_record" in fields["stack"]
