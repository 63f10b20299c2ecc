"""The DSP 2025-1 transfer process binding of the node, under ``/dsp`` (docs/transfers.md).

The provider's endpoints (``/transfers/request``, ``/transfers/{providerPid}/...``) and the
consumer's callbacks (``{callbackAddress}/transfers/{consumerPid}/...``, where the callback
address is the member URL + ``/dsp``) share their paths: the process row knows which side this
node is. Every request must be RFC 9421-signed by a member (``require_peer``). Malformed or
schema-invalid bodies and illegal transitions answer 400 with a ``TransferError``; an unknown
or foreign process 404. Follow-up messages are sent after the answer (background tasks).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from dataspace.contracts import ProtocolError
from dataspace.contracts import transfer as tp
from dataspace.identity.membership import Member
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import require_peer
from dataspace.services import transfers
from dataspace.services.catalog import DSP_PATH
from dataspace.services.negotiation import Reply
from dataspace.services.node import Node

PREFIX = DSP_PATH
_PEER: dict[str, Any] = {}
_DOC = "A DSP 2025-1 transfer process endpoint (docs/transfers.md)."

router = APIRouter(tags=["dsp"])


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"the body is not JSON: {exc.msg} at line {exc.lineno} column "
                            f"{exc.colno}", path="$") from None
    except UnicodeDecodeError:
        raise ProtocolError("the body is not UTF-8 JSON", path="$") from None


def _respond(reply: Reply, tasks: BackgroundTasks) -> Response:
    if reply.after:
        tasks.add_task(reply.run_after)
    if reply.body is None:
        return Response(status_code=reply.status)
    return JSONResponse(reply.body, status_code=reply.status)


async def _handle(request: Request, tasks: BackgroundTasks, node: Node, member: Member,
                  what: str, pid: str | None, handle: Callable[[Any], Reply]) -> Response:
    try:
        doc = await _json(request)
    except ProtocolError as exc:
        reply = await run_in_threadpool(transfers.refuse, node, member.name, what, pid, exc)
        return _respond(reply, tasks)
    return _respond(await run_in_threadpool(handle, doc), tasks)


@router.get("/transfers/{pid}", summary="A transfer process (TransferProcess ACK)",
            description=_DOC, openapi_extra=_PEER)
def transfer_get(pid: str, tasks: BackgroundTasks, member: Member = Depends(require_peer),
                 node: Node = Depends(get_node)) -> Response:
    return _respond(transfers.handle_get(node, member, pid), tasks)


@router.post("/transfers/request", status_code=201,
             summary="Request a transfer (TransferRequestMessage → 201 TransferProcess)",
             description=_DOC, openapi_extra=_PEER)
async def transfer_request(request: Request, tasks: BackgroundTasks,
                           member: Member = Depends(require_peer),
                           node: Node = Depends(get_node)) -> Response:
    return await _handle(request, tasks, node, member, tp.REQUEST, None,
                         lambda doc: transfers.handle_request(node, member, doc,
                                                              transport=transfers.TRANSPORT))


def _message_route(suffix: str, message: str, summary: str) -> None:
    async def endpoint(pid: str, request: Request, tasks: BackgroundTasks,
                       member: Member = Depends(require_peer),
                       node: Node = Depends(get_node)) -> Response:
        return await _handle(request, tasks, node, member, message, pid,
                             lambda doc: transfers.handle_message(
                                 node, member, pid, doc, message,
                                 transport=transfers.TRANSPORT))

    endpoint.__name__ = f"transfer_{suffix}"
    router.add_api_route(f"/transfers/{{pid}}/{suffix}", endpoint, methods=["POST"],
                         summary=summary, description=_DOC, openapi_extra=_PEER)


_message_route("start", tp.START,
               "TransferStartMessage (to the consumer: data address; to the provider: restart)")
_message_route("completion", tp.COMPLETION, "TransferCompletionMessage (either side)")
_message_route("suspension", tp.SUSPENSION, "TransferSuspensionMessage (either side)")
_message_route("termination", tp.TERMINATION, "TransferTerminationMessage (either side)")
