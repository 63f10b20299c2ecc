"""What the DSP 2025-1 routers share: ``dsp`` (catalog, negotiations), ``dsp_transfers``.

Every process endpoint takes the same steps: read the body raw (malformed JSON is refused and
logged like any other bad message), hand it to one service call in the threadpool, answer its
:class:`Reply` and send what follows as a background task. The service maps errors to the
protocol's error (a ``ContractNegotiationError`` or a ``TransferError``) with its status (400 an
illegal transition or a bad message, 404 an unknown or foreign process).

A router declares only what differs: a :class:`ProcessRoutes` with its router, description and
the service's ``refuse`` (for bodies that are not JSON), then per endpoint its name, path, the
message it expects, its summary and the service call. ``start`` routes begin a process (no pid,
201); ``step`` routes address the process ``{pid}``; ``get`` answers it.

``require_peer`` is a parameter of each endpoint, not a router dependency, so that
``node.app.route_roles`` sees it (a route without it would be public).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from dataspace.contracts import ProtocolError
from dataspace.errors import DataspaceError
from dataspace.identity.membership import Member
from dataspace.jsondoc import NotJson, parse_json
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import require_peer
from dataspace.services.negotiation import Reply
from dataspace.services.node import Node

_F = TypeVar("_F", bound=Callable[..., Any])

# (node, peer, what, pid, exc): the answer to a body that is not JSON
Refuse = Callable[[Node, str, str, str | None, DataspaceError], Reply]
Get = Callable[[Node, Member, str], Reply]  # (node, peer, pid)
Start = Callable[[Node, Member, Any], Reply]  # (node, peer, doc)
Step = Callable[[Node, Member, str, Any], Reply]  # (node, peer, pid, doc)


async def read_json(request: Request) -> Any:
    """The body as JSON, or a ``ProtocolError`` at ``$`` saying why it is not
    (:func:`~dataspace.jsondoc.parse_json`)."""
    try:
        return parse_json(await request.body())
    except NotJson as exc:
        raise ProtocolError(f"the body {exc}", path="$") from None


def respond(reply: Reply, tasks: BackgroundTasks) -> Response:
    """Answer ``reply``; its follow-up messages are sent after the answer."""
    if reply.after:
        tasks.add_task(reply.run_after)
    if reply.body is None:
        return Response(status_code=reply.status)
    return JSONResponse(reply.body, status_code=reply.status)


@dataclass(frozen=True)
class ProcessRoutes:
    """Registers peer endpoints on ``router`` with ``description``; bodies that are not JSON
    are answered by ``refuse`` (the service's, so the error is the protocol's)."""

    router: APIRouter
    description: str
    refuse: Refuse

    def route(self, method: str, path: str, summary: str, **kw: Any) -> Callable[[_F], _F]:
        """A decorator registering an endpoint (it must depend on ``require_peer`` itself)."""
        return self.router.api_route(
            path, methods=[method], summary=summary, description=self.description, **kw
        )

    def get(self, name: str, path: str, summary: str, handle: Get) -> None:
        """A GET of the process ``{pid}`` of ``path``."""

        def endpoint(
            pid: str,
            tasks: BackgroundTasks,
            member: Member = Depends(require_peer),
            node: Node = Depends(get_node),
        ) -> Response:
            return respond(handle(node, member, pid), tasks)

        self._add("GET", path, summary, name, endpoint)

    def start(self, name: str, path: str, what: str, summary: str, handle: Start) -> None:
        """A POST of message ``what`` that starts a process: 201 and the process (ACK)."""

        async def endpoint(
            request: Request,
            tasks: BackgroundTasks,
            member: Member = Depends(require_peer),
            node: Node = Depends(get_node),
        ) -> Response:
            return await self._process(
                request, tasks, node, member, what, None, lambda doc: handle(node, member, doc)
            )

        self._add("POST", path, summary, name, endpoint, status_code=201)

    def step(self, name: str, path: str, what: str, summary: str, handle: Step) -> None:
        """A POST of message ``what`` to the process ``{pid}`` of ``path``."""

        async def endpoint(
            pid: str,
            request: Request,
            tasks: BackgroundTasks,
            member: Member = Depends(require_peer),
            node: Node = Depends(get_node),
        ) -> Response:
            return await self._process(
                request, tasks, node, member, what, pid, lambda doc: handle(node, member, pid, doc)
            )

        self._add("POST", path, summary, name, endpoint)

    def _add(
        self, method: str, path: str, summary: str, name: str, endpoint: _F, **kw: Any
    ) -> None:
        endpoint.__name__ = endpoint.__qualname__ = name
        self.route(method, path, summary, name=name, **kw)(endpoint)

    async def _process(
        self,
        request: Request,
        tasks: BackgroundTasks,
        node: Node,
        member: Member,
        what: str,
        pid: str | None,
        handle: Callable[[Any], Reply],
    ) -> Response:
        try:
            doc = await read_json(request)
        except ProtocolError as exc:
            reply = await run_in_threadpool(self.refuse, node, member.name, what, pid, exc)
            return respond(reply, tasks)
        return respond(await run_in_threadpool(handle, doc), tasks)
