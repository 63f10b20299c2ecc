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
from typing import Any, TypeVar

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
_F = TypeVar("_F", bound=Callable[..., Any])


def _route(method: str, path: str, summary: str, **kw: Any) -> Callable[[_F], _F]:
    """Register a peer endpoint (``require_peer`` is the endpoint's own dependency, so that
    ``node.app.route_roles`` sees it) with the shared description."""
    return router.api_route(
        path, methods=[method], summary=summary, description=_DOC, openapi_extra=_PEER, **kw
    )


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


@_route("POST", "/catalog/request", "The catalog (CatalogRequestMessage → Catalog)")
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


@_route("GET", "/catalog/datasets/{dataset_id}", "One dataset of the catalog")
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
# Every POST takes the same steps: read the body (malformed JSON is refused and logged like any
# other bad message), hand it to one ``ng.handle_*`` in the threadpool, answer its Reply and send
# what follows as a background task. The service maps errors to a ContractNegotiationError with
# its status (400 an illegal transition or a bad message, 404 an unknown or foreign process). A
# route declares only what differs: its name, path, the message it expects, its summary and the
# service call. ``_start`` routes begin a process (no pid, 201); ``_step`` routes address one.

_Start = Callable[[Node, Member, Any], ng.Reply]  # (node, peer, doc)
_Step = Callable[[Node, Member, str, Any], ng.Reply]  # (node, peer, pid, doc)


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


def _start(name: str, path: str, what: str, summary: str, handle: _Start) -> None:
    """A POST of message ``what`` that starts a process: 201 and the process (ACK)."""

    async def endpoint(
        request: Request,
        tasks: BackgroundTasks,
        member: Member = Depends(require_peer),
        node: Node = Depends(get_node),
    ) -> Response:
        return await _negotiation(
            request, tasks, node, member, what, None, lambda doc: handle(node, member, doc)
        )

    _route("POST", path, summary, name=name, status_code=201)(endpoint)


def _step(name: str, path: str, what: str, summary: str, handle: _Step) -> None:
    """A POST of message ``what`` to the process ``{pid}`` of ``path``."""

    async def endpoint(
        pid: str,
        request: Request,
        tasks: BackgroundTasks,
        member: Member = Depends(require_peer),
        node: Node = Depends(get_node),
    ) -> Response:
        return await _negotiation(
            request, tasks, node, member, what, pid, lambda doc: handle(node, member, pid, doc)
        )

    _route("POST", path, summary, name=name)(endpoint)


@_route("GET", "/negotiations/{pid}", "A contract negotiation (ACK)")
def negotiation_get(
    pid: str,
    tasks: BackgroundTasks,
    member: Member = Depends(require_peer),
    node: Node = Depends(get_node),
) -> Response:
    return _respond(ng.handle_get(node, member, pid), tasks)


# provider

_start(
    "negotiation_request",
    "/negotiations/request",
    cn.REQUEST,
    "Start a negotiation (ContractRequestMessage → 201 ContractNegotiation)",
    ng.handle_request,
)
_step(
    "negotiation_counter_request",
    "/negotiations/{pid}/request",
    cn.REQUEST,
    "A counter-request (refused)",
    lambda node, member, pid, doc: ng.handle_message(
        node, member, pid, doc, cn.REQUEST, own_role=Role.PROVIDER
    ),
)
_step(
    "negotiation_events",
    "/negotiations/{pid}/events",
    "ContractNegotiationEventMessage",
    "ContractNegotiationEventMessage (ACCEPTED to a provider, FINALIZED to a consumer)",
    lambda node, member, pid, doc: ng.handle_message(
        node, member, pid, doc, "ContractNegotiationEventMessage"
    ),
)
_step(
    "negotiation_verification",
    "/negotiations/{pid}/agreement/verification",
    cn.VERIFICATION,
    "ContractAgreementVerificationMessage (with the consumer's signature)",
    ng.handle_verification,
)
_step(
    "negotiation_termination",
    "/negotiations/{pid}/termination",
    cn.TERMINATION,
    "ContractNegotiationTerminationMessage (either side)",
    lambda node, member, pid, doc: ng.handle_message(node, member, pid, doc, cn.TERMINATION),
)

# consumer callbacks

_start(
    "negotiation_initial_offer",
    "/negotiations/offers",
    cn.OFFER,
    "A provider-initiated ContractOfferMessage (refused)",
    ng.handle_offer,
)
_step(
    "negotiation_offer",
    "/negotiations/{pid}/offers",
    cn.OFFER,
    "A counter-offer (refused)",
    lambda node, member, pid, doc: ng.handle_offer(node, member, doc, pid),
)
_step(
    "negotiation_agreement",
    "/negotiations/{pid}/agreement",
    cn.AGREEMENT,
    "ContractAgreementMessage (with the provider's signature)",
    ng.handle_agreement,
)
