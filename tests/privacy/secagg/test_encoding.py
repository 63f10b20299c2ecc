"""Fixed-point encoding: known answers, bounds, overflow refused before and detected after."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from dataspace.errors import UsageError
from dataspace.privacy.secagg import (
    AggregateOverflow,
    FixedPoint,
    OverflowRisk,
    PairwiseMasking,
    ValueOutOfBound,
)
from dataspace.privacy.secagg.errors import SecAggError
from dataspace.privacy.secagg.messages import Message
from privacy.secagg.common import make_config


def test_known_answers_in_twos_complement() -> None:
    enc = FixedPoint(bound=10.0, scale_bits=16)
    v = enc.encode([1.5, -1.0, 0.0, 2**-17 + 2**-30], count=1)
    assert v.dtype == np.uint64
    assert v.tolist() == [98304, 2**64 - 65536, 0, 1, 1]  # count rides last


def test_known_answers_with_eight_bits_of_modulus() -> None:
    enc = FixedPoint(bound=1.0, scale_bits=4, bits=8)
    v = enc.encode([-1.0, 0.5])
    assert v.tolist() == [256 - 16, 8, 1]
    assert enc.signed(v).tolist() == [-16, 8, 1]


def test_sum_of_encodings_decodes_to_the_sum_within_rounding() -> None:
    enc = FixedPoint(bound=100.0, scale_bits=20)
    rng = np.random.default_rng(7)
    xs = [rng.uniform(-100, 100, 50) for _ in range(5)]
    total = np.zeros(51, dtype=np.uint64)
    for x in xs:
        total += enc.encode(x)
    sums, count = enc.decode_sum(total, 5)
    assert count == 5
    assert np.max(np.abs(sums - np.sum(xs, axis=0))) <= enc.error_bound(5)


def test_the_error_bound_holds_against_the_exact_sum_of_large_values() -> None:
    """Near a bound of 10^12 the float64 sum rounds by more than the grid does: 4.9e-4
    against a stated 3.8e-5 before the bound counted it."""
    enc = FixedPoint(bound=1e12, scale_bits=16)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(9.9e11, 1e12, 50) for _ in range(5)]
    total = np.zeros(51, dtype=np.uint64)
    for x in xs:
        total += enc.encode(x)
    sums, _ = enc.decode_sum(total, 5)
    exact = [sum(Fraction(float(x[j])) for x in xs) for j in range(50)]
    worst = max(abs(Fraction(float(sums[j])) - exact[j]) for j in range(50))
    assert worst <= enc.error_bound(5)


@pytest.mark.parametrize("bound", [1.7e308, 1e300])
def test_a_bound_no_encoding_can_hold_is_a_clear_refusal(bound: float) -> None:
    with pytest.raises(OverflowRisk, match="bound") as refused:
        FixedPoint(bound=bound)
    assert len(refused.value.message) < 300


def test_value_beyond_the_bound_is_refused() -> None:
    with pytest.raises(ValueOutOfBound, match="exceeds the agreed bound"):
        FixedPoint(bound=1.0).encode([0.5, 1.01])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused(bad: float) -> None:
    with pytest.raises(ValueOutOfBound, match="NaN or infinite"):
        FixedPoint(bound=1.0).encode([bad])


def test_count_beyond_max_count_is_refused() -> None:
    with pytest.raises(ValueOutOfBound, match="count"):
        FixedPoint(bound=1.0).encode([0.0], count=2)


def test_bound_times_parties_beyond_the_signed_range_is_refused_before_aggregation() -> None:
    enc = FixedPoint(bound=2.0**40, scale_bits=20)  # one party: 2^60 fits
    enc.check_capacity(7)  # 7 × 2^60 < 2^63
    with pytest.raises(OverflowRisk, match="beyond the signed range") as caught:
        enc.check_capacity(8)  # 8 × 2^60 = 2^63 does not
    assert "scale_bits" in (caught.value.hint or "")
    assert enc.max_parties() == 7
    with pytest.raises(OverflowRisk):
        make_config(parties=tuple(range(1, 9)), scale_bits=53)  # bound 1000 × 2^53 × 8


def test_wrap_around_is_detected_when_decoding() -> None:
    enc = FixedPoint(bound=1.0, scale_bits=8, bits=16)
    wrapped = np.array([enc.max_encoded * 3, 1], dtype=np.uint64)  # 3 parties' worth from 2
    with pytest.raises(AggregateOverflow, match="wrap-around"):
        enc.decode_sum(wrapped, 2)
    negative = np.array([(1 << 16) - 1, 2], dtype=np.uint64)  # -1 unit: fine
    assert enc.decode_sum(negative, 2)[0].tolist() == [-1 / 256]


def test_a_party_over_the_bound_cannot_join() -> None:
    config = make_config(length=2)
    with pytest.raises(ValueOutOfBound):
        PairwiseMasking().party(config, 1, [0.0, 1e6])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bound": 0.0},
        {"bound": float("nan")},
        {"bound": 1.0, "bits": 65},
        {"bound": 1.0, "scale_bits": 64},
        {"bound": 1.0, "max_count": 0},
    ],
)
def test_bad_encodings_are_usage_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        FixedPoint(**kwargs)  # type: ignore[arg-type]


def test_a_sum_whose_residue_is_the_most_negative_integer_is_refused() -> None:
    """np.abs(-2**63) is -2**63 in int64: the range check must not read it as small."""
    enc = FixedPoint(bound=1.0, scale_bits=16)
    total = np.zeros(2, dtype=np.uint64)
    total[0] = np.uint64(1 << 63)
    with pytest.raises(AggregateOverflow):
        enc.decode_sum(total, parties=3)


@pytest.mark.parametrize("name", ["ct\u00b2", "ct01", "ct+1", "ct"])
def test_a_blob_name_that_is_no_plain_party_index_is_refused(name: str) -> None:
    """'ct²' passes str.isdigit but not int(); 'ct01' would stand in for party 1."""
    message = Message("shares", "pairwise-masking", b"s" * 16, 1, blobs={name: b"x"})
    with pytest.raises(SecAggError, match="bad blob name"):
        message.indexed("ct")
    assert Message("shares", "pairwise-masking", b"s" * 16, 1,
                   blobs={"ct1": b"x"}).indexed("ct") == {1: b"x"}
