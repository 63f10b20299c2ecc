"""Shared by the secure-aggregation tests (imported as ``privacy.secagg.common``)."""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt

from dataspace.privacy.secagg import FixedPoint, SessionConfig

BOUND = 1000.0
LENGTH = 1000
PARTIES = (1, 2, 3, 4, 5)


def make_config(
    parties: tuple[int, ...] = PARTIES, length: int = LENGTH, threshold: int = 0, **enc: int
) -> SessionConfig:
    return SessionConfig(
        session=secrets.token_bytes(16),
        parties=parties,
        length=length,
        encoding=FixedPoint(bound=BOUND, **enc),
        threshold=threshold,
    )


def plain_sum(
    inputs: dict[int, npt.NDArray[np.float64]], parties: tuple[int, ...]
) -> npt.NDArray[np.float64]:
    total: npt.NDArray[np.float64] = np.sum([inputs[i] for i in parties], axis=0)
    return total
