"""The node's Merkle log: the public checkpoint witnesses fetch, entries, proofs, verification."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from dataspace.node.auth import READERS, get_node, require
from dataspace.services import ledger
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(prefix="/ledger", tags=["ledger"])

CHECKPOINT_MEDIA_TYPE = "text/plain; charset=utf-8"


class EntryPage(BaseModel):
    size: int = Field(description="entries in the log when the page was read")
    start: int = Field(description="index of the first entry on this page")
    limit: int = Field(description="page size used (capped by the node's api_max_page)")
    next: int | None = Field(description="start of the next page, or null at the end of the log")
    entries: list[dict[str, Any]]


@router.get(
    "/checkpoint",
    summary="Latest signed checkpoint (C2SP tlog-checkpoint signed note)",
    response_class=Response,
    responses={
        200: {
            "description": "the signed note",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def get_checkpoint(node: Node = Depends(get_node)) -> PlainTextResponse:
    """The note witnesses fetch and cosign: origin, tree size, root hash, signatures.

    A fresh checkpoint is signed first if the log grew since the last one.
    """
    note = ledger.checkpoint(node)
    return PlainTextResponse(note, media_type=CHECKPOINT_MEDIA_TYPE)


@router.get("/entries", summary="A page of ledger entries", response_model=EntryPage)
def get_entries(
    start: int = Query(0, ge=0, description="index of the first entry"),
    limit: int = Query(100, ge=1, description="entries per page; capped by api_max_page"),
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*READERS)),
) -> EntryPage:
    limit = min(limit, int(node.limits.api_max_page))
    total = ledger.size(node)
    rows = ledger.entries(node, start, limit)
    end = start + len(rows)
    return EntryPage(
        size=total, start=start, limit=limit, next=end if end < total else None, entries=rows
    )


@router.get("/proofs/inclusion", summary="Inclusion proof bundle for one entry")
def get_inclusion_proof(
    index: int = Query(..., ge=0, description="index of the entry to prove"),
    size: int | None = Query(None, ge=1, description="tree size (defaults to the latest)"),
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*READERS)),
) -> dict[str, Any]:
    """An offline-verifiable bundle: the signed checkpoint, the entry and its audit path."""
    return ledger.inclusion_proof(node, index, size)


@router.get("/proofs/consistency", summary="Consistency proof between two tree sizes")
def get_consistency_proof(
    size1: int = Query(..., alias="from", ge=1, description="the older tree size"),
    size2: int | None = Query(None, alias="to", ge=1, description="newer size (default: latest)"),
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*READERS)),
) -> dict[str, Any]:
    """Proves the log at size `to` extends the log at size `from` without rewriting it."""
    return ledger.consistency_proof(node, size1, size2)


@router.post("/verify", summary="Recompute and verify the whole log")
def post_verify(
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require("admin", "auditor")),
) -> dict[str, Any]:
    """Recomputes every leaf and checkpoint from stored rows; 422 `ledger_tampered` if not."""
    return ledger.verify(node)
