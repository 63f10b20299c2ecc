"""Price terms of an offer and the price of one job under them.

Terms are a small JSON object the contracts layer stores with the offer::

    {
      "currency": "CNY",               # optional if per_job names it
      "per_job": "100.00 CNY",         # charged per completed job
      "per_1k_rows_scanned": "0.50",   # per 1,000 rows scanned, pro rata
      "per_mb_out": "2.00",            # per MB (10**6 bytes) released, pro rata
      "free_jobs": 10,                 # the agreement's first 10 completed jobs cost nothing
      "contribution_share": true,      # federated training: plus this provider's share of the
                                       # job's revenue pool, split by contribution,
      "min_revenue_pool": "1000 CNY"   # and only in a training whose pool is at least this
    }

Amounts are decimal strings ("0.50" or "0.50 CNY") or integers — never floats, whose binary
value is not the decimal the provider wrote. Every component is optional; missing means zero.

**Rounding.** :func:`price_for` is exact: it rounds nothing (arithmetic that would be inexact
raises). Usage records and the ledger keep that exact amount. Rounding to 0.01 (half-even)
happens once, on a statement's total per agreement and currency (:func:`round_money`), so the
lines always add up exactly to the unrounded total and anyone can recompute the amount due.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from dataspace.policy.errors import PolicyError
from dataspace.policy.request import Price, currency_code, money_amount

if TYPE_CHECKING:
    from dataspace.metering.usage import Usage

__all__ = ["CENT", "DEFAULT_CURRENCY", "PriceTerms", "minor_unit", "price_for", "round_money"]

CENT = Decimal("0.01")
ROWS_UNIT = 1000  # rows per "1k rows"
MB = 1_000_000  # bytes per MB (SI)
DEFAULT_CURRENCY = "CNY"
_KEYS = (
    "currency", "per_job", "per_1k_rows_scanned", "per_mb_out", "free_jobs", "contribution_share",
    "min_revenue_pool",
)
_ZERO = Decimal(0)


@dataclass(frozen=True)
class PriceTerms:
    """Per-job price plus optional per-1k-rows-scanned and per-MB-out components."""

    currency: str = DEFAULT_CURRENCY
    per_job: Decimal = _ZERO
    per_1k_rows_scanned: Decimal = _ZERO
    per_mb_out: Decimal = _ZERO
    free_jobs: int = 0
    contribution_share: bool = False  # takes its share of a training's revenue pool
    min_revenue_pool: Decimal = _ZERO  # ... only of a pool at least this large

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> PriceTerms:
        """Read terms from their JSON form (see the module docstring)."""
        if not isinstance(data, Mapping):
            raise PolicyError("price terms must be a JSON object", path="price")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise PolicyError(
                f"unknown price term(s): {', '.join(map(str, unknown))}",
                path="price",
                hint="known terms: " + ", ".join(_KEYS),
            )
        currency = data.get("currency")
        if currency is not None and not isinstance(currency, str):
            raise PolicyError("currency must be a code such as 'CNY'", path="price.currency")
        currency = currency_code(currency, "price.currency") if currency is not None else None
        amounts: dict[str, Decimal] = {}
        for key in ("per_job", "per_1k_rows_scanned", "per_mb_out"):
            if data.get(key) is None:
                amounts[key] = _ZERO
                continue
            amount, cur = _amount(data[key], f"price.{key}")
            if cur is not None:
                if currency is not None and cur != currency:
                    raise PolicyError(
                        f"{key} is in {cur} but the terms are in {currency}",
                        path=f"price.{key}",
                        hint="use one currency for every component",
                    )
                currency = cur
            amounts[key] = amount
        free = data.get("free_jobs", 0)
        if isinstance(free, bool) or not isinstance(free, int) or free < 0:
            raise PolicyError("free_jobs must be a non-negative integer", path="price.free_jobs")
        share = data.get("contribution_share", False)
        if not isinstance(share, bool):
            raise PolicyError("contribution_share must be true or false",
                              path="price.contribution_share")
        minimum = _ZERO
        if data.get("min_revenue_pool") is not None:
            if not share:
                raise PolicyError("min_revenue_pool needs contribution_share",
                                  path="price.min_revenue_pool")
            minimum, cur = _amount(data["min_revenue_pool"], "price.min_revenue_pool")
            if cur is not None and currency is not None and cur != currency:
                raise PolicyError(f"min_revenue_pool is in {cur} but the terms are in {currency}",
                                  path="price.min_revenue_pool")
            currency = currency or cur
        return cls(currency or DEFAULT_CURRENCY, free_jobs=free, contribution_share=share,
                   min_revenue_pool=minimum, **amounts)

    @classmethod
    def per_job_only(cls, price: Price) -> PriceTerms:
        """Terms from a policy's plain price duty (``Enforcement.price``)."""
        return cls(currency=price.currency, per_job=price.amount)

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "per_job": _fmt(self.per_job),
            "per_1k_rows_scanned": _fmt(self.per_1k_rows_scanned),
            "per_mb_out": _fmt(self.per_mb_out),
            "free_jobs": self.free_jobs,
            "contribution_share": self.contribution_share,
            **({"min_revenue_pool": _fmt(self.min_revenue_pool)} if self.contribution_share
               else {}),
        }


def _amount(value: Any, path: str) -> tuple[Decimal, str | None]:
    if isinstance(value, bool | float):
        raise PolicyError(
            f"amount {value!r} must be a decimal string or an integer",
            path=path,
            hint="write '0.50', not 0.5: floats are not exact",
        )
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise PolicyError(f"amount {value!r} must be a decimal string", path=path)
    parts = text.split()
    if len(parts) not in (1, 2):
        raise PolicyError(f"amount {text!r} is not 'AMOUNT [CURRENCY]'", path=path)
    amount = money_amount(parts[0], path)
    return amount, currency_code(parts[1], path) if len(parts) == 2 else None


def price_for(terms: PriceTerms, usage: Usage, *, prior_jobs: int = 0) -> Price:
    """The exact price of one job; ``prior_jobs`` counts completed jobs already metered.

    Denied and failed attempts cost nothing; so do the first ``terms.free_jobs`` completed jobs.
    With ``contribution_share``, the job's ``usage.revenue_share`` (this provider's part of a
    training's revenue pool, :func:`dataspace.metering.revenue.split`) is added.
    """
    if usage.status != "completed" or prior_jobs < terms.free_jobs:
        return Price(_ZERO, terms.currency)
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[decimal.Inexact] = True
        ctx.traps[decimal.Rounded] = True
        amount = (
            terms.per_job
            + terms.per_1k_rows_scanned * usage.rows_scanned / ROWS_UNIT
            + terms.per_mb_out * usage.bytes_out / MB
        )
        if terms.contribution_share and usage.revenue_share is not None:
            amount += usage.revenue_share
    return Price(amount, terms.currency)


#: Digits kept by sums of money and budgets: far beyond any line (prices < 10^15 with 12
#: places, times 64-bit quantities), so sums never round.
EXACT_DIGITS = 100


#: ISO 4217 currencies whose minor unit is not a hundredth (every other has two places).
_MINOR_DIGITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}  # fmt: skip


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of ``currency`` a bill can ask: 0.01 CNY, 1 JPY, 0.001 KWD."""
    return Decimal(1).scaleb(-_MINOR_DIGITS.get(currency.upper(), 2))


def round_money(amount: Decimal, currency: str = DEFAULT_CURRENCY) -> Decimal:
    """Round half-even to the currency's minor unit — done once, on statement totals."""
    with decimal.localcontext() as ctx:
        ctx.prec = EXACT_DIGITS  # quantize needs room for every digit of a large total
        return amount.quantize(minor_unit(currency), rounding=ROUND_HALF_EVEN)


def _fmt(value: Decimal) -> str:
    return format(value, "f")
