"""The ledger over HTTP: the public checkpoint, entry pages, proofs and verification."""

from __future__ import annotations

from .conftest import API, Api, assert_envelope


def test_checkpoint_is_a_public_signed_note(api: Api) -> None:
    response = api.client.get(f"{API}/ledger/checkpoint")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    lines = response.text.split("\n")
    assert lines[0] == api.node.origin
    size = api.client.get(f"{API}/health").json()["ledger_size"]
    assert lines[1] == str(size)
    assert "\n\n— " in response.text


def test_checkpoint_follows_the_log(api: Api) -> None:
    before = int(api.client.get(f"{API}/ledger/checkpoint").text.split("\n")[1])
    api.new_token()
    after = int(api.client.get(f"{API}/ledger/checkpoint").text.split("\n")[1])
    assert after == before + 1


def test_node_identity_is_public(api: Api) -> None:
    body = api.client.get(f"{API}/node").json()
    assert body == {
        "name": "api-node",
        "origin": api.node.origin,
        "verifier_key": api.node.verifier_key(),
    }


def test_health(api: Api) -> None:
    body = api.client.get(f"{API}/health").json()
    assert body["status"] == "ok" and body["node"] == "api-node"
    assert body["version"] and body["ledger_size"] >= 1


def test_entries_page_through_the_log(api: Api) -> None:
    for _ in range(3):
        api.new_token()
    size = api.client.get(f"{API}/health").json()["ledger_size"]
    headers = api.as_("auditor")
    seen = []
    start: int | None = 0
    while start is not None:
        page = api.client.get(
            f"{API}/ledger/entries", params={"start": start, "limit": 2}, headers=headers
        ).json()
        assert page["size"] == size and page["limit"] == 2
        seen.extend(page["entries"])
        start = page["next"]
    assert len(seen) == size


def test_entries_limit_is_capped(api: Api) -> None:
    page = api.client.get(f"{API}/ledger/entries?limit=1000000", headers=api.as_("admin")).json()
    assert page["limit"] == api.node.limits.api_max_page


def test_entries_reject_negative_start(api: Api) -> None:
    response = api.client.get(f"{API}/ledger/entries?start=-1", headers=api.as_("admin"))
    error = assert_envelope(response, 422, "invalid_request")
    assert error["details"]["errors"][0]["field"] == "query.start"


def test_inclusion_proof(api: Api) -> None:
    response = api.client.get(f"{API}/ledger/proofs/inclusion?index=0", headers=api.as_("auditor"))
    assert response.status_code == 200, response.text
    assert response.json()


def test_inclusion_proof_of_missing_entry_is_404(api: Api) -> None:
    response = api.client.get(
        f"{API}/ledger/proofs/inclusion?index=99999", headers=api.as_("auditor")
    )
    assert_envelope(response, 404, "not_found")


def test_consistency_proof(api: Api) -> None:
    api.new_token()
    size = api.client.get(f"{API}/health").json()["ledger_size"]
    response = api.client.get(
        f"{API}/ledger/proofs/consistency",
        params={"from": 1, "to": size},
        headers=api.as_("provider"),
    )
    assert response.status_code == 200, response.text
    assert response.json()


def test_verify(api: Api) -> None:
    response = api.client.post(f"{API}/ledger/verify", headers=api.as_("auditor"))
    assert response.status_code == 200, response.text
    assert response.json()
