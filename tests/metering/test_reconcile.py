from __future__ import annotations

import json
import secrets

import pytest
from sqlalchemy import delete, text, update

from dataspace.errors import LedgerTampered, VerificationError
from dataspace.ledger.log import canonical_json
from dataspace.metering import UsageRecord, statements
from dataspace.services import usage as service
from dataspace.services.node import Node
from dataspace.store.models_metering import Bill, BillLine

from .conftest import ACTOR, JOBS, TERMS_1, usage


def _row_id(node: Node, job_id: str) -> str:
    return next(r["id"] for r in service.list_usage(node) if r["job_id"] == job_id)


def test_clean_ledger_and_table_reconcile(metered: Node) -> None:
    report = service.reconcile(metered)
    assert report["ok"] is True
    assert report["records"] == report["ledger_entries"] == len(JOBS)
    by_agreement = {t["agreement_id"]: t["amount_exact"] for t in report["totals"]}
    assert by_agreement == {"agr-1": "31.217251", "agr-2": "0.125", "agr-3": "2"}


def test_empty_node_reconciles(node: Node) -> None:
    assert service.reconcile(node)["records"] == 0


def test_edited_row_is_named(metered: Node) -> None:
    row_id = _row_id(metered, "j2")
    with metered.store.write() as session:
        session.execute(
            update(UsageRecord).where(UsageRecord.id == row_id).values(price_amount="1.00")
        )
    with pytest.raises(VerificationError) as err:
        service.reconcile(metered)
    assert row_id in str(err.value) and "price" in str(err.value)
    assert err.value.details["usage_id"] == row_id


def test_edited_figure_is_named(metered: Node) -> None:
    row_id = _row_id(metered, "u1")
    with metered.store.write() as session:
        session.execute(
            update(UsageRecord).where(UsageRecord.id == row_id).values(rows_scanned=5, cpu_us=1)
        )
    with pytest.raises(VerificationError, match="cpu_us, rows_scanned"):
        service.reconcile(metered)


def test_row_without_an_entry_is_named(metered: Node) -> None:
    forged = secrets.token_hex(16)
    with metered.store.write() as session:
        row = session.get(UsageRecord, _row_id(metered, "k1"))
        assert row is not None
        values = {c.name: getattr(row, c.name) for c in UsageRecord.__table__.columns}
        values.update(id=forged, job_id="k-forged", ledger_index=10_000)
        session.add(UsageRecord(**values))
    with pytest.raises(VerificationError, match=f"usage record {forged} .* has no usage.recorded"):
        service.reconcile(metered)


def test_entry_without_a_row_is_named(metered: Node) -> None:
    row_id = _row_id(metered, "j4")
    with metered.store.write() as session:
        session.execute(delete(UsageRecord).where(UsageRecord.id == row_id))
    with pytest.raises(VerificationError, match=f"records usage {row_id}, which is missing"):
        service.reconcile(metered)


def test_rewritten_ledger_payload_is_caught(metered: Node) -> None:
    row = next(r for r in service.list_usage(metered) if r["job_id"] == "j2")
    with metered.store.write() as session:
        session.execute(
            text("UPDATE ledger_entries SET payload = REPLACE(payload, '11.11725', '1.11725') "
                 "WHERE idx = :i"),
            {"i": row["ledger_index"]},
        )  # fmt: skip
    with pytest.raises(LedgerTampered) as err:
        service.reconcile(metered)
    assert err.value.details["index"] == row["ledger_index"]


def _issued(node: Node) -> dict:
    return service.bill(node, agreement_id="agr-1", period="2026-11", issue=True)


def test_issued_bills_are_checked_against_their_ledger_entries(metered: Node) -> None:
    bill = _issued(metered)
    assert service.reconcile(metered)["bills"] == 1
    document = json.loads(json.dumps({k: v for k, v in bill.items()
                                      if k not in ("sha256", "ledger_index")}))
    document["due"] = [{"currency": "CNY", "amount": "1.00"}]  # was 21.22
    with metered.store.write() as session:
        session.execute(update(Bill).where(Bill.id == bill["bill_id"])
                        .values(document=canonical_json(document)))
    with pytest.raises(VerificationError, match="differs from its ledger entry") as err:
        service.reconcile(metered)
    assert err.value.details["bill_id"] == bill["bill_id"]


def test_a_line_metered_after_its_month_was_billed_is_reported_until_billed(
    metered: Node,
) -> None:
    """A job that ended on the last evening of a billed month, metered after the bill: it
    was on neither that bill nor the next month's, and reconcile said all was well."""
    _issued(metered)  # agr-1, 2026-11
    assert service.reconcile(metered)["late"] == []
    service.record(metered, usage("agr-1", "j-late", "2026-11-30T23:59:59Z"), actor=ACTOR,
                   terms=TERMS_1)
    late_id = _row_id(metered, "j-late")
    service.record(metered, usage("agr-1", "j-dec", "2026-12-01T00:00:01Z"), actor=ACTOR,
                   terms=TERMS_1)  # a month no bill has covered: not late
    report = service.reconcile(metered)
    assert report["late"] == [{"usage_id": late_id, "agreement_id": "agr-1",
                               "consumer": "bank-a", "period": "2026-11"}]
    again = service.bill(metered, agreement_id="agr-1", period="2026-11", issue=True)
    assert [line["id"] for line in again["statement"]["lines"]] == [late_id]
    assert service.reconcile(metered)["late"] == []


def test_a_line_moved_between_bills_is_caught(metered: Node) -> None:
    bill = _issued(metered)
    with metered.store.write() as session:
        session.execute(delete(BillLine).where(BillLine.bill_id == bill["bill_id"]))
    with pytest.raises(VerificationError, match="billed lines of bill"):
        service.reconcile(metered)


def test_a_line_marked_billed_on_no_bill_is_caught(metered: Node) -> None:
    _issued(metered)
    with metered.store.write() as session:
        session.add(BillLine(usage_id=_row_id(metered, "u1"), bill_id="bill-never-issued"))
    with pytest.raises(VerificationError, match="never issued"):
        service.reconcile(metered)


def test_a_bill_pointing_at_another_entry_is_caught(metered: Node) -> None:
    bill = _issued(metered)
    with metered.store.write() as session:
        session.execute(update(Bill).where(Bill.id == bill["bill_id"]).values(ledger_index=0))
    with pytest.raises(VerificationError, match=r"no bill\.issued entry"):
        service.reconcile(metered)


def test_a_line_billed_twice_before_bill_lines_existed_reconciles(
    metered: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _issued(metered)
    ids = [line["id"] for line in first["statement"]["lines"]]
    with metered.store.write() as session:  # as before migration 0012: nothing marked billed
        session.execute(delete(BillLine))
    with monkeypatch.context() as m:  # and nothing read the bills' own lines either
        m.setattr(statements, "_refuse_unmarked", lambda documents, st: None)
        second = service.bill(metered, consumer="bank-a", period="2026-11", issue=True)
    assert set(ids) <= {line["id"] for line in second["statement"]["lines"]}  # billed twice
    with metered.store.write() as session:  # what the migration leaves: each on its first bill
        session.execute(delete(BillLine).where(BillLine.usage_id.in_(ids)))
        session.add_all(BillLine(usage_id=i, bill_id=first["bill_id"]) for i in ids)
    assert service.reconcile(metered)["bills"] == 2
    with metered.store.write() as session:  # but a line may not sit on a later bill only
        session.execute(update(BillLine).where(BillLine.usage_id == ids[0])
                        .values(bill_id=second["bill_id"]))
    with pytest.raises(VerificationError, match="billed lines of bill"):
        service.reconcile(metered)


def test_a_line_whose_billed_mark_was_deleted_is_not_billed_again(metered: Node) -> None:
    """Deleting a bill's rows of the billed-lines table made its lines read as unbilled: the
    next bill asked for them again, and only a reconcile run would have told."""
    bill = _issued(metered)
    with metered.store.write() as session:
        session.execute(delete(BillLine).where(BillLine.bill_id == bill["bill_id"]))
    with pytest.raises(VerificationError, match=f"is on bill {bill['bill_id']} but not marked "
                       "billed") as refused:  # fmt: skip
        service.bill(metered, consumer="bank-a", period="2026-11", issue=True)
    assert "usage reconcile" in (refused.value.hint or "")
    with pytest.raises(VerificationError, match="but not marked billed"):  # the draft too
        service.bill(metered, consumer="bank-a", period="2026-11")
    with metered.store.read() as session:  # nothing was issued
        assert [b.id for b in session.query(Bill)] == [bill["bill_id"]]


def test_a_bill_whose_totals_do_not_follow_from_its_lines_is_caught(
    metered: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reconcile checked a bill's hashes and lines, not its sums: a bill computed wrongly
    when issued (here: carrying 5 CNY asked by no earlier bill) passed."""
    first = _issued(metered)
    assert service.reconcile(metered)["bills"] == 1
    real = statements.carried_from

    def wrong(documents: object, agreements: object) -> object:
        return {key: (exact, due + 5) for key, (exact, due) in
                real(documents, agreements).items()} or {("agr-1", "CNY"): (0, 5)}

    with monkeypatch.context() as m:
        m.setattr(statements, "carried_from", wrong)
        late = service.bill(metered, consumer="bank-a", period="2026-12", issue=True)
    assert late["bill_id"] != first["bill_id"]
    with pytest.raises(VerificationError, match=f"bill {late['bill_id']}'s totals, "
                       "currency_totals, due do not follow from its lines") as caught:
        service.reconcile(metered)
    assert caught.value.details["fields"] == ["totals", "currency_totals", "due"]


def test_a_bill_of_an_earlier_version_is_not_recomputed(
    metered: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 2 rounded every currency to 0.01 (a yen bill asked 0.50 JPY): its totals
    follow another rule, and recomputing them today would call a correct bill wrong."""
    _issued(metered)
    with monkeypatch.context() as m:
        m.setattr(statements, "BILL_VERSION", 2)
        m.setattr(statements, "carried_from", lambda documents, agreements: {
            ("agr-1", "CNY"): (0, 5)})  # computed otherwise than today
        old = service.bill(metered, consumer="bank-a", period="2026-12", issue=True)
    assert old["version"] == 2
    assert service.reconcile(metered)["bills"] == 2


def test_a_deleted_bill_is_caught_before_its_lines_are_billed_again(metered: Node) -> None:
    bill = _issued(metered)
    with metered.store.write() as session:
        session.execute(delete(BillLine).where(BillLine.bill_id == bill["bill_id"]))
        session.execute(delete(Bill).where(Bill.id == bill["bill_id"]))
    with pytest.raises(VerificationError, match=f"issued bill {bill['bill_id']}, which is "
                       "missing from the bills table"):  # fmt: skip
        service.reconcile(metered)


@pytest.mark.parametrize("column", ["consumer", "period", "agreement_id"])
def test_an_edited_bill_column_is_caught(metered: Node, column: str) -> None:
    """Later bills pick the bills they carry from by these columns."""
    bill = _issued(metered)
    with metered.store.write() as session:
        session.execute(update(Bill).where(Bill.id == bill["bill_id"])
                        .values({column: "2026-10" if column == "period" else "other"}))
    with pytest.raises(VerificationError, match=f"bill {bill['bill_id']}'s {column} differ"):
        service.reconcile(metered)


def test_a_time_rewritten_in_another_form_is_caught(metered: Node) -> None:
    """The same instant written another way: on SQLite it sorts into December."""
    if metered.store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL stores timestamptz: one form per instant")
    row_id = _row_id(metered, "j4")
    with metered.store.write() as session:
        stored = session.execute(text("SELECT finished_at FROM usage_records WHERE id = :i"),
                                 {"i": row_id}).scalar_one()  # fmt: skip
        assert stored == "2026-11-30 23:59:59.999999"
        session.execute(text("UPDATE usage_records SET finished_at = :t WHERE id = :i"),
                        {"t": "2026-12-01 07:59:59.999999+08:00", "i": row_id})  # fmt: skip
    assert "j4" not in {r["job_id"] for r in service.list_usage(metered, period="2026-11")}
    with pytest.raises(VerificationError, match=f"usage record {row_id} stores its time as "
                       "'2026-12-01 07:59:59.999999\\+08:00'"):  # fmt: skip
        service.reconcile(metered)


def _set_price(node: Node, job_id: str, amount: str) -> None:
    with node.store.write() as session:
        session.execute(update(UsageRecord).where(UsageRecord.id == _row_id(node, job_id))
                        .values(price_amount=amount))


def test_an_edited_usage_row_is_not_billed(metered: Node) -> None:
    """The bill is built from the usage table: each line is checked against its ledger
    entry first, so an edited row cannot be billed and nothing is issued."""
    _set_price(metered, "k1", "999.125")
    with pytest.raises(VerificationError, match=r"differs from ledger entry .* in: amount") as err:
        service.bill(metered, agreement_id="agr-2", period="2026-11", issue=True)
    assert "no bill was issued" in str(err.value)
    with metered.store.read() as session:
        assert session.execute(text("select count(*) from bills")).scalar() == 0
    _set_price(metered, "k1", "0.125")
    assert service.bill(metered, agreement_id="agr-2", period="2026-11", issue=True)["due"] == [
        {"currency": "CNY", "amount": "0.12"}]


def test_a_bill_issued_from_an_edited_row_later_restored_is_caught(metered: Node) -> None:
    """Edit, bill, restore: the table and the ledger agree again, the bill's document hashes
    to its entry, yet it asks for figures the ledger never recorded."""
    _set_price(metered, "k1", "999.125")
    usage_check = "dataspace.metering.statements.check_lines_recorded"
    with pytest.MonkeyPatch.context() as patch:  # a node from before issuing checked lines
        patch.setattr(usage_check, lambda *_args: None)
        bill = service.bill(metered, agreement_id="agr-2", period="2026-11", issue=True)
    assert bill["due"] == [{"currency": "CNY", "amount": "999.12"}]
    _set_price(metered, "k1", "0.125")
    with pytest.raises(VerificationError, match="other figures than ledger entry") as err:
        service.reconcile(metered)
    assert err.value.details["bill_id"] == bill["bill_id"]
    assert err.value.details["fields"] == ["amount"]
