"""Two real node processes on loopback: the bank queries the tax bureau under an agreement."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import dataspace
from dataspace.compute.errors import QueryFailed, QueryRefused
from dataspace.ledger import log
from dataspace.policy import PolicyDenied, from_template
from dataspace.services import datasets, job_consumer
from dataspace.services.job_wire import META_HEADER, decode_meta, from_ipc, sha256_hex
from dataspace.services.node import Node, open_node
from dataspace.store.models_compute import JobRow
from helpers.agreements import make_agreement

TAX, BANK = "tax-bureau", "bank"


def _taxpayers(path: Path) -> Path:
    lines = ["person_id,district,tax_paid"]
    for n in range(60):
        district = "d1" if n < 4 else ("d2" if n < 30 else "d3")
        lines.append(f"P{n:05d},{district},{1000 + 11 * n}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _entries(node: Node, action: str) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = [r.to_dict() for r in log.entries(session, 0, 10_000)]
    return [r["payload"] for r in rows if r["entry"]["action"] == action]


@pytest.fixture
def cluster(space_factory: Callable[..., Any], tmp_path: Path) -> Any:
    space = space_factory([TAX, BANK], serve=False)
    tax, bank = space.nodes[TAX].open(), space.nodes[BANK].open()
    try:
        view = datasets.add(tax, _taxpayers(tmp_path / "tax.csv"), name="taxpayers", actor="t")
        datasets.reclassify(tax, "taxpayers", column="person_id", category="id_card_cn", actor="t")
        agg = make_agreement(
            tax,
            BANK,
            consumer=bank,
            dataset_id=view["id"],
            purpose="credit-risk",
            offer=from_template("aggregate-only", purposes=["finance"], min_group_size=10),
            price_terms={"per_job": "5.00 CNY"},
        )
        dp = make_agreement(
            tax,
            BANK,
            consumer=bank,
            dataset_id=view["id"],
            purpose="credit-risk",
            offer=from_template(
                "dp-stats", purposes=["finance"], epsilon=1.0, delta=1e-5, min_group_size=5
            ),
            dp={"epsilon": 0.5, "delta": 1e-6, "bounds": {"tax_paid": [0, 5000]}},
        )
    finally:
        tax.close()
        bank.close()
    for running in space.nodes.values():
        running.start()
    return space, agg, dp


def test_query_between_two_nodes_lands_in_both_ledgers(cluster: Any) -> None:
    space, agg, dp = cluster
    bank = open_node(space.nodes[BANK].root)
    tax = open_node(space.nodes[TAX].root)
    try:
        sql = "SELECT district, count(*) AS n, sum(tax_paid) AS total FROM taxpayers GROUP BY 1"
        outcome = job_consumer.query(bank, agreement_id=agg, sql=sql)
        rows = sorted(outcome.table.to_pylist(), key=lambda r: r["district"])
        assert [(r["district"], r["n"]) for r in rows] == [("d2", 26), ("d3", 30)]  # d1 < k
        assert outcome.table.column_names == ["district", "n", "total"]
        assert outcome.meta["price"] == {"amount": "5.00", "currency": "CNY"}

        [received] = _entries(bank, "job.result_received")
        [completed] = _entries(tax, "job.completed")
        assert received["job_id"] == completed["job_id"] == outcome.job_id
        assert received["result_sha256"] == completed["result_sha256"] == sha256_hex(outcome.ipc)

        noisy = job_consumer.query(bank, agreement_id=dp, sql=sql)
        assert Decimal(noisy.meta["epsilon_left"]) == Decimal("0.5")
        assert set(noisy.meta["error_bounds"]) == {"n", "total"}

        with pytest.raises(QueryRefused) as info:  # the provider's class, rebuilt
            job_consumer.query(bank, agreement_id=agg, sql="SELECT person_id FROM taxpayers")
        assert info.value.http_status == 403
        [denied_here] = _entries(bank, "job.denied")
        [denied_there] = _entries(tax, "job.denied")
        assert denied_here["job_id"] == denied_there["job_id"]
        assert denied_here["code"] == denied_there["code"] == "query_refused"

        # The bank's own API over HTTP: Arrow IPC body, metadata header, verified hash.
        with space.nodes[BANK].api() as api:
            response = api.post("/api/v1/jobs/query", json={"agreement_id": agg, "sql": sql})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
            meta = decode_meta(response.headers[META_HEADER])
            assert meta["result_sha256"] == sha256_hex(response.content)
            assert from_ipc(response.content).num_rows == 2
            listed = api.get("/api/v1/jobs", params={"role": "consumer"}).json()
            assert {j["state"] for j in listed} == {"SUCCEEDED", "DENIED"}

        # The analyst's client, on the bank's node, under the DP agreement: the budget is spent.
        running = space.nodes[BANK]
        with dataspace.Client(running.url, running.admin_token) as client:
            result = client.query(dp, sql)
            assert result.epsilon_left == Decimal("0")
            assert result.action == "dp-query" and set(result.error_bounds) == {"n", "total"}
            with pytest.raises(PolicyDenied) as denied:
                client.query(dp, sql)
            assert "epsilon" in {r["left"] for r in denied.value.details["reasons"]}
    finally:
        bank.close()
        tax.close()


def test_an_engine_failure_the_provider_reports_is_failed_here_too(
    cluster: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both ends classify an outcome with one rule (job_wire.is_denial): the provider's
    query_failed answer is job.failed in the consumer's ledger, as in the provider's."""
    import httpx

    from dataspace.compute.errors import FAILED_MESSAGE

    space, agg, _ = cluster
    bank = open_node(space.nodes[BANK].root)
    envelope = {"error": {"code": "query_failed", "message": FAILED_MESSAGE,
                          "hint": "check types and casts"}}
    monkeypatch.setattr(job_consumer, "_post",
                        lambda *args: httpx.Response(422, json=envelope))
    try:
        with pytest.raises(QueryFailed):
            job_consumer.query(bank, agreement_id=agg, job_id="engine-0001",
                               sql="SELECT count(*) AS n FROM taxpayers")
        [failed] = _entries(bank, "job.failed")
        assert failed["job_id"] == "engine-0001" and failed["code"] == "query_failed"
        assert not _entries(bank, "job.denied")
        with bank.store.read() as session:
            assert session.get(JobRow, "engine-0001").state == "FAILED"
    finally:
        bank.close()


def test_a_query_stopped_before_its_answer_ends_failed_here_and_a_resend_takes_it(
    cluster: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    space, agg, _ = cluster
    sql = "SELECT district, count(*) AS n FROM taxpayers GROUP BY 1"
    bank = open_node(space.nodes[BANK].root)
    try:
        with pytest.raises(QueryRefused, match="not Unicode text at position 8"):
            job_consumer.query(bank, agreement_id=agg, sql="SELECT '\udcff'", job_id="bytes-01")
        with bank.store.read() as session:
            assert session.get(JobRow, "bytes-01") is None  # refused before anything is kept

        def ctrl_c(*args: Any) -> Any:
            raise KeyboardInterrupt

        with monkeypatch.context() as m:
            m.setattr(job_consumer, "_post", ctrl_c)
            with pytest.raises(KeyboardInterrupt):
                job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="stopped-01")
        with bank.store.read() as session:
            row = session.get(JobRow, "stopped-01")
            assert row.state == "FAILED" and "before tax-bureau's answer" in row.error
        [failed] = _entries(bank, "job.failed")
        assert failed["job_id"] == "stopped-01" and failed["by"] is None
        outcome = job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="stopped-01")
        assert outcome.table.num_rows == 2
    finally:
        bank.close()


def test_a_provider_that_took_the_query_and_went_silent_is_waited_for_once(
    cluster: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import signal

    from dataspace.services.catalog import DeliveryFailed

    space, agg, _ = cluster
    sql = "SELECT district, count(*) AS n FROM taxpayers GROUP BY 1"
    process = space.nodes[TAX].process
    assert process is not None
    bank = open_node(space.nodes[BANK].root)
    from dataspace.services import peers

    opened: list[str] = []
    real_client = peers.peer_client

    def counting_client(node: Node, peer: str, **kw: Any) -> Any:
        opened.append(peer)
        return real_client(node, peer, **kw)

    monkeypatch.setattr(peers, "peer_client", counting_client)
    monkeypatch.setattr(job_consumer, "_sandbox_wait", lambda node: 2.0)
    os.kill(process.pid, signal.SIGSTOP)  # it accepts connections (the kernel does) and is mute
    try:
        with pytest.raises(DeliveryFailed, match="did not answer within 2 s"):
            job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="silent-01")
        assert opened == [TAX]  # waited once, not once per attempt
    finally:
        os.kill(process.pid, signal.SIGCONT)
    try:
        monkeypatch.undo()
        outcome = job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="silent-01")
        assert outcome.table.num_rows == 2
    finally:
        bank.close()


def test_a_query_whose_delivery_failed_is_resent_under_its_id_and_runs_once(
    cluster: Any,
) -> None:
    from dataspace.errors import Conflict
    from dataspace.services.catalog import DeliveryFailed

    space, agg, _ = cluster
    sql = "SELECT district, count(*) AS n FROM taxpayers GROUP BY 1"
    space.nodes[TAX].stop()  # the provider is down
    bank = open_node(space.nodes[BANK].root)
    try:
        with pytest.raises(DeliveryFailed, match="safe to resend") as failed:
            job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="resend-0001")
        assert failed.value.details["job_id"] == "resend-0001"  # for a program, not only text
        space.nodes[TAX].start()
        outcome = job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="resend-0001")
        assert outcome.job_id == "resend-0001" and outcome.table.num_rows == 2
        assert [e["job_id"] for e in _entries(bank, "job.failed")] == ["resend-0001"]
        assert [e["job_id"] for e in _entries(bank, "job.result_received")] == ["resend-0001"]
        # its answer lost on the way to the caller (a client's timeout): asked again, the
        # same result comes back, and nothing is run, charged or recorded twice
        again = job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="resend-0001")
        assert again.meta["result_sha256"] == outcome.meta["result_sha256"]
        assert again.table.equals(outcome.table)
        assert [e["job_id"] for e in _entries(bank, "job.result_received")] == ["resend-0001"]
        [refetched] = _entries(bank, "job.result_refetched")  # the second delivery is logged
        assert refetched["result_sha256"] == outcome.meta["result_sha256"]
        with pytest.raises(Conflict, match="for another user"):  # and goes to its user only
            job_consumer.query(bank, agreement_id=agg, sql=sql, job_id="resend-0001",
                               actor="token:other:mallory")
        with pytest.raises(Conflict, match="was used for another query"):
            job_consumer.query(bank, agreement_id=agg, sql=sql + " ORDER BY 1",
                               job_id="resend-0001")
    finally:
        bank.close()
    tax = open_node(space.nodes[TAX].root)
    try:
        assert [e["job_id"] for e in _entries(tax, "job.completed")] == ["resend-0001"]
    finally:
        tax.close()
