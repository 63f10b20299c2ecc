from __future__ import annotations

import csv
import importlib
import io
import json
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from dataspace.errors import Conflict, NotFound, UsageError
from dataspace.ledger import log
from dataspace.metering import PriceTerms, issue_bill, parse_period, record_usage, statement
from dataspace.services import usage as service
from dataspace.services.node import Node

from .conftest import ACTOR, TERMS_1, usage


def test_period_is_a_half_open_utc_month() -> None:
    assert parse_period("2026-11") == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert parse_period("2026-12")[1] == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["2026-1", "11-2026", "2026/11", "", "x",
                                 "２０２６-１１", "٢٠٢٦-١١"])
def test_bad_period_names_the_expected_format(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_period(bad)
    assert "YYYY-MM" in str(err.value)


@pytest.mark.parametrize(("bad", "says"), [
    ("2026-13", "13 is no month (01 to 12)"), ("2026-00", "00 is no month"),
    ("0000-01", "the year 0000 is before any usage"),
])
def test_a_period_in_the_form_but_out_of_range_says_which_part(bad: str, says: str) -> None:
    """'0000-01' was "not in the form YYYY-MM", which it is."""
    with pytest.raises(UsageError) as err:
        parse_period(bad)
    assert says in err.value.message


def test_a_period_is_kept_in_its_one_written_form(metered: Node) -> None:
    assert service.statement(metered, period=" 2026-11 ")["period"] == "2026-11"


def test_bad_period_is_refused_by_the_service(metered: Node) -> None:
    with pytest.raises(UsageError, match="YYYY-MM"):
        service.list_usage(metered, period="Nov 2026")


def _totals(st: dict) -> dict[str, dict]:
    return {t["agreement_id"]: t for t in st["totals"]}


def test_totals_stay_exact_past_28_digits(node: Node) -> None:
    """10^13 + 0.005 + 10^-18 needs 33 digits; rounded to 28 it would lose the last term
    and round half-even down to .00 instead of up to .01."""
    big = PriceTerms.parse({"per_job": "10000000000000 CNY"})
    tiny = PriceTerms.parse({"per_job": "0.005 CNY", "per_mb_out": "0.000000000001"})
    with node.store.write() as session:
        record_usage(session, usage("agr-9", "a", "2026-11-02T00:00:00Z"), actor=ACTOR,
                     terms=big)
        record_usage(session, usage("agr-9", "b", "2026-11-02T00:00:01Z", bytes_out=1),
                     actor=ACTOR, terms=tiny)
        [total] = statement(session, agreement_id="agr-9").totals
    assert str(total.amount_exact) == "10000000000000.005000000000000001"
    assert str(total.amount) == "10000000000000.01"


def _bill_one_job(node: Node, job: str, terms: PriceTerms, at: str) -> dict:
    with node.store.write() as session:
        record_usage(session, usage("agr-7", job, at), actor=ACTOR, terms=terms)
    return service.bill(node, agreement_id="agr-7", issue=True, actor=ACTOR)


def test_cents_rounded_off_one_bill_come_back_on_the_next(node: Node) -> None:
    first = _bill_one_job(node, "a", PriceTerms.parse({"per_job": "10.004 CNY"}),
                          "2026-11-02T00:00:00Z")
    assert first["due"] == [{"currency": "CNY", "amount": "10.00"}]
    late = _bill_one_job(node, "b", PriceTerms.parse({"per_job": "0.004 CNY"}),
                         "2026-11-03T00:00:00Z")
    # round(10.004 + 0.004) - 10.00: what all bills ask is the rounded exact sum
    assert late["due"] == [{"currency": "CNY", "amount": "0.01"}]
    [total] = late["statement"]["totals"]
    assert total["amount_exact"] == "0.004"
    assert total["billed_before"] == {"amount_exact": "10.004", "amount": "10.00"}


def test_bills_issued_before_bills_carried_are_not_carried_from(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version-1 bill rounded alone; settling its history on the next bill could ask a
    negative amount (two old bills of 0.006 each asked 0.02 for 0.012)."""
    from dataspace.metering import statements

    terms = PriceTerms.parse({"per_job": "0.006 CNY"})
    monkeypatch.setattr(statements, "BILL_VERSION", 1)
    for job in ("a", "b"):
        old = _bill_one_job(node, job, terms, f"2026-11-0{1 + len(job)}T00:00:00Z")
        assert old["due"] == [{"currency": "CNY", "amount": "0.01"}]
    monkeypatch.setattr(statements, "BILL_VERSION", 2)
    new = _bill_one_job(node, "c", PriceTerms.parse({"per_job": "0.001 CNY"}),
                        "2026-11-05T00:00:00Z")
    assert new["due"] == [{"currency": "CNY", "amount": "0.00"}]
    assert "billed_before" not in new["statement"]["totals"][0]


def test_many_small_bills_add_up_to_the_rounded_sum(node: Node) -> None:
    terms = PriceTerms.parse({"per_job": "0.004 CNY"})
    due = [
        _bill_one_job(node, f"j{i}", terms, f"2026-11-02T00:{i // 60:02d}:{i % 60:02d}Z")["due"]
        for i in range(50)
    ]
    assert sum(Decimal(d[0]["amount"]) for d in due) == Decimal("0.20")  # 50 x 0.004


def test_november_statement_known_answers(metered: Node) -> None:
    st = service.statement(metered, period="2026-11")
    assert [line["job_id"] for line in st["lines"]] == ["j2", "k1", "j3", "u1", "u2", "j4"]
    assert (st["from"], st["until"]) == (
        "2026-11-01T00:00:00.000000Z",
        "2026-12-01T00:00:00.000000Z",
    )
    t = _totals(st)
    assert t["agr-1"] == {
        "agreement_id": "agr-1",
        "consumer": "bank-a",
        "currency": "CNY",
        "jobs": 2,
        "denied": 1,
        "failed": 0,
        "rows_scanned": 14_345,
        "result_rows": 4,
        "bytes_out": 500_001,
        "epsilon_spent": "0.75",
        "delta_spent": "0.000001",
        "cpu_seconds": "1.750000",
        "wall_seconds": "2.000000",
        "amount_exact": "21.217251",
        "amount": "21.22",
    }
    assert (t["agr-2"]["amount_exact"], t["agr-2"]["amount"]) == ("0.125", "0.12")
    assert (t["agr-3"]["currency"], t["agr-3"]["amount"]) == ("USD", "2.00")
    assert t["agr-3"]["epsilon_spent"] == "0.3"
    assert [(c["currency"], c["amount_exact"], c["amount"]) for c in st["currency_totals"]] == [
        ("CNY", "21.342251", "21.34"),
        ("USD", "2", "2.00"),
    ]


def test_period_boundaries_pick_the_right_jobs(metered: Node) -> None:
    october = service.statement(metered, period="2026-10")
    december = service.statement(metered, period="2026-12")
    assert [line["job_id"] for line in october["lines"]] == ["j1"]
    assert october["totals"][0]["amount"] == "0.00"  # the free job
    assert [line["job_id"] for line in december["lines"]] == ["j5"]
    assert december["totals"][0]["amount"] == "10.00"
    assert service.statement(metered, period="2027-01")["lines"] == []


def test_statement_filters_by_agreement_and_consumer(metered: Node) -> None:
    agr1 = service.statement(metered, agreement_id="agr-1")
    assert [t["amount_exact"] for t in agr1["totals"]] == ["31.217251"]
    bank = service.statement(metered, consumer="bank-a", period="2026-11")
    assert sorted(_totals(bank)) == ["agr-1", "agr-3"]
    assert service.list_usage(metered, agreement_id="agr-1", period="2025-01") == []
    with pytest.raises(NotFound, match="no agreement 'nope' on this node"):  # a typo
        service.list_usage(metered, agreement_id="nope")


def test_lines_add_up_exactly_to_the_unrounded_totals(metered: Node) -> None:
    from decimal import Decimal

    st = service.statement(metered)
    cny = sum(Decimal(x["amount"]) for x in st["lines"] if x["currency"] == "CNY")
    assert str(cny) == st["currency_totals"][0]["amount_exact"] == "31.342251"


def test_json_and_csv_renderings(metered: Node) -> None:
    with metered.store.read() as session:
        st = statement(session, agreement_id="agr-1", period="2026-11")
    assert json.loads(st.to_json()) == st.to_dict()
    rows = list(csv.DictReader(io.StringIO(st.to_csv())))
    assert [(r["kind"], r["job_id"]) for r in rows] == [
        ("line", "j2"),
        ("line", "j3"),
        ("line", "j4"),
        ("total", ""),
    ]
    assert rows[0]["amount"] == "11.11725"
    assert (rows[1]["status"], rows[1]["denied"], rows[1]["amount"]) == ("denied", "1", "0")
    total = rows[-1]
    assert (total["jobs"], total["amount"], total["amount_due"]) == ("2", "21.217251", "21.22")
    assert total["rows_scanned"] == "14345"


def test_issued_bill_is_in_the_ledger(metered: Node) -> None:
    doc = service.bill(metered, agreement_id="agr-1", period="2026-11", issue=True, actor="op")
    assert doc["bill_id"].startswith("bill-")
    assert doc["consumer"] == "bank-a"
    assert doc["due"] == [{"currency": "CNY", "amount": "21.22"}]
    body = {k: v for k, v in doc.items() if k not in ("sha256", "ledger_index")}
    assert doc["sha256"] == log.sha256_hex(log.canonical_json(body))
    with metered.store.read() as session:
        entry = log.get_entry(session, doc["ledger_index"])
    assert entry.entry["action"] == "bill.issued"
    assert entry.entry["actor"] == "op"
    assert entry.payload == {
        "bill_id": doc["bill_id"],
        "sha256": doc["sha256"],
        "statement_sha256": doc["statement_sha256"],
        "consumer": "bank-a",
        "agreement_id": "agr-1",
        "period": "2026-11",
        "lines": 3,
        "due": [{"currency": "CNY", "amount": "21.22"}],
    }


def test_a_draft_bill_has_no_id_and_the_same_statement_hash(metered: Node) -> None:
    draft = service.bill(metered, agreement_id="agr-1", period="2026-11")
    assert draft["bill_id"] is None and draft["ledger_index"] is None
    issued = service.bill(metered, agreement_id="agr-1", period="2026-11", issue=True)
    assert issued["statement_sha256"] == draft["statement_sha256"]


def test_a_statement_is_billed_only_once(metered: Node) -> None:
    service.bill(metered, agreement_id="agr-1", period="2026-11", issue=True)
    with pytest.raises(Conflict, match="already billed"):
        service.bill(metered, agreement_id="agr-1", period="2026-11", issue=True)


def test_a_bill_has_one_payer(metered: Node) -> None:
    with metered.store.write() as session:
        st = statement(session, period="2026-11")
        with pytest.raises(UsageError, match="2 consumers"):
            issue_bill(session, st, actor="op")
    doc = service.bill(metered, period="2026-11", consumer="insurer-b", issue=True)
    assert doc["due"] == [{"currency": "CNY", "amount": "0.12"}]


def test_a_usage_line_is_billed_once_whatever_filters_select_it_again(metered: Node) -> None:
    first = service.bill(metered, agreement_id="agr-1", period="2026-11", issue=True)
    assert first["due"] == [{"currency": "CNY", "amount": "21.22"}]
    # the consumer's whole November: agr-1's lines are on the first bill, agr-3's are not
    draft = service.bill(metered, consumer="bank-a", period="2026-11")
    assert {line["agreement_id"] for line in draft["statement"]["lines"]} == {"agr-3"}
    second = service.bill(metered, consumer="bank-a", period="2026-11", issue=True)
    assert second["due"] == [{"currency": "USD", "amount": "2.00"}]
    # and the consumer's whole history: only j1 and j5 (October and December) are left
    third = service.bill(metered, consumer="bank-a", issue=True)
    assert [line["job_id"] for line in third["statement"]["lines"]] == ["j1", "j5"]
    with pytest.raises(Conflict, match=f"already billed \\(on .*{first['bill_id']}"):
        service.bill(metered, agreement_id="agr-1", issue=True)
    with metered.store.write() as session:  # a late November job gets a bill of its own
        record_usage(session, usage("agr-1", "j6", "2026-11-30T12:00:00Z"), actor=ACTOR,
                     terms=TERMS_1)
    late = service.bill(metered, agreement_id="agr-1", period="2026-11", issue=True)
    assert [line["job_id"] for line in late["statement"]["lines"]] == ["j6"]
    assert late["due"] == [{"currency": "CNY", "amount": "10.00"}]


def test_the_amount_due_is_the_sum_of_the_agreements_amounts(node: Node) -> None:
    terms = PriceTerms.parse({"per_job": "0.015 CNY"})
    with node.store.write() as session:
        for agreement in ("a-1", "a-2"):
            record_usage(session, usage(agreement, "j", "2026-11-02T00:00:00Z"), actor=ACTOR,
                         terms=terms)
    st = service.statement(node, period="2026-11")
    assert [t["amount"] for t in st["totals"]] == ["0.02", "0.02"]  # 0.015 rounds half-even
    assert st["currency_totals"][0]["amount"] == "0.04"  # not round(0.030) = 0.03
    assert st["currency_totals"][0]["amount_exact"] == "0.030"
    assert service.bill(node, period="2026-11", issue=True)["due"] == [
        {"currency": "CNY", "amount": "0.04"}]


def test_the_last_month_is_refused_clearly() -> None:
    assert parse_period("9999-11")[1] == datetime(9999, 12, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="9999-12 is past the last month"):
        parse_period("9999-12")


def test_nothing_to_bill(metered: Node) -> None:
    with pytest.raises(UsageError, match="no usage"):
        service.bill(metered, period="2030-01", issue=True)


def test_bills_issued_at_once_carry_one_after_the_other(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two bills of one agreement issued side by side (November's and December's): had both
    read the earlier bills before either was stored, each would round up against the same
    base and together ask 0.02 for 0.012 of usage. The first is held between reading the
    carry and storing its bill for up to 2 s, long enough for the second to catch up if
    nothing queued it (the bill's lock does; the test fails on PostgreSQL without it)."""
    statements = importlib.import_module("dataspace.metering.statements")
    terms = PriceTerms.parse({"per_job": "0.004 CNY"})
    with node.store.write() as session:
        for job, day in (("oct", "2026-10-02"), ("nov", "2026-11-02"), ("dec", "2026-12-02")):
            record_usage(session, usage("agr-7", job, f"{day}T00:00:00Z"), actor=ACTOR,
                         terms=terms)
    first = service.bill(node, agreement_id="agr-7", period="2026-10", issue=True)
    assert first["due"] == [{"currency": "CNY", "amount": "0.00"}]
    read_earlier = statements.earlier_bills
    holding, caught_up = threading.Event(), threading.Event()

    def carry_then_hold(session: Any, st: Any) -> Any:
        carried = read_earlier(session, st)
        if not holding.is_set():
            holding.set()
            caught_up.wait(2.0)
        else:
            caught_up.set()
        return carried

    monkeypatch.setattr(statements, "earlier_bills", carry_then_hold)
    bills: dict[str, dict[str, Any]] = {}

    def issue(period: str) -> None:
        bills[period] = service.bill(node, agreement_id="agr-7", period=period, issue=True)

    november = threading.Thread(target=issue, args=("2026-11",))
    november.start()
    assert holding.wait(10)
    issue("2026-12")
    november.join(10)
    due = sum(Decimal(b["due"][0]["amount"]) for b in (first, *bills.values()))
    assert due == Decimal("0.01")  # 0.012 rounded, over the three bills
