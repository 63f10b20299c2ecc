"""`dataspace usage`, `usage reconcile` and `bill`, registered as main.py registers them."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dataspace.cli import common
from dataspace.cli.common import CliState
from dataspace.cli.usage import register, usage_app
from dataspace.services.node import Node

app = typer.Typer()
register(app)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables wide enough that no figure wraps."""
    monkeypatch.setattr(common.console, "_width", 250)


def run(node: Node, *args: str, target: typer.Typer = app) -> tuple[int, str, str]:
    state = CliState(str(node.root))
    try:
        result = CliRunner().invoke(target, list(args), obj=state)
    finally:
        state.node().close()  # the CLI opened its own engine on the node's store
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_usage_table_lists_lines_and_totals(metered: Node) -> None:
    code, out, _ = run(metered, "--period", "2026-11", target=usage_app)
    assert code == 0
    assert "totals per agreement" in out
    assert "21.217251 CNY" in out and "21.22 CNY" in out
    assert "j3" in out and "denied" in out


def test_usage_json(metered: Node) -> None:
    code, out, _ = run(metered, "usage", "--agreement", "agr-3", "--json")
    assert code == 0
    data = json.loads(out)
    assert [line["job_id"] for line in data["lines"]] == ["u1", "u2"]
    assert data["totals"][0]["amount"] == "2.00"


def test_usage_csv(metered: Node) -> None:
    code, out, _ = run(metered, "usage", "--period", "2026-12", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["kind"], r["job_id"], r["amount_due"]) for r in rows] == [
        ("line", "j5", ""),
        ("total", "", "10.00"),
    ]


def test_usage_reconcile(metered: Node) -> None:
    code, out, _ = run(metered, "usage", "reconcile")
    assert code == 0
    assert "8 usage records match 8 ledger entries" in out
    code, out, _ = run(metered, "usage", "reconcile", "--json")
    assert json.loads(out)["ok"] is True
    assert "came after that month was billed" not in out


def test_usage_reconcile_names_lines_metered_after_their_month_was_billed(metered: Node) -> None:
    from dataspace.services import usage as usage_service

    from .conftest import ACTOR, TERMS_1, usage

    assert run(metered, "bill", "--agreement", "agr-1", "--period", "2026-11", "--issue")[0] == 0
    usage_service.record(metered, usage("agr-1", "j-late", "2026-11-30T23:59:59Z"), actor=ACTOR,
                         terms=TERMS_1)
    code, out, _ = run(metered, "usage", "reconcile")
    assert code == 0
    assert ("1 usage line(s) of bank-a in 2026-11 came after that month was billed and are on "
            "no bill: `dataspace bill --period 2026-11 --consumer bank-a --issue` bills them"
            ) in " ".join(out.split())


def test_bill_draft_then_issue(metered: Node) -> None:
    code, out, _ = run(metered, "bill", "--agreement", "agr-1", "--period", "2026-11")
    assert code == 0
    assert "draft bill" in out and "amount due: 21.22 CNY" in out
    code, out, _ = run(metered, "bill", "--agreement", "agr-1", "--period", "2026-11",
                       "--format", "json", "--issue")  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["bill_id"].startswith("bill-") and isinstance(doc["ledger_index"], int)
    code, out, _ = run(metered, "bill", "--agreement", "agr-1", "--format", "csv")
    assert code == 0
    assert out.splitlines()[0].startswith("kind,agreement_id,consumer,currency,job_id")


def test_a_draft_that_matches_no_unbilled_usage_says_so(metered: Node) -> None:
    """A mistyped agreement read as "nothing to bill" (exit 0), like an agreement with no
    usage yet; it is now told apart."""
    from dataspace.errors import NotFound

    with pytest.raises(NotFound, match="no agreement 'agr-typo' on this node"):
        run(metered, "bill", "--agreement", "agr-typo")
    with pytest.raises(NotFound, match="no agreement 'agr-typo' on this node"):
        run(metered, "--agreement", "agr-typo", target=usage_app)
    code, out, _ = run(metered, "bill", "--agreement", "agr-1", "--period", "2025-01")
    assert code == 0 and "no unbilled usage matches these filters" in out  # none that month
    assert "several consumers" not in out and "sha256" not in out
    assert run(metered, "bill", "--agreement", "agr-1", "--period", "2026-11", "--issue")[0] == 0
    code, out, _ = run(metered, "bill", "--agreement", "agr-1", "--period", "2026-11")
    assert code == 0 and "nothing to bill" in out  # every line is on the bill just issued


def test_a_bills_csv_and_table_show_what_it_carries(node: Node) -> None:
    from dataspace.metering import PriceTerms, record_usage

    from .conftest import usage

    for job, price, at in (("a", "10.004 CNY", "2026-11-02T00:00:00Z"),
                           ("b", "0.004 CNY", "2026-11-03T00:00:00Z")):
        with node.store.write() as session:
            record_usage(session, usage("agr-8", job, at), actor="test",
                         terms=PriceTerms.parse({"per_job": price}))
        code, out, _ = run(node, "bill", "--agreement", "agr-8", "--issue")
        assert code == 0
    assert "earlier bills carried 10.004 CNY exactly and asked 10.00" in out
    assert "amount due: 0.01 CNY" in out
    with node.store.write() as session:
        record_usage(session, usage("agr-8", "c", "2026-11-04T00:00:00Z"), actor="test",
                     terms=PriceTerms.parse({"per_job": "0.006 CNY"}))
    code, out, _ = run(node, "bill", "--agreement", "agr-8", "--format", "csv")
    [total] = [r for r in csv.DictReader(io.StringIO(out)) if r["kind"] == "total"]
    # the draft asks round(10.014) - 10.01 = 0.00, not round(0.006) = 0.01
    assert total["amount"] == "0.006" and total["amount_due"] == "0.00"


def test_bill_needs_a_filter_and_a_known_format(metered: Node) -> None:
    from dataspace.errors import UsageError

    try:
        run(metered, "bill")
    except UsageError as exc:
        assert "--agreement" in str(exc)
    else:
        raise AssertionError("bill without filters must fail")
    try:
        run(metered, "bill", "--period", "2026-11", "--format", "xml")
    except UsageError as exc:
        assert "format" in str(exc)
    else:
        raise AssertionError("unknown format must fail")


def test_no_face_issues_a_bill_of_everything(metered: Node) -> None:
    """POST /bills with an empty body billed all usage of a sole consumer, ever: only the
    CLI asked for a filter."""
    from dataspace.errors import UsageError
    from dataspace.ledger import log
    from dataspace.services import usage as usage_service

    with pytest.raises(UsageError, match="say what to bill"):
        usage_service.bill(metered, issue=True, actor="api:admin")
    with metered.store.read() as session:
        actions = [e.to_dict()["entry"]["action"] for e in log.entries(session, 0, 10_000)]
    assert "bill.issued" not in actions


def test_bad_period_on_the_command_line(metered: Node) -> None:
    from dataspace.errors import UsageError

    try:
        run(metered, "usage", "--period", "november")
    except UsageError as exc:
        assert "YYYY-MM" in str(exc)
    else:
        raise AssertionError("a bad period must fail")


def test_a_consumer_asking_for_its_own_agreements_bill_is_sent_to_the_provider(
    make_node: Any, tmp_path: Any
) -> None:
    from dataspace.errors import NotFound
    from dataspace.policy import from_template
    from dataspace.services import datasets
    from dataspace.services import usage as service
    from helpers.agreements import make_agreement

    tax, _ = make_node("tax-bureau")
    bank, _ = make_node("bank")
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("k,v\n" + "".join(f"{i},{i}\n" for i in range(20)), encoding="utf-8")
    dataset = datasets.add(tax, csv_path, name="t", actor="t")["id"]
    agreement = make_agreement(tax, "bank", consumer=bank, dataset_id=dataset,
                               purpose="credit-risk",
                               offer=from_template("aggregate-only", purposes=["finance"]))
    for call in (lambda: service.bill(bank, agreement_id=agreement),
                 lambda: service.list_usage(bank, agreement_id=agreement)):
        with pytest.raises(NotFound, match="this node is the consumer") as told:
            call()
        assert "ask tax-bureau for the usage and the bill" in (told.value.hint or "")
    assert service.list_usage(tax, agreement_id=agreement) == []  # the provider: none yet


def test_bill_takes_json_as_every_other_command_does(metered: Node) -> None:
    code, out, _ = run(metered, "bill", "--agreement", "agr-1", "--period", "2026-11", "--json")
    assert code == 0 and json.loads(out)["bill_id"] is None  # a draft, as JSON


def test_an_issued_bill_is_listed_and_shown_as_issued_and_an_edit_is_refused(
    metered: Node,
) -> None:
    """An auditor found no way back to a bill once issued: the draft of its filters says
    "nothing to bill", and only its hash was in the ledger."""
    from sqlalchemy import text

    from dataspace.errors import NotFound, UsageError, VerificationError

    assert run(metered, "bills")[1].startswith("no issued bill matches")
    code, out, _ = run(metered, "bill", "--agreement", "agr-1", "--period", "2026-11",
                       "--json", "--issue")  # fmt: skip
    issued = json.loads(out)
    code, out, _ = run(metered, "bills", "--json")
    assert code == 0
    [listed] = json.loads(out)
    assert listed["bill_id"] == issued["bill_id"] and listed["sha256"] == issued["sha256"]
    assert listed["due"] == issued["due"] and listed["ledger_index"] == issued["ledger_index"]
    assert listed["lines"] == len(issued["statement"]["lines"]) > 0
    assert json.loads(run(metered, "bills", "--agreement", "agr-3", "--json")[1]) == []
    code, out, _ = run(metered, "bill", "--id", issued["bill_id"], "--json")
    assert code == 0 and json.loads(out) == issued  # exactly what issuing returned
    code, out, _ = run(metered, "bill", "--id", issued["bill_id"])
    assert f"bill {issued['bill_id']} issued" in out and "amount due: 21.22 CNY" in out
    code, out, _ = run(metered, "bills")
    assert issued["bill_id"] in out and "21.22 CNY" in out
    with pytest.raises(NotFound, match="no issued bill 'bill-nope'"):
        run(metered, "bill", "--id", "bill-nope")
    with pytest.raises(UsageError, match="--id shows a bill already issued"):
        run(metered, "bill", "--id", issued["bill_id"], "--issue")
    with metered.store.write() as session:  # the amount due, edited
        session.execute(text("UPDATE bills SET document = replace(document, '21.22', '12.22')"))
    for args in (("bills",), ("bill", "--id", issued["bill_id"])):
        with pytest.raises(VerificationError, match="differs from its ledger entry"):
            run(metered, *args)
