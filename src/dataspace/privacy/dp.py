"""DP mechanisms: noise from OpenDP's samplers, scales found by OpenDP, cached per query shape.

A :class:`Mechanism` is a small strategy chosen by name (:func:`mechanism`):

* ``laplace`` — pure ε-DP. Counts get OpenDP's discrete Laplace over ``i64`` vectors, sums its
  continuous Laplace over ``f64`` vectors (both ``opendp.measurements.make_laplace``).
* ``gaussian`` — (ε, δ)-DP. OpenDP's (discrete) Gaussian under zCDP, converted to (ε, δ)
  with ``make_zCDP_to_approxDP`` and ``make_fix_delta``.

The scale is the smallest one OpenDP's own privacy map accepts for (sensitivity, ε[, δ]),
found with ``opendp.mod.binary_search_param``. That search and the construction of the
measurement are cached in-process (LRU, :func:`build_noise`) keyed by the query shape, so a
repeated query costs micro-seconds. The module enables OpenDP's ``contrib`` feature: the
measurements used here are contributed (not yet formally vetted) components of OpenDP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np
from opendp import combinators, measurements
from opendp.domains import atom_domain, vector_domain
from opendp.metrics import l1_distance, l2_distance
from opendp.mod import binary_search_param, enable_features

from dataspace.errors import UsageError

enable_features("contrib")

__all__ = [
    "MECHANISMS",
    "DpSpec",
    "Gaussian",
    "Laplace",
    "Mechanism",
    "Noise",
    "build_noise",
    "mechanism",
]

#: Probability that the true value lies outside the stated error bound.
ERROR_ALPHA = 0.05
#: Below this ε the noise (scale ≥ 10^6 times the sensitivity) carries nothing of the data,
#: and the mechanisms' scale search overflows.
MIN_EPSILON = 1e-6
_DISCRETE_SUM_UP_TO = 10_000.0  # discrete Gaussian scales whose quantile is summed exactly


def check_epsilon(epsilon: object) -> None:
    """Refuse an ε no mechanism can use: not a finite number, or below :data:`MIN_EPSILON`."""
    if (isinstance(epsilon, bool) or not isinstance(epsilon, int | float)
            or not math.isfinite(epsilon) or epsilon < MIN_EPSILON):
        raise UsageError(
            f"epsilon must be a finite number of at least {MIN_EPSILON:g}, got {epsilon!r}",
            hint="ε is the privacy loss a release may cost: typically 0.1 to 10",
        )


def check_delta(delta: object) -> None:
    """Refuse a δ that is not a probability below 1."""
    if not (isinstance(delta, int | float) and not isinstance(delta, bool) and 0 <= delta < 1):
        raise UsageError(f"delta must be in [0, 1), got {delta!r}",
                         hint="δ is a probability of failure: 0 for pure ε-DP, else below 1/rows")


@dataclass(frozen=True)
class DpSpec:
    """What the offer declares for DP queries on one dataset.

    ``bounds`` maps a numeric column to its clamping range (lower, upper); SUM and AVG are
    allowed only over such columns. ``max_contributions`` is the most rows one individual
    contributes to the table (the provider's assertion about the data). ``epsilon`` and
    ``delta`` are spent by each query.
    """

    epsilon: float
    delta: float = 0.0
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_contributions: int = 1
    mechanism: str = "laplace"

    def __post_init__(self) -> None:
        if isinstance(self.epsilon, bool) or isinstance(self.delta, bool):
            raise UsageError("epsilon and delta must be numbers, not true/false")
        check_epsilon(self.epsilon)
        check_delta(self.delta)
        if (
            not isinstance(self.max_contributions, int)
            or isinstance(self.max_contributions, bool)
            or self.max_contributions < 1
        ):
            raise UsageError(
                f"max_contributions must be a positive integer, got {self.max_contributions!r}"
            )
        mechanism(self.mechanism)  # raises on an unknown name
        clean: dict[str, tuple[float, float]] = {}
        for column, pair in self.bounds.items():
            lower, upper = (float(v) for v in pair)
            if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
                raise UsageError(
                    f"bounds of column '{column}' must be finite with lower <= upper, got {pair!r}"
                )
            if max(abs(lower), abs(upper)) >= 1e15:
                raise UsageError(f"bounds of column '{column}' must lie within ±1e15")
            clean[column.lower()] = (lower, upper)
        object.__setattr__(self, "bounds", clean)

    def bounds_of(self, column: str) -> tuple[float, float] | None:
        return self.bounds.get(column.lower())


@dataclass(frozen=True)
class Noise:
    """A built measurement for one released vector, and what it means for the consumer."""

    mechanism: str
    integer: bool
    sensitivity: float
    epsilon: float
    delta: float
    scale: float
    error95: float  # |noise| <= error95 with probability >= 95%
    measurement: Any = field(repr=False, compare=False)

    def apply(self, values: Sequence[float] | Sequence[int]) -> list[float] | list[int]:
        """Noisy copy of ``values`` (one entry per group) from OpenDP's sampler."""
        if not values:
            return []
        if self.integer:
            return list(self.measurement([int(v) for v in values]))
        return list(self.measurement([float(v) for v in values]))


class Mechanism(Protocol):
    """A noise strategy: builds measurements and knows its tails."""

    name: str
    uses_delta: bool

    def make(self, integer: bool, scale: float) -> Any:
        """The OpenDP measurement over a vector of counts (integer) or sums."""
        ...

    def search(self, integer: bool, sensitivity: float, epsilon: float, delta: float) -> float:
        """The smallest scale whose privacy map accepts (sensitivity -> ε[, δ])."""
        ...

    def error95(self, scale: float, integer: bool) -> float:
        """|noise| <= this with probability >= 95% (for integer noise: the least integer)."""
        ...

    def tail(self, scale: float, excess_probability: float) -> float:
        """t with P(noise >= t) <= excess_probability (one-sided)."""
        ...


def _vector(integer: bool) -> tuple[Any, Any]:
    atom = atom_domain(T="i64") if integer else atom_domain(T=float, nan=False)
    return vector_domain(atom), atom


class Laplace:
    name = "laplace"
    uses_delta = False

    def make(self, integer: bool, scale: float) -> Any:
        domain, _ = _vector(integer)
        metric = l1_distance(T="i64" if integer else float)
        return measurements.make_laplace(domain, metric, scale=scale)

    def search(self, integer: bool, sensitivity: float, epsilon: float, delta: float) -> float:
        d_in: int | float = int(sensitivity) if integer else float(sensitivity)
        return float(
            binary_search_param(lambda s: self.make(integer, s), d_in=d_in, d_out=epsilon)
        )

    def error95(self, scale: float, integer: bool) -> float:
        if not integer:
            return scale * math.log(1 / ERROR_ALPHA)
        # Discrete Laplace, p = e^(-1/b): P(|X| > t) = 2 p^(t+1) / (1 + p) for whole t >= 0;
        # the continuous b·ln 20 would cover only ~93% of integer draws at small scales.
        p = math.exp(-1.0 / scale)
        if p <= ERROR_ALPHA / 2:  # P(X != 0) = 2p / (1 + p) is already below 5% (p may be 0)
            return 0.0
        return float(max(0, math.ceil(math.log(ERROR_ALPHA * (1 + p) / 2) / math.log(p)) - 1))

    def tail(self, scale: float, excess_probability: float) -> float:
        # Discrete and continuous Laplace: P(X >= t) <= exp(-t / b).
        return scale * math.log(1 / excess_probability)


class Gaussian:
    name = "gaussian"
    uses_delta = True

    def make(self, integer: bool, scale: float) -> Any:
        domain, _ = _vector(integer)
        metric = l2_distance(T="i64" if integer else float)
        return measurements.make_gaussian(domain, metric, scale=scale)

    def _approx(self, integer: bool, scale: float, delta: float) -> Any:
        exact = combinators.make_zCDP_to_approxDP(self.make(integer, scale))
        return combinators.make_fix_delta(exact, delta)

    def search(self, integer: bool, sensitivity: float, epsilon: float, delta: float) -> float:
        if delta <= 0:
            raise UsageError(
                "the gaussian mechanism needs delta > 0", hint="set delta or use laplace"
            )
        d_in: int | float = int(sensitivity) if integer else float(sensitivity)
        return float(
            binary_search_param(
                lambda s: self._approx(integer, s, delta), d_in=d_in, d_out=(epsilon, delta)
            )
        )

    def error95(self, scale: float, integer: bool) -> float:
        if not integer:
            return NormalDist().inv_cdf(1 - ERROR_ALPHA / 2) * scale
        if scale > _DISCRETE_SUM_UP_TO:
            # the lattice shifts the quantile by less than one unit at this scale
            return float(math.ceil(NormalDist().inv_cdf(1 - ERROR_ALPHA / 2) * scale) + 1)
        # discrete Gaussian, P(X = k) ∝ exp(-k² / 2σ²): the least whole t with P(|X| <= t) >= 95%
        k = np.arange(0, math.ceil(40 * scale) + 2, dtype=np.float64)
        mass = np.exp(-(k**2) / (2 * scale**2))
        weight = np.where(k == 0, 1.0, 2.0) * mass
        covered = np.cumsum(weight) / weight.sum()
        return float(np.searchsorted(covered, 1 - ERROR_ALPHA))

    def tail(self, scale: float, excess_probability: float) -> float:
        # (Discrete) Gaussian is sub-Gaussian with variance proxy sigma^2:
        # P(X >= t) <= exp(-t^2 / (2 sigma^2)); the normal quantile is never larger.
        exact = NormalDist(0.0, scale).inv_cdf(1 - excess_probability)
        return max(exact, scale * math.sqrt(2 * math.log(1 / excess_probability)))


MECHANISMS: dict[str, Mechanism] = {"laplace": Laplace(), "gaussian": Gaussian()}


def mechanism(name: str) -> Mechanism:
    try:
        return MECHANISMS[name]
    except KeyError:
        raise UsageError(
            f"unknown DP mechanism {name!r}", hint="use " + " | ".join(sorted(MECHANISMS))
        ) from None


@lru_cache(maxsize=512)
def build_noise(
    name: str, integer: bool, sensitivity: float, epsilon: float, delta: float = 0.0
) -> Noise:
    """The measurement for one released vector; cached per (mechanism, kind, Δ, ε, δ)."""
    mech = mechanism(name)
    scale = mech.search(integer, sensitivity, epsilon, delta)
    measurement = mech.make(integer, scale)
    return Noise(
        mechanism=name,
        integer=integer,
        sensitivity=sensitivity,
        epsilon=epsilon,
        delta=delta if mech.uses_delta else 0.0,
        scale=scale,
        error95=mech.error95(scale, integer),
        measurement=measurement,
    )


def group_threshold(
    name: str, count_noise: Noise, max_contributions: int, delta: float, min_group_size: int
) -> float:
    """Least noisy count at which a group is released (stability-based histogram).

    One individual can create at most ``m = max_contributions`` groups, of true count at most
    m in total. Each such group passes the threshold τ with probability at most
    P(noise >= τ - m); over m groups the chance that any does is <= δ when
    τ = m + tail(δ / m). The offer's minimum group size raises τ further.
    """
    if delta <= 0:
        raise UsageError("releasing data-dependent groups needs delta > 0")
    m = max_contributions
    tau = m + mechanism(name).tail(count_noise.scale, delta / m)
    return float(max(math.ceil(tau), min_group_size))
