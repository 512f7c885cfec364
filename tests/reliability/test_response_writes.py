"""How the service's HTTP protocol (app/server.py) writes answers, on a real uvicorn server on
127.0.0.1 on uvloop: a whole answer's head and body in one send; a streamed answer's head at
once, before its body is ready; ``100 Continue`` before the client sends its body; an answer
on a connection that closes after it complete; the head of an app that fails after it, before
the connection closes. The connection's transport is wrapped in a
recorder that passes every call through and notes the writes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from app.server import protocol_with
from tests.servers import uvicorn_in_thread

WRITES: list[tuple[str, list[bytes]]] = []  # (write or writelines, the pieces) of all servers


class Recording:
    """A connection's transport, every call passed through; writes noted in ``WRITES``."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(("write", [bytes(data)]))
        self._transport.write(data)

    def writelines(self, pieces: Any) -> None:
        pieces = [bytes(p) for p in pieces]
        WRITES.append(("writelines", pieces))
        self._transport.writelines(pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def recording_protocol() -> type:
    base = protocol_with(10.0)

    class RecordingProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(Recording(transport))

    return RecordingProtocol


async def whole(request: Request) -> Response:
    await request.body()
    return PlainTextResponse("x" * 5000)


async def streamed(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.5)
        yield b"first"
        await asyncio.sleep(0.05)
        yield b"second"

    return StreamingResponse(body(), media_type="text/plain")


class Broken(Exception):
    pass


async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An answer whose head is sent, then the app fails before its body: uvicorn closes the
    connection in the same turn, with the head still held."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-part", b"1")]})
    raise Broken


ROUTES = Starlette(
    routes=[Route("/whole", whole, methods=["GET", "POST"]), Route("/streamed", streamed)]
)


async def APP(scope: dict[str, Any], receive: Any, send: Any) -> None:
    app = broken if scope.get("path") == "/broken" else ROUTES
    await app(scope, receive, send)


@pytest.fixture
def port() -> Any:
    WRITES.clear()
    with uvicorn_in_thread(APP, http=recording_protocol()) as server:
        yield server.config.port


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    """One answer with a Content-Length body, or a chunked one up to its last chunk."""
    data = b""
    while True:
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").lower().split("\r\n")
            sizes = [int(h.split(":")[1]) for h in lines if h.startswith("content-length")]
            length = sizes[0] if sizes else None
            if (length is not None and len(rest) >= length) or rest.endswith(b"0\r\n\r\n"):
                return data
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection early"
        data += chunk


def _heads(kind: str) -> list[list[bytes]]:
    return [pieces for k, pieces in WRITES if k == kind and pieces[0].startswith(b"HTTP/1.1 ")]


def test_a_whole_answer_goes_out_in_one_send(port: int) -> None:
    with _connect(port) as sock:
        for _ in range(3):  # keep-alive: each answer on its own
            sock.sendall(b"POST /whole HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            answer = _read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"x" * 5000)
    joined = _heads("writelines")
    assert len(joined) == 3 and not _heads("write")
    for head, body in joined:
        assert head.endswith(b"\r\n\r\n") and b"content-length: 5000" in head
        assert body == b"x" * 5000


def test_a_streamed_answers_head_is_not_held_for_its_body(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /streamed HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        first = sock.recv(65536)
        waited = time.monotonic() - start
        assert first.startswith(b"HTTP/1.1 200 ") and b"first" not in first
        assert waited < 0.45  # the body's first piece comes after 0.5 s
        rest = _read_answer_after(sock, first)
    assert b"first" in rest and b"second" in rest
    assert len(_heads("write")) == 1 and not _heads("writelines")


def _read_answer_after(sock: socket.socket, data: bytes) -> bytes:
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    return data


def test_100_continue_comes_before_the_body_is_sent(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(
            b"POST /whole HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"x" * 5000)


def test_an_answer_before_close_arrives_whole(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"x" * 5000)
    assert b"connection: close" in data.split(b"\r\n\r\n")[0]


def test_a_head_held_when_the_connection_closes_is_sent_first(port: int) -> None:
    """The app fails after its head: uvicorn closes the connection; the client still gets the
    head (as uvicorn alone would send it), then the end of the stream."""
    with _connect(port) as sock:
        sock.sendall(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and b"x-part: 1" in data
    assert data.endswith(b"\r\n\r\n")  # the head and nothing after it
