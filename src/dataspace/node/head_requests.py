"""``HEAD`` answers as ``GET`` does, without the body (RFC 9110 §9.3.2).

FastAPI routes take only the methods they name, so a load balancer's or uptime monitor's
``HEAD /api/v1/health`` was a 405 and the node looked down. This middleware runs a HEAD
request as the GET it stands for — the same authentication, status and headers, the
``Content-Length`` of the body it would have sent — and drops the body. The request's scope
keeps :data:`HEAD_KEY` so error messages name the method the client sent.
"""

from __future__ import annotations

from dataspace.node.body_limit import App, Message, Receive, Scope, Send

HEAD_KEY = "dataspace.head"  # set in the scope of a HEAD request run as GET


class HeadAsGet:
    """ASGI middleware: a HEAD request runs as GET; only the response's head goes out."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def head_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # a chunk of a streamed body: nothing of it goes out
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", HEAD_KEY: True}, receive, head_only)


def sent_method(scope: Scope) -> str:
    """The method the client sent (HEAD for a request :class:`HeadAsGet` runs as GET)."""
    return "HEAD" if scope.get(HEAD_KEY) else str(scope["method"])
