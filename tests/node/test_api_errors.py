"""The one JSON error envelope, pinned for every kind of error the API can return."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest
from sqlalchemy import text

import dataspace
from dataspace import errors
from dataspace.node.app import create_app

from .conftest import API, Api, TestClient, assert_envelope, send_then_hang_up


def _all_error_classes() -> list[type[errors.DataspaceError]]:
    """Every subclass in the package — all its modules imported first, since a class defined
    in a module nothing has imported yet (the CLI and the scenarios import lazily) would be
    missed."""
    for module in pkgutil.walk_packages(dataspace.__path__, "dataspace."):
        if not module.name.endswith("__main__"):  # that one runs the CLI
            importlib.import_module(module.name)
    found: list[type[errors.DataspaceError]] = []
    todo: list[type[errors.DataspaceError]] = [errors.DataspaceError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.__name__)
def test_every_dataspace_error_renders_as_the_envelope(
    api: Api, cls: type[errors.DataspaceError]
) -> None:
    def boom() -> None:
        # Package subclasses (PolicyDenied, BudgetExhausted, ...) have constructors of their
        # own; the envelope depends only on what the root class's constructor sets.
        error = cls.__new__(cls)
        errors.DataspaceError.__init__(
            error, "what happened", hint="what to do", index=7, path=api.node.root
        )
        raise error

    api.app.add_api_route("/boom", boom)
    error = assert_envelope(api.client.get("/boom"), cls.http_status, cls.code)
    assert error == {
        "code": cls.code,
        "message": "what happened",
        "hint": "what to do",
        "details": {"index": 7, "path": str(api.node.root)},
    }


def test_error_without_hint_or_details_has_just_code_and_message(api: Api) -> None:
    def boom() -> None:
        raise errors.NotFound("gone")

    api.app.add_api_route("/boom", boom)
    assert assert_envelope(api.client.get("/boom"), 404, "not_found") == {
        "code": "not_found",
        "message": "gone",
    }


def test_missing_dataset_is_404(api: Api) -> None:
    error = assert_envelope(
        api.client.get(f"{API}/datasets/无此数据", headers=api.as_("admin")), 404, "not_found"
    )
    assert "无此数据" in error["message"]


def test_missing_token_is_401_with_hint(api: Api) -> None:
    response = api.client.get(f"{API}/datasets")
    error = assert_envelope(response, 401, "unauthorized")
    assert "Bearer" in error["hint"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_role_is_403_naming_the_allowed_roles(api: Api) -> None:
    error = assert_envelope(
        api.client.get(f"{API}/tokens", headers=api.as_("provider")), 403, "forbidden"
    )
    assert error["details"] == {"role": "provider", "allowed": ["admin"]}


def test_query_validation_error_names_the_field(api: Api) -> None:
    response = api.client.get(f"{API}/ledger/entries?limit=lots", headers=api.as_("admin"))
    error = assert_envelope(response, 422, "invalid_request")
    assert error["details"]["errors"][0]["field"] == "query.limit"
    assert "query.limit" in error["message"]


def test_body_validation_error_names_the_field(api: Api) -> None:
    response = api.client.post(
        f"{API}/tokens", headers=api.as_("admin"), json={"name": "x", "role": "god"}
    )
    error = assert_envelope(response, 422, "invalid_request")
    assert [e["field"] for e in error["details"]["errors"]] == ["body.role"]


def test_malformed_json_is_422(api: Api) -> None:
    response = api.client.post(
        f"{API}/tokens",
        headers={**api.as_("admin"), "Content-Type": "application/json"},
        content=b"{not json",
    )
    error = assert_envelope(response, 422, "invalid_request")
    assert error["message"] == (
        "the body is not JSON: Expecting property name enclosed in double quotes at line 1 "
        "column 2"
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"name": "t", "role": "consumer", "x": ["\\ud800"]}', "lone surrogate"),
        (b'{"name": "\\udfff", "role": "consumer"}', "lone surrogate"),
        (b"[" * 5000 + b"]" * 5000, "nests deeper than 48 levels"),
        (b'{"name": "t", "role": "consumer", "n": ' + b"9" * 5000 + b"}", "not usable JSON"),
        (b'{"name": "t", "role": "\xff"}', "not UTF-8"),
    ],
)
def test_a_body_no_store_could_hold_is_refused_first(api: Api, body: bytes, says: str) -> None:
    response = api.client.post(
        f"{API}/tokens",
        headers={**api.as_("admin"), "Content-Type": "application/json"},
        content=body,
    )
    error = assert_envelope(response, 422, "invalid_request")
    assert says in error["message"]
    listed = api.client.get(f"{API}/tokens", headers=api.as_("admin"))
    assert listed.status_code == 200 and "t" not in {t["name"] for t in listed.json()}


def test_a_body_that_is_not_json_says_which_content_type_to_send(api: Api) -> None:
    response = api.client.post(
        f"{API}/tokens", headers={**api.as_("admin"), "Content-Type": "text/plain"},
        content=b'{"name": "t", "role": "consumer"}',
    )
    error = assert_envelope(response, 415, "unsupported_media_type")
    assert "Content-Type: application/json" in error["hint"]


def test_unknown_route_is_404_envelope(api: Api) -> None:
    error = assert_envelope(api.client.get(f"{API}/nothing-here"), 404, "not_found")
    assert error["message"] == f"no route GET {API}/nothing-here"
    assert "/openapi.json" in error["hint"]


def test_wrong_method_is_405_envelope(api: Api) -> None:
    response = api.client.delete(f"{API}/health")
    error = assert_envelope(response, 405, "method_not_allowed")
    assert error["details"] == {"allowed": ["GET", "HEAD"]}
    assert response.headers["allow"] == "GET, HEAD"
    # a path with several routes names them all: 'use GET' on /datasets hid its POST
    response = api.client.put(f"{API}/datasets")
    error = assert_envelope(response, 405, "method_not_allowed")
    assert error["details"] == {"allowed": ["GET", "HEAD", "POST"]}
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert error["hint"] == "use GET, HEAD, POST"
    # a path with no GET takes no HEAD either, and the message names what was sent
    response = api.client.put(f"{API}/ledger/verify")
    assert assert_envelope(response, 405, "method_not_allowed")["details"] == {"allowed": ["POST"]}
    response = api.client.head(f"{API}/ledger/verify")
    assert response.status_code == 405 and response.content == b""
    assert response.headers["allow"] == "POST"


def test_head_answers_as_get_without_the_body(api: Api) -> None:
    """A monitor's HEAD /health is a 200 (FastAPI alone answered 405: the node looked down)."""
    got, head = api.client.get(f"{API}/health"), api.client.head(f"{API}/health")
    assert got.status_code == head.status_code == 200 and got.content
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]
    # authentication is the GET's: no token, a 401 with no body
    denied = api.client.head(f"{API}/tokens")
    assert denied.status_code == 401 and denied.content == b""
    allowed = api.client.head(f"{API}/tokens", headers=api.as_("admin"))
    assert allowed.status_code == 200 and allowed.content == b""
    # an unknown path is the GET's 404
    missing = api.client.head(f"{API}/nothing-here")
    assert missing.status_code == 404 and missing.content == b""


def test_usage_error_is_400(api: Api) -> None:
    response = api.client.get(
        f"{API}/ledger/proofs/consistency?from=999", headers=api.as_("auditor")
    )
    assert_envelope(response, 400, "usage")


def test_store_failure_is_503(api: Api) -> None:
    with api.node.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE datasets"))
    assert_envelope(api.client.get(f"{API}/datasets", headers=api.as_("admin")), 503, "store_error")
    assert api.client.get(f"{API}/health").status_code == 200


def test_tampered_ledger_is_422_on_verify(api: Api) -> None:
    assert api.client.post(f"{API}/ledger/verify", headers=api.as_("auditor")).status_code == 200
    with api.node.store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ledger_entries SET entry = replace(entry, 'token.issued', 'token.revoked') "
                "WHERE idx = 1"
            )
        )
    response = api.client.post(f"{API}/ledger/verify", headers=api.as_("auditor"))
    error = assert_envelope(response, 422, "ledger_tampered")
    assert error["message"]


def test_unexpected_exception_is_a_generic_500_and_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError("database password is hunter2")

    app = create_app(api.node)
    app.add_api_route("/boom", boom)
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="dataspace.node"):
        response = client.get("/boom")
    error = assert_envelope(response, 500, "internal_error")
    assert error["message"] == "internal server error"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    incident = error["details"]["incident"]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert client.get(f"{API}/health").status_code == 200


def test_an_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    """No token, 17 MiB of JSON: 413 at once (not a 401 after reading it all); a body sent
    without a Content-Length is counted and cut off too (and with no token, refused with a 401
    before any of it is read); the node keeps serving."""
    big = b'{"name": "' + b"x" * (17 << 20) + b'", "role": "consumer"}'
    response = api.client.post(f"{API}/tokens", content=big,
                               headers={"content-type": "application/json"})
    body = assert_envelope(response, 413, "payload_too_large")
    assert "16 MiB" in body["message"]

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(18):
            yield b"x" * (1 << 20)

    anonymous = api.client.post(f"{API}/tokens", content=chunks(),
                                headers={"content-type": "application/json"})
    assert_envelope(anonymous, 401, "unauthorized")
    streamed = api.client.post(f"{API}/tokens", content=chunks(),
                               headers={"content-type": "application/json", **api.as_("admin")})
    assert_envelope(streamed, 413, "payload_too_large")
    assert api.client.get(f"{API}/health").status_code == 200


@pytest.mark.parametrize(
    "path", ["contracts/urn:uuid:none/reject", "contracts/urn:uuid:none/withdraw",
             "transfers/urn:uuid:none/terminate"],
)
def test_a_reason_is_trimmed_then_bounded_before_anything_is_looked_up(
    api: Api, path: str
) -> None:
    headers = api.as_("admin")
    for bad in ("", "   \n", "x" * 501):
        error = assert_envelope(
            api.client.post(f"{API}/{path}", headers=headers, json={"reason": bad}),
            422, "invalid_request",
        )
        assert error["details"]["errors"][0]["field"] == "body.reason"
    # 500 characters once trimmed: accepted, so the unknown process is what answers
    padded = "  " + "x" * 500 + "  "
    assert_envelope(
        api.client.post(f"{API}/{path}", headers=headers, json={"reason": padded}),
        404, "not_found",
    )


def test_an_error_quoting_text_no_encoder_takes_still_answers() -> None:
    from dataspace.node.errors import _jsonable

    assert _jsonable({"message": "unknown purpose \ud800", "n": [1, None]}) == {
        "message": "unknown purpose \\ud800", "n": [1, None]}


def test_a_field_the_route_does_not_define_is_refused_by_name(api: Api) -> None:
    response = api.client.post(
        f"{API}/tokens", headers=api.as_("admin"),
        json={"name": "t", "role": "consumer", "wait_second": 5},
    )
    error = assert_envelope(response, 422, "invalid_request")
    assert [e["field"] for e in error["details"]["errors"]] == ["body.wait_second"]
    listed = api.client.get(f"{API}/tokens", headers=api.as_("admin")).json()
    assert "t" not in {t["name"] for t in listed}


def test_an_anonymous_body_is_refused_before_it_is_parsed(api: Api) -> None:
    response = api.client.post(f"{API}/tokens", headers={"Content-Type": "application/json"},
                               content=b"{not json")
    error = assert_envelope(response, 401, "unauthorized")
    assert error["message"] == "missing bearer token"
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_error_names_the_body_field_not_the_cli_flag(api: Api) -> None:
    name = api.new_dataset()
    response = api.client.post(f"{API}/offers", headers=api.as_("admin"), json={
        "dataset": name, "template": "dp-stats",
        "params": {"purposes": "finance", "epsilon": 2}})
    error = assert_envelope(response, 400, "usage")
    said = error["message"] + " " + error.get("hint", "")
    assert "dp_epsilon_per_query" in said and "--dp-epsilon-per-query" not in said


def test_only_flags_that_are_fields_of_the_route_are_renamed() -> None:
    from dataspace.node.errors import _in_api_terms

    fields = frozenset({"dp_bounds", "agreement"})
    assert _in_api_terms("e.g. --dp-bounds x=0:1 with --with PEER", fields) == (
        "e.g. dp_bounds x=0:1 with --with PEER")
    assert _in_api_terms("give --agreement", frozenset()) == "give --agreement"


def test_a_wrong_token_is_refused_before_the_body_is_parsed(api: Api) -> None:
    response = api.client.post(
        f"{API}/tokens", content=b"[" * 5000,
        headers={"Content-Type": "application/json", "Authorization": "Bearer bogus"})
    error = assert_envelope(response, 401, "unauthorized")
    assert error["message"] == "unknown API token"
    other = api.client.post(f"{API}/tokens", content=b"{}", headers={
        "Content-Type": "application/json", "Authorization": "Basic dXNlcjpwYXNz"})
    assert assert_envelope(other, 401, "unauthorized")["message"] == (
        "the Authorization header is not a bearer token")


def test_a_client_gone_before_its_body_arrived_is_not_a_bug(api: Api) -> None:
    headers = [(b"content-type", b"application/json"), (b"host", b"x"),
               (b"authorization", api.as_("admin")["Authorization"].encode())]
    sent = send_then_hang_up(api.app, "POST", f"{API}/tokens", headers, b'{"name":')
    assert sent[0]["status"] == 422  # not a 500 "this is a bug" with an incident logged
    assert b"closed the connection" in sent[1]["body"]


def test_a_json_route_looks_its_token_up_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The body check authenticates first; the role dependency reuses that answer."""
    from dataspace.services import tokens

    calls: list[str | None] = []
    real = tokens.authenticate

    def counted(node: object, secret: str | None) -> object:
        calls.append(secret)
        return real(node, secret)  # type: ignore[arg-type]

    monkeypatch.setattr(tokens, "authenticate", counted)
    response = api.client.post(f"{API}/tokens", headers=api.as_("admin"),
                               json={"name": "once", "role": "auditor"})
    assert response.status_code == 201, response.text
    assert calls.count(api.secrets["admin"]) == 1  # (the route looks up the new token too)
    refused = api.client.post(f"{API}/tokens", headers=api.as_("auditor"),
                              json={"name": "x", "role": "auditor"})
    assert_envelope(refused, 403, "forbidden")  # the role is still checked


def test_a_json_body_is_parsed_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The body check's document is what the route validates: Starlette does not parse the
    body again (a 16 MiB body costs its parse once)."""
    import json as json_module
    from types import SimpleNamespace

    import starlette.requests

    parsed: list[bytes] = []

    def loads(raw: bytes) -> object:
        parsed.append(raw)
        return json_module.loads(raw)

    monkeypatch.setattr(starlette.requests, "json", SimpleNamespace(loads=loads))
    response = api.client.post(f"{API}/tokens", headers=api.as_("admin"),
                               json={"name": "parsed-once", "role": "auditor"})
    assert response.status_code == 201, response.text
    assert parsed == []


def test_a_message_quoting_a_huge_input_is_cut_short() -> None:
    """A 100,000-character peer name came back whole inside the 404's message."""
    from dataspace.node.errors import envelope

    body = envelope("not_found", f"no member {'x' * 100_000!r} in the space", hint="h" * 5000)
    message, hint = body["error"]["message"], body["error"]["hint"]
    assert len(message) < 2_100 and message.endswith("(98,025 more characters)")
    assert len(hint) < 2_100
    assert envelope("usage", "short")["error"]["message"] == "short"



def test_an_error_quoting_a_huge_path_is_cut_short_through_the_api(api: Api) -> None:
    response = api.client.get(f"{API}/jobs/{'q' * 30_000}", headers=api.as_("admin"))
    assert response.status_code in (400, 404) and len(response.text) < 5_000
