"""The node's HTTP API: a thin FastAPI face over the service functions.

``create_app(node)`` builds the app for one opened node. Routes live in ``routers/``, one
module per noun; authentication and roles in ``auth``; the one error envelope in ``errors``.
Service calls block (SQL, DuckDB, files), so endpoints are plain ``def`` and run in the
threadpool; the upload endpoint is async only to stream the body to disk.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from dataspace import __version__
from dataspace.node.auth import roles_of
from dataspace.node.body_limit import BodyLimit
from dataspace.node.docs_page import install_docs_page
from dataspace.node.errors import (
    AUTH_RESPONSES,
    CHANGE_RESPONSES,
    COMMON_RESPONSES,
    NAMED_RESPONSES,
    install_error_handlers,
)
from dataspace.node.head_requests import HeadAsGet
from dataspace.node.json_body import CheckedJsonRoute
from dataspace.node.peer_auth import require_peer
from dataspace.node.routers import (
    contracts,
    datasets,
    dsp,
    dsp_transfers,
    dsp_version,
    health,
    jobs,
    ledger,
    mp_jobs,
    offers,
    peer,
    peer_jobs,
    peer_mp,
    peer_transfers,
    tokens,
    training,
    transfers,
    usage,
)
from dataspace.node.routers import node as node_identity
from dataspace.services.node import Node

API_PREFIX = "/api/v1"
PUBLIC = "public"
PEER = "peer"  # routes for other nodes: an RFC 9421-signed request from a member, no token

# Every router module of the node; a module's PREFIX (default API_PREFIX) places its routes.
ROUTERS = (
    health,
    node_identity,
    datasets,
    offers,
    contracts,
    jobs,
    usage,
    ledger,
    tokens,
    peer,
    peer_jobs,
    mp_jobs,
    training,
    peer_mp,
    dsp,
    dsp_version,
    transfers,
    peer_transfers,
    dsp_transfers,
)

DESCRIPTION = """\
The HTTP API of one **dataspace** node: its datasets, its verifiable ledger and its API tokens.

Send `Authorization: Bearer <token>` on every call except `GET /api/v1/health`,
`GET /api/v1/node` and `GET /api/v1/ledger/checkpoint`. Each operation lists the roles that may
call it. Every error has the same shape: `{"error": {"code", "message", "hint", "details"}}`.
"""


def create_app(node: Node) -> FastAPI:
    """The API for ``node``. The caller keeps ownership of the node (and closes it)."""
    app = FastAPI(
        title=f"dataspace node {node.name}",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # FastAPI's viewers load from public CDNs: blank on a closed network
        redoc_url=None,
        openapi_tags=[
            {"name": "node", "description": "Health and identity (public)"},
            {"name": "datasets", "description": "Registered datasets and their catalog analysis"},
            {"name": "ledger", "description": "The append-only Merkle log, checkpoints, proofs"},
            {"name": "tokens", "description": "API tokens and their roles (admin only)"},
            {"name": "offers", "description": "Offers this node publishes (ODRL policies)"},
            {"name": "contracts", "description": "Peers' catalogs, negotiations, agreements"},
            {"name": "jobs", "description": "Governed queries under agreements"},
            {"name": "usage", "description": "Usage records, statements, bills"},
        ],
    )
    app.router.route_class = CheckedJsonRoute  # JSON bodies checked first (json_body)
    app.state.node = node
    install_error_handlers(app)
    limits = node.limits
    api_cap, peer_cap = int(limits.api_max_body_mb) << 20, int(limits.peer_max_body_mb) << 20

    def body_cap(method: str, path: str) -> int | None:
        if method == "POST" and path.rstrip("/") == f"{API_PREFIX}/datasets":
            return None  # the upload streams to disk under api_max_upload_mb
        return peer_cap if path.startswith("/peer/") else api_cap

    app.add_middleware(BodyLimit, limit_for=body_cap)
    app.add_middleware(HeadAsGet)  # added last: runs first, so the body cap sees GET
    for module in ROUTERS:
        prefix = getattr(module, "PREFIX", API_PREFIX)
        for route in module.router.routes:
            assert isinstance(route, APIRoute), route
            _add(app, route, prefix)
    install_docs_page(app)
    return app


def _add(app: FastAPI, route: APIRoute, prefix: str) -> None:
    """Add a router's route to the app under ``prefix``, its roles written into the docs.

    Routes are copied rather than ``include_router``-ed so that ``app.routes`` lists every
    endpoint as an APIRoute, which the role-matrix test and the docs check enumerate.
    """
    roles = route_roles(route)
    if roles == (PEER,):
        access = "Peers only: a request signed by a member of the space (RFC 9421)."
    elif roles:
        access = "Roles: " + ", ".join(roles) + "."
    else:
        access = "Public: no token needed."
    changes = bool(set(route.methods or ()) & {"POST", "PUT", "PATCH", "DELETE"})
    responses = {**COMMON_RESPONSES, **(AUTH_RESPONSES if roles else {}),
                 **(NAMED_RESPONSES if "{" in route.path else {}),
                 **(CHANGE_RESPONSES if changes else {}), **route.responses}
    app.add_api_route(
        prefix + route.path,
        route.endpoint,
        methods=sorted(route.methods or ()),
        name=route.name,
        summary=route.summary,
        description=f"{access}\n\n{route.description}".strip(),
        tags=list(route.tags),
        status_code=route.status_code,
        response_model=route.response_model,
        response_class=route.response_class,
        response_description=route.response_description,
        responses=responses,
        openapi_extra={**(route.openapi_extra or {}), "x-roles": list(roles or [PUBLIC])},
    )


def route_roles(route: APIRoute) -> tuple[str, ...] | None:
    """The roles admitted to ``route`` (``("peer",)`` for node-to-node routes), or None when
    it is public."""
    for dependency in route.dependant.dependencies:
        if dependency.call is require_peer:
            return (PEER,)
        roles = roles_of(dependency.call)
        if roles is not None:
            return roles
    return None
