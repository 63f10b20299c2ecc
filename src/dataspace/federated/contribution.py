"""Each provider's contribution to a model metric: leave-one-out and Shapley values.

``value(coalition) -> float`` retrains or re-evaluates the model on the providers in
``coalition`` (a frozenset) and returns the metric; ``value(frozenset())`` is the baseline
(e.g. the label party alone, or a constant predictor). Values are cached per coalition.

* leave-one-out: ``LOO_i = v(N) - v(N \\ {i})``.
* Shapley: ``φ_i = Σ_{S ⊆ N\\{i}} |S|!(n-|S|-1)!/n! (v(S ∪ {i}) - v(S))`` — exact over all
  2^n coalitions up to ``exact_limit`` (4) providers; beyond, Monte Carlo permutation
  sampling (Castro et al. 2009): each permutation gives every provider one marginal
  contribution; ``φ̂_i`` is their mean, its standard error ``s_i / √m``. Stopping rule: after
  ``min_permutations``, stop as soon as every standard error is ≤ ``tolerance``, or at
  ``max_permutations`` (then ``converged`` is False). Each permutation's marginals sum to
  ``v(N) - v(∅)``, so the estimate keeps efficiency exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from dataspace.errors import UsageError

Value = Callable[[frozenset[Hashable]], float]


@dataclass(frozen=True)
class Contribution:
    values: dict[Hashable, float]
    method: str  # "exact" | "monte-carlo" | "leave-one-out"
    v_all: float
    v_empty: float
    standard_errors: dict[Hashable, float]
    evaluations: int
    permutations: int = 0
    converged: bool = True

    @property
    def efficiency_gap(self) -> float:
        return float(sum(self.values.values()) - (self.v_all - self.v_empty))

    def shares(self) -> dict[Hashable, float]:
        """Revenue shares: positive contributions normalised to 1 (equal if none positive)."""
        pos = {k: max(v, 0.0) for k, v in self.values.items()}
        total = sum(pos.values())
        if total <= 0:
            return {k: 1.0 / len(pos) for k in pos}
        return {k: v / total for k, v in pos.items()}


class _Cached:
    def __init__(self, value: Value) -> None:
        self.value = value
        self.cache: dict[frozenset[Hashable], float] = {}

    def __call__(self, s: frozenset[Hashable]) -> float:
        if s not in self.cache:
            self.cache[s] = float(self.value(s))
        return self.cache[s]


def _players(players: Sequence[Hashable]) -> list[Hashable]:
    out = list(players)
    if not out or len(set(out)) != len(out):
        raise UsageError("contribution needs at least one provider, each named once")
    return out


def leave_one_out(players: Sequence[Hashable], value: Value) -> Contribution:
    ps = _players(players)
    v = _Cached(value)
    full = frozenset(ps)
    vals = {p: v(full) - v(full - {p}) for p in ps}
    return Contribution(
        vals, "leave-one-out", v(full), v(frozenset()), dict.fromkeys(ps, 0.0), len(v.cache)
    )


def shapley_exact(players: Sequence[Hashable], value: Value) -> Contribution:
    ps = _players(players)
    n = len(ps)
    v = _Cached(value)
    vals = dict.fromkeys(ps, 0.0)
    for p in ps:
        others = [q for q in ps if q != p]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in combinations(others, size):
                s = frozenset(subset)
                vals[p] += weight * (v(s | {p}) - v(s))
    return Contribution(
        vals, "exact", v(frozenset(ps)), v(frozenset()), dict.fromkeys(ps, 0.0), len(v.cache)
    )


def shapley_monte_carlo(
    players: Sequence[Hashable],
    value: Value,
    *,
    tolerance: float = 0.005,
    min_permutations: int = 30,
    max_permutations: int = 2000,
    seed: int = 0,
    value_range: float = 1.0,
) -> Contribution:
    """Shapley values from random permutations. ``value_range``: the span the metric can
    take (1 for AUC or accuracy), which bounds what a never-drawn coalition can change."""
    if not (math.isfinite(value_range) and value_range >= 0):
        raise UsageError(f"value_range must be a finite number ≥ 0, not {value_range!r}")
    ps = _players(players)
    v = _Cached(value)
    rng = np.random.default_rng(seed)
    samples: dict[Hashable, list[float]] = {p: [] for p in ps}
    m = 0
    converged = False
    while m < max_permutations:
        coalition: frozenset[Hashable] = frozenset()
        before = v(coalition)
        for idx in rng.permutation(len(ps)):
            p = ps[int(idx)]
            coalition = coalition | {p}
            after = v(coalition)
            samples[p].append(after - before)
            before = after
        m += 1
        if m >= min_permutations:
            floor = _unseen_floor(v, m, value_range)
            worst = max(max(_se(s, m), floor) for s in samples.values())
            if worst <= tolerance:
                converged = True
                break
    floor = _unseen_floor(v, m, value_range)
    vals = {p: float(np.mean(s)) for p, s in samples.items()}
    ses = {p: max(_se(s, m), floor) for p, s in samples.items()}
    return Contribution(
        vals, "monte-carlo", v(frozenset(ps)), v(frozenset()), ses, len(v.cache), m, converged
    )


def _se(samples: list[float], m: int) -> float:
    return float(np.std(samples, ddof=1) / math.sqrt(m)) if m > 1 else math.inf


def _unseen_floor(v: _Cached, m: int, value_range: float) -> float:
    """The least standard error m permutations can claim. A marginal contribution that
    occurs in fewer than about 3 of m permutations is likely never drawn (the rule of three)
    and then leaves a provider's samples all equal, a sample deviation of 0; unseen, it can
    still move the mean by up to the metric's range D times 3/m, which as a 95 % error is a
    standard error of 1.5·D/m. D is the stated range, or the values seen if wider (the
    coalition worth the most may be exactly the one never drawn)."""
    seen = v.cache.values()
    spread = max(seen) - min(seen) if seen else 0.0
    return 1.5 * max(value_range, spread) / m


def shapley(
    players: Sequence[Hashable],
    value: Value,
    *,
    exact_limit: int = 4,
    tolerance: float = 0.005,
    max_permutations: int = 2000,
    seed: int = 0,
    value_range: float = 1.0,
) -> Contribution:
    """Exact for up to ``exact_limit`` providers, Monte Carlo beyond."""
    if len(players) <= exact_limit:
        return shapley_exact(players, value)
    return shapley_monte_carlo(
        players, value, tolerance=tolerance, max_permutations=max_permutations, seed=seed,
        value_range=value_range,
    )


__all__ = [
    "Contribution",
    "leave_one_out",
    "shapley",
    "shapley_exact",
    "shapley_monte_carlo",
]
