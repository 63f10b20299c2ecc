"""Usage records: what each job (or denied attempt) used and cost, written with its ledger entry.

:func:`record_usage` adds the row **and** the ``usage.recorded`` ledger entry in the caller's
transaction, so a job is metered and logged together or not at all. The entry's payload is
:func:`usage_payload` of the row — every figure as an integer or a decimal string — which is what
:mod:`dataspace.metering.reconcile` later compares the table against.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.errors import InputError, LedgerTampered, VerificationError
from dataspace.ledger import log
from dataspace.metering.pricing import DEFAULT_CURRENCY, PriceTerms, price_for
from dataspace.policy.request import MAX_AMOUNT, Price
from dataspace.store.models import LedgerEntry, LedgerHead
from dataspace.store.models_metering import UsageRecord

__all__ = [
    "ACTIONS",
    "STATUSES",
    "USAGE_ACTION",
    "Usage",
    "as_utc",
    "check_lines_recorded",
    "dec",
    "fmt_decimal",
    "fmt_micros",
    "line_differences",
    "payload_view",
    "record_usage",
    "record_view",
    "usage_payload",
]

ACTIONS = ("governed-query", "dp-query", "psi", "federated-train", "secure-aggregate", "transfer")
STATUSES = ("completed", "denied", "failed")
USAGE_ACTION = "usage.recorded"
_MICRO = Decimal(1_000_000)
#: how far past this node's clock a job's end may lie (another process's clock, a second's rounding)
FUTURE_SKEW = timedelta(minutes=5)
MAX_FIGURE_CHARS = 40  # a figure written out in plain decimals: "0." and 38 digits at most


def dec(value: Decimal | int | str | float, what: str) -> Decimal:
    """An exact, finite, non-negative Decimal; floats are taken by their shortest repr."""
    try:
        out = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise InputError(f"{what} {value!r} is not a number") from None
    if not out.is_finite() or out < 0:
        raise InputError(f"{what} {value!r} must be a finite, non-negative number")
    if len(fmt_decimal(out)) > MAX_FIGURE_CHARS:
        # 1E-120 is finite, but as a 122-character decimal it overflows the exact sums of
        # every statement and bill that covers it (and the store's column).
        hint = ("round it; ε and δ below 1e-30 mean nothing" if "_spent" in what
                else "round it to at most 12 decimal places")
        raise InputError(f"{what} {value!r} has more than {MAX_FIGURE_CHARS} characters "
                         "written out", hint=hint)
    return out


def fmt_decimal(value: Decimal) -> str:
    """Plain notation, never exponent form: 1E-6 -> '0.000001'."""
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


def fmt_micros(micros: int) -> str:
    """Integer microseconds as seconds: 1500000 -> '1.500000'."""
    return fmt_decimal(Decimal(micros).scaleb(-6))


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; SQLite hands back naive datetimes, which we store in UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Usage:
    """One job's figures as the compute layer measured them.

    ``price`` is the job's price when the caller computed it; pass ``terms`` to
    :func:`record_usage` instead to have it priced (with the free quota counted) here.
    """

    agreement_id: str
    job_id: str
    action: str
    consumer: str
    provider: str
    dataset: str
    started_at: datetime
    finished_at: datetime
    status: str = "completed"
    rows_scanned: int = 0
    result_rows: int = 0
    bytes_out: int = 0
    epsilon_spent: Decimal | str | int = Decimal(0)
    delta_spent: Decimal | str | int = Decimal(0)
    cpu_seconds: Decimal | str | int | float = Decimal(0)
    wall_seconds: Decimal | str | int | float = Decimal(0)
    price: Price | None = None
    revenue_share: Decimal | None = None  # its part of a revenue pool, in the terms' currency

    def check(self) -> None:
        """Raise :class:`InputError` naming the first figure that cannot be recorded."""
        for name in ("agreement_id", "job_id", "consumer", "provider", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > 200:
                raise InputError(f"usage {name} must be a non-empty string of at most 200 chars")
        if self.action not in ACTIONS:
            raise InputError(
                f"usage action {self.action!r} is unknown", hint="one of " + ", ".join(ACTIONS)
            )
        if self.status not in STATUSES:
            raise InputError(
                f"usage status {self.status!r} is unknown", hint="one of " + ", ".join(STATUSES)
            )
        for name in ("rows_scanned", "result_rows", "bytes_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"usage {name} must be a non-negative integer, got {value!r}")
            if value > log.MAX_SAFE_INT:
                raise InputError(f"usage {name} {value} is beyond 2**53-1")
        for name in ("epsilon_spent", "delta_spent"):
            if isinstance(getattr(self, name), float):
                raise InputError(
                    f"usage {name} must be a Decimal or decimal string, not a float",
                    hint="use Decimal(str(x)) where x is what the mechanism was asked for",
                )
        for name in ("started_at", "finished_at"):
            if getattr(self, name).tzinfo is None:
                raise InputError(f"usage {name} has no time zone", hint="use datetime.now(UTC)")
        if self.finished_at < self.started_at:
            raise InputError("usage finished_at is before started_at")
        if self.finished_at > datetime.now(UTC) + FUTURE_SKEW:
            # a job metered in the future would land in a month no bill has covered yet, and
            # escape the bill of the month it ran in
            raise InputError(
                f"usage finished_at {self.finished_at.isoformat()} lies in the future",
                hint="meter a job when it has ended, with datetime.now(UTC); check the clock",
            )
        share = self.revenue_share
        if share is not None and (not isinstance(share, Decimal) or not share.is_finite()
                                  or share < 0):
            raise InputError(f"usage revenue_share must be a non-negative Decimal, got {share!r}")
        if share is not None:
            dec(share, "usage revenue_share")
        for name in ("epsilon_spent", "delta_spent"):
            dec(getattr(self, name), f"usage {name}")


def _micros(value: Decimal | str | int | float, what: str) -> int:
    return int((dec(value, what) * _MICRO).to_integral_value())


def _prior_completed_jobs(session: Session, agreement_id: str) -> int:
    query = select(func.count()).where(
        UsageRecord.agreement_id == agreement_id, UsageRecord.status == "completed"
    )
    return int(session.execute(query).scalar_one())


def record_usage(
    session: Session, usage: Usage, *, actor: str, terms: PriceTerms | None = None
) -> UsageRecord:
    """Write the usage row and its ``usage.recorded`` ledger entry in the caller's transaction.

    The price is, in order: ``terms`` applied to the job (counting the agreement's completed jobs
    already metered against the free quota), else ``usage.price``, else zero in the default
    currency. Denied and failed attempts are always recorded at zero.
    """
    usage.check()
    # Lock the ledger head first so the free-quota count and the append see the same state
    # even on PostgreSQL, where two meterings could otherwise run side by side.
    session.execute(select(LedgerHead.size).where(LedgerHead.id == 1).with_for_update())
    if terms is not None:
        prior = _prior_completed_jobs(session, usage.agreement_id)
        price = price_for(terms, usage, prior_jobs=prior)
    elif usage.price is not None:
        price = usage.price
    else:
        price = Price(Decimal(0), DEFAULT_CURRENCY)
    amount = price.amount if usage.status == "completed" else Decimal(0)
    if amount >= MAX_AMOUNT:  # the bound every written price keeps, so sums stay exact
        raise InputError(
            f"this job would cost about {amount:.3E} {price.currency}: one job's price must "
            "be below 10^15",
            hint="the offer's per-row or per-MB terms are far too high for a job of this size; "
                 "the provider revises the offer",
        )
    amount = dec(amount, "price")
    row = UsageRecord(
        id=secrets.token_hex(16),
        agreement_id=usage.agreement_id,
        job_id=usage.job_id,
        action=usage.action,
        consumer=usage.consumer,
        provider=usage.provider,
        dataset=usage.dataset,
        rows_scanned=usage.rows_scanned,
        result_rows=usage.result_rows,
        bytes_out=usage.bytes_out,
        epsilon_spent=fmt_decimal(dec(usage.epsilon_spent, "epsilon_spent")),
        delta_spent=fmt_decimal(dec(usage.delta_spent, "delta_spent")),
        cpu_us=_micros(usage.cpu_seconds, "cpu_seconds"),
        wall_us=_micros(usage.wall_seconds, "wall_seconds"),
        price_amount=fmt_decimal(amount),
        currency=price.currency.upper(),
        status=usage.status,
        started_at=as_utc(usage.started_at),
        finished_at=as_utc(usage.finished_at),
        ledger_index=-1,
    )
    appended = log.append(session, actor=actor, action=USAGE_ACTION, payload=usage_payload(row))
    row.ledger_index = appended.index
    session.add(row)
    session.flush()
    return row


def usage_payload(row: UsageRecord) -> dict[str, Any]:
    """The ledger payload of a usage row: every figure as an integer or a decimal string."""
    return {
        "usage_id": row.id,
        "agreement_id": row.agreement_id,
        "job_id": row.job_id,
        "action": row.action,
        "consumer": row.consumer,
        "provider": row.provider,
        "dataset": row.dataset,
        "status": row.status,
        "rows_scanned": int(row.rows_scanned),
        "result_rows": int(row.result_rows),
        "bytes_out": int(row.bytes_out),
        "epsilon_spent": row.epsilon_spent,
        "delta_spent": row.delta_spent,
        "cpu_us": int(row.cpu_us),
        "wall_us": int(row.wall_us),
        "price": {"amount": row.price_amount, "currency": row.currency},
        "started_at": log.format_time(as_utc(row.started_at)),
        "finished_at": log.format_time(as_utc(row.finished_at)),
    }


def record_view(row: UsageRecord) -> dict[str, Any]:
    """The JSON form of a usage row for the faces (seconds as decimal strings)."""
    return payload_view(usage_payload(row), int(row.ledger_index))


def payload_view(payload: dict[str, Any], ledger_index: int) -> dict[str, Any]:
    """The JSON form of a usage row from its ledger payload: what a statement line must be."""
    out = dict(payload)
    cpu_us, wall_us = int(out.pop("cpu_us")), int(out.pop("wall_us"))
    price = out.pop("price")
    out["id"] = out.pop("usage_id")
    out["cpu_seconds"] = fmt_micros(cpu_us)
    out["wall_seconds"] = fmt_micros(wall_us)
    out["amount"] = price["amount"]
    out["currency"] = price["currency"]
    out["ledger_index"] = ledger_index
    return out


def line_differences(line: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """The fields in which a statement line differs from the view of its ledger payload."""
    return sorted(k for k in set(line) | set(recorded) if line.get(k) != recorded.get(k))


def check_lines_recorded(session: Session, lines: list[dict[str, Any]]) -> None:
    """Every statement line against the ``usage.recorded`` entry it names, before a bill asks
    for it: a usage row edited after its job was metered must not be billed."""
    by_index = {int(line["ledger_index"]): line for line in lines}
    indices = sorted(by_index)
    for start in range(0, len(indices), 500):  # bounded IN lists
        chunk = indices[start : start + 500]
        found = {int(idx): (entry, payload) for idx, entry, payload in session.execute(
            select(LedgerEntry.idx, LedgerEntry.entry, LedgerEntry.payload)
            .where(LedgerEntry.idx.in_(chunk)))}  # fmt: skip
        for index in chunk:
            line = by_index[index]
            if index not in found:
                raise VerificationError(
                    f"usage line {line['id']} names ledger entry {index}, which does not exist",
                    hint="run `dataspace usage reconcile` before billing", usage_id=line["id"],
                )
            entry_json, payload_json = found[index]
            entry = json.loads(entry_json)
            if log.sha256_hex(payload_json) != entry.get("payload_sha256"):
                raise LedgerTampered(f"the payload of ledger entry {index} does not match its hash",
                                     hint="run `dataspace ledger verify`", index=index)
            payload = json.loads(payload_json)
            if entry.get("action") != USAGE_ACTION or payload.get("usage_id") != line["id"]:
                raise VerificationError(
                    f"usage line {line['id']} names ledger entry {index}, which does not "
                    "record it", hint="run `dataspace usage reconcile` before billing",
                    usage_id=line["id"],
                )
            changed = line_differences(line, payload_view(payload, index))
            if changed:
                raise VerificationError(
                    f"usage record {line['id']} (agreement {line['agreement_id']}, job "
                    f"{line['job_id']}) differs from ledger entry {index} in: "
                    f"{', '.join(changed)}; no bill was issued",
                    hint="the usage table was edited after the job was metered; "
                    "run `dataspace usage reconcile`",
                    usage_id=line["id"], fields=changed,
                )
