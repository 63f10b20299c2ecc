"""Run every party and the coordinator in one process: for tests, benchmarks and docs.

The node layer drives the same roles over HTTP; here messages are handed over directly, as
bytes. ``drop`` simulates dropouts: ``{party: k}`` makes a party fall silent after sending its
first k messages (for pairwise masking, k = 3 means "after its masked input").
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from dataspace.privacy.secagg.base import (
    AggregateResult,
    Aggregator,
    CoordinatorRole,
    SessionConfig,
)
from dataspace.privacy.secagg.encoding import FixedPoint
from dataspace.privacy.secagg.noise import OutputNoise
from dataspace.privacy.secagg.strategies import aggregator

__all__ = ["aggregate_locally", "run_session"]


def run_session(
    strategy: Aggregator,
    config: SessionConfig,
    inputs: Mapping[int, Sequence[float] | npt.ArrayLike],
    counts: Mapping[int, int] | None = None,
    drop: Mapping[int, int] | None = None,
) -> tuple[CoordinatorRole, AggregateResult]:
    """Drive one session to the end; raises whatever a role refuses."""
    counts, drop = counts or {}, drop or {}
    parties = {i: strategy.party(config, i, inputs[i], counts.get(i, 1)) for i in config.parties}
    sent = dict.fromkeys(parties, 0)

    def deliver(i: int, message: bytes) -> None:
        if sent[i] >= drop.get(i, 1 << 30):
            return
        reply = parties[i].handle(message) if sent[i] else parties[i].start()
        sent[i] += 1
        coordinator.receive(reply)

    coordinator = strategy.coordinator(config)
    for i in parties:
        deliver(i, b"")
    while not coordinator.finished:
        for i, message in coordinator.advance().items():
            deliver(i, message)
    return coordinator, coordinator.result()


def aggregate_locally(
    vectors: Sequence[Sequence[float] | npt.ArrayLike],
    bound: float,
    *,
    strategy: str = "pairwise-masking",
    scale_bits: int = 16,
    threshold: int = 0,
    noise: OutputNoise | None = None,
    drop: Mapping[int, int] | None = None,
) -> AggregateResult:
    """Securely aggregate ``vectors`` (party i holds ``vectors[i - 1]``) in-process."""
    length = int(np.asarray(vectors[0]).size) if len(vectors) else 0
    config = SessionConfig(
        session=secrets.token_bytes(16),
        parties=tuple(range(1, len(vectors) + 1)),
        length=length,
        encoding=FixedPoint(bound=bound, scale_bits=scale_bits),
        threshold=threshold,
    )
    inputs = {i + 1: v for i, v in enumerate(vectors)}
    return run_session(aggregator(strategy, noise), config, inputs, drop=drop)[1]
