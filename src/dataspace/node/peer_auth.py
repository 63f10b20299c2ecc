"""Authentication of node-to-node requests: RFC 9421 signature, membership, replay.

Routes for peers depend on :func:`require_peer`; it returns the calling member. A refused
request is entered in the ledger as a denied attempt before the error is answered, and the
node keeps serving.
"""

from __future__ import annotations

import time

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from dataspace.errors import AuthError, DataspaceError, UsageError
from dataspace.identity.httpsig import Profile
from dataspace.identity.membership import Member, Membership, NotAMember
from dataspace.identity.peer import verify_incoming
from dataspace.identity.replay import SqlReplayStore
from dataspace.ledger import log
from dataspace.node.auth import get_node
from dataspace.services import space
from dataspace.services.node import Node


def request_url(request: Request) -> str:
    """The absolute URL the peer addressed: scheme, Host header, raw path and query."""
    scope = request.scope
    host = request.headers.get("host")
    if not host:
        raise AuthError("request has no Host header", hint="send the Host the URL names")
    raw_path = scope.get("raw_path") or scope["path"].encode()
    url = f"{scope['scheme']}://{host}{raw_path.decode('latin-1')}"
    query = scope.get("query_string") or b""
    return f"{url}?{query.decode('latin-1')}" if query else url


def _replay_store(request: Request, node: Node) -> SqlReplayStore:
    store = getattr(request.app.state, "replay_store", None)
    if store is None:
        store = SqlReplayStore(
            node.store, prune_interval=node.limits.peer_replay_prune_interval_seconds
        )
        request.app.state.replay_store = store
    return store


def _log_denied(node: Node, request: Request, exc: DataspaceError) -> None:
    signature_input = request.headers.get("signature-input", "")
    keyid = (
        signature_input.split('keyid="', 1)[1].split('"', 1)[0]
        if 'keyid="' in signature_input
        else None
    )
    with node.store.write() as session:
        log.append(
            session,
            actor=f"peer:{keyid or 'unknown'}",
            action="peer.denied",
            payload={
                "method": request.method,
                "path": request.url.path,
                "code": exc.code,
                "reason": exc.message,
            },
        )


def _membership(node: Node) -> Membership:
    try:
        return space.membership(node)
    except UsageError:
        raise NotAMember(
            f"node {node.name} has joined no space, so it admits no peers",
            hint="the operator runs `dataspace space sign`; this node `dataspace space join`",
        ) from None


async def require_peer(request: Request, node: Node = Depends(get_node)) -> Member:
    body = await request.body()
    limits = node.limits
    profile = Profile(
        max_skew=limits.peer_signature_max_skew_seconds,
        max_age=limits.peer_signature_max_age_seconds,
    )
    try:
        membership = _membership(node)
        url = request_url(request)
        return await run_in_threadpool(
            verify_incoming,
            request.method,
            url,
            list(request.headers.items()),
            body,
            membership,
            _replay_store(request, node),
            time.time(),
            profile=profile,
        )
    except DataspaceError as exc:
        await run_in_threadpool(_log_denied, node, request, exc)
        raise
