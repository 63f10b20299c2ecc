"""Jobs for other nodes (provider side): a member runs governed SQL under its agreement.

``POST /peer/v1/jobs/query`` is signed by the calling member (RFC 9421, membership, replay:
:func:`~dataspace.node.peer_auth.require_peer`). The consumer is the signer, never a field of
the body. A result is the Arrow IPC stream as the body with the job's metadata in the
``Dataspace-Job`` header (see :mod:`dataspace.services.job_wire`); errors are the one JSON
envelope. The same ``job_id`` sent again returns the same outcome without running or charging.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dataspace.compute.sqlcheck import MAX_SQL_CHARS
from dataspace.identity.membership import Member
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import body_schema, require_peer, signed_body
from dataspace.services import jobs
from dataspace.services.job_wire import ARROW_MEDIA_TYPE, META_HEADER, encode_meta
from dataspace.services.node import Node

PREFIX = "/peer/v1"
router = APIRouter(tags=["peers"])

RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The released table as an Arrow IPC stream; the job's metadata (job_id, "
        "result_sha256, rows, epsilon_spent/left, error_bounds, price) is JSON in the "
        f"`{META_HEADER}` header",
        "content": {ARROW_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {META_HEADER: {"schema": {"type": "string"}, "description": "JSON metadata"}},
    }
}


class JobRequest(BaseModel):
    agreement_id: str = Field(min_length=1, max_length=200, description="the agreement's @id")
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS,
                     description="one SELECT (DuckDB dialect)")
    job_id: str | None = Field(
        default=None, description="the consumer's job id; resending it is idempotent"
    )


def result_response(meta: dict[str, Any], ipc: bytes) -> Response:
    return Response(
        content=ipc, media_type=ARROW_MEDIA_TYPE, headers={META_HEADER: encode_meta(meta)}
    )


@router.post(
    "/jobs/query",
    summary="Run governed SQL under an agreement (provider side)",
    response_class=Response,
    responses=RESULT_RESPONSES,
    openapi_extra=body_schema(JobRequest),
)
async def peer_query(
    request: Request, member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> Response:
    """Checks the agreement's policy at execution time, runs the checked SQL in the locked
    engine (or under differential privacy), meters and logs the job, and releases the result.
    Denials (403 `policy_denied`, `query_refused`, `budget_exhausted`), unknown or foreign
    agreements (404) and engine failures are logged and metered as denied or failed attempts."""
    body = await signed_body(request, JobRequest)
    outcome = await run_in_threadpool(
        jobs.run_job,
        node,
        agreement_id=body.agreement_id,
        consumer=member.name,
        sql=body.sql,
        job_id=body.job_id,
    )
    return result_response(outcome.meta, outcome.ipc)
