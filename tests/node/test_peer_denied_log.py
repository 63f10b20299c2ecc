"""Refused peer requests are logged, but an unauthenticated caller cannot flood the ledger
or write a member's name into the actor of an entry."""

from __future__ import annotations

import tomllib

import tomli_w

from dataspace.ledger import log
from dataspace.ledger.entry_budget import EntryBudget
from dataspace.node.app import create_app
from dataspace.services.node import open_node

from .conftest import TestClient


def test_the_log_admits_per_minute_and_reports_what_it_suppressed() -> None:
    denied = EntryBudget(per_minute=2)
    assert [denied.admit(60.0 * 10 + s) for s in range(5)] == [0, 0, None, None, None]
    assert denied.admit(60.0 * 11) == 3  # the next minute's first entry carries the count
    assert denied.admit(60.0 * 11 + 1) == 0


def test_an_entry_that_could_not_be_written_is_reported_by_the_next() -> None:
    budget = EntryBudget(per_minute=5)
    assert budget.admit(0.0) == 0
    assert budget.admit(1.0) == 0
    budget.restore(0 + 1)  # the second one's write failed: it is counted, not lost
    assert budget.admit(2.0) == 1


def test_unsigned_flood_is_refused_every_time_but_logged_within_the_limit(make_node) -> None:
    created, _ = make_node("tax")
    config = tomllib.loads((created.root / "node.toml").read_text())
    config["limits"] = {"peer_denied_log_per_minute": 2}
    (created.root / "node.toml").write_text(tomli_w.dumps(config))
    node = open_node(created.root)
    client = TestClient(create_app(node))
    forged = {"Signature-Input": 'sig1=("@method");keyid="dataspace/bank+00000000"'}
    answers = [client.get("/peer/v1/whoami", headers=forged).status_code for _ in range(5)]
    assert answers == [403] * 5  # this node has joined no space: no peer is admitted
    with node.store.read() as session:
        denied = [r for r in log.entries(session, 0, 100) if r.entry["action"] == "peer.denied"]
    assert len(denied) == 2
    assert {r.entry["actor"] for r in denied} == {"peer:unverified"}
    assert denied[0].payload["claimed_keyid"] == "dataspace/bank+00000000"
    node.close()
