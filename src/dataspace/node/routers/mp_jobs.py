"""Multi-party jobs for this node's users: start a PSI or a secure aggregation, follow it.

``POST /api/v1/mp/psi`` and ``POST /api/v1/mp/aggregate`` validate the request, claim a job id
and run the job in the background (202); ``GET /api/v1/mp/jobs/{job_id}`` shows it — on the
initiator, with every node's step events — and ``POST /api/v1/mp/jobs/{job_id}/retry`` starts
a failed job again as a new attempt.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from dataspace.node.auth import EVERYONE, get_node, require
from dataspace.node.routers.fields import Body
from dataspace.services import multiparty
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(prefix="/mp", tags=["jobs"])

RUN_ROLES = ("admin", "consumer")


class PsiRequest(Body):
    agreements: list[str] = Field(
        min_length=1, max_length=20, description="one agreement per participant (you consume)"
    )
    peers: list[str] | None = Field(default=None, description="optional: the expected peers")
    dataset: str = Field(min_length=1, description="your dataset holding the key column(s)")
    key: str = Field(min_length=1, description="key spec, e.g. 'credit_code:uscc'")
    peer_keys: dict[str, str] | None = Field(default=None, description="peer -> its key spec")
    mode: str = Field(default="me", description="me | both | size | align (3+ parties: me)")
    engine: str = Field(default="dh", description="dh | rr22 (RR22 through spu; not for size)")
    job_id: str | None = None


class AggregateRequest(Body):
    agreements: list[str] = Field(min_length=1, max_length=50)
    peers: list[str] | None = None
    columns: list[str] = Field(min_length=1, max_length=1000)
    op: str = Field(default="sum", description="sum | mean | count")
    epsilon: float | None = Field(
        default=None, gt=0, description="DP: each party noises its own vector (distributed)"
    )
    bound: float = Field(
        default=multiparty.DEFAULT_BOUND,
        gt=0,
        description="largest |local sum| a party may contribute",
    )
    job_id: str | None = None


@router.post("/psi", status_code=202, summary="Start a private set intersection across nodes")
def post_psi(
    body: PsiRequest,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*RUN_ROLES)),
) -> dict[str, Any]:
    """Each participant checks its own agreement (action `psi`) before it does anything.
    Answers the job's view at once; poll `GET /api/v1/mp/jobs/{job_id}`."""
    job = multiparty.start_psi(
        node,
        agreements=body.agreements,
        peers=body.peers,
        dataset=body.dataset,
        key=body.key,
        peer_keys=body.peer_keys,
        mode=body.mode,
        engine=body.engine,
        job_id=body.job_id,
        actor=token.actor,
    )
    return multiparty.start_background(node, job)


@router.post("/aggregate", status_code=202, summary="Start a secure aggregation across nodes")
def post_aggregate(
    body: AggregateRequest,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*RUN_ROLES)),
) -> dict[str, Any]:
    """This node coordinates; every provider sends only masked vectors; the result is
    released here only. Poll `GET /api/v1/mp/jobs/{job_id}`."""
    job = multiparty.start_aggregate(
        node,
        agreements=body.agreements,
        peers=body.peers,
        columns=body.columns,
        op=body.op,
        epsilon=body.epsilon,
        bound=body.bound,
        job_id=body.job_id,
        actor=token.actor,
    )
    return multiparty.start_background(node, job)


@router.get("/jobs", summary="Multi-party jobs on this node, newest first")
def get_mp_jobs(
    state: str | None = Query(None, description="RUNNING, SUCCEEDED, DENIED or FAILED"),
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*EVERYONE)),
) -> list[dict[str, Any]]:
    return multiparty.list_jobs(node, state=state)


@router.get("/jobs/{job_id}", summary="One multi-party job with its step events")
def get_mp_job(
    job_id: str,
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*EVERYONE)),
) -> dict[str, Any]:
    return multiparty.get_job(node, job_id)


@router.post("/jobs/{job_id}/retry", status_code=202, summary="Start a failed job again")
def post_retry(
    job_id: str,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*RUN_ROLES)),
) -> dict[str, Any]:
    """A new attempt under a new job id with fresh keys and secrets; participants the failure
    could not reach are told first."""
    return multiparty.retry(node, job_id, actor=token.actor, background=True)
