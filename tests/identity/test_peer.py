"""Signed peer requests end to end: httpx PeerAuth → an ASGI app that calls verify_incoming."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dataspace.errors import DataspaceError
from dataspace.identity.membership import (
    Member,
    Membership,
    build_membership,
    load_membership,
    sign_membership,
)
from dataspace.identity.note import NoteSigner
from dataspace.identity.peer import PeerAuth, verify_incoming
from dataspace.identity.replay import SqlReplayStore
from dataspace.services.node import Node

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient and warns when it falls back to httpx.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

NOW = datetime(2026, 1, 10, tzinfo=UTC)
BASE_URL = "https://tax.example:8443"
BODY = b'{"@type": "ContractRequestMessage", "purpose": "credit-risk"}'


def _signer(name: str) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def _membership(bank: NoteSigner, tax: NoteSigner) -> Membership:
    operator = _signer("dataspace/operator")
    text = build_membership(
        "finance-pilot",
        1,
        [
            Member("bank", "https://bank.example", bank.verifier_key(), ("consumer",)),
            Member("tax", BASE_URL, tax.verifier_key(), ("provider",)),
        ],
        issued=datetime(2026, 1, 1, tzinfo=UTC),
        expires=datetime(2026, 2, 1, tzinfo=UTC),
    )
    return load_membership(sign_membership(text, operator), operator.verifier_key(), now=NOW)


def _request_url(request: Request) -> str:
    """The absolute URL the peer addressed: scheme, Host, raw path and query."""
    scope = request.scope
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    host = request.headers.get("host", "")
    url = f"{scope['scheme']}://{host}{path.decode('latin-1')}"
    return url + (f"?{query.decode('latin-1')}" if query else "")


def _app(membership: Membership, replay_store: SqlReplayStore) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(DataspaceError)
    async def _error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DataspaceError)
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status)

    @app.api_route("/dsp/{rest:path}", methods=["GET", "POST"])
    async def _peer_route(request: Request) -> dict[str, Any]:
        body = await request.body()
        member = verify_incoming(
            request.method,
            _request_url(request),
            list(request.headers.items()),
            body,
            membership,
            replay_store,
            NOW,
            receiver="tax",
        )
        return {"peer": member.name, "bytes": len(body)}

    return app


@pytest.fixture
def setup(node: Node) -> Iterator[tuple[TestClient, NoteSigner, SqlReplayStore]]:
    bank, tax = _signer("dataspace/bank"), _signer("dataspace/tax")
    replay = SqlReplayStore(node.store)
    with TestClient(_app(_membership(bank, tax), replay), base_url=BASE_URL) as client:
        yield client, bank, replay


def _auth(signer: NoteSigner) -> PeerAuth:
    return PeerAuth(signer, clock=NOW.timestamp)


def _error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_members_signed_request_passes(setup: tuple[TestClient, NoteSigner, Any]) -> None:
    client, bank, replay = setup
    response = client.post(
        "/dsp/negotiations/request?lang=zh",
        content=BODY,
        headers={"Content-Type": "application/json"},
        auth=_auth(bank),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"peer": "bank", "bytes": len(BODY)}
    response = client.get("/dsp/catalog/datasets/ds-1", auth=_auth(bank))
    assert response.status_code == 200, response.text
    assert replay.count() == 2


def test_request_signed_through_httpx_carries_the_profile(
    setup: tuple[TestClient, NoteSigner, Any],
) -> None:
    client, bank, _ = setup
    request = client.build_request("POST", "/dsp/x", json={"a": 1})
    _auth(bank).sign(request)
    assert request.headers["content-digest"].startswith("sha-256=:")
    assert request.headers["signature"].startswith("sig1=:")
    assert f'keyid="dataspace/bank+{bank.key_id.hex()}"' in request.headers["signature-input"]


def test_non_member_is_forbidden(setup: tuple[TestClient, NoteSigner, Any]) -> None:
    client, _, _ = setup
    stranger = _signer("dataspace/stranger")
    response = client.post("/dsp/negotiations/request", content=BODY, auth=_auth(stranger))
    assert response.status_code == 403
    assert _error_code(response) == "not_a_member"
    assert "not on the membership list" in response.json()["error"]["message"]


def test_replayed_request_is_refused(setup: tuple[TestClient, NoteSigner, Any]) -> None:
    client, bank, _ = setup
    request = client.build_request("POST", "/dsp/negotiations/request", content=BODY)
    _auth(bank).sign(request)
    assert client.send(request).status_code == 200
    again = client.send(request)
    assert again.status_code == 401
    assert _error_code(again) == "replayed_request"
    assert "already seen" in again.json()["error"]["message"]


def test_forged_signature_is_refused(setup: tuple[TestClient, NoteSigner, Any]) -> None:
    client, bank, _ = setup
    request = client.build_request("POST", "/dsp/negotiations/request", content=BODY)
    _auth(bank).sign(request)
    label, value = request.headers["signature"].split("=:", 1)
    flipped = ("B" if value[0] == "A" else "A") + value[1:]
    request.headers["signature"] = f"{label}=:{flipped}"
    response = client.send(request)
    assert response.status_code == 401
    assert _error_code(response) == "invalid_request_signature"
    assert "does not verify" in response.json()["error"]["message"]


def test_tampered_body_is_refused(setup: tuple[TestClient, NoteSigner, Any]) -> None:
    client, bank, replay = setup
    signed = client.build_request("POST", "/dsp/negotiations/request", content=BODY)
    _auth(bank).sign(signed)
    forged = BODY.replace(b"credit-risk", b"marketing")
    headers = {k: v for k, v in signed.headers.items() if k.lower() != "content-length"}
    response = client.post("/dsp/negotiations/request", content=forged, headers=headers)
    assert response.status_code == 401
    assert _error_code(response) == "invalid_content_digest"
    assert replay.count() == 0  # a refused request burns no nonce


def test_unsigned_request_is_refused(setup: tuple[TestClient, NoteSigner, Any]) -> None:
    client, _, _ = setup
    response = client.post("/dsp/negotiations/request", content=BODY)
    assert response.status_code == 401
    assert "not signed" in response.json()["error"]["message"]


def test_request_redirected_to_another_path_is_refused(
    setup: tuple[TestClient, NoteSigner, Any],
) -> None:
    client, bank, _ = setup
    request = client.build_request("POST", "/dsp/negotiations/request", content=BODY)
    _auth(bank).sign(request)
    moved = client.build_request(
        "POST", "/dsp/negotiations/terminate", content=BODY, headers=request.headers
    )
    response = client.send(moved)
    assert response.status_code == 401
    assert "does not verify" in response.json()["error"]["message"]


def test_peer_auth_needs_a_keyid_for_a_bare_key() -> None:
    with pytest.raises(TypeError):
        PeerAuth(Ed25519PrivateKey.generate())
    auth = PeerAuth(Ed25519PrivateKey.generate(), "k+00000000")
    assert auth.keyid == "k+00000000"


@pytest.mark.parametrize(
    "addressed",
    # (the scheme is the connection's own, not the caller's to claim: a request signed for
    # http:// that arrives over https fails its signature instead)
    ["https://bank.example", "https://tax.example", "https://tax.example:8444"],
)
def test_request_signed_for_another_node_or_origin_is_refused(
    setup: tuple[TestClient, NoteSigner, Any], addressed: str
) -> None:
    """A member's request to one node, forwarded whole (Host included) to another: each node
    keeps its own nonces, so only the addressed origin stops it."""
    client, bank, replay = setup
    request = httpx.Request("POST", f"{addressed}/dsp/negotiations/request", content=BODY)
    _auth(bank).sign(request)
    response = client.post("/dsp/negotiations/request", content=BODY, headers=request.headers)
    assert response.status_code == 401
    assert "not to this node (https://tax.example:8443)" in response.json()["error"]["message"]
    assert replay.count() == 0


def test_the_listed_origin_matches_whatever_the_case_and_default_port(
    setup: tuple[TestClient, NoteSigner, Any],
) -> None:
    client, bank, _ = setup
    url = "https://TAX.example:8443/dsp/negotiations/request"
    request = httpx.Request("POST", url, content=BODY)
    _auth(bank).sign(request)
    response = client.post("/dsp/negotiations/request", content=BODY, headers=request.headers)
    assert response.status_code == 200, response.text
