"""The pure pieces every strategy shares: a party's input checked and encoded
(:func:`encode_input`), the released aggregate decoded with the overflow check (:func:`release`),
and each strategy making its own roles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dataspace.privacy.secagg import (
    AggregateOverflow,
    NotAParticipant,
    SecAggError,
    ValueOutOfBound,
    aggregator,
)
from dataspace.privacy.secagg.additive import AdditiveCoordinator, AdditiveParty
from dataspace.privacy.secagg.base import encode_input, release
from dataspace.privacy.secagg.protocol import MaskingCoordinator, MaskingParty
from privacy.secagg.common import BOUND, make_config


def test_encode_input_known_answer() -> None:
    config = make_config(parties=(1, 2, 3), length=3, scale_bits=16)
    v = encode_input(config, 2, [[1.5], [-1.0], [0.0]], 1)  # any shape, flattened
    assert v.dtype == np.uint64
    assert v.tolist() == [98304, 2**64 - 65536, 0, 1]  # count rides last


@pytest.mark.parametrize(
    ("values", "count", "error", "match"),
    [
        ([1.0, 2.0], 1, SecAggError, "party 2 has 2 values, the session wants 3"),
        ([1.0, 2.0, 3.0, 4.0], 1, SecAggError, "has 4 values"),
        ([1.0, float("nan"), 3.0], 1, ValueOutOfBound, "NaN or infinite"),
        ([1.0, 2.0, 1000.5], 1, ValueOutOfBound, "exceeds the agreed bound"),
        ([1.0, 2.0, 3.0], 2, ValueOutOfBound, "count must be"),
    ],
)
def test_encode_input_refuses_tampered_input(
    values: list[float], count: int, error: type[Exception], match: str
) -> None:
    config = make_config(parties=(1, 2, 3), length=3)
    with pytest.raises(error, match=match):
        encode_input(config, 2, values, count)


def test_release_known_answer_names_the_dropped_parties() -> None:
    config = make_config(parties=(1, 2, 3), length=2, scale_bits=16)
    total = encode_input(config, 1, [1.5, -2.0], 1) + encode_input(config, 3, [0.25, 1.0], 1)
    result = release(config, total, (1, 3))
    assert result.sum.tolist() == [1.75, -1.0] and result.count == 2
    assert result.parties == (1, 3) and result.dropped == (2,)
    # each party's rounding to the grid, and the float64 rounding of a sum up to n × bound
    assert result.error_bound == 2 * 2.0**-16 / 2 + math.ulp(2 * BOUND) / 2
    whole = release(config, total, (1, 2, 3))
    assert whole.dropped == ()
    assert whole.error_bound == 3 * 2.0**-16 / 2 + math.ulp(3 * BOUND) / 2


def test_release_refuses_a_wrapped_or_tampered_sum() -> None:
    config = make_config(parties=(1, 2, 3), length=2)
    total = encode_input(config, 1, [1000.0, 1000.0], 1)
    total += encode_input(config, 2, [1000.0, 1000.0], 1)
    with pytest.raises(AggregateOverflow, match="wrap-around"):
        release(config, total, (1,))  # two parties' worth of sum, claimed for one
    tampered = total.copy()
    tampered[0] += np.uint64(1 << 62)  # a wrong share / unmasking: far outside ±n·B
    with pytest.raises(AggregateOverflow):
        release(config, tampered, (1, 2))
    miscounted = total.copy()
    miscounted[-1] = np.uint64(3)  # a count above parties × max_count
    with pytest.raises(AggregateOverflow):
        release(config, miscounted, (1, 2))


@pytest.mark.parametrize(
    ("name", "party", "coordinator"),
    [("additive", AdditiveParty, AdditiveCoordinator),
     ("pairwise-masking", MaskingParty, MaskingCoordinator)],
)
def test_each_strategy_makes_its_roles_and_checks_the_input(
    name: str, party: type, coordinator: type
) -> None:
    config = make_config(parties=(1, 2, 3), length=2)
    strategy = aggregator(name)
    role = strategy.party(config, 2, [1.0, 2.0])
    assert type(role) is party and role.index == 2 and role.step == -1
    assert type(strategy.coordinator(config)) is coordinator
    with pytest.raises(SecAggError, match="the session wants 2"):
        strategy.party(config, 2, [1.0])
    with pytest.raises(NotAParticipant):
        strategy.party(config, 4, [1.0, 2.0])
