"""At most so many ledger entries a minute for one source of refusals.

A refused request is evidence worth keeping, but whoever sends it must not be able to grow
the ledger without bound: past the budget, refusals are only counted, and the count goes into
the next entry written (``suppressed_before``). Counts no later entry carried are entered when
the server stops (:func:`drain`).
"""

from __future__ import annotations

import threading


class EntryBudget:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.window = 0
        self.written = 0
        self.suppressed = 0
        self.lock = threading.Lock()

    def admit(self, now: float) -> int | None:
        """None when this refusal is only counted; else how many were suppressed before it."""
        with self.lock:
            minute = int(now // 60)
            if minute != self.window:
                self.window, self.written = minute, 0
            if self.written >= self.per_minute:
                self.suppressed += 1
                return None
            self.written += 1
            suppressed, self.suppressed = self.suppressed, 0
            return suppressed

    def restore(self, count: int) -> None:
        """An admitted entry could not be written: count it, and those it carried, as
        suppressed again, so the next entry written reports them."""
        with self.lock:
            self.suppressed += count

    def take_suppressed(self) -> int:
        """The refusals counted and not yet carried by an entry; from now on they are the
        caller's to enter."""
        with self.lock:
            suppressed, self.suppressed = self.suppressed, 0
            return suppressed


_budgets: dict[tuple[str, str], EntryBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(where: str, source: str, per_minute: int) -> EntryBudget:
    """The one budget of refusals from ``source`` (a member's name, or unverified callers) at
    the node whose folder is ``where``, made on first use."""
    with _budgets_lock:
        key = (where, source)
        if key not in _budgets:
            _budgets[key] = EntryBudget(per_minute)
        return _budgets[key]


def drain(where: str) -> dict[str, int]:
    """Every source's refusals at the node whose folder is ``where`` that no entry carried
    yet, by source; the budgets keep counting from zero."""
    with _budgets_lock:
        mine = [(source, budget) for (at, source), budget in _budgets.items() if at == where]
    counts = {source: budget.take_suppressed() for source, budget in mine}
    return {source: count for source, count in counts.items() if count}
