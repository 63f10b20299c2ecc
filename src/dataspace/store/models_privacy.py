"""Tables of the privacy area (see DESIGN.md §3). Imported by :mod:`dataspace.store.models`.

Budget amounts are stored as decimal strings (``Decimal(str(x))``) and compared with exact
decimal arithmetic, so repeated spends cannot round their way past the total.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.store.models import Base

__all__ = ["Base", "DpBudget", "DpSpend"]


class DpBudget(Base):
    """The (ε, δ) budget of one agreement and what has been spent of it."""

    __tablename__ = "dp_budgets"
    agreement_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    epsilon_total: Mapped[str] = mapped_column(String(50))
    delta_total: Mapped[str] = mapped_column(String(50))
    epsilon_spent: Mapped[str] = mapped_column(String(50))
    delta_spent: Mapped[str] = mapped_column(String(50))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DpSpend(Base):
    """One committed spend, written in the same transaction that charges the budget."""

    __tablename__ = "dp_spends"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(String(100), index=True)
    job_id: Mapped[str] = mapped_column(String(100))
    epsilon: Mapped[str] = mapped_column(String(50))
    delta: Mapped[str] = mapped_column(String(50))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
