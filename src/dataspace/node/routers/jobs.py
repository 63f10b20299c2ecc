"""The node's own jobs API, for its users: query a provider under an agreement, list, show."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import Field

from dataspace.compute.sqlcheck import MAX_SQL_CHARS
from dataspace.node.auth import EVERYONE, get_node, require
from dataspace.node.routers.fields import Body
from dataspace.node.routers.peer_jobs import RESULT_RESPONSES, result_response
from dataspace.services import job_consumer, jobs
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(prefix="/jobs", tags=["jobs"])

QUERY_ROLES = ("admin", "consumer")


class QueryRequest(Body):
    agreement_id: str = Field(min_length=1, max_length=200, description="an agreement of yours")
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS,
                     description="one SELECT (DuckDB dialect)")
    job_id: str | None = Field(default=None, description="optional job id (default: random)")


@router.post(
    "/query",
    summary="Run governed SQL on the provider of an agreement",
    response_class=Response,
    responses=RESULT_RESPONSES,
)
def post_query(
    body: QueryRequest,
    node: Node = Depends(get_node),
    token: TokenInfo = Depends(require(*QUERY_ROLES)),
) -> Response:
    """Sends the query to the provider's node, verifies the result's hash and records the job
    in this node's ledger (`job.result_received`). The body is the Arrow IPC stream; the
    metadata (ε spent and left, 95% error bounds, price, hash) is JSON in `Dataspace-Job`."""
    outcome = job_consumer.query(
        node,
        agreement_id=body.agreement_id,
        sql=body.sql,
        job_id=body.job_id,
        actor=token.actor,
    )
    return result_response(outcome.meta, outcome.ipc)


@router.get("", summary="Jobs on this node (as provider and as consumer), newest first")
def get_jobs(
    agreement: str | None = Query(None, description="only this agreement's jobs"),
    role: str | None = Query(None, pattern="^(provider|consumer|initiator|dealer)$"),
    state: str | None = Query(None, description="RUNNING, SUCCEEDED, DENIED or FAILED"),
    limit: int = Query(200, ge=1, le=1000),
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*EVERYONE)),
) -> list[dict[str, Any]]:
    return jobs.list_jobs(node, agreement_id=agreement, role=role, state=state, limit=limit)


@router.get("/{job_id}", summary="One job: its request, decision, outcome and metadata")
def get_job(
    job_id: str,
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*EVERYONE)),
) -> dict[str, Any]:
    return jobs.get_job(node, job_id)
