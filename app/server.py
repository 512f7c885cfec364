"""Connection hygiene below the ASGI app: uvicorn's httptools HTTP/1.1 protocol with a header
deadline.

uvicorn closes idle keep-alive connections, but a connection that never completes its request
headers (a client that connects and sends nothing, or a byte now and then) is held for ever.
``GuardedHttpToolsProtocol`` closes it once its headers have taken longer than the read
timeout. The body's progress is watched by ``app.middleware.BodyLimitMiddleware`` (408 on a
stall).

httptools (llhttp, C) rather than h11 (pure Python): the same HTTP/1.1 semantics, and request
bodies reach the app about twice as fast (a 10 MB film upload, a 157 MB CT: measured in
BENCHMARKS.md's hospital section), which is most of what an upload costs besides decoding.

While the app reads a body it has admitted, up to ``BODY_HIGH_WATER`` bytes of it are taken
from the socket before reading pauses, instead of uvicorn's 64 KiB: a 157 MB CT then reaches
the app in 50-70 messages rather than some 650, each a wake-up of the reading task, a copy
and a pause/resume of the transport (side by side, medians of five server pairs: the CT
``.nii`` upload 0.90x, zip 0.92x, multipart 0.90x; bench/ab.py, issue 18). Only for a body the
app has admitted (``allow_large_reads``, marked in the request's scope state just before the
app reads it: it has room in the memory budget, ``app.limiter``): a request waiting for
admission, one answered without its body and a refused body being drained (any number of them
at once) are read as uvicorn reads them, so a connection holds no more than it did.

A response's head (status line and headers) is held back until its body is written, and both
go out in one send (``HeldHead``): uvicorn writes them apart, two sends and two segments on a
``TCP_NODELAY`` socket, which the client reads as two wake-ups. A head whose body does not
follow in the same turn of the event loop (a streamed answer, a ``100 Continue``) goes out at
the loop's next turn. MRI slice side by side 0.99x (bench/ab.py, issue 18).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

BODY_HIGH_WATER = 4 * 1024 * 1024  # bytes of an admitted body taken before reading pauses
LARGE_READS = "medserve.large_reads"  # key of a request's scope["state"]: set by the app


def allow_large_reads(scope: MutableMapping[str, Any]) -> None:
    """Let the server take this request's body in pieces of up to ``BODY_HIGH_WATER`` bytes
    (the app has admitted it). uvicorn gives the app its own scope's ``state`` dict, so the
    protocol sees the mark on its next read."""
    scope.setdefault("state", {})[LARGE_READS] = True


def large_reads_allowed(scope: Mapping[str, Any]) -> bool:
    """Whether the app has admitted this request's body (``allow_large_reads``)."""
    return bool(scope.get("state", {}).get(LARGE_READS))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request headers stall past
    ``header_timeout`` (from the connection's start, or from a request's first byte), and
    reads a body the app is reading in pieces of up to ``body_high_water`` bytes."""

    header_timeout: float = 60.0  # set by ``protocol_with``
    body_high_water: int = BODY_HIGH_WATER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True  # a request has begun; its headers are not complete yet
        self._arm()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm()
        super().on_headers_complete()
        # the request's cycle (uvicorn's) writes its response through HeldHead; its task has
        # not run yet (it starts at the loop's next turn)
        cycle = self.cycle
        if cycle is not None:
            cycle.transport = cast(asyncio.Transport, HeldHead(self.transport, self.loop))

    def on_body(self, body: bytes) -> None:
        super().on_body(body)  # pauses reading past uvicorn's 64 KiB
        cycle = self.cycle
        if (
            self.flow.read_paused
            and cycle is not None
            and large_reads_allowed(cycle.scope)
            and not cycle.response_complete
            and len(cycle.body) <= self.body_high_water
        ):
            self.flow.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expired(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.close()


class HeldHead:
    """The transport one request's response is written to: a write that is a response head
    (``HTTP/1.1 ...`` up to its blank line) is held until the next write, which takes it along
    in one ``writelines``, or until the event loop's next turn; everything else is the
    connection's transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (nothing if none is held, or the connection is closing)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        """Close after writing a held head (uvicorn closes in the same turn when an app fails
        after its head: the client gets the head, as uvicorn alone sends it, then the end)."""
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def protocol_with(header_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with the configured deadline."""
    return type(
        "GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"header_timeout": header_timeout}
    )
