"""Contracts as this node's users see them: peers' catalogs, negotiations, agreements."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, status
from pydantic import Field

from dataspace.node.auth import EVERYONE, WRITERS, get_node, require
from dataspace.node.routers.fields import Body, Reason
from dataspace.node.waiting import wait_if_free
from dataspace.services import catalog, negotiation
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(tags=["contracts"])
NEGOTIATORS = ("admin", "consumer")
MAX_WAIT_SECONDS = 120.0


class ContractRequest(Body):
    peer: str = Field(description="the provider, a member of the space")
    offer_id: str = Field(description="an offer id from the peer's catalog")
    purpose: str = Field(description="the purpose the data is for, e.g. credit-risk")
    wait_seconds: float = Field(
        30.0, ge=0, le=MAX_WAIT_SECONDS,
        description="wait for FINALIZED or TERMINATED (if 8 requests already wait, the answer "
        "comes at once and the caller polls)",
    )


class Rejection(Body):
    reason: Reason


@router.get("/peers/{peer}/catalog", summary="A peer's DSP catalog, fetched by this node")
def peer_catalog(
    peer: str, node: Node = Depends(get_node), _: TokenInfo = Depends(require(*EVERYONE))
) -> list[dict[str, Any]]:
    return catalog.summarize(catalog.fetch_catalog(node, peer))


@router.post(
    "/contracts",
    summary="Negotiate an agreement under a peer's offer",
    status_code=status.HTTP_201_CREATED,
)
def request_contract(
    body: ContractRequest,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*NEGOTIATORS)),
) -> dict[str, Any]:
    view = negotiation.request_contract(
        node, body.peer, offer_id=body.offer_id, purpose=body.purpose, actor=caller.actor
    )
    if body.wait_seconds > 0 and view["state"] not in negotiation.FINAL:
        pid = view["id"]
        view = wait_if_free(view, lambda: negotiation.wait(node, pid, body.wait_seconds))
    return view


@router.get("/contracts", summary="Negotiations and agreements, as provider and as consumer")
def list_contracts(
    node: Node = Depends(get_node), _: TokenInfo = Depends(require(*EVERYONE))
) -> list[dict[str, Any]]:
    return negotiation.list_contracts(node)


@router.get("/contracts/{ref}", summary="One negotiation with its agreement and signatures")
def show_contract(
    ref: str, node: Node = Depends(get_node), _: TokenInfo = Depends(require(*EVERYONE))
) -> dict[str, Any]:
    return negotiation.show_contract(node, ref)


@router.post("/contracts/{ref}/approve", summary="Approve a waiting request (provider)")
def approve(
    ref: str, node: Node = Depends(get_node), caller: TokenInfo = Depends(require(*WRITERS))
) -> dict[str, Any]:
    return negotiation.approve(node, ref, actor=caller.actor)


@router.post("/contracts/{ref}/reject", summary="Reject a waiting request (provider)")
def reject(
    ref: str,
    body: Rejection,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*WRITERS)),
) -> dict[str, Any]:
    return negotiation.reject(node, ref, reason=body.reason, actor=caller.actor)


@router.post("/contracts/{ref}/withdraw", summary="Withdraw a request not yet agreed (consumer)")
def withdraw(
    ref: str,
    body: Rejection,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*NEGOTIATORS)),
) -> dict[str, Any]:
    return negotiation.withdraw(node, ref, reason=body.reason, actor=caller.actor)
