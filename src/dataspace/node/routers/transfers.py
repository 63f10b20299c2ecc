"""The node's own transfers API, for its users: request rows under an agreement, list, show,
end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from dataspace.node.auth import EVERYONE, get_node, require
from dataspace.node.routers.fields import Body, Reason
from dataspace.node.waiting import wait_if_free
from dataspace.services import transfers
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(prefix="/transfers", tags=["transfers"])

REQUEST_ROLES = ("admin", "consumer")
END_ROLES = ("admin", "provider", "consumer")  # the service checks the transfer's side


class TransferRequest(Body):
    agreement_id: str = Field(min_length=1, max_length=200, description="an agreement of yours")
    mode: Literal["raw", "pseudonymized"] = Field(description="what the rows may look like")
    wait: float = Field(default=0, ge=0, le=120,
                        description="seconds to wait for COMPLETED or TERMINATED")


class TransferEnd(Body):
    reason: Reason


def _shown(node: Node, view: dict[str, Any]) -> dict[str, Any]:
    """A view for the API: the received file named under the node's directory
    (``received/<name>``), not by its path on the server, which no caller needs to know."""
    if view.get("file"):
        path = Path(str(view["file"]))
        try:
            view = {**view, "file": path.relative_to(node.root).as_posix()}
        except ValueError:  # the node's directory reached another way (a symlink, a move)
            view = {**view, "file": f"{path.parent.name}/{path.name}"}
    return view


@router.post("", status_code=201,
             summary="Ask the provider of an agreement for its rows (DSP transfer)")
def post_transfer(body: TransferRequest, node: Node = Depends(get_node),
                  token: TokenInfo = Depends(require(*REQUEST_ROLES))) -> dict[str, Any]:
    """Sends a TransferRequestMessage; the provider decides under the agreement's policy and,
    if it allows, this node pulls the file into its `received/` folder and checks its hash."""
    view = transfers.request_transfer(node, agreement_id=body.agreement_id, mode=body.mode,
                                      actor=token.actor, transport=transfers.TRANSPORT)
    if body.wait and view["state"] not in transfers.FINAL:
        pid = view["id"]
        view = wait_if_free(view, lambda: transfers.wait(node, pid, body.wait))
    return _shown(node, view)


@router.get("", summary="Transfers on this node (as provider and as consumer), newest first")
def get_transfers(
    agreement: str | None = Query(None, description="only this agreement's transfers"),
    role: str | None = Query(None, pattern="^(provider|consumer)$"),
    state: str | None = Query(None, description="REQUESTED, STARTED, SUSPENDED, COMPLETED or "
                              "TERMINATED"),
    limit: int = Query(200, ge=1, le=1000),
    node: Node = Depends(get_node),
    _token: TokenInfo = Depends(require(*EVERYONE)),
) -> list[dict[str, Any]]:
    return [_shown(node, v) for v in transfers.list_transfers(
        node, agreement_id=agreement, role=role, state=state, limit=limit)]


@router.get("/{pid}", summary="One transfer: state, mode, hash, rows, columns, reason")
def get_transfer(pid: str, node: Node = Depends(get_node),
                 _token: TokenInfo = Depends(require(*EVERYONE))) -> dict[str, Any]:
    return _shown(node, transfers.show_transfer(node, pid))


@router.post("/{pid}/terminate", summary="End a transfer: revoke a grant, or cancel a request")
def post_terminate(pid: str, body: TransferEnd, node: Node = Depends(get_node),
                   token: TokenInfo = Depends(require(*END_ROLES))) -> dict[str, Any]:
    """TERMINATED here and at the peer, with the reason. A provider's extract is deleted, so
    its pull token is worthless; 409 if the transfer already COMPLETED or TERMINATED, 403 for
    a provider token on a consumer transfer and the other way round."""
    return _shown(node, transfers.end_transfer(node, pid, reason=body.reason, actor=token.actor,
                                               role=token.role, transport=transfers.TRANSPORT))
