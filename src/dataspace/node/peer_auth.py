"""Authentication of node-to-node requests: RFC 9421 signature, membership, replay.

Routes for peers depend on :func:`require_peer`; it returns the calling member. A refused
request is entered in the ledger as a denied attempt before the error is answered, and the
node keeps serving.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dataspace.errors import AuthError, DataspaceError, UsageError
from dataspace.identity.httpsig import Profile, check_body
from dataspace.identity.membership import Member, Membership, MembershipError, NotAMember
from dataspace.identity.peer import authenticate
from dataspace.identity.replay import SqlReplayStore
from dataspace.ledger import log
from dataspace.ledger.entry_budget import EntryBudget, budget_for
from dataspace.node.auth import get_node
from dataspace.node.json_body import InvalidBody
from dataspace.services import space
from dataspace.services.node import Node

logger = logging.getLogger("dataspace.node")


# RFC 9110 §7.2: Host is uri-host [":" port]; a name or IPv4 address, or an IPv6 literal.
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def request_url(request: Request, published: str | None = None) -> str:
    """The absolute URL the peer addressed: scheme, Host header, raw path and query.

    The Host header must be an authority and nothing more: ``Host: tax/peer/v1/x#`` would
    rebuild the URL another endpoint's signature covers while the request is routed by its
    real path. The same goes for a ``#`` in the path, which a URL drops as a fragment.

    ``published``: this node's URL on the membership list. When the Host is its authority,
    the scheme is its scheme: behind a TLS-terminating proxy the request arrives over http,
    yet peers signed the https URL the list gives them (the scheme grants nothing: the
    signature still has to cover that URL, and a replay is refused as ever)."""
    scope = request.scope
    host = request.headers.get("host")
    if not host:
        raise AuthError("request has no Host header", hint="send the Host the URL names")
    if not _HOST.fullmatch(host) or not _bracketed_ipv6(host):
        raise AuthError(f"Host header {host[:100]!r} is not a host and port",
                        hint="send the authority of the URL the request was signed for")
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    if not raw_path.startswith("/") or "#" in raw_path or "?" in raw_path:
        raise AuthError(f"request path {raw_path[:100]!r} is not a plain path",
                        hint="a signed request's path has no fragment")
    scheme = scope["scheme"]
    if published:
        own = urlsplit(published)
        if own.netloc.lower() == host.lower():
            scheme = own.scheme
    url = f"{scheme}://{host}{raw_path}"
    query = scope.get("query_string") or b""
    return f"{url}?{query.decode('latin-1')}" if query else url


def _bracketed_ipv6(host: str) -> bool:
    """A bracketed host is an IPv6 address (``[1.2.3.4]`` or ``[:]`` is none; URL parsing
    would raise on it)."""
    if not host.startswith("["):
        return True
    try:
        ipaddress.IPv6Address(host[1:host.index("]")])
    except ValueError:
        return False
    return True


def _replay_store(request: Request, node: Node) -> SqlReplayStore:
    store = getattr(request.app.state, "replay_store", None)
    if store is None:
        store = SqlReplayStore(
            node.store, prune_interval=node.limits.peer_replay_prune_interval_seconds
        )
        request.app.state.replay_store = store
    return store


def _denied_log(node: Node) -> EntryBudget:
    return budget_for(str(node.root), "unverified", int(node.limits.peer_denied_log_per_minute))


def _claimed_keyid(request: Request) -> str | None:
    signature_input = request.headers.get("signature-input", "")
    if 'keyid="' not in signature_input:
        return None
    return signature_input.split('keyid="', 1)[1].split('"', 1)[0][:100]


def _log_denied(node: Node, request: Request, exc: DataspaceError, suppressed: int,
                budget: EntryBudget) -> None:
    """The refusal as a ledger entry. The signature did not verify, so the key the request
    names is only a claim: it goes into the payload, never into the actor."""
    payload: dict[str, object] = {
        "method": request.method,
        "path": request.url.path[:200],
        "code": exc.code,
        "reason": exc.message[:300],
        "claimed_keyid": _claimed_keyid(request),
    }
    if suppressed:
        payload["suppressed_before"] = suppressed
    try:
        with node.store.write() as session:
            log.append(session, actor="peer:unverified", action="peer.denied", payload=payload)
    except DataspaceError:  # the refusal stands whether or not it could be logged
        budget.restore(suppressed + 1)  # counted into the next entry that is written
        logger.exception("could not enter a refused peer request in the ledger")


def _membership(node: Node) -> Membership:
    try:
        return space.membership(node)
    except UsageError:
        raise NotAMember(
            f"node {node.name} has joined no space, so it admits no peers",
            hint="the operator runs `dataspace space sign`; this node `dataspace space join`",
        ) from None
    except MembershipError:  # expired or unreadable: the details are for the operator's log
        logger.exception("node %s cannot read its membership list", node.name)
        raise NotAMember(
            f"node {node.name} admits no peers until its membership list is renewed",
            hint="ask the space operator for a current list",
        ) from None


async def require_peer(request: Request, node: Node = Depends(get_node)) -> Member:
    """The member that signed this request. Who signed is checked from the headers before
    the body is read: a stranger cannot make the node buffer a large body (up to the peer
    routes' cap) only to be refused; the body is then checked against the signed digest."""
    limits = node.limits
    profile = Profile(
        max_skew=limits.peer_signature_max_skew_seconds,
        max_age=limits.peer_signature_max_age_seconds,
    )
    headers = list(request.headers.items())
    try:
        membership = _membership(node)
        own = membership.by_name(node.name)
        url = request_url(request, own.url if own is not None else None)
        member, verified = await run_in_threadpool(
            authenticate,
            request.method,
            url,
            headers,
            None,
            membership,
            _replay_store(request, node),
            time.time(),
            receiver=node.name,
            profile=profile,
        )
        body = await request.body()
        await run_in_threadpool(check_body, headers, body, verified, profile)  # hashing
        return member
    except ClientDisconnect:  # the caller hung up mid-body: its business, not an incident
        raise InvalidBody("the client closed the connection before the whole body arrived",
                          hint="send the request again") from None
    except DataspaceError as exc:
        budget = _denied_log(node)
        suppressed = budget.admit(time.time())
        if suppressed is not None:
            await run_in_threadpool(_log_denied, node, request, exc, suppressed, budget)
        raise


_T = TypeVar("_T")


async def signed_body(request: Request, shape: type[_T]) -> _T:
    """The JSON body of a request :func:`require_peer` admitted, validated as ``shape``
    (422 ``invalid_request`` naming the field otherwise). A route reads its body through this
    rather than declaring a body parameter: FastAPI reads and parses declared bodies before
    any dependency runs, so a stranger could make the node parse one only to be refused."""
    try:
        return TypeAdapter(shape).validate_json(await request.body())
    except ValidationError as exc:
        errors: list[Any] = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def body_schema(shape: type[Any], example: Any = None) -> dict[str, Any]:
    """``openapi_extra`` documenting a :func:`signed_body` route's body."""
    schema: dict[str, Any] = TypeAdapter(shape).json_schema()
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": content}}}
