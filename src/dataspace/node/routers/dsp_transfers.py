"""The DSP 2025-1 transfer process binding of the node, under ``/dsp`` (docs/transfers.md).

The provider's endpoints (``/transfers/request``, ``/transfers/{providerPid}/...``) and the
consumer's callbacks (``{callbackAddress}/transfers/{consumerPid}/...``, where the callback
address is the member URL + ``/dsp``) share their paths: the process row knows which side this
node is. Every request must be RFC 9421-signed by a member (``require_peer``). Malformed or
schema-invalid bodies and illegal transitions answer 400 with a ``TransferError``; an unknown
or foreign process 404. Follow-up messages are sent after the answer (background tasks). The
steps every endpoint shares are ``dsp_common.ProcessRoutes``'s.
"""

from __future__ import annotations

from fastapi import APIRouter

from dataspace.contracts import transfer as tp
from dataspace.node.routers.dsp_common import ProcessRoutes, Step
from dataspace.services import transfers
from dataspace.services.catalog import DSP_PATH

PREFIX = DSP_PATH

router = APIRouter(tags=["dsp"])
_routes = ProcessRoutes(
    router, "A DSP 2025-1 transfer process endpoint (docs/transfers.md).", transfers.refuse
)

_routes.get(
    "transfer_get",
    "/transfers/{pid}",
    "A transfer process (TransferProcess ACK)",
    transfers.handle_get,
)
# ``transfers.TRANSPORT`` is looked up per call (tests replace it).
_routes.start(
    "transfer_request",
    "/transfers/request",
    tp.REQUEST,
    "Request a transfer (TransferRequestMessage → 201 TransferProcess)",
    lambda node, member, doc: transfers.handle_request(
        node, member, doc, transport=transfers.TRANSPORT
    ),
)


def _message(what: str) -> Step:
    return lambda node, member, pid, doc: transfers.handle_message(
        node, member, pid, doc, what, transport=transfers.TRANSPORT
    )


for _suffix, _what, _summary in (
    (
        "start",
        tp.START,
        "TransferStartMessage (to the consumer: data address; to the provider: restart)",
    ),
    ("completion", tp.COMPLETION, "TransferCompletionMessage (either side)"),
    ("suspension", tp.SUSPENSION, "TransferSuspensionMessage (either side)"),
    ("termination", tp.TERMINATION, "TransferTerminationMessage (either side)"),
):
    _routes.step(
        f"transfer_{_suffix}", f"/transfers/{{pid}}/{_suffix}", _what, _summary, _message(_what)
    )
