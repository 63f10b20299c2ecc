"""What a signed peer request covers and when its body is read: a request cannot be moved to
another endpoint through its Host header, a malformed Host is a refusal (not a 500), and a
body is parsed only once its signer is known."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo

import pytest
from starlette.requests import Request

from dataspace.errors import AuthError
from dataspace.identity.httpsig import sign_request
from dataspace.identity.membership import http_key_id
from dataspace.identity.peer import PeerAuth
from dataspace.node.app import create_app
from dataspace.node.peer_auth import request_url
from dataspace.services import ledger, space
from dataspace.services.node import Node
from dataspace.services.space import self_member
from helpers.cluster import Space

from .conftest import send_then_hang_up

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

WITNESS = "/peer/v1/witness/add-checkpoint"


@pytest.fixture
def nodes(tax_and_bank: Space) -> Iterator[tuple[Node, Node]]:
    tax, bank = tax_and_bank.nodes["tax"].open(), tax_and_bank.nodes["bank"].open()
    yield tax, bank
    bank.close()
    tax.close()


def _signed(bank: Node, method: str, url: str, body: bytes) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    headers.update(sign_request(method, url, headers, body, signer=bank.signer,
                                keyid=http_key_id(bank.signer), now=time.time()))
    return headers


def _denied(tax: Node) -> int:
    return [e["entry"]["action"] for e in ledger.entries(tax, limit=1000)].count("peer.denied")


def test_a_signature_cannot_be_moved_to_another_endpoint_through_the_host(
    nodes: tuple[Node, Node],
) -> None:
    """Host: <tax>/peer/v1/witness/add-checkpoint# rebuilds the URL the signature covers
    while the request is routed by its real path, /dsp/catalog/request."""
    tax, bank = nodes
    url = self_member(tax).url
    body = json.dumps({"old_size": 0, "proof": [], "checkpoint": "x"}).encode()
    client = TestClient(create_app(tax), base_url=url)
    moved = _signed(bank, "POST", url + WITNESS, body)
    moved["host"] = url.split("://", 1)[1] + WITNESS + "#"
    answer = client.post("/dsp/catalog/request", content=body, headers=moved)
    assert answer.status_code == 401 and "Host header" in answer.json()["error"]["message"]
    assert _denied(tax) == 1
    # delivered where it was signed for, the same kind of request passes the signature check
    honest = client.post(WITNESS, content=body, headers=_signed(bank, "POST", url + WITNESS,
                                                                 body))
    assert honest.status_code not in (401, 403)


@pytest.mark.parametrize("host", ["[", "tax.example]", "tax example", "tax.example:1/x",
                                  "user@tax.example", "tax.example:123456", "[1.2.3.4]",
                                  "[:]", "[::::::]", "[1.2.3.4]:80"])
def test_a_malformed_host_is_a_refusal_not_a_crash(nodes: tuple[Node, Node], host: str) -> None:
    tax, bank = nodes
    url = self_member(tax).url
    with TestClient(create_app(tax), base_url=url) as client:
        headers = _signed(bank, "GET", url + "/peer/v1/whoami", b"")
        headers["host"] = host
        answer = client.get("/peer/v1/whoami", headers=headers)
        assert answer.status_code == 401, answer.text
        assert client.get("/.well-known/dspace-version").status_code == 200


@pytest.mark.parametrize("raw_path", [b"/peer/v1/whoami#/x", b"/peer/v1/whoami?x=1", b"whoami"])
def test_a_path_with_a_fragment_or_query_in_it_is_refused(raw_path: bytes) -> None:
    """Some HTTP servers pass a '#' in the request line through to the path; a URL built from
    it would lose the rest as a fragment."""
    scope = {"type": "http", "scheme": "https", "method": "GET", "path": raw_path.decode(),
             "raw_path": raw_path, "query_string": b"", "headers": [(b"host", b"tax:8443")]}
    with pytest.raises(AuthError, match="not a plain path"):
        request_url(Request(scope))


@pytest.mark.parametrize("path", [WITNESS, "/peer/v1/jobs/query"])
def test_a_strangers_body_is_not_parsed(nodes: tuple[Node, Node], path: str) -> None:
    """Unsigned, the answer is 401 whatever the body: no JSON error, nothing read into
    objects first. Signed, the same bad JSON is a 422 naming the body."""
    tax, bank = nodes
    url = self_member(tax).url
    with TestClient(create_app(tax), base_url=url) as client:
        for body in (b"{not json", b"[" * 100_000, json.dumps({"sql": "x" * 10}).encode()):
            answer = client.post(path, content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 401, answer.text
        assert _denied(tax) == 3
        client.auth = PeerAuth(bank.signer)
        bad = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        assert bad.json()["error"]["details"]["errors"][0]["field"].startswith("body")


def test_an_expired_membership_list_admits_no_peer_and_tells_them_nothing_of_it(
    nodes: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    tax, bank = nodes
    url = self_member(tax).url
    expires = space.membership(tax).expires

    class AfterExpiry(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> AfterExpiry:
            return cls.fromtimestamp((expires + timedelta(seconds=1)).timestamp(), tz)

    monkeypatch.setattr(space, "datetime", AfterExpiry)
    monkeypatch.setattr(space, "_cache", {})
    with TestClient(create_app(tax), base_url=url) as client:
        answer = client.get("/peer/v1/whoami",
                            headers=_signed(bank, "GET", url + "/peer/v1/whoami", b""))
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert "renewed" in error["message"]
    assert "serial" not in error["message"] and "expired" not in error["message"]


def test_the_scheme_is_the_published_one_when_the_host_is_this_nodes() -> None:
    """Behind a TLS-terminating proxy a request signed for https://tax.example arrives over
    http; the Host names the published authority, so the URL rebuilt is the published one."""
    scope = {"type": "http", "scheme": "http", "method": "GET", "path": "/peer/v1/whoami",
             "raw_path": b"/peer/v1/whoami", "query_string": b"",
             "headers": [(b"host", b"Tax.Example:8443")]}
    published = "https://tax.example:8443"
    assert request_url(Request(scope), published) == "https://Tax.Example:8443/peer/v1/whoami"
    assert request_url(Request(scope)) == "http://Tax.Example:8443/peer/v1/whoami"
    assert request_url(Request(scope), "https://other.example:8443").startswith("http://")


def test_a_peer_request_passes_through_a_proxy_that_changes_the_scheme(
    nodes: tuple[Node, Node],
) -> None:
    """Signed for the URL the membership list publishes, delivered over the other scheme
    (here https in front of a published http URL: the mirror of a TLS proxy)."""
    tax, bank = nodes
    url = self_member(tax).url
    assert url.startswith("http://")
    other_scheme = "https://" + url.split("://", 1)[1]
    with TestClient(create_app(tax), base_url=other_scheme) as client:
        answer = client.get("/peer/v1/whoami",
                            headers=_signed(bank, "GET", url + "/peer/v1/whoami", b""))
    assert answer.status_code == 200, answer.text
    assert _denied(tax) == 0


def test_a_peer_gone_before_its_body_arrived_is_not_an_incident(
    nodes: tuple[Node, Node], caplog: pytest.LogCaptureFixture,
) -> None:
    from urllib.parse import urlsplit

    tax, bank = nodes
    url = self_member(tax).url
    body = json.dumps({"old_size": 0, "proof": [], "checkpoint": "x"}).encode()
    parts = urlsplit(url)
    headers = [(b"host", parts.netloc.encode()),
               *[(k.lower().encode(), v.encode())
                 for k, v in _signed(bank, "POST", url + WITNESS, body).items()]]
    before = _denied(tax)
    with caplog.at_level("WARNING"):
        sent = send_then_hang_up(
            create_app(tax), "POST", WITNESS, headers, body[:7],
            scheme=parts.scheme, server=(parts.hostname or "", parts.port or 0))
    assert sent[0]["status"] == 422, sent
    assert b"closed the connection" in sent[1]["body"]
    assert "incident" not in caplog.text and "Traceback" not in caplog.text
    assert _denied(tax) == before
