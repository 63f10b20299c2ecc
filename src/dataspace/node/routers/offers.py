"""Offers this node publishes: create from a policy or a template, list, show, withdraw."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, status
from pydantic import Field

from dataspace.node.auth import EVERYONE, WRITERS, get_node, require
from dataspace.node.routers.fields import Body
from dataspace.services import offers
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(prefix="/offers", tags=["offers"])


class OfferRequest(Body):
    dataset: str = Field(description="dataset name or id")
    policy: dict[str, Any] | None = Field(None, description="an ODRL Offer in JSON-LD")
    template: str | None = Field(None, description="or a template name (see the CLI's list)")
    params: dict[str, Any] = Field(default_factory=dict, description="template parameters")
    dp_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="clamping bounds per column for DP queries"
    )
    dp_epsilon_per_query: float | None = None
    dp_delta: float | None = None
    max_contributions: int | None = None
    contributor_column: str | None = Field(
        None, description="whose row each row is: k counts it; DP queries cut each to "
        "max_contributions rows (required for DP when the dataset has several identifiers)"
    )
    price: str | None = Field(None, description="price per job, e.g. '100 CNY'")
    auto_approve: bool = False
    contribution_share: bool = Field(
        False, description="federated training also pays this node's share of the revenue pool"
    )
    min_revenue_pool: str | None = Field(
        None, description="with contribution_share: the least pool taken part in, '1000 CNY'"
    )


@router.get("", summary="Offers of this node (withdrawn ones included)")
def list_offers(
    node: Node = Depends(get_node), _: TokenInfo = Depends(require(*EVERYONE))
) -> list[dict[str, Any]]:
    return offers.list_offers(node)


@router.post("", summary="Publish an offer", status_code=status.HTTP_201_CREATED)
def create_offer(
    body: OfferRequest,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*WRITERS)),
) -> dict[str, Any]:
    return offers.create(
        node,
        body.dataset,
        actor=caller.actor,
        policy=body.policy,
        template=body.template,
        params=body.params,
        dp_bounds=body.dp_bounds,
        dp_epsilon_per_query=body.dp_epsilon_per_query,
        dp_delta=body.dp_delta,
        max_contributions=body.max_contributions,
        contributor_column=body.contributor_column,
        price=body.price,
        auto_approve=body.auto_approve,
        contribution_share=body.contribution_share,
        min_revenue_pool=body.min_revenue_pool,
    )


@router.get("/{offer_id}", summary="One offer")
def show_offer(
    offer_id: str, node: Node = Depends(get_node), _: TokenInfo = Depends(require(*EVERYONE))
) -> dict[str, Any]:
    return offers.show(node, offer_id)


@router.delete("/{offer_id}", summary="Withdraw an offer (agreements under it stay valid)")
def withdraw_offer(
    offer_id: str,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*WRITERS)),
) -> dict[str, Any]:
    return offers.withdraw(node, offer_id, actor=caller.actor)
