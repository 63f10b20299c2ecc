"""Privacy-enhancing computation: differential privacy for governed SQL and its budgets.

See docs/privacy.md. Public API:

* :class:`DpSpec` — what the offer declares (ε and δ per query, clamping bounds, max
  contributions, mechanism name);
* :func:`run_dp_query` → :class:`DpResult` — the governed DP query;
* :func:`ensure_budget`, :func:`get_budget`, :func:`reserve`, :func:`refund_in`,
  :func:`list_spends` — the per-agreement budget in the store; :class:`BudgetExhausted`
  when it would be overspent.
"""

from dataspace.privacy.budget import (
    Budget,
    Reservation,
    Spend,
    ensure_budget,
    get_budget,
    list_spends,
    refund_in,
    reserve,
)
from dataspace.privacy.dp import MECHANISMS, DpSpec, Mechanism, Noise, build_noise, mechanism
from dataspace.privacy.dp_query import DpResult, dp_cost, run_dp_query
from dataspace.privacy.errors import BudgetExhausted
from dataspace.privacy.rewrite import DpPlan, plan_dp

__all__ = [
    "MECHANISMS",
    "Budget",
    "BudgetExhausted",
    "DpPlan",
    "DpResult",
    "DpSpec",
    "Mechanism",
    "Noise",
    "Reservation",
    "Spend",
    "build_noise",
    "dp_cost",
    "ensure_budget",
    "get_budget",
    "list_spends",
    "mechanism",
    "plan_dp",
    "refund_in",
    "reserve",
    "run_dp_query",
]
