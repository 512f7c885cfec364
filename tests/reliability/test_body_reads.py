"""How the service's HTTP protocol (app/server.py) takes request bodies from the socket, on a
real uvicorn server on 127.0.0.1 with that protocol on uvloop: a body the app admitted arrives
in pieces of up to ``BODY_HIGH_WATER`` bytes (not uvicorn's 64 KiB), whole and in order; one it
did not admit (a refused body being drained) in uvicorn's pieces; a body the app has not asked
for stays paused at uvicorn's limit; pipelined requests keep their bodies apart; the service's
upload and V2 paths admit theirs, a refused request's drain does not."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from app.config import Settings
from app.main import create_app
from app.server import (
    BODY_HIGH_WATER,
    GuardedHttpToolsProtocol,
    allow_large_reads,
    large_reads_allowed,
)
from tests.servers import uvicorn_in_thread
from tests.tiny_model import write_tiny_model

MiB = 1024 * 1024


@dataclass
class Recorder:
    """An ASGI app that answers each POST with the sha256 of its body; it records the size of
    every body message, and waits for ``go`` before it reads a body."""

    go: threading.Event = field(default_factory=threading.Event)
    sizes: list[list[int]] = field(default_factory=list)
    admit: bool = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while not self.go.is_set():
            await asyncio.sleep(0.01)
        sizes: list[int] = []
        self.sizes.append(sizes)
        if self.admit:
            allow_large_reads(scope)
        digest = hashlib.sha256()
        more = True
        while more:
            message = await receive()
            assert message["type"] == "http.request"
            sizes.append(len(message["body"]))
            digest.update(message["body"])
            more = message.get("more_body", False)
        body = digest.hexdigest().encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Running:
    app: Recorder
    server: uvicorn.Server
    port: int


def _protocols(server: uvicorn.Server) -> list[GuardedHttpToolsProtocol]:
    """The server's open connections."""
    connections = server.server_state.connections
    return [p for p in connections if isinstance(p, GuardedHttpToolsProtocol)]


@pytest.fixture
def running() -> Iterator[Running]:
    app = Recorder()
    with uvicorn_in_thread(app) as server:
        yield Running(app, server, server.config.port)


def _post(body: bytes, path: str = "/") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _answers(sock: socket.socket, count: int) -> list[bytes]:
    """The bodies of ``count`` answers read from ``sock`` (each 64 hex digits)."""
    data = b""
    sock.settimeout(30)
    while data.count(b"\r\n\r\n") < count or len(data.rsplit(b"\r\n\r\n", 1)[1]) < 64:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    return [part[:64] for part in data.split(b"\r\n\r\n")[1:]]


def test_a_body_being_read_arrives_in_large_pieces(running: Running) -> None:
    body = bytes(range(256)) * (24 * MiB // 256)
    running.app.go.set()
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(_post(body))
        (answer,) = _answers(sock, 1)
    assert answer == hashlib.sha256(body).hexdigest().encode()
    (sizes,) = running.app.sizes
    assert sum(sizes) == len(body)
    # uvicorn alone pauses past 64 KiB: some hundreds of messages for 24 MiB
    assert len(sizes) <= 4 * len(body) // BODY_HIGH_WATER, sizes
    assert max(sizes) <= BODY_HIGH_WATER + MiB


def test_a_body_not_yet_asked_for_is_held_at_uvicorns_limit(running: Running) -> None:
    body = b"\x01" * (16 * MiB)
    request = _post(body)
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # as much as the kernel takes while the app waits
            try:
                sent += sock.send(request[sent : sent + MiB])
            except BlockingIOError:
                time.sleep(0.05)
        (protocol,) = _protocols(running.server)
        assert protocol.cycle is not None
        buffered = len(protocol.cycle.body)
        assert 0 < buffered <= HIGH_WATER_LIMIT + MiB, buffered
        assert sent < len(body)  # the rest is still with the client
        running.app.go.set()
        sock.setblocking(True)
        sock.sendall(request[sent:])
        (answer,) = _answers(sock, 1)
    assert answer == hashlib.sha256(body).hexdigest().encode()


def test_pipelined_requests_keep_their_bodies_apart(running: Running) -> None:
    bodies = [b"a" * (9 * MiB), b"b" * 1000, b"c" * (5 * MiB + 17)]
    running.app.go.set()
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(b"".join(_post(b) for b in bodies))
        answers = _answers(sock, len(bodies))
    assert answers == [hashlib.sha256(b).hexdigest().encode() for b in bodies]
    assert [sum(s) for s in running.app.sizes] == [len(b) for b in bodies]


def test_a_body_the_app_did_not_admit_comes_in_uvicorns_pieces(running: Running) -> None:
    running.app.admit = False  # as a refused upload is drained: any number at once
    running.app.go.set()
    body = b"\x02" * (8 * MiB)
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(_post(body))
        (answer,) = _answers(sock, 1)
    assert answer == hashlib.sha256(body).hexdigest().encode()
    (sizes,) = running.app.sizes
    assert len(sizes) > 8 * MiB // (HIGH_WATER_LIMIT + MiB)
    assert max(sizes) <= HIGH_WATER_LIMIT + MiB


def _png(side: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("admitted", [True, False])
@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/classify/xray", "image/png"), ("/v2/models/pneumonia_xray/infer", "application/json")],
)
def test_the_service_admits_its_upload_bodies_and_not_a_drained_one(
    tmp_path: Path, admitted: bool, path: str, media_type: str
) -> None:
    write_tiny_model(tmp_path / "models", name="pneumonia_xray")
    # an image, or a V2 request without inputs (read after admission, then answered 400)
    body = _png(64) if media_type == "image/png" else b'{"inputs": []}'
    # a budget smaller than the body (and its copy): refused before a byte is read, drained
    extra = {} if admitted else {"max_inflight_bytes": len(body)}
    settings = Settings(model_dir=tmp_path / "models", data_dir=tmp_path / "data", **extra)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {media_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with (
        uvicorn_in_thread(create_app(settings), lifespan="on") as server,
        socket.create_connection(("127.0.0.1", server.config.port)) as sock,
    ):
        sock.sendall(head.encode() + body)
        sock.settimeout(30)
        answer = sock.recv(65536)
        status = answer.split(b" ", 2)[1]
        assert (status != b"503") is admitted, answer
        (protocol,) = _protocols(server)
        assert protocol.cycle is not None
        assert large_reads_allowed(protocol.cycle.scope) is admitted
