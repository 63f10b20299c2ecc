from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from dataspace.errors import Conflict, InputError
from dataspace.ledger import log
from dataspace.metering import PriceTerms, UsageRecord, record_usage
from dataspace.policy.request import Price
from dataspace.services import usage as service
from dataspace.services.node import Node

from .conftest import ACTOR, at, usage


def test_record_writes_the_row_and_its_ledger_entry(node: Node) -> None:
    u = usage(
        "agr-1", "j1", "2026-11-02T10:00:00Z", rows_scanned=12_345, result_rows=4,
        bytes_out=2048, epsilon_spent="0.1", delta_spent="1e-6", cpu_seconds=0.123456,
        wall_seconds="1.5", price=Price.parse("100.00 CNY"),
    )  # fmt: skip
    with node.store.write() as session:
        row = record_usage(session, u, actor=ACTOR)
        size = log.size(session)
    assert row.ledger_index == size - 1
    with node.store.read() as session:
        entry = log.get_entry(session, row.ledger_index)
    assert entry.entry["action"] == "usage.recorded"
    assert entry.entry["actor"] == ACTOR
    assert entry.payload == {
        "usage_id": row.id,
        "agreement_id": "agr-1",
        "job_id": "j1",
        "action": "dp-query",
        "consumer": "bank-a",
        "provider": "tax-bureau",
        "dataset": "tax_records",
        "status": "completed",
        "rows_scanned": 12345,
        "result_rows": 4,
        "bytes_out": 2048,
        "epsilon_spent": "0.1",
        "delta_spent": "0.000001",
        "cpu_us": 123456,
        "wall_us": 1500000,
        "price": {"amount": "100.00", "currency": "CNY"},
        "started_at": "2026-11-02T09:59:58.000000Z",
        "finished_at": "2026-11-02T10:00:00.000000Z",
    }


def test_denied_attempt_is_recorded_at_zero_price(node: Node) -> None:
    u = usage("agr-1", "j-denied", "2026-11-02T10:00:00Z", status="denied",
              price=Price.parse("100.00 CNY"))  # fmt: skip
    view = service.record(node, u, actor=ACTOR)
    assert (view["status"], view["amount"], view["currency"]) == ("denied", "0", "CNY")
    with node.store.read() as session:
        entry = log.get_entry(session, view["ledger_index"])
    assert entry.payload["status"] == "denied"
    assert entry.payload["price"] == {"amount": "0", "currency": "CNY"}


def test_denied_attempts_do_not_use_up_the_free_quota(node: Node) -> None:
    terms = PriceTerms.parse({"per_job": "3 CNY", "free_jobs": 1})
    amounts = []
    for i, status in enumerate(["denied", "completed", "completed"]):
        u = usage("agr-1", f"j{i}", "2026-11-02T10:00:00Z", status=status)
        amounts.append(service.record(node, u, terms=terms, actor=ACTOR)["amount"])
    assert amounts == ["0", "0", "3"]


def test_the_same_job_cannot_be_metered_twice(node: Node) -> None:
    u = usage("agr-1", "j1", "2026-11-02T10:00:00Z")
    service.record(node, u, actor=ACTOR)
    with node.store.read() as session:
        size = log.size(session)
    with pytest.raises(Conflict):
        service.record(node, u, actor=ACTOR)
    with node.store.read() as session:  # the ledger entry rolled back with the row
        assert log.size(session) == size
        assert len(session.execute(select(UsageRecord)).scalars().all()) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action": "download"}, "action"),
        ({"status": "ok"}, "status"),
        ({"rows_scanned": -1}, "rows_scanned"),
        ({"epsilon_spent": 0.1}, "not a float"),
        ({"epsilon_spent": "-0.1"}, "non-negative"),
        ({"agreement_id": ""}, "agreement_id"),
        ({"epsilon_spent": "1E-120"}, "more than 40 characters"),  # would break exact sums
        ({"revenue_share": Decimal("1E-90")}, "revenue_share"),
        ({"started_at": at("2099-01-05T00:00:00Z"), "finished_at": at("2099-01-05T00:00:01Z")},
         "finished_at 2099-01-05T00:00:01+00:00 lies in the future"),
    ],
)
def test_bad_usage_is_refused(node: Node, change: dict[str, object], message: str) -> None:
    u = usage("agr-1", "j1", "2026-11-02T10:00:00Z", **change)
    with pytest.raises(InputError) as err:
        service.record(node, u, actor=ACTOR)
    assert message in str(err.value)


def test_exact_decimals_survive_the_store(node: Node) -> None:
    for i, eps in enumerate(["0.1", "0.2"]):
        u = usage("agr-1", f"j{i}", "2026-11-02T10:00:00Z", epsilon_spent=Decimal(eps))
        service.record(node, u, actor=ACTOR)
    rows = service.list_usage(node)
    assert sum(Decimal(r["epsilon_spent"]) for r in rows) == Decimal("0.3")


def test_a_job_priced_past_the_bound_is_refused_and_nothing_is_written(node: Node) -> None:
    terms = PriceTerms.parse({"currency": "CNY", "per_1k_rows_scanned": "999999999"})
    big = usage("agr-1", "j-huge", "2026-11-02T10:00:00Z", rows_scanned=10**12)
    with node.store.read() as session:
        before = log.size(session)
    with (pytest.raises(InputError, match=r"would cost about 1\.000E\+18 CNY") as refused,
          node.store.write() as session):
        record_usage(session, big, actor=ACTOR, terms=terms)
    assert "ε" not in refused.value.message + (refused.value.hint or "")
    assert "per-row or per-MB terms" in (refused.value.hint or "")
    with node.store.read() as session:
        assert log.size(session) == before
        assert session.scalars(select(UsageRecord)).all() == []
    # a job of ordinary size under the same terms is metered
    fair = usage("agr-1", "j-fair", "2026-11-02T10:00:00Z", rows_scanned=10**6)
    with node.store.write() as session:
        row = record_usage(session, fair, actor=ACTOR, terms=terms)
    assert row.price_amount == "999999999000"
