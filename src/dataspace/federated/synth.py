"""A vertical-partition generator: latent factors spread over several parties' columns.

Row ``i`` is one entity (a company) seen by every party. ``k`` shared latent factors
(business health) drive everyone's features; each party also observes two factors only it
sees (loan history at the bank, filings at the tax bureau, consumption at the grid), and the
default label depends on all of them — so each party's block carries signal of its own and
the fused model beats any single party's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class VerticalData:
    blocks: dict[str, Floats]
    labels: Floats
    label_party: str

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])


def make_vertical(
    rows: int,
    dims: Mapping[str, int] | None = None,
    *,
    latent: int = 4,
    own: int = 2,
    seed: int = 0,
) -> VerticalData:
    """Generate ``rows`` aligned rows; the first party in ``dims`` holds the labels."""
    dims = dict(dims or {"bank": 5, "tax": 5, "grid": 5})
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((rows, latent))
    logit = shared @ rng.normal(0.0, 0.7, latent) - 1.0
    blocks: dict[str, Floats] = {}
    for name, d in dims.items():
        private = rng.standard_normal((rows, own))
        features = (
            shared @ (0.8 * rng.standard_normal((latent, d)))
            + private @ (0.8 * rng.standard_normal((own, d)))
            + rng.standard_normal((rows, d))
        )
        blocks[name] = features * rng.uniform(0.5, 20.0, d) + rng.normal(0.0, 5.0, d)
        logit = logit + private @ rng.normal(0.0, 0.7, own)
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    return VerticalData(blocks, labels, next(iter(dims)))
