"""Additive secret sharing: the no-dropout strategy behind the same interface."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pytest

from dataspace.privacy.secagg import (
    AdditiveSharing,
    OutOfOrder,
    SessionConfig,
    ShareRejected,
    TooFewSurvivors,
    run_session,
)
from dataspace.privacy.secagg.messages import decode
from privacy.secagg.common import PARTIES, plain_sum

Inputs = dict[int, npt.NDArray[np.float64]]
STRATEGY = AdditiveSharing()


def test_five_parties_aggregate_to_the_plaintext_sum(config: SessionConfig, inputs: Inputs) -> None:
    _coordinator, result = run_session(STRATEGY, config, inputs, counts={1: 1, 2: 0})
    assert result.parties == PARTIES and result.count == 4
    assert np.max(np.abs(result.sum - plain_sum(inputs, PARTIES))) <= result.error_bound


@pytest.mark.parametrize("k", [0, 1, 2])
def test_any_dropout_aborts_and_releases_nothing(
    config: SessionConfig, inputs: Inputs, k: int
) -> None:
    with pytest.raises(TooFewSurvivors, match="no dropouts"):
        run_session(STRATEGY, config, inputs, drop={3: k})


def test_a_partial_sum_looks_uniform(config: SessionConfig, inputs: Inputs) -> None:
    coordinator = STRATEGY.coordinator(config)
    parties = {i: STRATEGY.party(config, i, inputs[i]) for i in PARTIES}
    for p in parties.values():
        coordinator.receive(p.start())
    for i, m in coordinator.advance().items():
        coordinator.receive(parties[i].handle(m))
    routed = coordinator.advance()
    z = decode(parties[1].handle(routed[1])).vector("z", config.length + 1)
    unit = z[:-1].astype(np.float64) / 2.0**64
    assert abs(unit.mean() - 0.5) < 5 / np.sqrt(12 * config.length)
    assert abs(np.corrcoef(unit, inputs[1])[0, 1]) < 5 / np.sqrt(config.length)


def test_a_tampered_share_is_rejected_and_rounds_are_ordered(
    config: SessionConfig, inputs: Inputs
) -> None:
    coordinator = STRATEGY.coordinator(config)
    parties = {i: STRATEGY.party(config, i, inputs[i]) for i in PARTIES}
    for p in parties.values():
        coordinator.receive(p.start())
    roster = coordinator.advance()
    with pytest.raises(OutOfOrder):
        coordinator.receive(parties[1].start())
    for i, m in roster.items():
        coordinator.receive(parties[i].handle(m))
    routed = coordinator.advance()
    msg = decode(routed[2])
    blobs = dict(msg.blobs)
    blobs["ct5"] = blobs["ct5"][:-1] + bytes([blobs["ct5"][-1] ^ 0x80])
    with pytest.raises(ShareRejected):
        parties[2].handle(dataclasses.replace(msg, blobs=blobs).encode())
