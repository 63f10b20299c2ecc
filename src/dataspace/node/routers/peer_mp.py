"""Multi-party job steps for other nodes (participant side), signed by the initiator.

``POST /peer/v1/mp/step`` carries one step as a DSMP frame (see
:mod:`dataspace.services.mp_wire`) and answers with a frame; the caller is the signer
(RFC 9421, membership, replay: :func:`~dataspace.node.peer_auth.require_peer`), never a field
of the body. Resending a step (same job id, number and bytes) returns the same answer.
``POST /peer/v1/mp/abort`` ends a job here as FAILED with the initiator's reason;
``POST /peer/v1/mp/alive`` tells a participant its initiator is still at work on the job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dataspace.errors import InputError
from dataspace.identity.membership import Member
from dataspace.jsondoc import NotJson, parse_json
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import require_peer
from dataspace.services import mp_party
from dataspace.services.mp_wire import FRAME_MEDIA_TYPE
from dataspace.services.node import Node

PREFIX = "/peer/v1"
router = APIRouter(tags=["peers"])

FRAME_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {FRAME_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/mp/step",
    summary="Run one step of a multi-party job (participant side)",
    response_class=Response,
    openapi_extra=FRAME_BODY,
    responses={
        200: {
            "content": {FRAME_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "the step's answer as a DSMP frame",
        }
    },
)
async def mp_step(
    request: Request, member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> Response:
    """Step 0 checks this node's own agreement with the caller (action, purpose, fields,
    expiry, count, budget) before anything else; later steps run the protocol next to the
    data; the last keeps what the mode allows and meters the job. Refusals are logged."""
    body = await request.body()
    answer = await run_in_threadpool(mp_party.handle_step, node, member.name, body)
    return Response(content=answer, media_type=FRAME_MEDIA_TYPE)


async def _json_object(request: Request, what: str, fields: str) -> dict[str, Any]:
    try:
        doc = parse_json(await request.body() or b"{}")
    except NotJson as exc:
        raise InputError(f"the {what} body {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"the {what} body must be a JSON object with {fields}")
    return doc


@router.post("/mp/abort", summary="End a multi-party job here as FAILED (initiator only)")
async def mp_abort(
    request: Request, member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> dict[str, Any]:
    """Idempotent: the job's secrets are dropped and its row is FAILED with the reason."""
    doc = await _json_object(request, "abort", "job_id and reason")
    return await run_in_threadpool(
        mp_party.handle_abort,
        node,
        member.name,
        str(doc.get("job_id", "")),
        str(doc.get("reason", "no reason given"))[:2000],
    )


@router.post("/mp/alive", summary="The initiator is still at work on a job (keep-alive)")
async def mp_alive(
    request: Request, member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> dict[str, Any]:
    """The job's idle timeout starts again here; answers its state here (``RUNNING``, the
    state it ended in with the reason, or ``UNKNOWN``)."""
    doc = await _json_object(request, "keep-alive", "job_id")
    return await run_in_threadpool(
        mp_party.handle_alive, node, member.name, str(doc.get("job_id", ""))
    )
