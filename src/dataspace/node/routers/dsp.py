"""The Dataspace Protocol 2025-1 HTTPS binding of the node, under ``/dsp``.

Every endpoint here (``/.well-known/dspace-version`` lives in ``dsp_version``) needs an
RFC 9421-signed request from a member of the space: ``require_peer`` answers 401 for a bad or
replayed signature and 403 for a key not on the membership list. Bodies are read raw, so
malformed JSON is answered like any other bad message: 400 with a ``ContractNegotiationError``
(``CatalogError`` for the catalog) naming the JSON path. An unknown or foreign process is 404.
The work is done by ``dataspace.services.negotiation`` and ``catalog``; messages to the peer
that follow an answer are sent after it, as background tasks.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from dataspace.contracts import CatalogError, build, parse
from dataspace.contracts import negotiation as cn
from dataspace.contracts.roles import Role
from dataspace.errors import DataspaceError
from dataspace.identity.membership import Member
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import require_peer
from dataspace.node.routers.dsp_common import ProcessRoutes, read_json
from dataspace.services import catalog
from dataspace.services import negotiation as ng
from dataspace.services.dsp_process import log_refusal
from dataspace.services.node import Node

PREFIX = catalog.DSP_PATH
TAG = "dsp"

router = APIRouter(tags=[TAG])
_routes = ProcessRoutes(router, "A DSP 2025-1 endpoint (docs/contracts.md).", ng.refuse)


# --- catalog --------------------------------------------------------------------------------


def _catalog_error(node: Node, member: Member, exc: DataspaceError, what: str) -> JSONResponse:
    # within the member's refusal budget: asking for unknown datasets in a loop must not grow
    # the ledger without bound
    status = log_refusal(node, "catalog.refused", member.name, what, None, exc)
    body = build(CatalogError(code=exc.code, reason=(exc.message,)))
    return JSONResponse(body, status_code=status)


def _endpoint(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


@_routes.route("POST", "/catalog/request", "The catalog (CatalogRequestMessage → Catalog)")
async def catalog_request(
    request: Request, member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> Response:
    try:
        doc = await read_json(request)
        parse(doc, "CatalogRequestMessage")
        body = await run_in_threadpool(catalog.catalog_doc, node, _endpoint(request))
    except DataspaceError as exc:
        return await run_in_threadpool(_catalog_error, node, member, exc, "CatalogRequestMessage")
    return JSONResponse(body)


@_routes.route("GET", "/catalog/datasets/{dataset_id}", "One dataset of the catalog")
def catalog_dataset(
    dataset_id: str,
    request: Request,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    try:
        return JSONResponse(catalog.dataset_doc(node, dataset_id, _endpoint(request)))
    except DataspaceError as exc:
        return _catalog_error(node, member, exc, "DatasetRequest")


# --- negotiation ----------------------------------------------------------------------------
#
# ``dsp_common.ProcessRoutes`` takes the steps every POST shares (read the body, refuse malformed
# JSON with a logged ContractNegotiationError, run one ``ng.handle_*`` in the threadpool, answer
# its Reply, send what follows as a background task). A route declares only what differs: its
# name, path, the message it expects, its summary and the service call. ``start`` routes begin
# a process (no pid, 201); ``step`` routes address one.

_routes.get("negotiation_get", "/negotiations/{pid}", "A contract negotiation (ACK)", ng.handle_get)


# provider

_routes.start(
    "negotiation_request",
    "/negotiations/request",
    cn.REQUEST,
    "Start a negotiation (ContractRequestMessage → 201 ContractNegotiation)",
    ng.handle_request,
)
_routes.step(
    "negotiation_counter_request",
    "/negotiations/{pid}/request",
    cn.REQUEST,
    "A counter-request (refused)",
    lambda node, member, pid, doc: ng.handle_message(
        node, member, pid, doc, cn.REQUEST, own_role=Role.PROVIDER
    ),
)
_routes.step(
    "negotiation_events",
    "/negotiations/{pid}/events",
    "ContractNegotiationEventMessage",
    "ContractNegotiationEventMessage (ACCEPTED to a provider, FINALIZED to a consumer)",
    lambda node, member, pid, doc: ng.handle_message(
        node, member, pid, doc, "ContractNegotiationEventMessage"
    ),
)
_routes.step(
    "negotiation_verification",
    "/negotiations/{pid}/agreement/verification",
    cn.VERIFICATION,
    "ContractAgreementVerificationMessage (with the consumer's signature)",
    ng.handle_verification,
)
_routes.step(
    "negotiation_termination",
    "/negotiations/{pid}/termination",
    cn.TERMINATION,
    "ContractNegotiationTerminationMessage (either side)",
    lambda node, member, pid, doc: ng.handle_message(node, member, pid, doc, cn.TERMINATION),
)

# consumer callbacks

_routes.start(
    "negotiation_initial_offer",
    "/negotiations/offers",
    cn.OFFER,
    "A provider-initiated ContractOfferMessage (refused)",
    ng.handle_offer,
)
_routes.step(
    "negotiation_offer",
    "/negotiations/{pid}/offers",
    cn.OFFER,
    "A counter-offer (refused)",
    lambda node, member, pid, doc: ng.handle_offer(node, member, doc, pid),
)
_routes.step(
    "negotiation_agreement",
    "/negotiations/{pid}/agreement",
    cn.AGREEMENT,
    "ContractAgreementMessage (with the provider's signature)",
    ng.handle_agreement,
)
