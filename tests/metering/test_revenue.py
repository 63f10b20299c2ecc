"""Revenue pools split by contribution: known answers, exactness, bad input."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataspace.errors import InputError
from dataspace.metering.revenue import parse_pool, split


def test_known_answers() -> None:
    assert split(Decimal("3000.00"), {"tax": 0.06, "grid": 0.02, "telco": 0.0}) == {
        "grid": Decimal("750.00"), "tax": Decimal("2250.00"), "telco": Decimal("0.00")}
    # 100.00 three ways: 33.33 each and the last cent to the first name
    assert split(Decimal("100.00"), {"b": 1.0, "a": 1.0, "c": 1.0}) == {
        "a": Decimal("33.34"), "b": Decimal("33.33"), "c": Decimal("33.33")}
    # a harmful provider earns nothing; the others share in proportion
    assert split(Decimal("10.00"), {"tax": 0.03, "grid": 0.01, "ads": -0.2}) == {
        "ads": Decimal("0.00"), "grid": Decimal("2.50"), "tax": Decimal("7.50")}
    # nobody helped: an equal split among those that did no harm (all, if every one did)
    assert split(Decimal("0.05"), {"x": 0.0, "y": -1.0, "z": 0.0}) == {
        "x": Decimal("0.03"), "y": Decimal("0.00"), "z": Decimal("0.02")}
    assert split(Decimal("3000.00"), {"harmful": -0.05, "null": 0.0}) == {
        "harmful": Decimal("0.00"), "null": Decimal("3000.00")}  # was 1500 each
    assert split(Decimal("0.05"), {"x": -0.5, "y": -1.0}) == {"x": Decimal("0.03"),
                                                                "y": Decimal("0.02")}
    assert split(Decimal("0"), {"x": 1.0}) == {"x": Decimal("0.00")}


def test_largest_remainders_get_the_leftover_cents() -> None:
    # 1.00 by 1:2 -> 33.33.. and 66.66..: the larger remainder (0.67) takes the cent
    assert split(Decimal("1.00"), {"a": 1.0, "b": 2.0}) == {"a": Decimal("0.33"),
                                                             "b": Decimal("0.67")}


@given(
    cents=st.integers(min_value=0, max_value=10**14),
    values=st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_subnormal=True),
        min_size=1, max_size=12,
    ),
)
def test_shares_are_whole_cents_that_add_up_to_the_pool(cents: int,
                                                        values: dict[str, float]) -> None:
    pool = Decimal(cents) / 100
    shares = split(pool, values)
    assert set(shares) == set(values)
    assert sum(shares.values(), Decimal(0)) == pool
    assert all(s >= 0 and s == s.quantize(Decimal("0.01")) for s in shares.values())
    positive = {n for n, v in values.items() if v > 0}
    if positive:  # nothing to those that did not help
        assert all(shares[n] == 0 for n in values if n not in positive)
        ordered = sorted(positive, key=lambda n: values[n])
        for low, high in itertools.pairwise(ordered):  # more value, not less money
            assert shares[low] <= shares[high] + Decimal("0.01")


@pytest.mark.parametrize(("pool", "values", "message"), [
    (Decimal("1.001"), {"a": 1.0}, "whole units of 0.01"),
    (Decimal("1E+27"), {"a": 1.0}, "below 10\\^15"),
    (Decimal("-1"), {"a": 1.0}, "non-negative"),
    (Decimal("NaN"), {"a": 1.0}, "non-negative"),
    (Decimal("1"), {}, "at least one provider"),
    (Decimal("1"), {"a": float("nan")}, "not a finite number"),
    (Decimal("1"), {"a": float("inf")}, "not a finite number"),
    (Decimal("1"), {"a": True}, "not a finite number"),
])
def test_bad_input_is_refused(pool: Decimal, values: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        split(pool, values)


def test_a_pool_is_read_once_the_same_way_everywhere() -> None:
    assert str(parse_pool("3000 cny")) == "3000.00 CNY"
    for bad in ("0 CNY", "1000.001 CNY", "-5 CNY", "3000"):
        with pytest.raises(InputError):
            parse_pool(bad)


def test_a_pool_is_split_in_its_currencys_minor_unit() -> None:
    """A yen has no cents and a Kuwaiti dinar has fils (0.001): ISO 4217's minor units."""
    assert str(parse_pool("1000 JPY")) == "1000 JPY"
    with pytest.raises(InputError, match="whole units of 1 JPY"):
        parse_pool("1000.50 JPY")
    assert str(parse_pool("1.5 kwd")) == "1.500 KWD"
    assert split(Decimal(1000), {"a": 1.0, "b": 1.0, "c": 1.0}, Decimal(1)) == {
        "a": Decimal(334), "b": Decimal(333), "c": Decimal(333)}
    assert sum(split(Decimal("1.000"), {"a": 1.0, "b": 2.0}, Decimal("0.001")).values()) == 1


def test_bills_round_to_the_currencys_minor_unit() -> None:
    from dataspace.metering.pricing import round_money

    assert round_money(Decimal("0.5"), "JPY") == 0 and round_money(Decimal("1.5"), "JPY") == 2
    assert round_money(Decimal("1.2345"), "KWD") == Decimal("1.234")
    assert round_money(Decimal("1.235"), "CNY") == Decimal("1.24")
