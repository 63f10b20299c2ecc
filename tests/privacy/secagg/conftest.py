"""Fixtures for secure-aggregation tests: a five-party session with random float vectors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from dataspace.privacy.secagg import SessionConfig
from privacy.secagg.common import BOUND, LENGTH, PARTIES, make_config


@pytest.fixture
def config() -> SessionConfig:
    return make_config()


@pytest.fixture
def inputs() -> dict[int, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(20240601)
    return {i: rng.uniform(-BOUND, BOUND, LENGTH) for i in PARTIES}
