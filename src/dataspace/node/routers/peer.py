"""Node-to-node basics: who am I talking to (a signed connectivity check)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from dataspace.identity.membership import Member
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import require_peer
from dataspace.services.node import Node

PREFIX = "/peer/v1"
router = APIRouter(tags=["peers"])


@router.get("/whoami", summary="Check a signed request: who signed it, who answers")
def whoami(
    member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> dict[str, Any]:
    return {"caller": member.name, "node": node.name, "roles": list(member.roles)}
