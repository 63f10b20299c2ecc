"""Node-to-node basics: who am I talking to (a signed connectivity check); witnessing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from dataspace.identity.membership import Member
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import body_schema, require_peer, signed_body
from dataspace.services import witness
from dataspace.services.node import Node

PREFIX = "/peer/v1"
router = APIRouter(tags=["peers"])


@router.get("/whoami", summary="Check a signed request: who signed it, who answers")
def whoami(
    member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> dict[str, Any]:
    return {"caller": member.name, "node": node.name, "roles": list(member.roles)}


@router.post(
    "/witness/add-checkpoint",
    summary="Cosign a member's checkpoint that extends the last one cosigned (witness)",
    openapi_extra=body_schema(
        dict[str, Any], {"old_size": 0, "proof": [], "checkpoint": "<signed checkpoint note>"}
    ),
)
async def add_checkpoint(
    request: Request, member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> dict[str, Any]:
    """``old_size``: the size this witness last cosigned for the caller's log (409 with the
    right one in ``details.size`` otherwise); ``proof``: the consistency proof from it."""
    body = await signed_body(request, dict[str, Any])
    return await run_in_threadpool(witness.add_checkpoint, node, member, body)
