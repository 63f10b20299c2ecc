"""Horizontal federated learning: FedAvg (McMahan et al. 2017) over secure aggregation,
optionally DP-FedAvg (McMahan et al. 2018) with OpenDP's Gaussian noise and accounting.

Clients hold different rows with the same schema. Each round every client starts from the
global parameters, trains ``local_epochs`` of mini-batch SGD on its own rows and submits its
update ``Δ_k``; the updates are summed by :mod:`dataspace.privacy.secagg` (pairwise masking by
default), so the coordinator sees only the sum, never one client's update.

* plain FedAvg: client k submits ``(n_k / N) Δ_k`` (sizes are announced; participation is
  public), clipped coordinate-wise to ``update_bound`` (the agreed secagg bound; clipping is
  counted and should stay 0); the new model is ``θ + Σ``.
* DP-FedAvg (client-level DP): each ``Δ_k`` is clipped to L2 norm ``C``; the coordinator
  adds Gaussian noise of scale ``σ = z C`` to the unmasked sum with OpenDP's sampler and
  steps by ``(Σ + noise) / K``. Neighbouring = one client's data replaced (as in secagg's own
  noise wrapper), so the L2 sensitivity of the sum is ``2C``. Accounting: OpenDP's privacy
  map of the T-fold composition of the Gaussian measurement under zCDP, converted to
  (ε, δ). No subsampling amplification is claimed (every client joins every round).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from opendp import combinators, measurements
from opendp.domains import atom_domain, vector_domain
from opendp.metrics import l2_distance
from opendp.mod import enable_features

from dataspace.errors import UsageError
from dataspace.federated.hfl_models import Model
from dataspace.federated.metrics import auc
from dataspace.privacy.secagg import aggregate_locally

enable_features("contrib")

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Client:
    name: str
    x: Floats
    y: Floats
    x_test: Floats
    y_test: Floats


@dataclass(frozen=True)
class DpFedAvg:
    """Clip norm ``C``, noise multiplier ``z`` (σ = zC) and the δ at which ε is stated."""

    clip: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5


@dataclass(frozen=True)
class FedAvgConfig:
    rounds: int = 20
    local_epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 0.1
    l2: float = 1e-3
    update_bound: float = 8.0
    secagg: str = "pairwise-masking"
    dp: DpFedAvg | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            raise UsageError("rounds, local_epochs and batch_size must be at least 1")


@dataclass(frozen=True)
class Evaluation:
    """Test metrics per client (on its own held-out rows) and over all clients' test rows."""

    per_client: dict[str, dict[str, float]]
    overall: dict[str, float]

    def mean(self, metric: str) -> float:
        return float(np.mean([m[metric] for m in self.per_client.values()]))


@dataclass
class FedAvgResult:
    theta: Floats
    model: Model
    evaluation: Evaluation
    loss_per_round: list[float]
    epsilon: float | None = None
    delta: float | None = None
    clipped: int = 0
    rounds: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def local_train(
    model: Model,
    theta: Floats,
    x: Floats,
    y: Floats,
    config: FedAvgConfig,
    rng: np.random.Generator,
    epochs: int | None = None,
) -> Floats:
    """``epochs`` of mini-batch SGD on one client's rows, from ``theta``."""
    theta = theta.copy()
    n = y.shape[0]
    for _ in range(config.local_epochs if epochs is None else epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch_size):
            rows = order[start : start + config.batch_size]
            step = model.grad(theta, x[rows], y[rows]) + config.l2 * theta
            theta -= config.learning_rate * step
    return theta


def evaluate(model: Model, theta: Floats, clients: Sequence[Client]) -> Evaluation:
    def metrics(x: Floats, y: Floats) -> dict[str, float]:
        out = {"loss": model.loss(theta, x, y)}
        if model.kind != "linear" and 0 < y.sum() < y.size:
            out["auc"] = auc(model.output(theta, x), y)
        return out

    per = {c.name: metrics(c.x_test, c.y_test) for c in clients}
    overall = metrics(
        np.vstack([c.x_test for c in clients]), np.concatenate([c.y_test for c in clients])
    )
    return Evaluation(per, overall)


@lru_cache(maxsize=64)
def _gaussian(scale: float) -> Any:
    domain = vector_domain(atom_domain(T=float, nan=False))
    return measurements.make_gaussian(domain, l2_distance(T=float), scale=scale)


@dataclass(frozen=True)
class NoiseShare:
    """One provider's share of DP-FedAvg's noise across nodes: N(0, σ²/(P − 1)) (σ = zC) on its
    own clipped update before it is masked. Every provider learns θ each round and can take its
    own share out of the step, so the shares are sized for the other P − 1 alone to carry
    N(0, σ²) -- the noise :func:`dp_epsilon` accounts for -- against any one provider; the
    coordinator, the consumer's node, sees all P shares (σ²·P/(P − 1), more than needed) and
    never an un-noised sum. Semi-honest and non-colluding, as secure aggregation itself: a
    coordinator that colludes with providers can take their shares out."""

    clip: float
    scale: float

    @property
    def encoded_bound(self) -> float:
        """Per-value bound of a noised update (clipped to it: post-processing; a value passes
        C + 8 share scales with probability about 1e-15)."""
        return self.clip + 8.0 * self.scale

    def apply(self, values: Floats) -> Floats:
        noisy = np.asarray(_gaussian(self.scale)([float(v) for v in values]), dtype=np.float64)
        wide = self.encoded_bound
        return np.asarray(np.clip(noisy, -wide, wide), dtype=np.float64)


def noise_share(dpc: DpFedAvg, providers: int) -> NoiseShare:
    if providers < 2:
        raise UsageError("noise shares need at least two providers (FedAvg refuses fewer)")
    return NoiseShare(dpc.clip, dpc.noise_multiplier * dpc.clip / math.sqrt(providers - 1))


def dp_epsilon(dpc: DpFedAvg, rounds: int) -> float:
    """ε at ``dpc.delta`` after ``rounds`` rounds: OpenDP's map of the composed measurement."""
    base = _gaussian(dpc.noise_multiplier * dpc.clip)
    composed = combinators.make_composition([base] * rounds)
    approx = combinators.make_fix_delta(combinators.make_zCDP_to_approxDP(composed), dpc.delta)
    eps, _ = approx.map(2.0 * dpc.clip)  # type: ignore[no-untyped-call]
    return float(eps)


def fedavg(
    clients: Sequence[Client], model: Model, config: FedAvgConfig | None = None
) -> FedAvgResult:
    """Train ``model`` over ``clients``; every round's updates pass through secure aggregation."""
    config = config or FedAvgConfig()
    if len(clients) < 2:
        raise UsageError("FedAvg needs at least two clients")
    rng = np.random.default_rng(config.seed)
    theta = model.init(config.seed)
    total = sum(c.y.shape[0] for c in clients)
    curve, clipped = [], 0
    bound = config.dp.clip if config.dp else config.update_bound
    for _ in range(config.rounds):
        updates = []
        for c in clients:
            delta = local_train(model, theta, c.x, c.y, config, rng) - theta
            if config.dp:
                norm = float(np.linalg.norm(delta))
                delta = delta * min(1.0, config.dp.clip / max(norm, 1e-12))
            else:
                delta = delta * (c.y.shape[0] / total)
            over = np.abs(delta) > bound
            clipped += int(over.sum())
            updates.append(np.clip(delta, -bound, bound))
        result = aggregate_locally(updates, bound=bound, strategy=config.secagg, scale_bits=24)
        step = result.sum
        if config.dp:
            noise = _gaussian(config.dp.noise_multiplier * config.dp.clip)
            step = np.asarray(noise([float(v) for v in step]), dtype=np.float64) / len(clients)
        theta = theta + step
        curve.append(float(np.mean([model.loss(theta, c.x, c.y) for c in clients])))
    eps = dp_epsilon(config.dp, config.rounds) if config.dp else None
    return FedAvgResult(
        theta=theta,
        model=model,
        evaluation=evaluate(model, theta, clients),
        loss_per_round=curve,
        epsilon=eps,
        delta=config.dp.delta if config.dp else None,
        clipped=clipped if not config.dp else 0,
        rounds=config.rounds,
    )


def local_only(
    clients: Sequence[Client], model: Model, config: FedAvgConfig | None = None
) -> dict[str, Evaluation]:
    """Each client alone, with the same total epochs; evaluated on every client's test rows."""
    config = config or FedAvgConfig()
    rng = np.random.default_rng(config.seed)
    out = {}
    for c in clients:
        theta = local_train(
            model,
            model.init(config.seed),
            c.x,
            c.y,
            config,
            rng,
            epochs=config.rounds * config.local_epochs,
        )
        out[c.name] = evaluate(model, theta, clients)
    return out


def local_mean(locals_: dict[str, Evaluation], metric: str) -> float:
    """Mean over clients of each local model's metric on its *own* client's test rows."""
    return float(np.mean([ev.per_client[name][metric] for name, ev in locals_.items()]))


__all__ = [
    "Client",
    "DpFedAvg",
    "Evaluation",
    "FedAvgConfig",
    "FedAvgResult",
    "Model",
    "dp_epsilon",
    "evaluate",
    "fedavg",
    "local_mean",
    "local_only",
    "local_train",
]
