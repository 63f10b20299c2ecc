"""The /dsp router in-process: signed requests, malformed bodies, unknown processes."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dataspace.contracts import ContractRequestMessage, build, validate
from dataspace.identity.peer import PeerAuth
from dataspace.node.app import create_app
from dataspace.samples import SAMPLES_DIR as SAMPLES
from dataspace.services import datasets, ledger, offers
from dataspace.services import negotiation as ng
from dataspace.services.node import Node
from dataspace.services.space import self_member
from helpers.cluster import Space

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


@pytest.fixture
def tax(tax_and_bank: Space) -> Iterator[Node]:
    node = tax_and_bank.nodes["tax"].open()
    yield node
    node.close()


def _client(tax: Node, signer: Node) -> TestClient:
    # addressed to the URL the membership list gives tax: a peer signs for that
    client = TestClient(create_app(tax), base_url=self_member(tax).url)
    client.auth = PeerAuth(signer.signer)
    return client


def test_malformed_json_is_400_with_a_schema_valid_error(tax_and_bank: Space, tax: Node) -> None:
    bank = tax_and_bank.nodes["bank"].open()
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


def test_non_member_is_403_and_logged(tax_and_bank: Space, tax: Node) -> None:
    with _client(tax, tax_and_bank.operator) as client:
        response = client.post("/dsp/catalog/request", json={})
        assert response.status_code == 403
        # the node keeps serving
        assert client.get("/.well-known/dspace-version").status_code == 200
    acts = [e["entry"]["action"] for e in ledger.entries(tax, limit=1000)]
    assert "peer.denied" in acts


def _request_body(tax: Node, bank: Node) -> dict[str, Any]:
    """A valid ContractRequestMessage for an offer of tax's sample dataset."""
    datasets.add(tax, SAMPLES / "tax_records.csv", name="tax-records", domain="finance",
                 actor="test")
    offer = offers.create(tax, "tax-records", actor="test", template="aggregate-only",
                          params={"purposes": "finance"})
    with tax.store.read() as session:
        stored = offers.offer_policy(offers.get(session, offer["id"]))
    return build(ContractRequestMessage(
        consumer_pid="urn:uuid:c1", offer=ng.with_purpose(stored, "finance"),
        callback_address=self_member(bank).url + "/dsp"))


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_hostile_json_is_400_and_the_node_keeps_serving(tax_and_bank: Space, tax: Node) -> None:
    """Bodies that are JSON but crashed the parsers or the store: nesting thousands deep
    (json, the schema validator, the policy reader), huge integers, lone surrogates."""
    bank = tax_and_bank.nodes["bank"].open()
    base = _request_body(tax, bank)

    def variant(change: Callable[[dict[str, Any]], None]) -> bytes:
        doc = json.loads(json.dumps(base))
        change(doc)
        return json.dumps(doc).encode()

    def nest_constraint(doc: dict[str, Any], depth: int) -> None:
        constraint: Any = {"leftOperand": "purpose", "operator": "eq", "rightOperand": "x"}
        for _ in range(depth):
            constraint = {"and": [constraint]}
        doc["offer"]["permission"][0]["constraint"].insert(0, constraint)

    hostile = {
        "json nested 200k deep": b"[" * 200_000 + b"]" * 200_000,
        "a 5000-digit integer": json.dumps(base)[:-1].encode() + b', "n": ' + b"9" * 5000 + b"}",
        "constraints nested 100 deep": variant(lambda d: nest_constraint(d, 100)),
        "an operand nested 600 deep": variant(lambda d: d["offer"]["permission"][0][
            "constraint"][0].update(rightOperand=_nested(600))),
        "a lone surrogate pid": variant(lambda d: d.update(consumerPid="urn:uuid:\ud800")),
        "a lone surrogate callback": variant(
            lambda d: d.update(callbackAddress=d["callbackAddress"] + "/\udfff")),
    }
    with _client(tax, bank) as client:
        for what, body in hostile.items():
            response = client.post("/dsp/negotiations/request", content=body,
                                   headers={"content-type": "application/json"})
            assert response.status_code == 400, (what, response.text[:300])
            validate(response.json(), "ContractNegotiationError")
        catalog = client.post("/dsp/catalog/request", content=b"[" * 100_000 + b"]" * 100_000,
                              headers={"content-type": "application/json"})
        assert catalog.status_code == 400
        fine = client.post("/dsp/negotiations/request", content=variant(
            lambda d: nest_constraint(d, 8)), headers={"content-type": "application/json"})
        # policies nest: a few levels are read and compared with the offer, not refused
        assert fine.json()["code"] == "offer_unavailable", fine.text[:300]
        assert client.post("/dsp/negotiations/request", content=json.dumps(base),
                           headers={"content-type": "application/json"}).status_code == 201
    bank.close()
    acts = [e["entry"]["action"] for e in ledger.entries(tax, limit=1000)]
    assert acts.count("negotiation.refused") == len(hostile) + 1


def test_a_stranger_is_refused_before_its_body_is_read(tax_and_bank: Space, tax: Node) -> None:
    """Who signed is checked from the headers first: a non-member (the operator's key is on
    no member entry) cannot make the node buffer its body; a member's body is read and
    checked against its signed digest."""
    payload = b"x" * (4 << 20)

    def send(signer: Node, sent: bytes = payload) -> tuple[int, list[int]]:
        pulled: list[int] = []

        def stream() -> Iterator[bytes]:  # what the node reads of the body, as it reads it
            for at in range(0, len(sent), 1 << 20):
                pulled.append(at)
                yield sent[at:at + (1 << 20)]

        with _client(tax, signer) as client:
            signed = client.build_request("POST", "/dsp/catalog/request", content=payload,
                                          headers={"content-type": "application/json"})
            PeerAuth(signer.signer).sign(signed)
            headers = {k: v for k, v in signed.headers.items() if k.lower() != "content-length"}
            client.auth = None
            response = client.post("/dsp/catalog/request", content=stream(), headers=headers)
        return response.status_code, pulled

    status, pulled = send(tax_and_bank.operator)
    assert status == 403 and pulled == []
    bank = tax_and_bank.nodes["bank"].open()
    status, pulled = send(bank)
    assert status == 400 and len(pulled) == 4  # read in full, digest checked, then not JSON
    status, _ = send(bank, payload[:-1] + b"y")
    assert status == 401  # the body is not the one the member signed
    bank.close()
