"""Tables of the metering area (see DESIGN.md §3). Imported by :mod:`dataspace.store.models`.

Exact figures are never floats: ε, δ and money are decimal strings (``format(Decimal, "f")``),
summed with :class:`decimal.Decimal` in Python; CPU and wall time are integer microseconds.
(SQLAlchemy's ``Numeric`` is float-backed on SQLite, and integer minor units would force a
rounding on every line, while we round once, on the statement's totals.)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.store.models import Base

__all__ = ["Base", "Bill", "BillLine", "UsageRecord"]


class UsageRecord(Base):
    """What one job (or denied attempt) used and cost; ``ledger_index`` is its ledger entry."""

    __tablename__ = "usage_records"
    __table_args__ = (UniqueConstraint("agreement_id", "action", "job_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(String(200), index=True)
    job_id: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(30))
    consumer: Mapped[str] = mapped_column(String(200), index=True)
    provider: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(200))
    rows_scanned: Mapped[int] = mapped_column(BigInteger)
    result_rows: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    epsilon_spent: Mapped[str] = mapped_column(String(50))
    delta_spent: Mapped[str] = mapped_column(String(50))
    cpu_us: Mapped[int] = mapped_column(BigInteger)
    wall_us: Mapped[int] = mapped_column(BigInteger)
    price_amount: Mapped[str] = mapped_column(String(50))  # exact, unrounded decimal
    currency: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ledger_index: Mapped[int] = mapped_column(BigInteger, unique=True)


class Bill(Base):
    """An issued bill: its canonical JSON document, the document's SHA-256 and ledger entry."""

    __tablename__ = "bills"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(200), index=True)
    agreement_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    period: Mapped[str | None] = mapped_column(String(7), nullable=True)
    statement_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    document: Mapped[str] = mapped_column(Text)  # canonical JSON of the bill without sha256
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ledger_index: Mapped[int] = mapped_column(BigInteger, unique=True)


class BillLine(Base):
    """A usage row on an issued bill: a row is billed once (the primary key says so)."""

    __tablename__ = "bill_lines"
    usage_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    bill_id: Mapped[str] = mapped_column(String(40), index=True)
