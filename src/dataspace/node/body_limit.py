"""A cap on request bodies, enforced before a route reads them.

FastAPI reads a JSON body before it runs the route's dependencies, so without a cap an
unauthenticated 400 MB POST is read into memory before its 401. The cap is per kind of route:
``api_max_body_mb`` for the token-authenticated API and the DSP endpoints (JSON documents),
``peer_max_body_mb`` for node-to-node steps (multi-party and training messages are large), and
none here for the dataset upload, which streams to disk under its own ``api_max_upload_mb``.
A declared ``Content-Length`` over the cap is answered 413 at once; a body sent without one is
counted as it arrives and cut off at the cap.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: ``limit_for(method, path)`` gives the cap in bytes, or None for none."""

    def __init__(self, app: App, limit_for: Callable[[str, str], int | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        received = 0
        started = refused = False

        async def counted() -> Message:
            # Past the cap: answer 413 here, and tell the route the client went away (a
            # raised error would be read by the framework as a malformed body, a 400).
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; whatever the route says after it is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not refused:
                raise


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"error": {
        "code": "payload_too_large",
        "message": f"the request body is larger than this endpoint accepts ({limit >> 20} MiB)",
        "hint": "send less at once; a node operator can raise api_max_body_mb / "
                "peer_max_body_mb in node.toml [limits]",
    }}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
