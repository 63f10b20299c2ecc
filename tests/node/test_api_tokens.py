"""API tokens over HTTP: issue (secret shown once), list, revoke, and what a revoked token gets."""

from __future__ import annotations

from typing import get_args

from dataspace.node.routers.tokens import Role
from dataspace.services import tokens

from .conftest import API, Api, assert_envelope, bearer


def test_role_choices_match_the_service(api: Api) -> None:
    assert get_args(Role) == tokens.ROLES


def test_issue_returns_the_secret_once(api: Api) -> None:
    response = api.client.post(
        f"{API}/tokens", headers=api.as_("admin"), json={"name": "审计员", "role": "auditor"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token"]["name"] == "审计员" and body["token"]["role"] == "auditor"
    assert body["token"]["revoked_at"] is None
    secret = body["secret"]
    listed = api.client.get(f"{API}/tokens", headers=api.as_("admin"))
    assert secret not in listed.text
    assert body["token"] in listed.json()
    assert api.client.get(f"{API}/ledger/entries", headers=bearer(secret)).status_code == 200


def test_revoked_token_is_refused(api: Api) -> None:
    token_id, secret = api.new_token("provider")
    assert api.client.get(f"{API}/datasets", headers=bearer(secret)).status_code == 200
    response = api.client.delete(f"{API}/tokens/{token_id}", headers=api.as_("admin"))
    assert response.status_code == 200
    assert response.json()["revoked_at"]
    error = assert_envelope(
        api.client.get(f"{API}/datasets", headers=bearer(secret)), 401, "unauthorized"
    )
    assert "revoked" in error["message"]


def test_revoking_an_unknown_token_is_404(api: Api) -> None:
    assert_envelope(
        api.client.delete(f"{API}/tokens/nope", headers=api.as_("admin")), 404, "not_found"
    )


def test_actions_are_logged_under_the_callers_token(api: Api) -> None:
    api.new_token()
    admin_id = next(
        t["id"]
        for t in api.client.get(f"{API}/tokens", headers=api.as_("admin")).json()
        if t["role"] == "admin"
    )
    last = api.client.get(
        f"{API}/ledger/entries?start=0&limit=1000", headers=api.as_("admin")
    ).json()["entries"][-1]
    assert f"token:{admin_id}:admin" in str(last)
