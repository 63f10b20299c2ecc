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


def test_refusals_no_later_entry_carried_are_entered_when_the_server_stops(
    make_node, tmp_path
) -> None:
    """A sender that floods and then stops never triggers the entry that would carry its
    count: the real server enters it as it stops, so the ledger holds the whole flood."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from dataspace.scenarios.cluster import free_port

    from .test_api_server import _wait_for_health

    created, _ = make_node("grid")
    config = tomllib.loads((created.root / "node.toml").read_text())
    config["limits"] = {"peer_denied_log_per_minute": 2}
    (created.root / "node.toml").write_text(tomli_w.dumps(config))
    created.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "DATASPACE_NODE"}
    with open(tmp_path / "server.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataspace.node.server", "--node", str(created.root),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
        try:
            _wait_for_health(base, proc)
            forged = {"Signature-Input": 'sig1=("@method");keyid="dataspace/bank+00000000"'}
            answers = [httpx.get(f"{base}/peer/v1/whoami", headers=forged).status_code
                       for _ in range(7)]
            assert answers == [403] * 7
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    node = open_node(created.root)
    with node.store.read() as session:
        entries = [r for r in log.entries(session, 0, 100)
                   if r.entry["action"] in ("peer.denied", "refusals.suppressed")]
    node.close()
    assert [r.entry["action"] for r in entries] == ["peer.denied"] * 2 + ["refusals.suppressed"]
    assert entries[-1].payload == {"source": "unverified", "suppressed": 5}
    assert entries[-1].entry["actor"] == "node:grid"
