"""Statements (usage lines and totals) and bills (a statement with an id, a hash, a ledger entry).

A statement selects usage records by agreement, consumer and period — a period ``"2026-11"`` is
the half-open UTC interval [2026-11-01T00:00Z, 2026-12-01T00:00Z) of the records' ``finished_at``
— and totals them per agreement and currency, and per currency. Line amounts are exact; each
total carries the exact sum (``amount_exact``) and the amount due rounded half-even to 0.01
(``amount``): the one place money is rounded.

A bill is the statement for one consumer (one agreement, or all of its agreements) and period,
with an id. Its SHA-256 is over the canonical JSON of the bill without the hash;
:func:`issue_bill` stores it and enters ``bill.issued`` in the ledger.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, Inexact, localcontext
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataspace.errors import Conflict, UsageError, VerificationError
from dataspace.ledger import log
from dataspace.metering.pricing import EXACT_DIGITS, round_money
from dataspace.metering.usage import (
    as_utc,
    check_lines_recorded,
    fmt_decimal,
    fmt_micros,
    record_view,
)
from dataspace.store.models_metering import Bill as BillRow
from dataspace.store.models_metering import BillLine, UsageRecord

__all__ = [
    "BILL_ACTION",
    "CSV_COLUMNS",
    "Bill",
    "Statement",
    "Total",
    "bill_for",
    "carried_from",
    "carry_of",
    "earlier_bills",
    "issue_bill",
    "parse_period",
    "statement",
    "unbilled",
]

BILL_ACTION = "bill.issued"
#: 2: an agreement's amount due carries what its earlier bills of version 2 rounded off
#: (``billed_before``); bills of version 1 rounded alone and are not carried from.
#: 3: amounts round to their currency's ISO 4217 minor unit (version 2 rounded all to 0.01)
BILL_VERSION = 3
CARRIED_SINCE = 2  # the first bill version carried from
_PERIOD_RE = re.compile(r"^([0-9]{4})-([0-9]{2})$")  # ASCII digits only: "２０２６-１１" is not one
CSV_COLUMNS = (
    "kind", "agreement_id", "consumer", "currency", "job_id", "action", "status", "finished_at",
    "jobs", "denied", "failed", "rows_scanned", "result_rows", "bytes_out", "epsilon_spent",
    "delta_spent", "cpu_seconds", "wall_seconds", "amount", "amount_due",
)  # fmt: skip


def parse_period(period: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` -> (2026-11-01T00:00Z, 2026-12-01T00:00Z), the end excluded."""
    match = _PERIOD_RE.match(period.strip()) if isinstance(period, str) else None
    if match is None:
        raise UsageError(
            f"period {period!r} is not a month in the form YYYY-MM",
            hint="e.g. --period 2026-11 for November 2026 (UTC)",
        )
    month = int(match.group(2))
    if not 1 <= month <= 12:
        raise UsageError(f"period {period!r}: {match.group(2)} is no month (01 to 12)",
                         hint="e.g. --period 2026-11 for November 2026 (UTC)")
    if int(match.group(1)) < 1:
        raise UsageError(f"period {period!r}: the year 0000 is before any usage (years start "
                         "at 0001)", hint="e.g. --period 2026-11 for November 2026 (UTC)")
    year = int(match.group(1))
    if (year, month) == (9999, 12):  # its end, 10000-01, is past what a date can hold
        raise UsageError("period 9999-12 is past the last month a statement can cover",
                         hint="use a period up to 9999-11")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass
class Total:
    """Sums over a set of usage lines; ``amount`` is the exact sum rounded half-even to 0.01."""

    currency: str
    agreement_id: str | None = None
    consumer: str | None = None
    jobs: int = 0  # completed jobs
    denied: int = 0
    failed: int = 0
    rows_scanned: int = 0
    result_rows: int = 0
    bytes_out: int = 0
    epsilon_spent: Decimal = Decimal(0)
    delta_spent: Decimal = Decimal(0)
    cpu_us: int = 0
    wall_us: int = 0
    amount_exact: Decimal = Decimal(0)
    # a currency's amount due: the sum of its agreements' rounded amounts (rounded once each);
    # on a bill, an agreement's: what rounds the exact sum of everything billed so far, less
    # what earlier bills asked (so the cents rounded off one bill come back on the next)
    amount_due: Decimal | None = None
    billed_before: tuple[Decimal, Decimal] | None = None  # (exact, due) of earlier bills

    def add(self, line: dict[str, Any]) -> None:
        status = line["status"]
        if status == "completed":
            self.jobs += 1
        elif status == "denied":
            self.denied += 1
        else:
            self.failed += 1
        self.rows_scanned += int(line["rows_scanned"])
        self.result_rows += int(line["result_rows"])
        self.bytes_out += int(line["bytes_out"])
        self.cpu_us += int(line["cpu_us"])
        self.wall_us += int(line["wall_us"])
        # Sums stay exact (a line may hold ~46 digits; the default context keeps 28 and would
        # round silently): a sum that cannot be exact raises instead.
        with localcontext() as ctx:
            ctx.prec = EXACT_DIGITS
            ctx.traps[Inexact] = True
            self.epsilon_spent += Decimal(line["epsilon_spent"])
            self.delta_spent += Decimal(line["delta_spent"])
            self.amount_exact += Decimal(line["amount"])

    @property
    def amount(self) -> Decimal:
        if self.amount_due is not None:
            return self.amount_due
        return round_money(self.amount_exact, self.currency)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.agreement_id is not None:
            out["agreement_id"] = self.agreement_id
            out["consumer"] = self.consumer
        out.update(
            currency=self.currency,
            jobs=self.jobs,
            denied=self.denied,
            failed=self.failed,
            rows_scanned=self.rows_scanned,
            result_rows=self.result_rows,
            bytes_out=self.bytes_out,
            epsilon_spent=fmt_decimal(self.epsilon_spent),
            delta_spent=fmt_decimal(self.delta_spent),
            cpu_seconds=fmt_micros(self.cpu_us),
            wall_seconds=fmt_micros(self.wall_us),
            amount_exact=fmt_decimal(self.amount_exact),
            amount=fmt_decimal(self.amount),
        )
        if self.billed_before is not None:
            exact, due = self.billed_before
            out["billed_before"] = {"amount_exact": fmt_decimal(exact), "amount": fmt_decimal(due)}
        return out


def totals(lines: Iterable[dict[str, Any]], *, by_agreement: bool) -> list[Total]:
    """Totals per (agreement, currency) or per currency, sorted by their keys."""
    groups: dict[tuple[str, ...], Total] = {}
    for line in lines:
        key = (line["agreement_id"], line["currency"]) if by_agreement else (line["currency"],)
        if key not in groups:
            groups[key] = (
                Total(line["currency"], line["agreement_id"], line["consumer"])
                if by_agreement
                else Total(line["currency"])
            )
        groups[key].add(line)
    return [groups[k] for k in sorted(groups)]


@dataclass
class Statement:
    """Usage lines (one per job, oldest first) and their totals."""

    agreement_id: str | None
    consumer: str | None
    period: str | None
    lines: list[dict[str, Any]] = field(default_factory=list)
    #: (agreement, currency) -> (exact sum, amount due) of the earlier bills: set on a bill
    #: (:func:`carry_of`), empty on a plain statement
    carried: dict[tuple[str, str], tuple[Decimal, Decimal]] = field(default_factory=dict)

    @property
    def consumers(self) -> list[str]:
        return sorted({line["consumer"] for line in self.lines})

    @property
    def totals(self) -> list[Total]:
        out = totals(self._raw(), by_agreement=True)
        for total in out:
            before = self.carried.get((str(total.agreement_id), total.currency))
            if before is not None:
                exact, due = before
                total.billed_before = before
                with localcontext() as ctx:
                    ctx.prec = EXACT_DIGITS
                    total.amount_due = round_money(exact + total.amount_exact,
                                                   total.currency) - due  # fmt: skip
        return out

    @property
    def currency_totals(self) -> list[Total]:
        """Per currency; the amount due is the sum of the per-agreement amounts, so the bill's
        lines add up to what it asks (rounding each agreement's total, then the sum again,
        could differ by a cent)."""
        raw = self._raw()
        by_agreement = self.totals
        out = totals(raw, by_agreement=False)
        for total in out:
            total.amount_due = sum(
                (t.amount for t in by_agreement if t.currency == total.currency), Decimal(0)
            )
        return out

    def _raw(self) -> list[dict[str, Any]]:
        return [_raw_line(line) for line in self.lines]

    def to_dict(self) -> dict[str, Any]:
        start, end = parse_period(self.period) if self.period else (None, None)
        return {
            "agreement_id": self.agreement_id,
            "consumer": self.consumer,
            "period": self.period,
            "from": None if start is None else log.format_time(start),
            "until": None if end is None else log.format_time(end),
            "lines": self.lines,
            "totals": [t.to_dict() for t in self.totals],
            "currency_totals": [t.to_dict() for t in self.currency_totals],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_csv(self) -> str:
        """One ``line`` row per job, then one ``total`` row per agreement and currency."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for line in self.lines:
            status = line["status"]
            writer.writerow(
                {
                    **{k: line.get(k, "") for k in CSV_COLUMNS},
                    "kind": "line",
                    "jobs": int(status == "completed"),
                    "denied": int(status == "denied"),
                    "failed": int(status == "failed"),
                    "amount_due": "",
                }
            )
        for total in self.totals:
            t = total.to_dict()
            writer.writerow(
                {
                    **{k: t.get(k, "") for k in CSV_COLUMNS},
                    "kind": "total",
                    "amount": t["amount_exact"],
                    "amount_due": t["amount"],
                }
            )
        return buf.getvalue()


def _raw_line(line: dict[str, Any]) -> dict[str, Any]:
    raw = dict(line)
    raw["cpu_us"] = int(Decimal(line["cpu_seconds"]) * 1_000_000)
    raw["wall_us"] = int(Decimal(line["wall_seconds"]) * 1_000_000)
    return raw


def select_usage(
    session: Session,
    *,
    agreement_id: str | None = None,
    period: str | None = None,
    consumer: str | None = None,
) -> list[UsageRecord]:
    """Usage rows matching the filters, oldest ``finished_at`` first."""
    query = select(UsageRecord)
    if agreement_id is not None:
        query = query.where(UsageRecord.agreement_id == agreement_id)
    if consumer is not None:
        query = query.where(UsageRecord.consumer == consumer)
    if period is not None:
        start, end = parse_period(period)
        query = query.where(UsageRecord.finished_at >= start, UsageRecord.finished_at < end)
    query = query.order_by(UsageRecord.finished_at, UsageRecord.ledger_index)
    return list(session.execute(query).scalars())


def period_key(period: str) -> str:
    """A period as bills store and look it up (``YYYY-MM``), from any form
    :func:`parse_period` reads."""
    start, _ = parse_period(period)
    return f"{start.year:04d}-{start.month:02d}"


def statement(
    session: Session,
    *,
    agreement_id: str | None = None,
    period: str | None = None,
    consumer: str | None = None,
) -> Statement:
    """The statement of the usage records matching every filter given."""
    if period is not None:
        period = period_key(period)
    rows = select_usage(session, agreement_id=agreement_id, period=period, consumer=consumer)
    return Statement(agreement_id, consumer, period, [record_view(r) for r in rows])


@dataclass(frozen=True)
class Bill:
    """A statement for one payer, with an id (``None`` while a draft) and its SHA-256."""

    document: dict[str, Any]
    sha256: str
    ledger_index: int | None = None

    @property
    def id(self) -> str | None:
        value = self.document.get("bill_id")
        return None if value is None else str(value)

    def to_dict(self) -> dict[str, Any]:
        return {**self.document, "sha256": self.sha256, "ledger_index": self.ledger_index}


def bill_for(
    st: Statement, *, bill_id: str | None = None, issued_at: datetime | None = None
) -> Bill:
    """The bill document of a statement; a draft unless ``bill_id`` and ``issued_at`` are set."""
    body = st.to_dict()
    document = {
        "type": "dataspace.bill",
        "version": BILL_VERSION,
        "bill_id": bill_id,
        "issued_at": None if issued_at is None else log.format_time(issued_at),
        "consumer": st.consumer or (st.consumers[0] if len(st.consumers) == 1 else None),
        "agreement_id": st.agreement_id,
        "period": st.period,
        "statement_sha256": log.sha256_hex(log.canonical_json(body)),
        "statement": body,
        "due": [
            {"currency": t["currency"], "amount": t["amount"]} for t in body["currency_totals"]
        ],
    }
    return Bill(document, log.sha256_hex(log.canonical_json(document)))


def unbilled(session: Session, st: Statement) -> tuple[Statement, dict[str, str]]:
    """The statement less its lines already on an issued bill, and those lines' bills
    (usage id -> bill id): a usage row is billed once, whatever filters select it again."""
    ids = [str(line["id"]) for line in st.lines]
    billed: dict[str, str] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        query = select(BillLine.usage_id, BillLine.bill_id).where(
            BillLine.usage_id.in_(ids[start : start + 500])
        )
        billed.update({str(u): str(b) for u, b in session.execute(query)})
    if not billed:
        return st, billed
    lines = [line for line in st.lines if str(line["id"]) not in billed]
    return Statement(st.agreement_id, st.consumer, st.period, lines, st.carried), billed


def earlier_bills(session: Session, st: Statement) -> list[dict[str, Any]]:
    """The documents of the issued bills that may carry ``st``'s lines: its consumers' bills
    for one of its lines' agreements, or for all of a consumer's."""
    agreements = sorted({str(line["agreement_id"]) for line in st.lines})
    if not agreements:
        return []
    documents = select(BillRow.document).where(
        BillRow.consumer.in_(st.consumers),
        or_(BillRow.agreement_id.in_(agreements), BillRow.agreement_id.is_(None)),
    )
    return [json.loads(document) for document in session.scalars(documents)]


def carry_of(session: Session, st: Statement) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """For each agreement and currency of ``st``'s unbilled lines: the exact sum of the lines
    earlier bills carry, and what those bills asked for them (:func:`carried_from`). A line an
    earlier bill's document carries is refused (:func:`_refuse_unmarked`): draft and bill alike
    never show it as unbilled."""
    earlier = earlier_bills(session, st)
    _refuse_unmarked(earlier, st)
    return carried_from(earlier, {str(line["agreement_id"]) for line in st.lines})


def carried_from(
    documents: Iterable[dict[str, Any]], agreements: Iterable[str]
) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """What the bills ``documents`` carry of ``agreements``: per agreement and currency, the
    exact sum of their lines and what they asked -- from the bills that carry (version 2;
    bills issued before rounded each on its own, and settling their history on the next bill
    could even ask a negative amount). A bill then asks what rounds the exact sum of everything
    billed so far, less what was asked before: over all of an agreement's bills, rounding never
    loses or invents more than half a cent."""
    wanted = set(agreements)
    exact: dict[tuple[str, str], Decimal] = {}
    due: dict[tuple[str, str], Decimal] = {}
    with localcontext() as ctx:
        ctx.prec = EXACT_DIGITS
        ctx.traps[Inexact] = True
        for doc in documents:
            if int(doc.get("version") or 1) < CARRIED_SINCE:
                continue
            body = doc["statement"]
            for line in body["lines"]:
                key = (str(line["agreement_id"]), str(line["currency"]))
                if key[0] in wanted:
                    exact[key] = exact.get(key, Decimal(0)) + Decimal(line["amount"])
            for total in body["totals"]:
                key = (str(total.get("agreement_id")), str(total["currency"]))
                if key[0] in wanted:
                    due[key] = due.get(key, Decimal(0)) + Decimal(total["amount"])
    keys = set(exact) | set(due)
    return {k: (exact.get(k, Decimal(0)), due.get(k, Decimal(0))) for k in sorted(keys)}


def _refuse_unmarked(documents: Iterable[dict[str, Any]], st: Statement) -> None:
    """A line an issued bill's document carries but the billed-lines table does not mark
    (its row was deleted) would be billed again: refuse, naming the bill."""
    wanted = {str(line["id"]) for line in st.lines}
    for doc in documents:
        carried = wanted & {str(line["id"]) for line in doc["statement"]["lines"]}
        if carried:
            raise VerificationError(
                f"usage {sorted(carried)[0]} is on bill {doc.get('bill_id')} but not marked "
                "billed: the billed-lines table was changed, and the line would be billed twice",
                hint="run `dataspace usage reconcile`, restore the table, then issue the bill",
                bill_id=doc.get("bill_id"), usage_id=sorted(carried)[0],
            )


def issue_bill(session: Session, st: Statement, *, actor: str, now: datetime | None = None) -> Bill:
    """Give the statement's bill an id, store it, and enter ``bill.issued`` in the ledger.

    The bill carries the statement's lines that no issued bill carries yet (a late job in a
    billed month yields a bill of its own); they must be of exactly one consumer.
    """
    if not st.lines:
        raise UsageError(
            "there is no usage to bill for these filters",
            hint="check --agreement, --consumer and --period with `dataspace usage`",
        )
    # One bill at a time: two bills of an agreement issued at once would both carry against
    # the same earlier bills (the ledger head is what every issue locks anyway, to append).
    log.serialize_writers(session)
    st, billed = unbilled(session, st)
    st.carried = carry_of(session, st)
    if not st.lines:
        on = ", ".join(sorted(set(billed.values())))
        raise Conflict(
            f"every usage line these filters select is already billed (on {on})",
            hint="a usage line is billed once; new usage yields a new bill",
        )
    if len(st.consumers) != 1:
        raise UsageError(
            f"the statement covers {len(st.consumers)} consumers; a bill has one payer",
            hint="add --consumer NAME or --agreement ID",
        )
    check_lines_recorded(session, st.lines)
    issued_at = as_utc(now or datetime.now(UTC))
    bill = bill_for(st, bill_id="bill-" + secrets.token_hex(12), issued_at=issued_at)
    doc = bill.document
    existing = session.execute(
        select(BillRow.id).where(BillRow.statement_sha256 == doc["statement_sha256"])
    ).scalar_one_or_none()
    if existing is not None:
        raise Conflict(
            f"this statement was already billed as {existing}",
            hint="bills are issued once; new usage in the period yields a new statement",
        )
    appended = log.append(
        session,
        actor=actor,
        action=BILL_ACTION,
        payload={
            "bill_id": doc["bill_id"],
            "sha256": bill.sha256,
            "statement_sha256": doc["statement_sha256"],
            "consumer": doc["consumer"],
            "agreement_id": doc["agreement_id"],
            "period": doc["period"],
            "lines": len(st.lines),
            "due": doc["due"],
        },
        time=issued_at,
    )
    session.add(
        BillRow(
            id=doc["bill_id"],
            consumer=doc["consumer"],
            agreement_id=doc["agreement_id"],
            period=doc["period"],
            statement_sha256=doc["statement_sha256"],
            sha256=bill.sha256,
            document=log.canonical_json(doc),
            issued_at=issued_at,
            ledger_index=appended.index,
        )
    )
    session.add_all(BillLine(usage_id=str(line["id"]), bill_id=doc["bill_id"])
                    for line in st.lines)
    try:
        session.flush()
    except IntegrityError:  # another bill took some of these lines since they were read
        raise Conflict("some of these usage lines were billed meanwhile",
                       hint="issue the bill again: it then carries only the rest") from None
    return Bill(doc, bill.sha256, appended.index)
