"""Pieces the sector generators share: overlap, noisy views, windows, summary of estimates."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dataspace.scenarios.base import STEP_REPS, Estimate
from dataspace.scenarios.stats import bootstrap_ci

ENTITIES = {"small": 300, "default": 2000, "large": 20000}


def rng_for(seed: int, salt: str) -> np.random.Generator:
    return np.random.default_rng([seed, sum(salt.encode())])


def overlap_mask(
    rng: np.random.Generator, n: int, low: float = 0.62, high: float = 0.78
) -> np.ndarray:
    """A random subset of n entities with a share drawn in [low, high] (60–80% overlap)."""
    share = rng.uniform(low, high)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=round(share * n), replace=False)] = True
    return mask


def noisy(rng: np.random.Generator, x: np.ndarray, sd: float) -> np.ndarray:
    return np.asarray(x + rng.normal(0.0, sd, size=np.shape(x)), dtype=float)


def estimates(
    variants: dict[str, Callable[[np.ndarray], float]],
    n: int,
    strata: Sequence[int],
    *,
    seed: int,
    counts: int | None = None,
) -> list[Estimate]:
    """Point value and stratified-bootstrap 95% CI for each variant's statistic."""
    out = []
    idx = np.arange(n)
    for i, (name, stat) in enumerate(variants.items()):
        lo, hi = bootstrap_ci(stat, n, strata=strata, seed=seed + i)
        out.append(Estimate(name, float(stat(idx)), lo, hi, counts or n))
    return out


def step_name(worse: str, better: str) -> str:
    return f"step: {worse} → {better}"


def paired_steps(
    stats: Mapping[str, Callable[[np.ndarray], float]],
    steps: Sequence[tuple[str, str]],
    n: int,
    strata: Sequence[int],
    *,
    seed: int,
    lower_is_better: bool,
    reps: int = STEP_REPS,
) -> list[Estimate]:
    """The improvement of each claimed step (worse variant, better variant), positive = better,
    with a stratified-bootstrap 95% CI of the difference: both statistics on the same resampled
    entities, so what the two variants share (the entities drawn) cancels."""
    sign = -1.0 if lower_is_better else 1.0
    out = []
    for worse, better in steps:

        def gain(
            idx: np.ndarray,
            a: Callable[[np.ndarray], float] = stats[worse],
            b: Callable[[np.ndarray], float] = stats[better],
        ) -> float:
            return sign * (b(idx) - a(idx))

        lo, hi = bootstrap_ci(gain, n, strata=strata, reps=reps, seed=seed)
        out.append(Estimate(step_name(worse, better), gain(np.arange(n)), lo, hi, n))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, iters: int = 30
                 ) -> np.ndarray:
    """Weights (intercept first) of an L2-regularised logistic regression fitted by Newton's
    method: how a party turns its signals into one score, learned from its own labelled rows
    rather than chosen by hand."""
    a = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=float)])
    w = np.zeros(a.shape[1])
    penalty = l2 * np.eye(a.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + penalty @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def ordered(values: Sequence[float], lower_is_better: bool) -> bool:
    """Strictly improving from the first variant to the last."""
    pairs = itertools.pairwise(values)
    return all((b < a) if lower_is_better else (b > a) for a, b in pairs)
