"""Every route × every kind of caller: nothing but health, node identity, the checkpoint and
the API description is reachable without a token, and each role reaches exactly its routes.

The matrix below is the specification. A route added to the app without a row here fails
``test_every_route_has_a_matrix_row``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from dataspace.node.app import route_roles

from .conftest import API, ROLES, Api, bearer

PUBLIC = "public"
PEER = "peer"  # node-to-node: no token opens it, only a member's signature
ALL = ROLES
READERS = ("admin", "provider", "auditor")
WRITERS = ("admin", "provider")

Build = Callable[[Api, bool], dict[str, Any]]


def _get(path: str, **params: Any) -> Build:
    return lambda api, allowed: {"url": path, "params": params}


def _upload(api: Api, allowed: bool) -> dict[str, Any]:
    from .conftest import make_csv

    name = f"matrix-up-{next(api._seq)}"
    return {
        "url": f"{API}/datasets",
        "data": {"name": name},
        "files": {"file": ("m.csv", make_csv(5), "text/csv")},
    }


def _delete_dataset(api: Api, allowed: bool) -> dict[str, Any]:
    # A denied caller aims at the shared dataset, which must survive the whole matrix.
    name = api.new_dataset() if allowed else "shared"
    return {"url": f"{API}/datasets/{name}"}


def _delete_token(api: Api, allowed: bool) -> dict[str, Any]:
    token_id = api.new_token("consumer")[0]
    return {"url": f"{API}/tokens/{token_id}"}


def _issue_bill(api: Api, allowed: bool) -> dict[str, Any]:
    # A node with no usage has nothing to bill: an allowed caller gets a clean refusal, so
    # record one denied attempt first (free, but billable as a zero line).
    from datetime import UTC, datetime

    from dataspace.metering import Usage
    from dataspace.services import usage as usage_service

    job = f"matrix-job-{next(api._seq)}"
    now = datetime.now(UTC)
    usage_service.record(
        api.node,
        Usage(
            agreement_id=f"agr-{job}",
            job_id=job,
            action="governed-query",
            consumer="bank",
            provider=api.node.name,
            dataset="shared",
            started_at=now,
            finished_at=now,
            status="denied",
        ),
        actor="test",
    )
    return {"url": f"{API}/bills", "json": {"agreement": f"agr-{job}"}}


def _denied_job(api: Api, allowed: bool) -> dict[str, Any]:
    # A job under an unknown agreement is refused, but its DENIED row is there to be read.
    from dataspace.errors import NotFound
    from dataspace.services import jobs

    job_id = f"matrix-job-{next(api._seq)}"
    with pytest.raises(NotFound):
        jobs.run_job(
            api.node, agreement_id="urn:uuid:x", consumer="bank", sql="SELECT 1", job_id=job_id
        )
    return {"url": f"{API}/jobs/{job_id}"}


def _query_unknown_agreement(api: Api, allowed: bool) -> dict[str, Any]:
    return {
        "url": f"{API}/jobs/query",
        "json": {"agreement_id": "urn:uuid:none", "sql": "SELECT 1"},
    }


def _create_offer(api: Api, allowed: bool) -> dict[str, Any]:
    return {
        "url": f"{API}/offers",
        "json": {
            "dataset": "shared",
            "template": "aggregate-only",
            "params": {"purposes": "credit-risk"},
        },
    }


def _offer_url(api: Api, allowed: bool) -> dict[str, Any]:
    from dataspace.policy import from_template
    from dataspace.policy.jsonld import to_jsonld
    from dataspace.services import offers

    created = offers.create(
        api.node,
        "shared",
        actor="test",
        policy=to_jsonld(from_template("aggregate-only", purposes="credit-risk")),
    )
    return {"url": f"{API}/offers/{created['id']}"}


def _peer(method: str, path: str) -> Build:
    url = path.replace("{pid}", "urn:uuid:x").replace("{dataset_id}", "x")
    return lambda api, allowed: {"url": url, **({"json": {}} if method == "POST" else {})}


def _peer_query(api: Api, allowed: bool) -> dict[str, Any]:
    return {"url": "/peer/v1/jobs/query", "json": {"agreement_id": "x", "sql": "SELECT 1"}}


# An allowed caller reaches the route and is answered by the service, not by auth: these
# routes need state (a peer, an agreement) the matrix does not build, so their allowed
# callers get this instead of a 2xx.
SERVICE_ANSWER = {
    ("POST", f"{API}/jobs/query"): (404, "not_found"),
    ("GET", f"{API}/bills/{{bill_id}}"): (404, "not_found"),
    # The node has joined no space: it can neither reach a peer nor has contracts to show.
    ("GET", f"{API}/peers/{{peer}}/catalog"): (400, "usage"),
    ("POST", f"{API}/contracts"): (400, "usage"),
    ("GET", f"{API}/contracts/{{ref}}"): (404, "not_found"),
    ("POST", f"{API}/contracts/{{ref}}/approve"): (404, "not_found"),
    ("POST", f"{API}/contracts/{{ref}}/reject"): (404, "not_found"),
    ("POST", f"{API}/contracts/{{ref}}/withdraw"): (404, "not_found"),
    ("POST", f"{API}/transfers"): (404, "not_found"),
    ("GET", f"{API}/transfers/{{pid}}"): (404, "not_found"),
    ("POST", f"{API}/transfers/{{pid}}/terminate"): (404, "not_found"),
    ("POST", f"{API}/mp/psi"): (404, "not_found"),
    ("POST", f"{API}/mp/aggregate"): (404, "not_found"),
    ("GET", f"{API}/mp/jobs/{{job_id}}"): (404, "not_found"),
    ("POST", f"{API}/mp/jobs/{{job_id}}/retry"): (404, "not_found"),
    ("POST", f"{API}/train"): (404, "not_found"),
    ("GET", f"{API}/train/jobs/{{job_id}}"): (404, "not_found"),
    ("POST", f"{API}/train/jobs/{{job_id}}/retry"): (404, "not_found"),
    ("GET", f"{API}/models/{{model_id}}"): (404, "not_found"),
    ("POST", f"{API}/predict"): (404, "not_found"),
}


MATRIX: dict[tuple[str, str], tuple[tuple[str, ...] | str, Build]] = {
    ("GET", "/openapi.json"): (PUBLIC, _get("/openapi.json")),
    ("GET", "/peer/v1/whoami"): (PEER, _get("/peer/v1/whoami")),
    ("GET", f"{API}/usage"): (ALL, _get(f"{API}/usage")),
    ("GET", f"{API}/usage/reconcile"): (("admin", "auditor"), _get(f"{API}/usage/reconcile")),
    ("GET", f"{API}/bills"): (ALL, _get(f"{API}/bills", period="2026-11")),
    ("POST", f"{API}/bills"): (WRITERS, _issue_bill),
    ("GET", f"{API}/bills/issued"): (ALL, _get(f"{API}/bills/issued", period="2026-11")),
    ("GET", f"{API}/bills/{{bill_id}}"): (ALL, _get(f"{API}/bills/bill-none")),
    ("GET", f"{API}/jobs"): (ALL, _get(f"{API}/jobs")),
    ("GET", f"{API}/offers"): (ALL, _get(f"{API}/offers")),
    ("POST", f"{API}/offers"): (WRITERS, _create_offer),
    ("GET", f"{API}/offers/{{offer_id}}"): (ALL, _offer_url),
    ("DELETE", f"{API}/offers/{{offer_id}}"): (WRITERS, _offer_url),
    ("GET", f"{API}/peers/{{peer}}/catalog"): (ALL, _get(f"{API}/peers/tax/catalog")),
    ("POST", f"{API}/contracts"): (
        ("admin", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/contracts",
            "json": {"peer": "tax", "offer_id": "urn:uuid:x", "purpose": "credit-risk"},
        },
    ),
    ("GET", f"{API}/contracts"): (ALL, _get(f"{API}/contracts")),
    ("GET", f"{API}/contracts/{{ref}}"): (ALL, _get(f"{API}/contracts/urn:uuid:none")),
    ("POST", f"{API}/contracts/{{ref}}/approve"): (
        WRITERS,
        lambda api, allowed: {"url": f"{API}/contracts/urn:uuid:none/approve"},
    ),
    ("POST", f"{API}/contracts/{{ref}}/reject"): (
        WRITERS,
        lambda api, allowed: {
            "url": f"{API}/contracts/urn:uuid:none/reject",
            "json": {"reason": "no"},
        },
    ),
    ("POST", f"{API}/contracts/{{ref}}/withdraw"): (
        ("admin", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/contracts/urn:uuid:none/withdraw",
            "json": {"reason": "no longer needed"},
        },
    ),
    ("GET", f"{API}/jobs/{{job_id}}"): (ALL, _denied_job),
    ("POST", f"{API}/jobs/query"): (("admin", "consumer"), _query_unknown_agreement),
    ("POST", "/peer/v1/jobs/query"): (PEER, _peer_query),
    ("POST", f"{API}/mp/psi"): (
        ("admin", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/mp/psi",
            "json": {"agreements": ["urn:uuid:none"], "dataset": "shared", "key": "a"},
        },
    ),
    ("POST", f"{API}/mp/aggregate"): (
        ("admin", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/mp/aggregate",
            "json": {"agreements": ["urn:uuid:none"], "columns": ["a"]},
        },
    ),
    ("GET", f"{API}/mp/jobs"): (ALL, _get(f"{API}/mp/jobs")),
    ("GET", f"{API}/mp/jobs/{{job_id}}"): (ALL, _get(f"{API}/mp/jobs/none")),
    ("POST", f"{API}/mp/jobs/{{job_id}}/retry"): (
        ("admin", "consumer"),
        lambda api, allowed: {"url": f"{API}/mp/jobs/none/retry"},
    ),
    ("POST", f"{API}/train"): (
        ("admin", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/train",
            "json": {"agreements": ["urn:uuid:none"], "label": "y", "features": {"a": ["b"]}},
        },
    ),
    ("GET", f"{API}/train/jobs/{{job_id}}"): (ALL, _get(f"{API}/train/jobs/none")),
    ("POST", f"{API}/train/jobs/{{job_id}}/retry"): (
        ("admin", "consumer"),
        lambda api, allowed: {"url": f"{API}/train/jobs/none/retry"},
    ),
    ("GET", f"{API}/models"): (ALL, _get(f"{API}/models")),
    ("POST", f"{API}/predict"): (
        ("admin", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/predict",
            "json": {"model": "none", "rows": ["none"]},
        },
    ),
    ("GET", f"{API}/models/{{model_id}}"): (ALL, _get(f"{API}/models/none")),
    ("POST", "/peer/v1/mp/step"): (PEER, _peer("POST", "/peer/v1/mp/step")),
    ("POST", "/peer/v1/mp/abort"): (PEER, _peer("POST", "/peer/v1/mp/abort")),
    ("POST", "/peer/v1/mp/alive"): (PEER, _peer("POST", "/peer/v1/mp/alive")),
    ("POST", "/peer/v1/witness/add-checkpoint"): (
        PEER, _peer("POST", "/peer/v1/witness/add-checkpoint")),
    ("GET", "/.well-known/dspace-version"): (PUBLIC, _get("/.well-known/dspace-version")),
    ("POST", "/dsp/catalog/request"): (PEER, _peer("POST", "/dsp/catalog/request")),
    ("GET", "/dsp/catalog/datasets/{dataset_id}"): (
        PEER,
        _peer("GET", "/dsp/catalog/datasets/{dataset_id}"),
    ),
    ("GET", "/dsp/negotiations/{pid}"): (PEER, _peer("GET", "/dsp/negotiations/{pid}")),
    ("POST", "/dsp/negotiations/request"): (PEER, _peer("POST", "/dsp/negotiations/request")),
    ("POST", "/dsp/negotiations/{pid}/request"): (
        PEER,
        _peer("POST", "/dsp/negotiations/{pid}/request"),
    ),
    ("POST", "/dsp/negotiations/{pid}/events"): (
        PEER,
        _peer("POST", "/dsp/negotiations/{pid}/events"),
    ),
    ("POST", "/dsp/negotiations/{pid}/agreement/verification"): (
        PEER,
        _peer("POST", "/dsp/negotiations/{pid}/agreement/verification"),
    ),
    ("POST", "/dsp/negotiations/{pid}/termination"): (
        PEER,
        _peer("POST", "/dsp/negotiations/{pid}/termination"),
    ),
    ("POST", "/dsp/negotiations/offers"): (PEER, _peer("POST", "/dsp/negotiations/offers")),
    ("POST", "/dsp/negotiations/{pid}/offers"): (
        PEER,
        _peer("POST", "/dsp/negotiations/{pid}/offers"),
    ),
    ("POST", "/dsp/negotiations/{pid}/agreement"): (
        PEER,
        _peer("POST", "/dsp/negotiations/{pid}/agreement"),
    ),
    ("POST", f"{API}/transfers"): (
        ("admin", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/transfers",
            "json": {"agreement_id": "urn:uuid:none", "mode": "raw"},
        },
    ),
    ("GET", f"{API}/transfers"): (ALL, _get(f"{API}/transfers")),
    ("GET", f"{API}/transfers/{{pid}}"): (ALL, _get(f"{API}/transfers/urn:uuid:none")),
    ("POST", f"{API}/transfers/{{pid}}/terminate"): (
        ("admin", "provider", "consumer"),
        lambda api, allowed: {
            "url": f"{API}/transfers/urn:uuid:none/terminate",
            "json": {"reason": "no longer needed"},
        },
    ),
    ("GET", "/peer/v1/transfers/{pid}/data"): (PEER, _peer("GET", "/peer/v1/transfers/{pid}/data")),
    ("GET", "/dsp/transfers/{pid}"): (PEER, _peer("GET", "/dsp/transfers/{pid}")),
    ("POST", "/dsp/transfers/request"): (PEER, _peer("POST", "/dsp/transfers/request")),
    ("POST", "/dsp/transfers/{pid}/start"): (PEER, _peer("POST", "/dsp/transfers/{pid}/start")),
    ("POST", "/dsp/transfers/{pid}/completion"): (
        PEER,
        _peer("POST", "/dsp/transfers/{pid}/completion"),
    ),
    ("POST", "/dsp/transfers/{pid}/suspension"): (
        PEER,
        _peer("POST", "/dsp/transfers/{pid}/suspension"),
    ),
    ("POST", "/dsp/transfers/{pid}/termination"): (
        PEER,
        _peer("POST", "/dsp/transfers/{pid}/termination"),
    ),
    ("GET", "/docs"): (PUBLIC, _get("/docs")),
    ("GET", "/redoc"): (PUBLIC, _get("/redoc")),
    ("GET", f"{API}/health"): (PUBLIC, _get(f"{API}/health")),
    ("GET", f"{API}/node"): (PUBLIC, _get(f"{API}/node")),
    ("GET", f"{API}/ledger/checkpoint"): (PUBLIC, _get(f"{API}/ledger/checkpoint")),
    ("GET", f"{API}/datasets"): (ALL, _get(f"{API}/datasets")),
    ("POST", f"{API}/datasets"): (WRITERS, _upload),
    ("GET", f"{API}/datasets/{{name}}"): (ALL, _get(f"{API}/datasets/shared")),
    ("GET", f"{API}/datasets/{{name}}/profile"): (READERS, _get(f"{API}/datasets/shared/profile")),
    ("GET", f"{API}/datasets/{{name}}/classification"): (
        READERS,
        _get(f"{API}/datasets/shared/classification"),
    ),
    ("GET", f"{API}/datasets/{{name}}/quality"): (READERS, _get(f"{API}/datasets/shared/quality")),
    ("DELETE", f"{API}/datasets/{{name}}"): (WRITERS, _delete_dataset),
    ("POST", f"{API}/datasets/{{name}}/reclassify"): (
        WRITERS,
        lambda api, allowed: {
            "url": f"{API}/datasets/shared/reclassify",
            "json": {"column": "城市", "category": "none"},
        },
    ),
    ("GET", f"{API}/ledger/entries"): (READERS, _get(f"{API}/ledger/entries", limit=5)),
    ("GET", f"{API}/ledger/proofs/inclusion"): (
        READERS,
        _get(f"{API}/ledger/proofs/inclusion", index=0),
    ),
    ("GET", f"{API}/ledger/proofs/consistency"): (
        READERS,
        _get(f"{API}/ledger/proofs/consistency", **{"from": 1}),
    ),
    ("POST", f"{API}/ledger/verify"): (("admin", "auditor"), _get(f"{API}/ledger/verify")),
    ("GET", f"{API}/tokens"): (("admin",), _get(f"{API}/tokens")),
    ("POST", f"{API}/tokens"): (
        ("admin",),
        lambda api, allowed: {"url": f"{API}/tokens", "json": {"name": "x", "role": "auditor"}},
    ),
    ("DELETE", f"{API}/tokens/{{token_id}}"): (("admin",), _delete_token),
}


def _routes(api: Api) -> set[tuple[str, str]]:
    found = set()
    for route in api.app.routes:
        assert isinstance(route, Route), f"unexpected route type {route!r}"
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def test_every_route_has_a_matrix_row(api: Api) -> None:
    routes = _routes(api)
    assert routes - set(MATRIX) == set(), "routes without a row in the role matrix"
    assert set(MATRIX) - routes == set(), "matrix rows for routes that no longer exist"


def test_roles_published_in_openapi_match_the_matrix(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    for route in api.app.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods:
            expected, _ = MATRIX[(method, route.path)]
            roles = route_roles(route)
            if expected == PEER:
                assert roles == (PEER,)
                assert spec["paths"][route.path][method.lower()]["x-roles"] == [PEER]
                continue
            assert (roles or PUBLIC) == expected
            operation = spec["paths"][route.path][method.lower()]
            assert operation["x-roles"] == ([PUBLIC] if expected == PUBLIC else list(expected))


CALLERS = ("no token", "wrong scheme", "unknown token", "revoked token", *ROLES)


@pytest.fixture
def callers(api: Api) -> dict[str, dict[str, str]]:
    assert api.upload("shared").status_code == 201
    revoked_id, revoked_secret = api.new_token("admin")
    assert api.client.delete(f"{API}/tokens/{revoked_id}", headers=api.as_("admin")).is_success
    return {
        "no token": {},
        "wrong scheme": {"Authorization": f"Basic {api.secrets['admin']}"},
        "unknown token": bearer("dst_" + "x" * 43),
        "revoked token": bearer(revoked_secret),
        **{role: api.as_(role) for role in ROLES},
    }


def test_role_matrix(api: Api, callers: dict[str, dict[str, str]]) -> None:
    failures = []
    for (method, path), (allowed_roles, build) in sorted(MATRIX.items()):
        for caller, headers in callers.items():
            public = allowed_roles == PUBLIC
            allowed = public or caller in allowed_roles
            request = build(api, allowed)
            response = api.client.request(method, headers=headers, **request)
            if allowed_roles == PEER:
                expected = "403 not_a_member (this node admits no peers, whatever the token)"
                ok = (
                    response.status_code == 403
                    and response.json()["error"]["code"] == "not_a_member"
                )
            elif allowed and (method, path) in SERVICE_ANSWER:
                status, code = SERVICE_ANSWER[(method, path)]
                expected = f"{status} {code} from the service"
                ok = response.status_code == status and response.json()["error"]["code"] == code
            elif allowed:
                expected = "2xx"
                ok = response.is_success
            elif caller in ROLES:
                expected = "403 forbidden"
                ok = response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
            else:
                expected = "401 unauthorized"
                ok = (
                    response.status_code == 401
                    and response.json()["error"]["code"] == "unauthorized"
                    and response.headers.get("www-authenticate") == "Bearer"
                )
            if not ok:
                failures.append(
                    f"{method} {path} as {caller}: want {expected}, got "
                    f"{response.status_code} {response.text[:200]}"
                )
    assert not failures, "\n".join(failures)
    # Denied deletes aimed at the shared dataset; it is still there.
    assert api.client.get(f"{API}/datasets/shared", headers=api.as_("admin")).status_code == 200
