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

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from dataspace.contracts import CatalogError, ProtocolError, build, parse
from dataspace.contracts import negotiation as cn
from dataspace.contracts.roles import Role
from dataspace.errors import DataspaceError, NotFound
from dataspace.identity.membership import Member
from dataspace.ledger import log
from dataspace.node.auth import get_node
from dataspace.node.peer_auth import require_peer
from dataspace.services import catalog
from dataspace.services import negotiation as ng
from dataspace.services.node import Node

PREFIX = catalog.DSP_PATH
TAG = "dsp"
_PEER: dict[str, Any] = {}
_DOC = "A DSP 2025-1 endpoint (docs/contracts.md)."

router = APIRouter(tags=[TAG])


def _body_error(exc: json.JSONDecodeError) -> ProtocolError:
    return ProtocolError(
        f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", path="$"
    )


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise _body_error(exc) from None
        raise ProtocolError("the body is not UTF-8 JSON", path="$") from None


def _respond(reply: ng.Reply, tasks: BackgroundTasks) -> Response:
    if reply.after:
        tasks.add_task(reply.run_after)
    if reply.body is None:
        return Response(status_code=reply.status)
    return JSONResponse(reply.body, status_code=reply.status)


async def _negotiation(
    request: Request,
    tasks: BackgroundTasks,
    node: Node,
    member: Member,
    what: str,
    pid: str | None,
    handle: Callable[[Any], ng.Reply],
) -> Response:
    try:
        doc = await _json(request)
    except ProtocolError as exc:
        reply = await run_in_threadpool(ng.refuse, node, member.name, what, pid, exc)
        return _respond(reply, tasks)
    reply = await run_in_threadpool(handle, doc)
    return _respond(reply, tasks)


# --- catalog --------------------------------------------------------------------------------


def _catalog_error(node: Node, member: Member, exc: DataspaceError, what: str) -> JSONResponse:
    status = 404 if isinstance(exc, NotFound) else 400
    with node.store.write() as session:
        log.append(
            session,
            actor=ng.PEER_ACTOR.format(member.name),
            action="catalog.refused",
            payload={
                "peer": member.name,
                "message": what,
                "status": status,
                "code": exc.code,
                "reason": exc.message,
                "path": exc.details.get("path"),
            },
        )
    body = build(CatalogError(code=exc.code, reason=(exc.message,)))
    return JSONResponse(body, status_code=status)


def _endpoint(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


@router.post(
    "/catalog/request",
    summary="The catalog (CatalogRequestMessage → Catalog)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def catalog_request(
    request: Request, member: Member = Depends(require_peer), node: Node = Depends(get_node)
) -> Response:
    try:
        doc = await _json(request)
        parse(doc, "CatalogRequestMessage")
        body = await run_in_threadpool(catalog.catalog_doc, node, _endpoint(request))
    except DataspaceError as exc:
        return await run_in_threadpool(_catalog_error, node, member, exc, "CatalogRequestMessage")
    return JSONResponse(body)


@router.get(
    "/catalog/datasets/{dataset_id}",
    summary="One dataset of the catalog",
    description=_DOC,
    openapi_extra=_PEER,
)
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


# --- negotiation: provider ------------------------------------------------------------------


@router.get(
    "/negotiations/{pid}",
    summary="A contract negotiation (ACK)",
    description=_DOC,
    openapi_extra=_PEER,
)
def negotiation_get(
    pid: str,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return _respond(ng.handle_get(node, member, pid), tasks)


@router.post(
    "/negotiations/request",
    status_code=201,
    summary="Start a negotiation (ContractRequestMessage → 201 ContractNegotiation)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_request(
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        "ContractRequestMessage",
        None,
        lambda doc: ng.handle_request(node, member, doc),
    )


@router.post(
    "/negotiations/{pid}/request",
    summary="A counter-request (refused)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_counter_request(
    pid: str,
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        "ContractRequestMessage",
        pid,
        lambda doc: ng.handle_message(
            node, member, pid, doc, "ContractRequestMessage", own_role=Role.PROVIDER
        ),
    )


@router.post(
    "/negotiations/{pid}/events",
    summary="ContractNegotiationEventMessage (ACCEPTED to a provider, FINALIZED to a consumer)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_events(
    pid: str,
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        "ContractNegotiationEventMessage",
        pid,
        lambda doc: ng.handle_message(node, member, pid, doc, "ContractNegotiationEventMessage"),
    )


@router.post(
    "/negotiations/{pid}/agreement/verification",
    summary="ContractAgreementVerificationMessage (with the consumer's signature)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_verification(
    pid: str,
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        "ContractAgreementVerificationMessage",
        pid,
        lambda doc: ng.handle_verification(node, member, pid, doc),
    )


@router.post(
    "/negotiations/{pid}/termination",
    summary="ContractNegotiationTerminationMessage (either side)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_termination(
    pid: str,
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        cn.TERMINATION,
        pid,
        lambda doc: ng.handle_message(node, member, pid, doc, cn.TERMINATION),
    )


# --- negotiation: consumer callbacks --------------------------------------------------------


@router.post(
    "/negotiations/offers",
    status_code=201,
    summary="A provider-initiated ContractOfferMessage (refused)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_initial_offer(
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        "ContractOfferMessage",
        None,
        lambda doc: ng.handle_offer(node, member, doc),
    )


@router.post(
    "/negotiations/{pid}/offers",
    summary="A counter-offer (refused)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_offer(
    pid: str,
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        "ContractOfferMessage",
        pid,
        lambda doc: ng.handle_offer(node, member, doc, pid),
    )


@router.post(
    "/negotiations/{pid}/agreement",
    summary="ContractAgreementMessage (with the provider's signature)",
    description=_DOC,
    openapi_extra=_PEER,
)
async def negotiation_agreement(
    pid: str,
    request: Request,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return await _negotiation(
        request,
        tasks,
        node,
        member,
        "ContractAgreementMessage",
        pid,
        lambda doc: ng.handle_agreement(node, member, pid, doc),
    )
