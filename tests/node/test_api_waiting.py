"""Requests that wait for a peer hold a worker thread; only MAX_WAITING of them wait at once,
so a caller cannot tie up every thread (and /health with them) by asking to wait."""

from __future__ import annotations

from typing import Any

import pytest

from dataspace.node import waiting
from dataspace.services import negotiation

from .conftest import API, Api


def test_past_the_waiting_slots_a_request_is_answered_at_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    waited: list[float] = []

    def requested(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return {"id": "urn:uuid:n1", "state": "REQUESTED"}

    def wait(_node: Any, pid: str, seconds: float) -> dict[str, Any]:
        waited.append(seconds)
        return {"id": pid, "state": "FINALIZED"}

    monkeypatch.setattr(negotiation, "request_contract", requested)
    monkeypatch.setattr(negotiation, "wait", wait)
    body = {"peer": "tax", "offer_id": "urn:uuid:o", "purpose": "credit-risk",
            "wait_seconds": 40}

    def ask() -> dict[str, Any]:
        answer = api.client.post(f"{API}/contracts", json=body, headers=api.as_("consumer"))
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    held = []
    with waiting.waiting_slot() as first:
        assert first
        for _ in range(waiting.MAX_WAITING - 1):
            slot = waiting.waiting_slot()
            assert slot.__enter__()
            held.append(slot)
        try:
            assert ask()["state"] == "REQUESTED" and waited == []  # all taken: no wait
            with waiting.waiting_slot() as none_left:
                assert not none_left
        finally:
            for slot in held:
                slot.__exit__(None, None, None)
    assert ask()["state"] == "FINALIZED" and waited == [40]  # slots free again
    assert api.client.get(f"{API}/health").status_code == 200
