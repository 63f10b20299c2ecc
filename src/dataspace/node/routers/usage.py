"""Usage records, statements and bills of this node; reconciliation with the ledger."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import Field

from dataspace.node.auth import EVERYONE, WRITERS, get_node, require
from dataspace.node.routers.fields import Body
from dataspace.services import usage
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(tags=["usage"])

AUDIT = ("admin", "auditor")
PERIOD = Query(None, description="a calendar month, YYYY-MM (UTC)", pattern=r"^[0-9]{4}-[0-9]{2}$")


@router.get("/usage", summary="Usage records (one per job, denied attempts included)")
def list_usage(
    agreement: str | None = Query(None, description="only this agreement"),
    period: str | None = PERIOD,
    consumer: str | None = Query(None, description="only this consumer"),
    node: Node = Depends(get_node),
    _: TokenInfo = Depends(require(*EVERYONE)),
) -> list[dict[str, Any]]:
    return usage.list_usage(node, agreement, period, consumer)


@router.get("/usage/reconcile", summary="Recompute usage totals from the ledger and compare")
def reconcile(
    node: Node = Depends(get_node), _: TokenInfo = Depends(require(*AUDIT))
) -> dict[str, Any]:
    return usage.reconcile(node)


@router.get("/bills", summary="A statement (a draft bill) for an agreement or a period")
def draft_bill(
    agreement: str | None = Query(None, description="bill this agreement"),
    period: str | None = PERIOD,
    consumer: str | None = Query(None, description="bill this consumer"),
    node: Node = Depends(get_node),
    _: TokenInfo = Depends(require(*EVERYONE)),
) -> dict[str, Any]:
    return usage.bill(node, agreement, period, consumer)


@router.get("/bills/issued", summary="Issued bills, oldest first, each checked with the ledger")
def issued_bills(
    agreement: str | None = Query(None, description="only this agreement's bills"),
    period: str | None = PERIOD,
    consumer: str | None = Query(None, description="only this consumer's bills"),
    node: Node = Depends(get_node),
    _: TokenInfo = Depends(require(*EVERYONE)),
) -> list[dict[str, Any]]:
    return usage.issued_bills(node, agreement, period, consumer)


@router.get("/bills/{bill_id}", summary="One issued bill as issued, checked with the ledger")
def issued_bill(
    bill_id: str,
    node: Node = Depends(get_node),
    _: TokenInfo = Depends(require(*EVERYONE)),
) -> dict[str, Any]:
    return usage.issued_bill(node, bill_id)


class BillRequest(Body):
    agreement: str | None = Field(None, description="bill this agreement")
    period: str | None = Field(None, pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM")
    consumer: str | None = Field(None, description="bill this consumer")


@router.post(
    "/bills",
    summary="Issue a bill (hashed and entered in the ledger)",
    status_code=status.HTTP_201_CREATED,
)
def issue_bill(
    body: BillRequest,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*WRITERS)),
) -> dict[str, Any]:
    return usage.bill(
        node, body.agreement, body.period, body.consumer, issue=True, actor=caller.actor
    )
