"""The data plane of DSP transfers (provider side): the consumer pulls its extract.

``GET /peer/v1/transfers/{pid}/data`` must be RFC 9421-signed by the agreement's consumer and
carry ``Authorization: Bearer <token>`` from the TransferStartMessage's ``dataAddress``. The
token works once, expires (the ``transfer_token_ttl_seconds`` limit), and nothing is served
unless the process is STARTED. A pull that went out in full is metered (usage record, action
``transfer``) and logged (``transfer.served``); one whose connection broke first ends the
transfer unbilled (:mod:`dataspace.node.delivery`); refusals are logged as
``transfer.pull_refused``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dataspace.identity.membership import Member
from dataspace.node.auth import get_node
from dataspace.node.delivery import DeliveryResponse
from dataspace.node.peer_auth import require_peer
from dataspace.services import transfers
from dataspace.services.node import Node

PREFIX = "/peer/v1"
router = APIRouter(tags=["peers"])

DATA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The extract as Parquet; `Dataspace-Transfer-Sha256` and "
        "`Dataspace-Transfer-Rows` repeat what the TransferStartMessage stated",
        "content": {transfers.PARQUET_MEDIA_TYPE: {"schema": {"type": "string",
                                                              "format": "binary"}}},
    }
}


@router.get("/transfers/{pid}/data", summary="Pull the data of a started transfer",
            response_class=Response, responses=DATA_RESPONSES)
async def transfer_data(pid: str, request: Request, member: Member = Depends(require_peer),
                        node: Node = Depends(get_node)) -> Response:
    """One-time pull: 403 for a missing, wrong, used or expired token, 409 unless the transfer
    is STARTED, 404 for an unknown process or another member's."""
    path, facts = await run_in_threadpool(transfers.serve_pull, node, member, pid,
                                          request.headers.get("authorization"))

    async def settle(complete: bool, sent: int) -> None:
        try:
            await run_in_threadpool(transfers.settle_pull, node, pid, sent=sent,
                                    complete=complete)
        except Exception:  # the response is gone; the sweep at the next start ends it
            transfers.logger.exception("settling the pull of transfer %s failed", pid)

    return DeliveryResponse(path, settle=settle, media_type=transfers.PARQUET_MEDIA_TYPE,
                            headers={"Dataspace-Transfer-Sha256": str(facts["sha256"]),
                                     "Dataspace-Transfer-Rows": str(facts["rows"])})
