"""Bearer-token authentication and role checks for the HTTP API.

Every route except the public ones (health, node identity, latest checkpoint, the OpenAPI
document) depends on :func:`require` with the roles that may call it::

    @router.get("/datasets")
    def list_datasets(token: TokenInfo = Depends(require("admin", "provider"))): ...

A missing, unknown or revoked token is a 401, a valid token whose role is not listed a 403,
both in the one error envelope. The token's ``actor`` is what the services record in the ledger.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dataspace.errors import AuthError, Forbidden
from dataspace.services import tokens
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

ADMIN = ("admin",)
WRITERS = ("admin", "provider")
READERS = ("admin", "provider", "auditor")
EVERYONE = tokens.ROLES

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token issued with `dataspace token issue` or POST /api/v1/tokens.",
)


def get_node(request: Request) -> Node:
    """The node this app serves."""
    node: Node = request.app.state.node
    return node


def _secret(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None:
        return credentials.credentials.strip() or None
    return bearer_secret(request)


def bearer_secret(request: Request) -> str | None:
    """The secret of an ``Authorization: Bearer`` header; None without the header, AuthError
    for another scheme."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(
            "the Authorization header is not a bearer token",
            hint="send 'Authorization: Bearer <token>'",
        )
    return secret.strip() or None


def authenticated_token(request: Request, node: Node, secret: str | None) -> TokenInfo:
    """The token behind ``secret``, looked up once per request: a JSON route checks it before
    reading the body (:mod:`dataspace.node.json_body`), its role dependency reuses the answer."""
    known: TokenInfo | None = getattr(request.state, "token", None)
    if known is None:
        known = tokens.authenticate(node, secret)
        request.state.token = known
    return known


def require(*roles: str) -> Callable[..., TokenInfo]:
    """A dependency that authenticates the bearer token and admits only ``roles``."""
    unknown = set(roles) - set(tokens.ROLES)
    if not roles or unknown:
        raise ValueError(f"require() needs roles from {tokens.ROLES}, got {roles!r}")
    allowed = tuple(roles)

    def authenticated(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
        node: Node = Depends(get_node),
    ) -> TokenInfo:
        info = authenticated_token(request, node, _secret(request, credentials))
        if info.role not in allowed:
            raise Forbidden(
                f"role '{info.role}' may not {request.method} {request.url.path}",
                hint="allowed roles: " + ", ".join(allowed),
                role=info.role,
                allowed=list(allowed),
            )
        return info

    authenticated.roles = allowed  # type: ignore[attr-defined]
    return authenticated


def roles_of(call: object) -> tuple[str, ...] | None:
    """The roles a dependency created by :func:`require` admits, or None for any other callable."""
    roles = getattr(call, "roles", None)
    return tuple(roles) if isinstance(roles, tuple) else None
