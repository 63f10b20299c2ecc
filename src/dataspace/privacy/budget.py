"""Per-agreement (ε, δ) budgets in the node's store: atomic, exact, persistent.

* Amounts are :class:`~decimal.Decimal` built from ``str(x)`` and stored as strings, so
  ten spends of 0.1 exhaust a budget of 1.0 exactly — floats would not.
* :func:`reserve` charges the budget, records the spend and appends its ``dp.spent`` ledger
  entry (agreement, job, ε, δ, what is left) in one write transaction (SQLite
  ``BEGIN IMMEDIATE``; PostgreSQL ``SELECT ... FOR UPDATE`` on the budget row), so
  concurrent queries queue and can never overspend together, and no spend exists without
  its ledger entry — even if the node dies before the job that paid for it finishes.
* The spend commits *before* the noisy result is computed and released: a crash in between
  loses budget, it never releases a result that was not paid for.
* :func:`refund_in` gives a job's spend back, inside the transaction that ends the job, only
  when its caller knows nothing the spend paid for left the node (a multi-party job aborted
  by others before this party's noised input was sent). It adds a negative spend row and a
  ``dp.refunded`` entry: the spends of an agreement still sum to what its budget says.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.errors import Conflict, NotFound, UsageError
from dataspace.ledger import log
from dataspace.metering.usage import MAX_FIGURE_CHARS  # what a usage record holds
from dataspace.privacy.errors import BudgetExhausted
from dataspace.store.db import Store
from dataspace.store.models_privacy import DpBudget, DpSpend

__all__ = [
    "REFUNDED_ACTION",
    "SPENT_ACTION",
    "Budget",
    "Reservation",
    "Spend",
    "check_affordable",
    "ensure_budget",
    "get_budget",
    "list_spends",
    "refund_in",
    "reserve",
    "to_decimal",
]

_PRECISION = 60
SPENT_ACTION = "dp.spent"  # the ledger entry of every committed spend
REFUNDED_ACTION = "dp.refunded"  # a job's spend given back (nothing it paid for was released)


def to_decimal(value: float | int | str | Decimal, what: str = "amount") -> Decimal:
    """The exact decimal a caller meant: ``0.1`` is ``Decimal('0.1')``, not its binary value."""
    if isinstance(value, bool):
        raise UsageError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{what} must be finite, got {value!r}")
    try:
        out = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        raise UsageError(f"{what} must be a number, got {value!r}") from None
    if not out.is_finite() or out < 0:
        raise UsageError(f"{what} must be a finite number >= 0, got {value!r}")
    if len(format(out, "f")) > MAX_FIGURE_CHARS:
        # Every spend is metered and summed exactly; 1e-120 would overflow those sums.
        raise UsageError(f"{what} {value!r} has more than {MAX_FIGURE_CHARS} characters written "
                         "out", hint="round it: below 1e-30 it means nothing")
    return out


@dataclass(frozen=True)
class Budget:
    agreement_id: str
    epsilon_total: Decimal
    delta_total: Decimal
    epsilon_spent: Decimal
    delta_spent: Decimal
    updated_at: datetime

    @property
    def epsilon_left(self) -> Decimal:
        return self.epsilon_total - self.epsilon_spent

    @property
    def delta_left(self) -> Decimal:
        return self.delta_total - self.delta_spent


@dataclass(frozen=True)
class Reservation:
    """A committed spend: the budget was charged before anything is released."""

    id: str
    agreement_id: str
    job_id: str
    epsilon: Decimal
    delta: Decimal
    epsilon_left: Decimal
    delta_left: Decimal


@dataclass(frozen=True)
class Spend:
    id: str
    agreement_id: str
    job_id: str
    epsilon: Decimal
    delta: Decimal
    at: datetime


def _budget(row: DpBudget) -> Budget:
    return Budget(
        agreement_id=row.agreement_id,
        epsilon_total=Decimal(row.epsilon_total),
        delta_total=Decimal(row.delta_total),
        epsilon_spent=Decimal(row.epsilon_spent),
        delta_spent=Decimal(row.delta_spent),
        updated_at=row.updated_at,
    )


def ensure_budget(
    store: Store,
    agreement_id: str,
    epsilon_total: float | str | Decimal,
    delta_total: float | str | Decimal = 0,
) -> Budget:
    """Create the agreement's budget, or return it if it exists with the same totals."""
    eps = to_decimal(epsilon_total, "epsilon_total")
    delta = to_decimal(delta_total, "delta_total")
    if delta >= 1:
        raise UsageError(f"delta_total must be below 1, got {delta_total!r}")
    for _attempt in range(2):
        try:
            with store.write() as session:
                row = session.get(DpBudget, agreement_id, with_for_update=True)
                if row is None:
                    row = DpBudget(
                        agreement_id=agreement_id,
                        epsilon_total=str(eps),
                        delta_total=str(delta),
                        epsilon_spent="0",
                        delta_spent="0",
                        updated_at=datetime.now(UTC),
                    )
                    session.add(row)
                    session.flush()
                budget = _budget(row)
        except Conflict:
            continue  # another process created it concurrently: read theirs
        if budget.epsilon_total != eps or budget.delta_total != delta:
            raise Conflict(
                f"agreement {agreement_id} already has a DP budget of ε={budget.epsilon_total}, "
                f"δ={budget.delta_total}",
                hint="an agreement's budget is fixed when it is signed",
            )
        return budget
    raise Conflict(f"could not create the DP budget of {agreement_id}")  # pragma: no cover


def get_budget(store: Store, agreement_id: str) -> Budget:
    with store.read() as session:
        row = session.get(DpBudget, agreement_id)
        if row is None:
            raise NotFound(
                f"agreement {agreement_id} has no DP budget",
                hint="DP queries need an agreement whose policy grants an epsilon budget",
            )
        return _budget(row)


def _refuse_overspend(budget: Budget, eps: Decimal, delta: Decimal) -> None:
    if budget.epsilon_spent + eps > budget.epsilon_total or (
        budget.delta_spent + delta > budget.delta_total
    ):
        raise BudgetExhausted(
            f"the query needs ε={eps}, δ={delta} but agreement {budget.agreement_id} has "
            f"ε={budget.epsilon_left}, δ={budget.delta_left} left",
            hint="ask fewer or cheaper queries, or negotiate a new agreement",
            epsilon_left=str(budget.epsilon_left),
            delta_left=str(budget.delta_left),
        )


def check_affordable(
    store: Store,
    agreement_id: str,
    epsilon: float | str | Decimal,
    delta: float | str | Decimal,
) -> None:
    """Raise what :func:`reserve` would for a spend the budget cannot cover; charge nothing.

    A cheap read before work starts; only :func:`reserve` decides (another query may spend in
    between).
    """
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        _refuse_overspend(
            get_budget(store, agreement_id),
            to_decimal(epsilon, "epsilon"),
            to_decimal(delta, "delta"),
        )


def reserve(
    store: Store,
    agreement_id: str,
    epsilon: float | str | Decimal,
    delta: float | str | Decimal,
    job_id: str,
    *,
    actor: str = "node:dp-budget",
) -> Reservation:
    """Charge (ε, δ) to the agreement's budget and record the spend, atomically.

    The spend row and its ``dp.spent`` ledger entry (by ``actor``) commit with the charge.
    Raises :class:`BudgetExhausted` (nothing charged) if either would exceed its total.
    """
    eps = to_decimal(epsilon, "epsilon")
    delta_ = to_decimal(delta, "delta")
    if eps <= 0:
        raise UsageError(f"a DP query must spend some epsilon, got {epsilon!r}")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        with store.write() as session:
            stmt = select(DpBudget).where(DpBudget.agreement_id == agreement_id).with_for_update()
            row = session.execute(stmt).scalar_one_or_none()
            if row is None:
                raise NotFound(
                    f"agreement {agreement_id} has no DP budget",
                    hint="DP queries need an agreement whose policy grants an epsilon budget",
                )
            budget = _budget(row)
            _refuse_overspend(budget, eps, delta_)
            spend_id, new_eps, new_delta = _book(
                session, row, budget, job_id, eps, delta_, action=SPENT_ACTION, actor=actor)
        return Reservation(
            id=spend_id,
            agreement_id=agreement_id,
            job_id=job_id,
            epsilon=eps,
            delta=delta_,
            epsilon_left=budget.epsilon_total - new_eps,
            delta_left=budget.delta_total - new_delta,
        )


def _book(
    session: Session, row: DpBudget, budget: Budget, job_id: str, eps: Decimal,
    delta: Decimal, *, action: str, actor: str, **extra: str,
) -> tuple[str, Decimal, Decimal]:
    """Move the budget's spent figures by (``eps``, ``delta``) — a spend, or a refund's
    negative amounts — with its spend row and its ``action`` entry (the amounts moved, what is
    left, ``extra``); the spend id and the new spent figures. The caller holds the row's lock
    and the exact decimal context."""
    new_eps, new_delta = budget.epsilon_spent + eps, budget.delta_spent + delta
    now = datetime.now(UTC)
    row.epsilon_spent, row.delta_spent, row.updated_at = str(new_eps), str(new_delta), now
    spend_id = secrets.token_hex(16)
    session.add(DpSpend(id=spend_id, agreement_id=budget.agreement_id, job_id=job_id,
                        epsilon=str(eps), delta=str(delta), at=now))
    log.append(
        session,
        actor=actor,
        action=action,
        payload={
            "spend_id": spend_id,
            "agreement_id": budget.agreement_id,
            "job_id": job_id,
            "epsilon": str(abs(eps)),
            "delta": str(abs(delta)),
            "epsilon_left": str(budget.epsilon_total - new_eps),
            "delta_left": str(budget.delta_total - new_delta),
            **extra,
        },
        time=now,
    )
    return spend_id, new_eps, new_delta


def refund_in(
    session: Session,
    agreement_id: str,
    job_id: str,
    reason: str,
    *,
    actor: str = "node:dp-budget",
) -> tuple[Decimal, Decimal] | None:
    """Give back what ``job_id`` spent of the agreement's budget, in ``session`` (the caller's
    transaction, which must decide that nothing the spend paid for was released): a negative
    spend row, the budget's spent figures lowered, a ``dp.refunded`` entry with ``reason``.
    Returns the (ε, δ) given back; None when the job has nothing left to give back (it spent
    nothing, or was refunded already), so a second call changes nothing."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        stmt = select(DpBudget).where(DpBudget.agreement_id == agreement_id).with_for_update()
        row = session.execute(stmt).scalar_one_or_none()
        if row is None:
            return None
        spends = session.scalars(
            select(DpSpend).where(DpSpend.agreement_id == agreement_id, DpSpend.job_id == job_id)
        ).all()
        eps = sum((Decimal(s.epsilon) for s in spends), Decimal(0))
        delta = sum((Decimal(s.delta) for s in spends), Decimal(0))
        if eps <= 0 and delta <= 0:
            return None
        _book(session, row, _budget(row), job_id, -eps, -delta, action=REFUNDED_ACTION,
              actor=actor, reason=reason[:500])
        return eps, delta


def list_spends(store: Store, agreement_id: str) -> list[Spend]:
    with store.read() as session:
        rows = session.execute(
            select(DpSpend).where(DpSpend.agreement_id == agreement_id).order_by(DpSpend.at)
        ).scalars()
        return [
            Spend(r.id, r.agreement_id, r.job_id, Decimal(r.epsilon), Decimal(r.delta), r.at)
            for r in rows
        ]
