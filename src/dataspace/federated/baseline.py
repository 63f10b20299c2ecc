"""Plaintext logistic regression on the centrally pooled columns — the parity reference.

:func:`train_plain` runs exactly the VFL schedule (same split, batches, order, step sizes,
L2, early stopping on validation Brier) with the exact sigmoid in float64;
:func:`fit_newton` solves the same L2 objective to convergence (the "tuned" optimum).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from dataspace.federated.plan import Plan, Scaler, TrainConfig, make_plan

Floats = npt.NDArray[np.float64]


def sigmoid(z: Floats) -> Floats:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def prepare(blocks: list[Floats], plan: Plan, clip: float) -> tuple[Floats, list[Scaler]]:
    """Each block standardised on its training rows, as each party does alone."""
    scalers = [Scaler.fit(np.asarray(b, dtype=np.float64)[plan.train], clip) for b in blocks]
    pooled = np.hstack([s.transform(b) for s, b in zip(scalers, blocks, strict=True)])
    return pooled, scalers


def train_plain(
    blocks: list[Floats],
    labels: Floats,
    config: TrainConfig,
    link: Callable[[Floats], Floats] = sigmoid,
) -> tuple[Floats, float, list[float]]:
    """Returns (weights, intercept, validation Brier per epoch)."""
    plan = make_plan(labels.shape[0], config)
    # np.take, not x[idx]: several times faster on 2-D arrays here, the same floats
    parts = [
        [np.take(np.asarray(b, dtype=np.float64), idx, axis=0) for b in blocks]
        for idx in (plan.train, plan.validation)
    ]
    scalers = [Scaler.fit(t, config.clip) for t in parts[0]]
    xt, xv = (np.hstack([s.transform(x) for s, x in zip(scalers, p, strict=True)]) for p in parts)
    yt, yv = np.take(labels, plan.train), np.take(labels, plan.validation)
    w = np.zeros(xt.shape[1])
    b = 0.0
    best = (np.inf, w.copy(), b)
    curve: list[float] = []
    stale = 0
    for epoch in range(config.epochs):
        lr = config.step(epoch)
        for j in plan.batch_order(epoch, config.seed):
            rows = plan.batches[j]
            x, y = xt[rows], yt[rows]
            r = link(x @ w + b) - y
            w = w - lr * (x.T @ r / y.size + config.l2 * w)
            b = b - lr * float(r.mean())
        brier = float(np.mean((link(xv @ w + b) - yv) ** 2))
        curve.append(brier)
        if brier < best[0] - config.min_delta:
            best, stale = (brier, w.copy(), b), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    return best[1], best[2], curve


def fit_newton(x: Floats, y: Floats, l2: float, iterations: int = 50) -> tuple[Floats, float]:
    """Minimise mean log-loss + l2/2 ||w||² (intercept free) by Newton's method."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = sigmoid(design @ theta)
        grad = design.T @ (p - y) / n + penalty * theta
        hess = (design.T * (p * (1 - p))) @ design / n + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:-1], float(theta[-1])
