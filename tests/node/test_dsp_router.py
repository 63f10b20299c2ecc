"""The /dsp router in-process: signed requests, malformed bodies, unknown processes."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataspace.contracts import validate
from dataspace.identity.peer import PeerAuth
from dataspace.node.app import create_app
from dataspace.services import ledger
from dataspace.services.node import Node
from dataspace.services.space import self_member
from helpers.cluster import Space, start_space

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


@pytest.fixture
def space(tmp_path: Path) -> Iterator[Space]:
    running = start_space(tmp_path, ["tax", "bank"], serve=False)
    yield running
    running.stop()


@pytest.fixture
def tax(space: Space) -> Iterator[Node]:
    node = space.nodes["tax"].open()
    yield node
    node.close()


def _client(tax: Node, signer: Node) -> TestClient:
    # addressed to the URL the membership list gives tax: a peer signs for that
    client = TestClient(create_app(tax), base_url=self_member(tax).url)
    client.auth = PeerAuth(signer.signer)
    return client


def test_malformed_json_is_400_with_a_schema_valid_error(space: Space, tax: Node) -> None:
    bank = space.nodes["bank"].open()
    with _client(tax, bank) as client:
        response = client.post("/dsp/negotiations/request", content=b"{not json",
                               headers={"content-type": "application/json"})
        assert response.status_code == 400
        validate(response.json(), "ContractNegotiationError")
        assert "not JSON" in response.json()["reason"][0]
        missing = client.get("/dsp/negotiations/urn:uuid:unknown")
        assert missing.status_code == 404
        validate(missing.json(), "ContractNegotiationError")
        empty = client.post("/dsp/catalog/request", json={
            "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
            "@type": "CatalogRequestMessage"})
        assert empty.status_code == 200
        validate(empty.json(), "Catalog")
        assert client.get("/.well-known/dspace-version").status_code == 200
    bank.close()
    acts = [e["entry"]["action"] for e in ledger.entries(tax, limit=1000)]
    assert acts.count("negotiation.refused") == 2


def test_non_member_is_403_and_logged(space: Space, tax: Node) -> None:
    with _client(tax, space.operator) as client:
        response = client.post("/dsp/catalog/request", json={})
        assert response.status_code == 403
        # the node keeps serving
        assert client.get("/.well-known/dspace-version").status_code == 200
    acts = [e["entry"]["action"] for e in ledger.entries(tax, limit=1000)]
    assert "peer.denied" in acts
