"""Optional DP noise on the released aggregate: central (the coordinator's) or local.

:func:`with_noise` wraps any strategy (DESIGN §5.7: DP wraps a strategy rather than forking
it). After unmasking, the coordinator holds the exact sum for a moment, adds noise from
OpenDP's samplers (:func:`dataspace.privacy.dp.build_noise`, cached per shape) and keeps only
the noisy result. This trusts the coordinator with the exact sum. Where the coordinator is the
party the noise protects against (node jobs: it is the consumer), :class:`LocalNoise` has each
party noise its own vector before masking instead.

Neighbouring datasets differ in one party's vector (participation itself is public: the
coordinator and the job record know who took part). Each value lies in [−B, B], B the
encoding's per-party bound (rounded up to the fixed-point grid), so replacing one party's
vector of length m moves the sum by at most 2B per coordinate:

* Laplace: L1 sensitivity 2B·m, pure ε-DP;
* Gaussian: L2 sensitivity 2B·√m, (ε, δ)-DP.

The count is noised too (sensitivity ``max_count``), with ε (and δ) split evenly between
sum and count: even with ``max_count == 1`` a party may contribute 0 or 1, so the count says
something of its data, not only that it took part. ``count=False`` gives the count no budget,
and the caller must not release it. The mean is sum / count, post-processing of both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from dataspace.errors import UsageError
from dataspace.privacy.dp import Noise, build_noise, check_delta, check_epsilon, mechanism
from dataspace.privacy.secagg.base import (
    AggregateResult,
    Aggregator,
    CoordinatorRole,
    PartyRole,
    SessionConfig,
    Signer,
    Verifier,
)

__all__ = [
    "LocalNoise",
    "NoisyAggregator",
    "NoisyCoordinator",
    "OutputNoise",
    "local_noise",
    "with_noise",
]


@dataclass(frozen=True)
class OutputNoise:
    """ε (and δ for Gaussian) spent by one released aggregate, and the mechanism's name."""

    epsilon: float
    delta: float = 0.0
    mechanism: str = "laplace"
    #: noise and release the count too (half of ε), its sensitivity a party's max_count; off:
    #: every ε goes to the sum and the caller must not release the (exact) count
    count: bool = True

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon)
        check_delta(self.delta)
        mech = mechanism(self.mechanism)
        if mech.uses_delta and self.delta <= 0:
            raise UsageError(
                "the gaussian mechanism needs delta > 0", hint="set delta or use laplace"
            )


class NoisyCoordinator(CoordinatorRole):
    """Delegates the rounds to the wrapped coordinator and noises its result."""

    def __init__(self, inner: CoordinatorRole, noise: OutputNoise) -> None:
        self.inner = inner
        self.config = inner.config
        self.noise = noise
        self._noisy: AggregateResult | None = None

    # The state lives in the wrapped role; delegate the whole surface.
    @property
    def finished(self) -> bool:
        return self.inner.finished

    @property
    def round(self) -> str:
        return self.inner.round

    def pending(self) -> frozenset[int]:
        return self.inner.pending()

    def receive(self, data: bytes) -> None:
        self.inner.receive(data)

    def advance(self) -> dict[int, bytes]:
        return self.inner.advance()

    def result(self) -> AggregateResult:
        if self._noisy is None:
            self._noisy = add_noise(self.inner.result(), self.inner.config, self.noise)
        return self._noisy


def add_noise(exact: AggregateResult, config: SessionConfig, spec: OutputNoise) -> AggregateResult:
    """The result with OpenDP noise on the sum (and on the count when it is private)."""
    enc = config.encoding
    bound = enc.max_encoded * enc.resolution
    m = exact.sum.size
    gaussian = mechanism(spec.mechanism).uses_delta
    noisy_count = spec.count
    share = 0.5 if noisy_count else 1.0
    eps, delta = spec.epsilon * share, (spec.delta * share if gaussian else 0.0)
    sensitivity = 2 * bound * (math.sqrt(m) if gaussian else m)
    noise = build_noise(spec.mechanism, False, float(sensitivity), eps, delta)
    sums: npt.NDArray[np.float64] = np.asarray(noise.apply(exact.sum.tolist()), dtype=np.float64)
    count, count_noise = exact.count, None
    if noisy_count:
        count_noise = build_noise(spec.mechanism, True, float(enc.max_count), eps, delta)
        count = float(count_noise.apply([int(exact.count)])[0])
    return replace(exact, sum=sums, count=count, noise=noise, count_noise=count_noise)


class NoisyAggregator(Aggregator):
    """A strategy whose released aggregate carries DP noise."""

    tolerates_dropouts = False

    def __init__(self, inner: Aggregator, noise: OutputNoise) -> None:
        self.inner = inner
        self.noise = noise
        self.name = inner.name  # type: ignore[misc]
        self.tolerates_dropouts = inner.tolerates_dropouts  # type: ignore[misc]

    def party(
        self,
        config: SessionConfig,
        index: int,
        values: Sequence[float] | npt.ArrayLike,
        count: int = 1,
        *,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
    ) -> PartyRole:
        return self.inner.party(config, index, values, count, signer=signer, verifier=verifier)

    def coordinator(
        self, config: SessionConfig, *, verifier: Verifier | None = None
    ) -> NoisyCoordinator:
        return NoisyCoordinator(self.inner.coordinator(config, verifier=verifier), self.noise)


def with_noise(inner: Aggregator, noise: OutputNoise) -> NoisyAggregator:
    return NoisyAggregator(inner, noise)


# --- distributed noise: each party noises its own vector before it is masked ------------------

#: a noised value leaves [−B, B]; it is clipped (post-processing) to B plus this many Laplace
#: scales, which one coordinate passes with probability e^-28 ≈ 7e-13
_TAIL_SCALES = 28.0


@dataclass(frozen=True)
class LocalNoise:
    """Laplace noise a party adds to its own vector (length m, values in [−B, B]) for ε-DP of
    that vector against everyone else — the coordinator and the other parties, colluding or
    not: the party releases only its noised vector, and masking and summing are
    post-processing. Sensitivity 2B·m (L1), as for the central wrapper; the sum of n parties
    carries n such noises (√n times the central noise's spread), the price of not trusting
    the coordinator with the exact sum."""

    bound: float
    length: int
    epsilon: float

    @property
    def noise(self) -> Noise:
        return build_noise("laplace", False, 2.0 * self.bound * self.length, self.epsilon)

    @property
    def encoded_bound(self) -> float:
        """The per-value bound both sides encode a noised vector with."""
        return self.bound + _TAIL_SCALES * self.noise.scale

    def apply(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size != self.length:
            raise UsageError(f"expected {self.length} values, got {x.size}")
        noisy = np.asarray(self.noise.apply(x.tolist()), dtype=np.float64)
        wide = self.encoded_bound
        return np.asarray(np.clip(noisy, -wide, wide), dtype=np.float64)

    def error95(self, parties: int) -> float:
        """|sum of ``parties`` parties' noise| ≤ this with probability 95%, per coordinate.
        Up to 8 parties estimated from 200,000 draws with a fixed seed; beyond, the normal
        quantile with the Cornish–Fisher term for the sum's excess kurtosis 3/n, times its
        spread b·√(2n) (a statement of the error, not the noise itself: that comes from
        OpenDP's sampler)."""
        b = self.noise.scale
        if parties > 8:
            z = 1.959964
            w = z + (3.0 / parties) / 24.0 * (z**3 - 3.0 * z)
            return w * b * math.sqrt(2.0 * parties)
        draws = np.random.default_rng(9162).laplace(0.0, b, (200_000, max(1, parties)))
        return float(np.quantile(np.abs(draws.sum(axis=1)), 0.95))


def local_noise(bound: float, length: int, epsilon: float) -> LocalNoise:
    check_epsilon(epsilon)
    return LocalNoise(float(bound), int(length), float(epsilon))
