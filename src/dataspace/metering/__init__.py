"""Metering: usage records, price terms, statements, bills and their reconciliation.

Every job yields a :class:`UsageRecord` written with its ``usage.recorded`` ledger entry
(:func:`record_usage`); :func:`statement` rolls records up per agreement and currency;
:func:`issue_bill` enters a bill in the ledger; :func:`reconcile` proves the table and the
ledger agree. See docs/metering.md.
"""

from __future__ import annotations

from dataspace.metering.pricing import CENT, DEFAULT_CURRENCY, PriceTerms, price_for, round_money
from dataspace.metering.reconcile import ReconcileReport, reconcile
from dataspace.metering.statements import (
    BILL_ACTION,
    Bill,
    Statement,
    Total,
    bill_for,
    issue_bill,
    parse_period,
    statement,
)
from dataspace.metering.usage import (
    ACTIONS,
    STATUSES,
    USAGE_ACTION,
    Usage,
    record_usage,
    record_view,
    usage_payload,
)
from dataspace.store.models_metering import UsageRecord

__all__ = [
    "ACTIONS",
    "BILL_ACTION",
    "CENT",
    "DEFAULT_CURRENCY",
    "STATUSES",
    "USAGE_ACTION",
    "Bill",
    "PriceTerms",
    "ReconcileReport",
    "Statement",
    "Total",
    "Usage",
    "UsageRecord",
    "bill_for",
    "issue_bill",
    "parse_period",
    "price_for",
    "reconcile",
    "record_usage",
    "record_view",
    "round_money",
    "statement",
    "usage_payload",
]
