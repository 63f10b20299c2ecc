"""Metering for the faces: usage listings, statements, bills and reconciliation.

The CLI, the HTTP API and the Python client call these; each opens its own transaction.
The compute layer meters a job with :func:`record` (or calls
:func:`dataspace.metering.record_usage` inside its own transaction).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.errors import NotFound, UsageError
from dataspace.jsondoc import iso_utc
from dataspace.metering import (
    PriceTerms,
    Statement,
    Usage,
    bill_for,
    issue_bill,
    parse_period,
    record_usage,
    record_view,
)
from dataspace.metering import reconcile as _reconcile
from dataspace.metering import statement as _statement
from dataspace.metering.reconcile import checked_bill
from dataspace.metering.statements import Bill, carry_of, period_key, select_usage, unbilled
from dataspace.services.node import Node, default_actor
from dataspace.store.models_contracts import ContractAgreementRow
from dataspace.store.models_metering import Bill as BillRow
from dataspace.store.models_metering import UsageRecord

__all__ = ["bill", "issued_bill", "issued_bills", "list_usage", "reconcile", "record", "statement"]


def record(
    node: Node, usage: Usage, *, terms: PriceTerms | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Meter one job in its own transaction; returns the usage record's JSON view."""
    with node.store.write() as session:
        row = record_usage(session, usage, actor=actor or default_actor(), terms=terms)
        return record_view(row)


def list_usage(
    node: Node,
    agreement_id: str | None = None,
    period: str | None = None,
    consumer: str | None = None,
) -> list[dict[str, Any]]:
    """Usage records matching the filters, oldest first."""
    if period is not None:
        parse_period(period)
    with node.store.read() as session:
        rows = select_usage(session, agreement_id=agreement_id, period=period, consumer=consumer)
        if not rows:
            _explain_none(node, session, agreement_id)
        return [record_view(r) for r in rows]


def _explain_none(node: Node, session: Session, agreement_id: str | None) -> None:
    """Nothing matched a filter naming an agreement: say why when it is not "no usage yet" —
    an id no agreement and no usage of this node has (a typo), or an agreement in which this
    node is the consumer (its provider meters the jobs and bills them)."""
    if agreement_id is None:
        return
    if session.scalars(select(UsageRecord.id).where(UsageRecord.agreement_id == agreement_id)
                       .limit(1)).first() is not None:
        return  # the agreement has usage, outside the other filters
    agreement = session.get(ContractAgreementRow, agreement_id)
    if agreement is None:
        raise NotFound(f"no agreement {agreement_id!r} on this node",
                       hint="`dataspace contract list` shows this node's agreements")
    if agreement.consumer == node.name:
        raise NotFound(
            f"this node is the consumer in agreement {agreement_id}: its provider "
            f"{agreement.provider} meters the jobs run under it and issues the bills",
            hint=f"ask {agreement.provider} for the usage and the bill",
        )


def _statement_obj(
    node: Node, agreement_id: str | None, period: str | None, consumer: str | None
) -> Statement:
    with node.store.read() as session:
        st = _statement(session, agreement_id=agreement_id, period=period, consumer=consumer)
        if not st.lines:
            _explain_none(node, session, agreement_id)
        return st


def statement(
    node: Node,
    agreement_id: str | None = None,
    period: str | None = None,
    consumer: str | None = None,
) -> dict[str, Any]:
    """Lines and totals (per agreement and currency, and per currency)."""
    return _statement_obj(node, agreement_id, period, consumer).to_dict()


def bill(
    node: Node,
    agreement_id: str | None = None,
    period: str | None = None,
    consumer: str | None = None,
    issue: bool = False,
    actor: str | None = None,
) -> dict[str, Any]:
    """The bill for the filters: a draft (no id), or issued and entered in the ledger. At least
    one filter: a bill of everything ever metered is never what was meant."""
    if agreement_id is None and period is None and consumer is None:
        raise UsageError(
            "say what to bill",
            hint="name an agreement, a period (YYYY-MM) or a consumer (--agreement, --period, "
            "--consumer)",
        )
    if issue:
        with node.store.write() as session:
            st = _statement(session, agreement_id=agreement_id, period=period, consumer=consumer)
            if not st.lines:
                _explain_none(node, session, agreement_id)
            return issue_bill(session, st, actor=actor or default_actor()).to_dict()
    # The draft shows what issuing would bill: its reads must see one state (see reconcile).
    with node.store.snapshot() as session:
        st = _statement(session, agreement_id=agreement_id, period=period, consumer=consumer)
        if not st.lines:
            _explain_none(node, session, agreement_id)
        draft, _billed = unbilled(session, st)
        draft.carried = carry_of(session, draft)
    return bill_for(draft).to_dict()


def issued_bills(
    node: Node,
    agreement_id: str | None = None,
    period: str | None = None,
    consumer: str | None = None,
) -> list[dict[str, Any]]:
    """Issued bills matching every filter given, oldest first: id, payer, agreement, period,
    when, ledger entry, lines and amounts due — each read from a document checked against
    its ledger entry (an edited one is a VerificationError, never shown as issued)."""
    if period is not None:
        period = period_key(period)
    query = select(BillRow).order_by(BillRow.ledger_index)
    if agreement_id is not None:
        query = query.where(BillRow.agreement_id == agreement_id)
    if period is not None:
        query = query.where(BillRow.period == period)
    if consumer is not None:
        query = query.where(BillRow.consumer == consumer)
    with node.store.read() as session:
        found = []
        for row in session.execute(query).scalars():
            document, _payload = checked_bill(session, row)
            found.append({
                "bill_id": row.id, "consumer": row.consumer, "agreement_id": row.agreement_id,
                "period": row.period, "issued_at": iso_utc(row.issued_at),
                "ledger_index": row.ledger_index, "sha256": row.sha256,
                "lines": len(document.get("statement", {}).get("lines", [])),
                "due": document.get("due", []),
            })
    return found


def issued_bill(node: Node, bill_id: str) -> dict[str, Any]:
    """One issued bill as it was issued (the document, its SHA-256 and ledger entry), checked
    against its ledger entry."""
    with node.store.read() as session:
        row = session.get(BillRow, bill_id)
        if row is None:
            raise NotFound(f"no issued bill {bill_id!r}", hint="see `dataspace bills`")
        document, _payload = checked_bill(session, row)
        return Bill(document, row.sha256, row.ledger_index).to_dict()


def reconcile(node: Node) -> dict[str, Any]:
    """Compare the usage table with the ledger; raises VerificationError on any difference.
    One snapshot: a job metered between reading the ledger and the usage rows is not a
    difference (on PostgreSQL each statement would otherwise see the latest commit)."""
    with node.store.snapshot() as session:
        return _reconcile(session).to_dict()
