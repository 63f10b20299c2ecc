"""Reconcile the usage table with the ledger: both must tell the same story, record by record.

The ledger's ``usage.recorded`` payloads are the reference. For every record:

1. each entry's payload must hash to the ``payload_sha256`` its entry names;
2. each entry must have a usage row with its ``usage_id`` whose ``ledger_index`` is the entry's;
3. each usage row must be named by such an entry (no row without an entry);
4. the row's figures must equal the payload's, field by field (no edited row).

Then the totals per agreement and currency are recomputed from the payloads alone and compared
with the totals of the table. Last, every issued bill is checked against its ``bill.issued``
entry: the stored document hashes to the bill's and the entry's SHA-256, its statement to the
entry's statement hash, its columns (consumer, agreement, period, time) agree with the
document, the billed-lines table lists exactly the bill's lines, and every ``bill.issued``
entry has its bill (a deleted bill would let its lines be billed again); its totals and
amounts due are recomputed from its lines and the bills issued before it. On SQLite every
stored time must be the text the store writes (statements select periods by that text). Any
difference raises :class:`VerificationError` naming the record or bill.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from dataspace.errors import DataspaceError, LedgerTampered, NotFound, VerificationError
from dataspace.ledger import log
from dataspace.metering.pricing import EXACT_DIGITS
from dataspace.metering.statements import (
    BILL_ACTION,
    BILL_VERSION,
    Statement,
    Total,
    carried_from,
    totals,
)
from dataspace.metering.usage import (
    USAGE_ACTION,
    as_utc,
    line_differences,
    payload_view,
    usage_payload,
)
from dataspace.store.models import LedgerEntry
from dataspace.store.models_metering import Bill, BillLine, UsageRecord

__all__ = ["ReconcileReport", "reconcile"]

_PAGE = 1000


@dataclass
class ReconcileReport:
    """What was compared; only produced when everything agreed."""

    records: int
    ledger_entries: int
    totals: list[Total] = field(default_factory=list)
    bills: int = 0
    # usage lines on no bill yet whose month a bill of their consumer (and agreement) covered
    # already: a bill of that month again carries them (a bill of a later month does not)
    late: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "records": self.records,
            "ledger_entries": self.ledger_entries,
            "bills": self.bills,
            "totals": [t.to_dict() for t in self.totals],
            "late": self.late,
        }


def _usage_entries(session: Session) -> dict[str, tuple[int, dict[str, Any]]]:
    """``usage_id -> (ledger index, payload)`` of every ``usage.recorded`` entry."""
    return _entries(session, USAGE_ACTION, "usage_id", "usage record")


def _entries(
    session: Session, action: str, key: str, what: str
) -> dict[str, tuple[int, dict[str, Any]]]:
    """``payload[key] -> (ledger index, payload)`` of every entry of ``action``."""
    marker = f'%"action":"{action}"%'
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    last = -1
    while True:
        query = (
            select(LedgerEntry.idx, LedgerEntry.entry, LedgerEntry.payload)
            .where(LedgerEntry.idx > last, LedgerEntry.entry.like(marker))
            .order_by(LedgerEntry.idx)
            .limit(_PAGE)
        )
        batch = session.execute(query).all()
        if not batch:
            return found
        for idx, entry_json, payload_json in batch:
            last = int(idx)
            entry = json.loads(entry_json)
            if entry.get("action") != action:
                continue
            if log.sha256_hex(payload_json) != entry.get("payload_sha256"):
                raise LedgerTampered(
                    f"the payload of ledger entry {idx} does not match its hash",
                    hint="run `dataspace ledger verify`",
                    index=int(idx),
                )
            payload = json.loads(payload_json)
            ident = str(payload.get(key))
            if ident in found:
                raise VerificationError(
                    f"{what} {ident} is entered twice in the ledger "
                    f"(entries {found[ident][0]} and {idx})",
                    **{key: ident},
                )
            found[ident] = (int(idx), payload)


def _line(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload in the shape :func:`totals` adds up."""
    return {
        **payload,
        "amount": payload["price"]["amount"],
        "currency": payload["price"]["currency"],
    }


def reconcile(session: Session) -> ReconcileReport:
    """Compare every usage row with its ledger entry and the totals; raise on any difference."""
    entries = _usage_entries(session)
    rows = list(session.execute(select(UsageRecord).order_by(UsageRecord.ledger_index)).scalars())
    seen: set[str] = set()
    for row in rows:
        seen.add(row.id)
        ref = entries.get(row.id)
        if ref is None:
            raise VerificationError(
                f"usage record {row.id} (agreement {row.agreement_id}, job {row.job_id}) "
                "has no usage.recorded entry in the ledger",
                hint="the row was added outside record_usage; investigate before billing",
                usage_id=row.id,
            )
        index, payload = ref
        if int(row.ledger_index) != index:
            raise VerificationError(
                f"usage record {row.id} points at ledger entry {row.ledger_index}, "
                f"but it is recorded in entry {index}",
                usage_id=row.id,
            )
        mine = usage_payload(row)
        changed = sorted(k for k in set(mine) | set(payload) if mine.get(k) != payload.get(k))
        if changed:
            raise VerificationError(
                f"usage record {row.id} (agreement {row.agreement_id}, job {row.job_id}) "
                f"differs from ledger entry {index} in: {', '.join(changed)}",
                hint="the usage table was edited after the job was metered",
                usage_id=row.id,
                fields=changed,
            )
    _check_stored_times(session, rows)
    orphans = sorted((idx, uid) for uid, (idx, _) in entries.items() if uid not in seen)
    if orphans:
        idx, uid = orphans[0]
        raise VerificationError(
            f"ledger entry {idx} records usage {uid}, which is missing from the usage table",
            hint="a metered job's row was deleted; restore it before billing",
            usage_id=uid,
            index=idx,
        )
    from_ledger = totals((_line(p) for _, p in entries.values()), by_agreement=True)
    from_table = totals((_line(usage_payload(r)) for r in rows), by_agreement=True)
    if [t.to_dict() for t in from_ledger] != [t.to_dict() for t in from_table]:
        raise VerificationError("usage totals differ between the ledger and the usage table")
    bills = _check_bills(session, entries)
    return ReconcileReport(len(rows), len(entries), from_table, bills, _late_lines(session, rows))


def _late_lines(session: Session, rows: list[UsageRecord]) -> list[dict[str, str]]:
    """The usage rows on no bill whose month a period bill of their consumer (for their
    agreement, or for all of the consumer's) has covered already: metered after that bill was
    issued (a job that ended just before the month did), they wait for a bill of that month."""
    covered = {(c, a, p) for c, a, p in session.execute(
        select(Bill.consumer, Bill.agreement_id, Bill.period).where(Bill.period.is_not(None)))}
    if not covered:
        return []
    billed = set(session.scalars(select(BillLine.usage_id)))
    late = []
    for row in rows:
        if row.id in billed:
            continue
        month = f"{row.finished_at.year:04d}-{row.finished_at.month:02d}"
        if ({(row.consumer, row.agreement_id, month), (row.consumer, None, month)} & covered):
            late.append({"usage_id": row.id, "agreement_id": row.agreement_id,
                         "consumer": row.consumer, "period": month})
    return late


def _sqlite_text(moment: datetime) -> str:
    """How SQLAlchemy writes a UTC time to SQLite: '2026-11-30 23:59:59.999999' (a four-digit
    year, which strftime('%Y') does not pad below 1000)."""
    return as_utc(moment).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _check_stored_times(session: Session, rows: list[UsageRecord]) -> None:
    """SQLite keeps a time as text, and statements select a period by comparing that text:
    '2026-12-01 04:00:00+08:00' reads back as the instant the ledger names, yet sorts into
    another month. Every stored time must be the text the store itself writes."""
    if session.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL stores timestamptz: one form per instant
    raw = select(UsageRecord.id, cast(UsageRecord.started_at, String),
                 cast(UsageRecord.finished_at, String))  # fmt: skip
    parsed = {r.id: (r.started_at, r.finished_at) for r in rows}
    for usage_id, *texts in session.execute(raw):
        for text, moment in zip(texts, parsed[usage_id], strict=True):
            if text != _sqlite_text(moment):
                raise VerificationError(
                    f"usage record {usage_id} stores its time as {text!r}, not in the store's "
                    "own form: the row was edited (the period it is billed in moves)",
                    hint="restore the row from its ledger entry",
                    usage_id=usage_id,
                )


def checked_bill(session: Session, bill: Bill) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored bill's document and its ``bill.issued`` payload, once the document is shown
    to hash to what the ledger entry says (else :class:`VerificationError`)."""
    try:
        row: log.LogRow | None = log.get_entry(session, int(bill.ledger_index))
    except NotFound:
        row = None
    if row is not None and log.sha256_hex(row.payload_json) != row.entry.get("payload_sha256"):
        raise LedgerTampered(f"the payload of ledger entry {row.idx} does not match its hash",
                             hint="run `dataspace ledger verify`", index=row.idx)
    payload = row.payload if row is not None else {}
    if row is None or row.entry.get("action") != BILL_ACTION or payload.get("bill_id") != bill.id:
        raise VerificationError(f"bill {bill.id} has no bill.issued entry at ledger index "
                                f"{bill.ledger_index}", bill_id=bill.id)
    try:  # an edited document may be no JSON, or JSON this node never writes (floats)
        document = json.loads(bill.document)
        digest = log.sha256_hex(log.canonical_json(document))
        statement = log.sha256_hex(log.canonical_json(document.get("statement")))
    except (ValueError, AttributeError, DataspaceError):
        document, digest, statement = None, "", ""
    if not isinstance(document, dict) or not digest == bill.sha256 == payload.get("sha256") or not (
        statement == bill.statement_sha256 == payload.get("statement_sha256")
    ):
        raise VerificationError(
            f"bill {bill.id} differs from its ledger entry {bill.ledger_index}",
            hint="the stored bill was edited after it was issued",
            bill_id=bill.id,
        )
    return document, payload


def _check_bills(session: Session, usage: dict[str, tuple[int, dict[str, Any]]]) -> int:
    """Every issued bill against its ledger entry, its billed lines and the ``usage.recorded``
    entries of those lines; the number checked."""
    lines: dict[str, set[str]] = {}
    billed_on: dict[str, str] = {}
    for usage_id, bill_id in session.execute(select(BillLine.usage_id, BillLine.bill_id)):
        lines.setdefault(str(bill_id), set()).add(str(usage_id))
        billed_on[str(usage_id)] = str(bill_id)
    bills = list(session.execute(select(Bill).order_by(Bill.ledger_index)).scalars())
    order = {bill.id: n for n, bill in enumerate(bills)}
    carried = _Carried()  # what the bills walked so far (in the order issued) carry
    for bill in bills:
        document, payload = checked_bill(session, bill)
        columns = {"consumer": bill.consumer, "agreement_id": bill.agreement_id,
                   "period": bill.period,
                   "issued_at": log.format_time(as_utc(bill.issued_at))}  # fmt: skip
        wrong = sorted(k for k, v in columns.items() if document.get(k) != v or (
            k in payload and payload[k] != v))  # fmt: skip
        if wrong:
            raise VerificationError(
                f"bill {bill.id}'s {', '.join(wrong)} differ from its document and ledger "
                f"entry {bill.ledger_index}",
                hint="the bills table was edited; later bills carry from these columns",
                bill_id=bill.id,
            )
        _check_bill_lines(bill.id, document["statement"]["lines"], usage)
        _check_bill_totals(bill.id, document, carried)
        carried.add(document)
        listed = {str(line["id"]) for line in document["statement"]["lines"]}
        mine = lines.pop(bill.id, set())
        # a listed line not marked on this bill must be on an earlier one: a line that bills
        # issued before bill_lines existed carried twice stays on the first (migration 0012)
        elsewhere = [u for u in listed - mine
                     if order.get(billed_on.get(u, ""), len(bills)) >= order[bill.id]]
        if not mine <= listed or elsewhere:
            raise VerificationError(f"the billed lines of bill {bill.id} differ from its document",
                                    hint="a usage line was moved between bills", bill_id=bill.id)
    if lines:
        orphan = sorted(lines)[0]
        raise VerificationError(f"usage lines are marked billed on {orphan}, which was never "
                                "issued", bill_id=orphan)
    issued = _entries(session, BILL_ACTION, "bill_id", "bill")
    missing = sorted((idx, bid) for bid, (idx, _) in issued.items() if bid not in order)
    if missing:
        idx, bid = missing[0]
        raise VerificationError(
            f"ledger entry {idx} issued bill {bid}, which is missing from the bills table: "
            "its lines read as unbilled and could be billed again",
            hint="restore the bill and its lines before issuing more bills",
            bill_id=bid,
            index=idx,
        )
    return len(bills)


class _Carried:
    """What the bills walked so far carry, per consumer, agreement and currency (exact sum,
    amount asked): the carry of the next bill of that consumer, kept as the walk goes rather
    than summed again from every earlier bill for each one."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[tuple[str, str], tuple[Decimal, Decimal]]] = {}

    def of(self, consumer: str, agreements: set[str]) -> dict[tuple[str, str],
                                                              tuple[Decimal, Decimal]]:
        mine = self.sums.get(consumer, {})
        return {key: mine[key] for key in sorted(mine) if key[0] in agreements}

    def add(self, document: dict[str, Any]) -> None:
        lines = document["statement"]["lines"]
        added = carried_from([document], {str(line["agreement_id"]) for line in lines})
        mine = self.sums.setdefault(str(document.get("consumer")), {})
        with localcontext() as ctx:
            ctx.prec = EXACT_DIGITS
            for key, (exact, due) in added.items():
                before = mine.get(key, (Decimal(0), Decimal(0)))
                mine[key] = (before[0] + exact, before[1] + due)


def _check_bill_totals(bill_id: str, document: dict[str, Any], carried: _Carried) -> None:
    """A bill's totals and amounts due follow from its lines and the bills issued before it
    (what they carried): recomputed as :func:`~dataspace.metering.statements.issue_bill`
    computes them. Bills of earlier document versions were computed otherwise (version 2
    rounded every currency to 0.01): their hashes and lines are checked, not their totals."""
    if int(document.get("version") or 1) != BILL_VERSION:
        return
    body = document["statement"]
    agreements = {str(line["agreement_id"]) for line in body["lines"]}
    rebuilt = Statement(body["agreement_id"], body["consumer"], body["period"], body["lines"],
                        carried.of(str(document.get("consumer")), agreements)).to_dict()
    due = [{"currency": t["currency"], "amount": t["amount"]} for t in rebuilt["currency_totals"]]
    wrong = [k for k in ("totals", "currency_totals") if rebuilt[k] != body.get(k)]
    if due != document.get("due"):
        wrong.append("due")
    if wrong:
        raise VerificationError(
            f"bill {bill_id}'s {', '.join(wrong)} do not follow from its lines and the bills "
            "issued before it",
            hint="the bill was computed wrongly when it was issued; issue a correcting bill",
            bill_id=bill_id,
            fields=wrong,
        )


def _check_bill_lines(
    bill_id: str, lines: list[dict[str, Any]], usage: dict[str, tuple[int, dict[str, Any]]]
) -> None:
    """A bill's lines are the figures the ledger recorded: a usage row edited before the bill
    was issued and restored after would otherwise leave a bill no other check can fault."""
    for line in lines:
        ref = usage.get(str(line.get("id")))
        if ref is None:
            raise VerificationError(
                f"bill {bill_id} lists usage {line.get('id')}, which no usage.recorded entry "
                "records", hint="the bill asks for a job the ledger never metered",
                bill_id=bill_id,
            )
        index, payload = ref
        changed = line_differences(line, payload_view(payload, index))
        if changed:
            raise VerificationError(
                f"bill {bill_id} lists usage {line['id']} with other figures than ledger entry "
                f"{index} records, in: {', '.join(changed)}",
                hint="the usage row was edited when the bill was issued; the bill is wrong",
                bill_id=bill_id, usage_id=line["id"], fields=changed,
            )
