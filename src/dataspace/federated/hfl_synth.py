"""Horizontal-partition generators: clients with the same columns and different rows.

``make_horizontal(concept_shift=False)`` — one label mechanism shared by all clients (each
client's features are shifted: covariate shift only), few rows per client: pooling helps.
``concept_shift=True`` — each client's label mechanism is its own random weight vector:
pooling mixes incompatible mechanisms (the negative control).
"""

from __future__ import annotations

import numpy as np

from dataspace.federated.fedavg import Client


def make_horizontal(
    clients: int = 5,
    rows: int = 60,
    dim: int = 10,
    *,
    concept_shift: bool = False,
    test_rows: int = 400,
    seed: int = 0,
) -> list[Client]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.0, 1.0, dim)
    out = []
    for k in range(clients):
        w = rng.normal(0.0, 1.0, dim) if concept_shift else shared
        mu = rng.normal(0.0, 0.5, dim)

        def draw(n: int, w: np.ndarray = w, mu: np.ndarray = mu) -> tuple[np.ndarray, np.ndarray]:
            x = rng.standard_normal((n, dim)) + mu
            p = 1.0 / (1.0 + np.exp(-(x @ w) / np.sqrt(dim) * 2.0))
            return x, (rng.random(n) < p).astype(np.float64)

        x, y = draw(rows)
        xt, yt = draw(test_rows)
        out.append(Client(f"client{k + 1}", x, y, xt, yt))
    return out
