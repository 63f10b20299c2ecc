"""Strategies by name, DP noise on the output, and the one-call local runner."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from dataspace.errors import UsageError
from dataspace.privacy.secagg import (
    AGGREGATORS,
    FixedPoint,
    OutputNoise,
    SessionConfig,
    aggregate_locally,
    aggregator,
    local_noise,
    run_session,
)
from privacy.secagg.common import BOUND, PARTIES, make_config, plain_sum

Inputs = dict[int, npt.NDArray[np.float64]]


def test_strategies_are_chosen_by_name() -> None:
    assert sorted(AGGREGATORS) == ["additive", "pairwise-masking"]
    assert aggregator("pairwise-masking").tolerates_dropouts
    assert not aggregator("additive").tolerates_dropouts
    with pytest.raises(UsageError, match="unknown secure-aggregation strategy"):
        aggregator("homomorphic")


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_laplace_noise_is_added_after_unmasking(name: str, inputs: Inputs) -> None:
    config = make_config(length=20)
    small = {i: v[:20] / 1000 for i, v in inputs.items()}  # bound 1000 → sensitivity 2·1000·20
    strategy = aggregator(name, OutputNoise(epsilon=1.0))
    _, result = run_session(strategy, config, small)
    assert result.noise is not None and result.noise.mechanism == "laplace"
    assert result.noise.sensitivity == pytest.approx(2 * 1000 * 20, rel=1e-6)
    assert result.epsilon == 1.0 and result.delta == 0.0
    # a party's count (0 or 1 here) is data too: noised with half the ε
    assert result.count_noise is not None and result.count_noise.sensitivity == 1
    assert result.noise.epsilon == pytest.approx(0.5)
    error = np.abs(result.sum - plain_sum(small, PARTIES))
    assert np.all(error > 0)  # noise on every coordinate
    assert np.median(error) < 10 * result.noise.scale


def test_gaussian_noise_splits_the_budget_with_a_private_count(inputs: Inputs) -> None:
    config = SessionConfig(
        session=b"s" * 16,
        parties=PARTIES,
        length=10,
        encoding=FixedPoint(bound=1.0, max_count=100),
    )
    data = {i: np.clip(v[:10], -1, 1) for i, v in inputs.items()}
    strategy = aggregator("pairwise-masking", OutputNoise(1.0, 1e-6, "gaussian"))
    _, result = run_session(strategy, config, data, counts=dict.fromkeys(PARTIES, 50))
    assert result.noise is not None and result.count_noise is not None
    assert result.epsilon == pytest.approx(1.0) and result.delta == pytest.approx(1e-6)
    assert result.noise.sensitivity == pytest.approx(
        2 * np.sqrt(10) * config.encoding.max_encoded / 2**16
    )
    assert result.count != 250 or result.count_noise.scale < 1  # a noisy count


def test_a_sum_without_its_count_spends_all_of_epsilon_on_the_sum(inputs: Inputs) -> None:
    """The count's sensitivity is a party's max_count (2^31 for node jobs): a DP sum that
    releases no count gives it no budget, so the sum's noise is half what it would be."""
    config = SessionConfig(session=b"s" * 16, parties=PARTIES, length=10,
                           encoding=FixedPoint(bound=1.0, max_count=2**31))
    data = {i: np.clip(v[:10], -1, 1) for i, v in inputs.items()}
    counts = dict.fromkeys(PARTIES, 50)
    scales = {}
    for with_count in (True, False):
        strategy = aggregator("pairwise-masking", OutputNoise(1.0, count=with_count))
        _, result = run_session(strategy, config, data, counts=counts)
        assert result.noise is not None
        assert (result.count_noise is not None) == with_count
        scales[with_count] = result.noise.scale
    assert scales[True] == pytest.approx(2 * scales[False])


def test_bad_noise_is_refused() -> None:
    with pytest.raises(UsageError):
        OutputNoise(epsilon=0)
    with pytest.raises(UsageError, match="delta"):
        OutputNoise(epsilon=1, mechanism="gaussian")
    with pytest.raises(UsageError):
        OutputNoise(epsilon=1, mechanism="cauchy")


def test_aggregate_locally_in_one_call() -> None:
    rng = np.random.default_rng(3)
    vectors = [rng.uniform(-5, 5, 100) for _ in range(4)]
    result = aggregate_locally(vectors, bound=5.0, drop={4: 2})
    assert result.parties == (1, 2, 3) and result.dropped == (4,)
    assert np.max(np.abs(result.sum - np.sum(vectors[:3], axis=0))) <= result.error_bound


def test_local_noise_is_each_partys_own_laplace_at_the_full_sensitivity() -> None:
    """Distributed DP (node jobs): each party's noise alone makes its vector ε-DP, so its
    scale is the central one's (sensitivity 2·B·m); the encoding bound leaves room for it."""
    dp = local_noise(1000.0, 20, 0.5)
    central = aggregator("additive", OutputNoise(0.5, count=False))
    config = make_config(length=20)
    _, exact = run_session(central, config, {i: np.zeros(20) for i in PARTIES})
    assert exact.noise is not None and dp.noise.scale == exact.noise.scale
    assert dp.noise.sensitivity == pytest.approx(2 * 1000 * 20)
    assert dp.encoded_bound == pytest.approx(1000 + 28 * dp.noise.scale)
    noisy = dp.apply(np.full(20, 1000.0))
    assert np.all(noisy != 1000.0) and np.all(np.abs(noisy) <= dp.encoded_bound)
    with pytest.raises(UsageError, match="expected 20 values"):
        dp.apply(np.zeros(3))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="epsilon"):
            local_noise(1000.0, 20, bad)


def test_local_noise_error_grows_as_the_root_of_the_parties() -> None:
    """One party: the Laplace 95% bound b·ln 20; n parties: about √n times the spread."""
    dp = local_noise(1.0, 1, 1.0)
    b = dp.noise.scale
    assert dp.error95(1) == pytest.approx(b * np.log(20), rel=0.02)
    assert dp.error95(16) / dp.error95(4) == pytest.approx(2.0, rel=0.05)
    draws = np.random.default_rng(1).laplace(0.0, b, (400_000, 12)).sum(axis=1)
    assert np.mean(np.abs(draws) <= dp.error95(12)) >= 0.949  # beyond 8: Cornish-Fisher


def test_noised_vectors_sum_within_the_stated_error() -> None:
    """Five parties noise their own vectors and encode with the wider bound: the unmasked
    sum is the exact one plus five noises, inside error95 for about 95% of coordinates."""
    dp = local_noise(BOUND, 200, 50.0)
    config = make_config(length=200)
    config = SessionConfig(config.session, config.parties, 200,
                           FixedPoint(dp.encoded_bound), config.threshold)
    rng = np.random.default_rng(3)
    exact = {i: rng.uniform(-BOUND, BOUND, 200) for i in PARTIES}
    _, result = run_session(aggregator("pairwise-masking"), config,
                            {i: dp.apply(v) for i, v in exact.items()})
    error = np.abs(result.sum - plain_sum(exact, PARTIES))
    inside = float(np.mean(error <= dp.error95(len(PARTIES))))
    assert 0.88 <= inside <= 0.995 and np.all(error > 0)


@pytest.mark.parametrize(("name", "rounds_before_input"), [
    ("pairwise-masking", 1),  # the roster's reply shares keys; the next carries the input
    ("additive", 0),  # the roster's reply carries the input's shares
])
def test_a_party_knows_when_its_input_has_left(name: str, rounds_before_input: int) -> None:
    """What decides whether a failed job's ε can be given back: nothing derived from the
    input has left before the round that carries it is answered."""
    config = make_config(length=3)
    strategy = aggregator(name)
    parties = {i: strategy.party(config, i, np.ones(3)) for i in config.parties}
    coordinator = strategy.coordinator(config)
    for party in parties.values():
        assert not party.input_sent
        coordinator.receive(party.start())
    for answered in range(len(strategy.party(config, 1, np.ones(3)).rounds)):
        messages = coordinator.advance()
        if not messages:
            break
        for i, message in messages.items():
            coordinator.receive(parties[i].handle(message))
        assert parties[1].input_sent == (answered >= rounds_before_input)
