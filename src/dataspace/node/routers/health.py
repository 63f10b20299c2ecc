"""Liveness: the public endpoint a peer, a load balancer or `serve` itself calls first."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from dataspace import __version__
from dataspace.node.auth import get_node
from dataspace.services import ledger
from dataspace.services.node import Node

router = APIRouter(tags=["node"])


class Health(BaseModel):
    status: str = Field(description="'ok' when the node can read its state", examples=["ok"])
    node: str = Field(description="the node's name")
    version: str = Field(description="dataspace version the node runs")
    ledger_size: int = Field(description="entries in the node's Merkle log")


@router.get("/health", summary="Is the node up?", response_model=Health)
def health(node: Node = Depends(get_node)) -> Health:
    """Answers 200 when the node can read its state database, 503 in the envelope if not."""
    return Health(status="ok", node=node.name, version=__version__, ledger_size=ledger.size(node))
