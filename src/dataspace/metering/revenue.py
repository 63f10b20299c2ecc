"""Splitting a revenue pool among providers by their contribution, to the cent.

A fused model's value comes from several providers; its price can follow the value each one
added. :func:`split` divides a pool (``3000.00 CNY``) in proportion to contribution values
(Shapley or leave-one-out, :mod:`dataspace.federated.contribution`):

* a value at or below zero earns nothing (a provider that did not improve the model, or made
  it worse, is not paid from the pool); if no value is positive the pool is split equally
  among the providers that did no harm (value zero), and among all only if every one did
  (a provider that made the model worse never takes a share from one that did not);
* every share is a whole number of cents (of the currency's minor unit: 1 JPY, 0.001 KWD)
  and the shares add up to the pool **exactly**: each gets its proportional amount rounded
  down to the cent, and the cents left over go one each to the largest remainders (ties: by
  name), so no cent is lost or made;
* values are read as the exact rationals of their floats and divided exactly (fractions, no
  rounding until the cent), so every node given the same values computes the same split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

from dataspace.errors import InputError
from dataspace.metering.pricing import minor_unit
from dataspace.policy.request import MAX_AMOUNT, Price

CENT = Decimal("0.01")


def split(
    pool: Decimal, values: Mapping[str, float], unit: Decimal = CENT
) -> dict[str, Decimal]:
    """``pool`` (a non-negative amount in whole ``unit``s: the currency's minor unit) divided
    by ``values`` (see module)."""
    if not isinstance(pool, Decimal) or not pool.is_finite() or pool < 0:
        raise InputError(f"a revenue pool must be a non-negative amount, got {pool!r}")
    if pool >= MAX_AMOUNT:
        raise InputError(f"a revenue pool must be below 10^15, got {pool}")
    if pool != pool.quantize(unit):
        raise InputError(f"a revenue pool is in whole units of {unit}, got {pool}")
    if not values:
        raise InputError("a revenue pool needs at least one provider to split among")
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise InputError(f"the contribution of {name} is not a finite number: {value!r}")
    weights = {name: max(Fraction(value), Fraction(0)) for name, value in values.items()}
    total = sum(weights.values(), Fraction(0))
    if total == 0:
        harmless = [name for name, value in values.items() if value >= 0] or list(values)
        weights = {name: Fraction(name in harmless) for name in values}
        total = Fraction(len(harmless))
    cents = int(pool / unit)
    shares: dict[str, int] = {}
    remainders: list[tuple[Fraction, str]] = []
    for name, weight in weights.items():
        exact = cents * weight / total  # in cents
        shares[name] = math.floor(exact)
        remainders.append((exact - shares[name], name))
    left = cents - sum(shares.values())  # 0 <= left < number of providers
    for _remainder, name in sorted(remainders, key=lambda r: (-r[0], r[1]))[:left]:
        shares[name] += 1
    return {name: Decimal(c) * unit for name, c in sorted(shares.items())}


def parse_pool(text: str) -> Price:
    """A revenue pool as a training names it (``"3000 CNY"``): a positive amount in whole
    cents, returned with two decimals (``3000.00 CNY``)."""
    price = Price.parse(text)
    unit = minor_unit(price.currency)
    if price.amount <= 0 or price.amount != price.amount.quantize(unit):
        raise InputError(f"a revenue pool is a positive amount in whole units of {unit} "
                         f"{price.currency}, got {text!r}")  # fmt: skip
    return Price(price.amount.quantize(unit), price.currency)
