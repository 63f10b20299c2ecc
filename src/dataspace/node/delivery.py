"""A file response that says whether the whole file went out: what a transfer is billed on.

Starlette's ``FileResponse`` cannot tell a finished download from one whose client went away:
under the server's ASGI 2.3 a send after a disconnect returns quietly, and its background task
runs either way. :class:`DeliveryResponse` streams the file in chunks with its
``Content-Length`` while it listens for ``http.disconnect``, and before handing each chunk to
the connection checks that none came. Once the stream ends it calls ``settle(complete, sent)``
— ``complete`` when every byte was handed to a connection that was still open at the time,
``sent`` the bytes handed over. A client that leaves before the last chunk therefore gets a
file without its end (a Parquet file without its footer, which no reader opens) and the
provider does not bill it. What a kernel buffer still held when the connection broke after the
last chunk is not seen here: the consumer's hash check and termination cover that rare case.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

CHUNK_BYTES = 1 << 20
CHUNK_TIMEOUT_SECONDS = 120.0  # a client that stops reading for this long has broken the pull

#: ``settle(complete, sent)``, awaited once the stream has ended, whatever the outcome
Settle = Callable[[bool, int], Awaitable[None]]


class DeliveryResponse(Response):
    def __init__(
        self,
        path: Path,
        *,
        settle: Settle,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.settle = settle
        self.size = os.stat(path).st_size
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({**(headers or {}), "content-length": str(self.size)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = anyio.Event()
        sent = 0
        complete = False

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def deliver(message: Message) -> bool:
            """Send one message; False if the connection is gone or stalls past the limit
            (a server on a newer ASGI spec raises on a closed connection)."""
            try:
                with anyio.fail_after(CHUNK_TIMEOUT_SECONDS):
                    await send(message)
            except (OSError, TimeoutError):
                return False
            return True

        try:
            # opened before the first byte: the extract may be deleted meanwhile (a consumer's
            # completion message); an open file still reads to its end
            with self.path.open("rb") as file:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(watch)
                    if await deliver({"type": "http.response.start",
                                      "status": self.status_code, "headers": self.raw_headers}):
                        while sent < self.size and not gone.is_set():
                            chunk = await anyio.to_thread.run_sync(file.read, CHUNK_BYTES)
                            if not chunk or gone.is_set():
                                break
                            if not await deliver({"type": "http.response.body", "body": chunk,
                                                  "more_body": True}):
                                break
                            sent += len(chunk)
                        # every chunk was handed over while the connection was open: a client
                        # that read it all and hung up at once must not look like a broken one
                        complete = sent == self.size and await deliver(
                            {"type": "http.response.body", "body": b"", "more_body": False})
                    tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.settle(complete, sent)
