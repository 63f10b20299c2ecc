"""Shamir secret sharing: known answers, any t of n reconstruct, t − 1 do not."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.errors import UsageError
from dataspace.privacy.secagg import Shamir, Share, TooFewSurvivors
from dataspace.privacy.secagg.shamir import PRIME


def test_textbook_known_answer() -> None:
    """Wikipedia's example: p = 1613, f(x) = 1234 + 166x + 94x²."""
    scheme = Shamir(3, prime=1613)
    shares = scheme.split_with(1234, [166, 94], range(1, 7))
    assert [(s.x, s.y) for s in shares.values()] == [
        (1, 1494), (2, 329), (3, 965), (4, 176), (5, 1188), (6, 775),
    ]  # fmt: skip
    for trio in itertools.combinations(shares.values(), 3):
        assert scheme.reconstruct(trio) == 1234


def test_the_field_holds_every_32_byte_secret() -> None:
    assert PRIME > 2**256
    assert all(pow(a, PRIME - 1, PRIME) == 1 for a in (2, 3, 5, 7, 11))  # Fermat, probable prime
    top = 2**256 - 1
    shares = Shamir(3).split(top, range(1, 6))
    assert Shamir(3).reconstruct(list(shares.values())[2:]) == top
    assert all(len(s.y_bytes()) == 33 for s in shares.values())


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(0, 2**256 - 1),
    n=st.integers(1, 8),
    data=st.data(),
)
def test_any_t_of_n_reconstruct_and_t_minus_1_do_not(
    secret: int, n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(1, n), label="t")
    scheme = Shamir(t)
    shares = list(scheme.split(secret, range(1, n + 1)).values())
    chosen = data.draw(st.permutations(shares), label="order")
    assert scheme.reconstruct(chosen[:t]) == secret
    if t > 1:
        with pytest.raises(TooFewSurvivors, match="cannot reconstruct"):
            scheme.reconstruct(chosen[: t - 1])
        # Interpolating t − 1 points gives a value unrelated to the secret (equal w.p. 1/p).
        assert scheme.interpolate(chosen[: t - 1]) != secret


def test_duplicate_shares_do_not_count_twice() -> None:
    scheme = Shamir(3)
    shares = list(scheme.split(42, [1, 2, 3]).values())
    with pytest.raises(TooFewSurvivors):
        scheme.reconstruct([shares[0], shares[0], shares[1]])


def test_bad_splits_are_refused() -> None:
    with pytest.raises(UsageError):
        Shamir(3).split(1, [1, 2])  # fewer points than the threshold
    with pytest.raises(UsageError):
        Shamir(2).split(1, [1, 1, 2])
    with pytest.raises(UsageError):
        Shamir(2).split(1, [0, 1])  # x = 0 would be the secret itself
    with pytest.raises(UsageError):
        Shamir(2).split(PRIME, [1, 2])
    with pytest.raises(UsageError):
        Shamir(0)


def test_a_share_outside_the_field_is_refused() -> None:
    from dataspace.privacy.secagg import SecAggError

    with pytest.raises(SecAggError):
        Shamir(1).reconstruct([Share(1, PRIME)])
