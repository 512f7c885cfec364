"""Connection hygiene of a real ``medserve serve`` process: stalled headers and silent
connections are closed, a stalled body is answered 408 and closed, idle keep-alive connections
close, liveness answers while 2,000 stalled connections are open (issue 18's figure), and the
open-files soft limit is raised to the hard one at start."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.service import running_service, service_env
from tests.tiny_model import write_tiny_suite

READ_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("connections")
    env = service_env(
        MEDSERVE_MODEL_DIR=str(write_tiny_suite(tmp / "models")),
        MEDSERVE_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
        MEDSERVE_KEEP_ALIVE_SECONDS="1",
    )
    with running_service(env, tmp / "service.log") as (url, proc):
        yield url, proc.pid


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent before."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        return True, received
    return False, received


def test_a_silent_connection_is_closed(server: tuple[str, int]) -> None:
    with _connect(server[0]) as sock:
        closed, data = _closed_within(sock, READ_TIMEOUT + 3)
    assert closed and data == b""


def test_stalled_headers_are_closed(server: tuple[str, int]) -> None:
    with _connect(server[0]) as sock:
        sock.sendall(b"POST /classify/xray HTTP/1.1\r\nHost: x\r\n")
        time.sleep(1)
        sock.sendall(b"X-Slow: 1\r\n")  # a byte now and then does not keep it open
        closed, data = _closed_within(sock, READ_TIMEOUT + 3)
    assert closed and data == b""


def test_a_stalled_body_is_answered_408_and_closed(server: tuple[str, int]) -> None:
    with _connect(server[0]) as sock:
        sock.sendall(
            b"POST /classify/xray HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"\x89PNG\r\n\x1a\n"
        )
        started = time.monotonic()
        closed, data = _closed_within(sock, READ_TIMEOUT + 5)
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"application/problem+json" in data and b'"request_timeout"' in data
    assert closed and elapsed < READ_TIMEOUT + 4


def test_an_idle_keep_alive_connection_closes(server: tuple[str, int]) -> None:
    with _connect(server[0]) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, data = _closed_within(sock, 4)
    assert data.startswith(b"HTTP/1.1 200") and closed


def test_liveness_answers_while_many_connections_stall(server: tuple[str, int]) -> None:
    url = server[0]
    # This process holds the stalled ends: its soft open-files limit up to the hard one, as the
    # service raises its own (Debian's soft default, 1024, would not hold 2,000).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = 2000 if hard == resource.RLIM_INFINITY else min(2000, hard - 100)
    stalled = []
    try:
        for _ in range(count):
            sock = _connect(url)
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
            stalled.append(sock)
        started = time.monotonic()
        r = httpx.get(f"{url}/health/live", timeout=5)
        assert r.status_code == 200 and time.monotonic() - started < 2
        time.sleep(READ_TIMEOUT + 2)
        still_open = 0
        for sock in stalled:
            closed, _ = _closed_within(sock, 0.05)
            still_open += not closed
        assert still_open == 0, f"{still_open} of {count} stalled connections are still open"
    finally:
        for sock in stalled:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_open_files_limit_is_raised(server: tuple[str, int]) -> None:
    limits = Path(f"/proc/{server[1]}/limits").read_text().splitlines()
    (line,) = [x for x in limits if x.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    assert soft == hard
