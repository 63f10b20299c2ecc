from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from dataspace.errors import InputError
from dataspace.metering import PriceTerms, Usage, price_for, round_money
from dataspace.metering.pricing import minor_unit
from dataspace.policy import currencies
from dataspace.policy.request import Price

T = datetime(2026, 11, 1, tzinfo=UTC)


def job(**kw: object) -> Usage:
    base: dict[str, object] = dict(
        agreement_id="a", job_id="j", action="governed-query", consumer="c", provider="p",
        dataset="d", started_at=T, finished_at=T,
    )  # fmt: skip
    base.update(kw)
    return Usage(**base)  # type: ignore[arg-type]


TERMS = PriceTerms.parse(
    {"per_job": "100.00 CNY", "per_1k_rows_scanned": "0.50", "per_mb_out": "2.00 CNY"}
)


def test_terms_parse_every_component() -> None:
    assert PriceTerms("CNY", Decimal("100.00"), Decimal("0.50"), Decimal("2.00"), 0) == TERMS
    assert TERMS.to_dict() == {
        "currency": "CNY",
        "per_job": "100.00",
        "per_1k_rows_scanned": "0.50",
        "per_mb_out": "2.00",
        "free_jobs": 0,
        "contribution_share": False,
    }
    assert PriceTerms.parse(TERMS.to_dict()) == TERMS


def test_price_is_exact_sum_of_components() -> None:
    price = price_for(TERMS, job(rows_scanned=1234, bytes_out=1_234_567))
    # 100 + 0.50 * 1.234 + 2.00 * 1.234567
    assert price == Price(Decimal("103.086134"), "CNY")


def test_per_job_only_terms_from_a_policy_price() -> None:
    terms = PriceTerms.per_job_only(Price.parse("100.00 CNY"))
    assert price_for(terms, job(rows_scanned=10**9)) == Price(Decimal("100.00"), "CNY")


def test_free_quota_covers_the_first_jobs_only() -> None:
    terms = PriceTerms.parse({"per_job": "5 CNY", "free_jobs": 2})
    assert [price_for(terms, job(), prior_jobs=n).amount for n in range(4)] == [0, 0, 5, 5]


def test_denied_and_failed_attempts_cost_nothing() -> None:
    assert price_for(TERMS, job(status="denied", rows_scanned=10)).amount == 0
    assert price_for(TERMS, job(status="failed", rows_scanned=10)).amount == 0


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [("0.125", "0.12"), ("0.135", "0.14"), ("0.005", "0.00"), ("0.015", "0.02"),
     ("21.217251", "21.22"), ("2", "2.00"), ("0.1249999", "0.12")],
)  # fmt: skip
def test_round_money_is_half_even_to_cents(amount: str, rounded: str) -> None:
    assert str(round_money(Decimal(amount))) == rounded


def test_terms_default_to_cny_and_zero() -> None:
    terms = PriceTerms.parse({})
    assert terms.currency == "CNY"
    assert price_for(terms, job(rows_scanned=5)).amount == 0


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"per_job": 0.5}, "floats are not exact"),
        ({"per_job": "1 CNY", "per_mb_out": "1 USD"}, "one currency"),
        ({"per_row": "1"}, "known terms"),
        ({"per_job": "-1"}, "is negative: a price is 0 or more"),
        ({"per_job": "-2.5E1"}, "is negative"),
        ({"per_job": "-0"}, "not a number such as"),
        # Decimal() reads these; a price list should not
        ({"per_job": "1_000"}, "not a number such as"),
        ({"per_job": "١٠٠"}, "not a number such as"),
        ({"per_job": "５"}, "not a number such as"),
        ({"per_job": "NaN"}, "not a number such as"),
        # zero, but its written digits reached every price computed from it (Rounded)
        ({"per_job": "0e-100"}, "too many digits"),
        ({"per_job": "0." + "0" * 100}, "too many digits"),
        ({"per_job": "1." + "0" * 70}, "too many digits"),
        ({"per_job": "abc"}, "not a number"),
        ({"free_jobs": -1}, "free_jobs"),
        ({"free_jobs": True}, "free_jobs"),
        ({"per_job": "100 not-a-currency"}, "three-letter code"),
        ({"per_job": "100 $"}, "three-letter code"),
        ({"currency": "yuan"}, "three-letter code"),
        ({"currency": "人民币"}, "three-letter code"),
        # a typo was a currency of its own on every bill
        ({"per_job": "10 CYN"}, "'CYN' is not an ISO 4217 code (did you mean CNY"),
        ({"currency": "ZZZ"}, "'ZZZ' is not an ISO 4217 code"),
        ({"currency": "XTS"}, "'XTS' is not an ISO 4217 code"),  # reserved for testing
        ({"per_job": "1E+26 CNY"}, "too large"),
        ({"per_mb_out": "1000000000000000"}, "too large"),
        ({"per_job": "0.0000000000001"}, "more than 12 decimal places"),
    ],
)
def test_bad_terms_are_refused(terms: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as err:
        PriceTerms.parse(terms)
    assert message in str(err.value)


def test_currencies_in_use_and_recently_withdrawn_are_accepted() -> None:
    from dataspace.metering.pricing import _MINOR_DIGITS

    for currency in ("CNY", "hkd", "EUR", "XCG", "ZWG", "HRK", "UYI"):
        assert PriceTerms.parse({"per_job": f"1 {currency}"}).currency == currency.upper()
    assert set(_MINOR_DIGITS) <= currencies.ISO_4217  # every minor unit names a real code
    assert minor_unit("UYI") == Decimal(1)  # no minor unit: it was rounded to hundredths


def test_trailing_zeros_are_not_decimal_places() -> None:
    terms = PriceTerms.parse({"per_job": "0.0000000000010 CNY"})
    assert terms.per_job == Decimal("1E-12")


def test_an_amount_in_the_form_decimal_writes_it_is_read_back() -> None:
    """An offer priced at 0.0000001 stores '1E-7' (str of the Decimal): it must parse."""
    price = Price(Decimal("0.0000001"), "CNY")
    assert Price.parse(str(price)) == price


def test_a_policy_price_takes_the_same_checks() -> None:
    assert Price.parse("100.00 cny") == Price(Decimal("100.00"), "CNY")
    for bad, message in [("1E+26 CNY", "too large"), ("1000000000000000 CNY", "too large"),
                         ("5 dollars", "three-letter code")]:
        with pytest.raises(InputError, match=message):
            Price.parse(bad)


def test_a_contribution_share_adds_the_jobs_part_of_the_revenue_pool() -> None:
    sharing = PriceTerms.parse({"per_job": "10 CNY", "contribution_share": True, "free_jobs": 1})
    assert PriceTerms.parse(sharing.to_dict()) == sharing
    share = dataclasses.replace(job(), revenue_share=Decimal("750.00"))
    assert price_for(sharing, share, prior_jobs=1) == Price(Decimal("760.00"), "CNY")
    assert price_for(sharing, share, prior_jobs=0).amount == 0  # a free job is free entirely
    plain = PriceTerms.parse({"per_job": "10 CNY"})  # an offer without the term takes no share
    assert price_for(plain, share) == Price(Decimal("10"), "CNY")
    with pytest.raises(InputError, match="true or false"):
        PriceTerms.parse({"contribution_share": "yes"})
