"""Connection hygiene below the ASGI app: uvicorn's HTTP/1.1 protocol with a header deadline.

uvicorn closes idle keep-alive connections, but a connection that never completes its request
headers (a client that connects and sends nothing, or a byte now and then) is held for ever.
``GuardedH11Protocol`` closes it once its headers have taken longer than the read timeout. The
body's progress is watched by ``app.middleware.BodyLimitMiddleware`` (408 on a stall).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers stall past ``header_timeout``."""

    header_timeout: float = 60.0  # set by ``protocol_with``

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

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

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm()  # a request has begun but its headers are not complete yet
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer for the idle wait
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expired(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_with(header_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with the configured deadline."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})
