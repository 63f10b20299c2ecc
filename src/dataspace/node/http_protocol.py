"""uvicorn's HTTP/1.1 protocol with a deadline for each request's head.

uvicorn closes a keep-alive connection idle between requests, but not one that sends part of
a request's head and then nothing: every such connection holds a file descriptor for ever, and
a few thousand of them (no token needed) leave the node unable to accept a connection
(slowloris). Here a connection whose request head is not complete ``head_timeout`` seconds
after it started arriving (or after the connection opened) is closed.

Threat model: this bounds what one slow client holds; it does not stop a flood of
connections from many addresses — that is the reverse proxy's to limit (docs/api.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadDeadlineProtocol(H11Protocol):
    head_timeout = 10.0  # set per server by :func:`with_head_timeout`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # a head still arriving
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_too_late)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def with_head_timeout(seconds: float) -> type[HeadDeadlineProtocol]:
    """The protocol class a server with this head deadline uses."""
    return type("HeadDeadline", (HeadDeadlineProtocol,), {"head_timeout": float(seconds)})
