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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request headers stall past
    ``header_timeout`` (from the connection's start, or from a request's first byte)."""

    header_timeout: float = 60.0  # set by ``protocol_with``

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

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expired(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.close()


def protocol_with(header_timeout: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with the configured deadline."""
    return type(
        "GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"header_timeout": header_timeout}
    )
