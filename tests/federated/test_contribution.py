"""Leave-one-out and Shapley values over providers."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from dataspace.errors import UsageError
from dataspace.federated.contribution import (
    leave_one_out,
    shapley,
    shapley_exact,
    shapley_monte_carlo,
)

WEIGHTS: dict[Hashable, float] = {
    "bank": 0.30,
    "tax": 0.20,
    "grid": 0.05,
    "telco": 0.10,
    "court": 0.02,
    "post": 0.0,
}


def additive_with_synergy(s: frozenset[Hashable]) -> float:
    bonus = 0.04 if {"tax", "grid"} <= s else 0.0
    return 0.5 + float(sum(WEIGHTS[p] for p in s)) + bonus


def test_exact_shapley_is_efficient() -> None:
    result = shapley_exact(["bank", "tax", "grid", "telco"], additive_with_synergy)
    assert abs(result.efficiency_gap) < 1e-12
    assert result.evaluations == 16
    assert result.values["tax"] == pytest.approx(0.22)  # synergy split evenly
    assert result.values["bank"] == pytest.approx(0.30)


def test_symmetric_players_get_equal_values() -> None:
    def v(s: frozenset[Hashable]) -> float:
        return float(len(s & {"a", "b"}) ** 2) + (0.3 if "c" in s else 0.0)

    result = shapley_exact(["a", "b", "c"], v)
    assert result.values["a"] == pytest.approx(result.values["b"])


def test_null_player_gets_zero() -> None:
    result = shapley_exact(["bank", "tax", "post"], additive_with_synergy)
    assert result.values["post"] == pytest.approx(0.0, abs=1e-12)
    assert leave_one_out(["bank", "tax", "post"], additive_with_synergy).values["post"] == 0.0


def test_leave_one_out_misses_shared_credit() -> None:
    def redundant(s: frozenset[Hashable]) -> float:  # either source alone is enough
        return 1.0 if s & {"a", "b"} else 0.0

    assert leave_one_out(["a", "b"], redundant).values == {"a": 0.0, "b": 0.0}
    assert shapley_exact(["a", "b"], redundant).values["a"] == pytest.approx(0.5)


def test_monte_carlo_beyond_four_providers_is_close_and_efficient() -> None:
    players = list(WEIGHTS)
    result = shapley(players, additive_with_synergy, tolerance=0.002, seed=1)
    exact = shapley_exact(players, additive_with_synergy)
    assert result.method == "monte-carlo" and result.converged
    assert abs(result.efficiency_gap) < 1e-9
    for p in players:
        assert abs(result.values[p] - exact.values[p]) <= 4 * result.standard_errors[p] + 1e-9
    assert result.values["post"] == pytest.approx(0.0, abs=1e-12)


def test_monte_carlo_stops_at_the_cap_without_converging() -> None:
    result = shapley_monte_carlo(
        list(WEIGHTS),
        additive_with_synergy,
        tolerance=1e-9,
        min_permutations=5,
        max_permutations=12,
    )
    assert result.permutations == 12 and not result.converged


def test_revenue_shares_sum_to_one() -> None:
    shares = shapley_exact(["bank", "tax", "grid"], additive_with_synergy).shares()
    assert sum(shares.values()) == pytest.approx(1.0)


def test_monte_carlo_claims_no_convergence_from_a_contribution_it_never_drew() -> None:
    """30 providers, one worth 1 on its own (φ = 1/30): in a third of runs (seeds 0, 1, 10,
    ...) it was never first in 30 permutations, so its samples were all 0 — φ = 0 ± 0,
    "converged"."""
    players = [f"p{i:02d}" for i in range(30)]

    def alone(s: frozenset[Hashable]) -> float:
        return 1.0 if s == frozenset({"p00"}) else 0.0

    for seed in (0, 1, 2, 10):
        result = shapley_monte_carlo(players, alone, seed=seed, tolerance=0.01)
        se = result.standard_errors["p00"]
        assert se >= 1.5 / result.permutations > 0
        if result.converged:
            assert abs(result.values["p00"] - 1 / 30) <= 4 * se
    flat = shapley_monte_carlo(players, lambda s: 0.25, seed=0, value_range=0)
    assert flat.converged and flat.permutations == 30
    assert set(flat.standard_errors.values()) == {0.0}
    with pytest.raises(UsageError, match="value_range"):
        shapley_monte_carlo(players, alone, value_range=float("nan"))
