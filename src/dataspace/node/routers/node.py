"""The node's public identity: the key its checkpoints and proofs are verified with."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from dataspace.node.auth import get_node
from dataspace.services.node import Node

router = APIRouter(tags=["node"])


class NodeIdentity(BaseModel):
    name: str = Field(description="the node's name")
    origin: str = Field(description="origin line of the node's log checkpoints")
    verifier_key: str = Field(
        description="C2SP signed-note verifier key (name+hash+base64 Ed25519 key) for checkpoints"
    )


@router.get("/node", summary="The node's identity and verifier key", response_model=NodeIdentity)
def identity(node: Node = Depends(get_node)) -> NodeIdentity:
    """The key anyone needs to verify this node's checkpoints and proofs offline."""
    return NodeIdentity(name=node.name, origin=node.origin, verifier_key=node.verifier_key())
