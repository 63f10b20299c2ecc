"""Metering for the faces: usage listings, statements, bills and reconciliation.

The CLI, the HTTP API and the Python client call these; each opens its own transaction.
The compute layer meters a job with :func:`record` (or calls
:func:`dataspace.metering.record_usage` inside its own transaction).
"""

from __future__ import annotations

from typing import Any

from dataspace.errors import UsageError
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
from dataspace.metering.statements import carry_of, select_usage, unbilled
from dataspace.services.node import Node, default_actor

__all__ = ["bill", "list_usage", "reconcile", "record", "statement"]


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
        return [record_view(r) for r in rows]


def _statement_obj(
    node: Node, agreement_id: str | None, period: str | None, consumer: str | None
) -> Statement:
    with node.store.read() as session:
        return _statement(session, agreement_id=agreement_id, period=period, consumer=consumer)


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
            return issue_bill(session, st, actor=actor or default_actor()).to_dict()
    # The draft shows what issuing would bill: its reads must see one state (see reconcile).
    with node.store.snapshot() as session:
        st = _statement(session, agreement_id=agreement_id, period=period, consumer=consumer)
        draft, _billed = unbilled(session, st)
        draft.carried = carry_of(session, draft)
    return bill_for(draft).to_dict()


def reconcile(node: Node) -> dict[str, Any]:
    """Compare the usage table with the ledger; raises VerificationError on any difference.
    One snapshot: a job metered between reading the ledger and the usage rows is not a
    difference (on PostgreSQL each statement would otherwise see the latest commit)."""
    with node.store.snapshot() as session:
        return _reconcile(session).to_dict()
