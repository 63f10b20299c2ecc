"""Errors of the privacy area.

Forbidden ── BudgetExhausted    the query would spend more ε or δ than the agreement has left
"""

from __future__ import annotations

from dataspace.errors import Forbidden

__all__ = ["BudgetExhausted"]


class BudgetExhausted(Forbidden):
    code = "budget_exhausted"
