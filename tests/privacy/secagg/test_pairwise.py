"""Pairwise masking (Bonawitz et al.): correctness, dropouts, the coordinator's view."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from dataspace.privacy.secagg import (
    OutOfOrder,
    PairwiseMasking,
    SessionConfig,
    TooFewSurvivors,
    run_session,
)
from dataspace.privacy.secagg.crypto import prg
from dataspace.privacy.secagg.protocol import MaskingCoordinator, MaskingParty
from privacy.secagg.common import PARTIES, make_config, plain_sum

Inputs = dict[int, npt.NDArray[np.float64]]
STRATEGY = PairwiseMasking()
AFTER_MASKED_INPUT = 3  # advertise, shares, masked input sent; silent in the unmasking round
BEFORE_MASKED_INPUT = 2


def test_five_parties_aggregate_to_the_plaintext_sum(config: SessionConfig, inputs: Inputs) -> None:
    _, result = run_session(STRATEGY, config, inputs)
    assert result.parties == PARTIES and result.dropped == ()
    assert result.count == 5
    assert np.max(np.abs(result.sum - plain_sum(inputs, PARTIES))) <= result.error_bound
    assert np.allclose(result.mean, plain_sum(inputs, PARTIES) / 5, atol=1e-4)


@pytest.mark.parametrize("dropped", [(3,), (2, 5)])
def test_parties_dropping_after_their_masked_input_still_count(
    config: SessionConfig, inputs: Inputs, dropped: tuple[int, ...]
) -> None:
    drop = dict.fromkeys(dropped, AFTER_MASKED_INPUT)
    _, result = run_session(STRATEGY, config, inputs, drop=drop)
    assert result.parties == PARTIES  # their inputs arrived: the survivors unmask them
    assert np.max(np.abs(result.sum - plain_sum(inputs, PARTIES))) <= result.error_bound


@pytest.mark.parametrize("dropped", [(1,), (4, 5)])
def test_parties_dropping_before_their_masked_input_are_left_out(
    config: SessionConfig, inputs: Inputs, dropped: tuple[int, ...]
) -> None:
    """Their pairwise masks stay in the survivors' inputs; their s-keys are rebuilt."""
    drop = dict.fromkeys(dropped, BEFORE_MASKED_INPUT)
    _, result = run_session(STRATEGY, config, inputs, drop=drop)
    survivors = tuple(p for p in PARTIES if p not in dropped)
    assert result.parties == survivors and result.dropped == dropped
    assert result.count == len(survivors)
    assert np.max(np.abs(result.sum - plain_sum(inputs, survivors))) <= result.error_bound
    assert np.allclose(result.mean, plain_sum(inputs, survivors) / len(survivors), atol=1e-4)


def test_dropouts_in_every_round_with_a_lower_threshold(inputs: Inputs) -> None:
    config = make_config(threshold=2)
    drop = {1: 1, 2: 2, 3: 3}  # after advertising, after sharing, after the masked input
    _, result = run_session(STRATEGY, config, inputs, drop=drop)
    assert result.parties == (3, 4, 5) and result.dropped == (1, 2)
    assert np.max(np.abs(result.sum - plain_sum(inputs, (3, 4, 5)))) <= result.error_bound


@pytest.mark.parametrize("k", [1, 2, 3])
def test_too_many_dropouts_are_refused_and_nothing_is_released(
    config: SessionConfig, inputs: Inputs, k: int
) -> None:
    drop = {1: k, 2: k, 3: k}  # 2 survivors < t = 3 from round k on
    coordinator = STRATEGY.coordinator(config)
    with pytest.raises(TooFewSurvivors, match="needs 3") as caught:
        _run(coordinator, _parties(config, inputs), drop)
    assert "nothing is released" in str(caught.value)
    assert coordinator.aborted and not coordinator.finished
    with pytest.raises(OutOfOrder, match="no result"):
        coordinator.result()
    with pytest.raises(OutOfOrder, match="aborted"):
        coordinator.advance()


def _parties(config: SessionConfig, inputs: Inputs) -> dict[int, MaskingParty]:
    return {i: STRATEGY.party(config, i, inputs[i]) for i in config.parties}


def _run(
    coordinator: MaskingCoordinator, parties: dict[int, MaskingParty], drop: dict[int, int]
) -> None:
    sent = dict.fromkeys(parties, 0)
    for i, p in parties.items():
        if drop.get(i, 9) > 0:
            coordinator.receive(p.start())
            sent[i] = 1
    while not coordinator.finished:
        for i, message in coordinator.advance().items():
            if sent[i] < drop.get(i, 9):
                coordinator.receive(parties[i].handle(message))
                sent[i] += 1


def _uniformity(values: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """|mean − 1/2|, |var − 1/12| and the Kolmogorov–Smirnov distance to U[0, 1)."""
    u = np.sort(values)
    n = u.size
    ks = max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n))
    return abs(float(u.mean()) - 0.5), abs(float(u.var()) - 1 / 12), float(ks)


def _as_unit(v: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    unit: npt.NDArray[np.float64] = v.astype(np.float64) / 2.0**64
    return unit


def test_a_masked_input_alone_looks_uniform_and_uncorrelated(
    config: SessionConfig, inputs: Inputs
) -> None:
    """The coordinator's view of one party: nothing of x_i, five-sigma bounds for n = 1000."""
    coordinator = STRATEGY.coordinator(config)
    parties = _parties(config, inputs)
    with pytest.raises(TooFewSurvivors):  # nobody unmasks: only the masked vectors are seen
        _run(coordinator, parties, drop=dict.fromkeys(PARTIES, AFTER_MASKED_INPUT))
    n = config.length
    sigma_mean, sigma_var = 1 / np.sqrt(12 * n), np.sqrt((1 / 80 - 1 / 144) / n)
    for i in PARTIES:
        masked = _as_unit(coordinator.masked[i][:-1])
        d_mean, d_var, ks = _uniformity(masked)
        assert d_mean < 5 * sigma_mean and d_var < 5 * sigma_var
        assert ks < 2.5 / np.sqrt(n)  # P(false alarm) ~ 2e-5
        assert abs(np.corrcoef(masked, inputs[i])[0, 1]) < 5 / np.sqrt(n)
        # every bit of the masked words is fair
        bits = np.unpackbits(coordinator.masked[i][:-1].view(np.uint8)).reshape(-1, 64)
        assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 5 * 0.5 / np.sqrt(n))
    # The control: the plain encoding fails the same test.
    plain = _as_unit(config.encoding.encode(inputs[1])[:-1])
    assert _uniformity(plain)[2] > 0.2
    # Masks cancel only in the full sum: minus the self-masks, all five give Σx ...
    size = config.length + 1
    selfmasks = {i: prg(p._b, size) for i, p in parties.items()}
    total = np.zeros(size, dtype=np.uint64)
    for i in PARTIES:
        total += coordinator.masked[i] - selfmasks[i]
    sums, _ = config.encoding.decode_sum(total, 5)
    assert np.max(np.abs(sums - plain_sum(inputs, PARTIES))) <= config.encoding.error_bound(5)
    # ... while four of the five, self-masks removed too, are still uniform.
    partial = total - (coordinator.masked[5] - selfmasks[5])
    assert _uniformity(_as_unit(partial[:-1]))[2] < 2.5 / np.sqrt(n)


def test_threshold_defaults_to_a_majority_and_is_configurable() -> None:
    assert make_config().threshold == 3
    assert make_config(parties=(1, 2, 3, 4)).threshold == 3
    assert make_config(threshold=5).threshold == 5


def test_the_sum_of_two_parties_works_with_threshold_two(inputs: Inputs) -> None:
    config = make_config(parties=(2, 7), threshold=2)
    data = {2: inputs[2], 7: inputs[3]}
    _, result = run_session(STRATEGY, config, data)
    assert np.max(np.abs(result.sum - (inputs[2] + inputs[3]))) <= result.error_bound
