"""The facts a policy is evaluated against, gathered by the caller at execution time."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from dataspace.policy import currencies
from dataspace.policy.errors import PolicyError


@dataclass(frozen=True)
class Price:
    """An amount of money: ``Price(Decimal("100.00"), "CNY")``."""

    amount: Decimal
    currency: str

    @classmethod
    def parse(cls, text: str) -> Price:
        """``"100.00 CNY"`` -> ``Price(Decimal("100.00"), "CNY")``."""
        parts = text.split()
        if len(parts) != 2:
            raise PolicyError(f"price {text!r} is not 'AMOUNT CURRENCY'",
                              hint="e.g. '100.00 CNY'")
        return cls(money_amount(parts[0]), currency_code(parts[1]))

    def __str__(self) -> str:
        return f"{self.plain_amount} {self.currency}"

    @property
    def plain_amount(self) -> str:
        """The amount as people write it: '1000' for 1e3 and '0.0000001' for 1E-7, never
        exponent form (which offers, catalogs and agreements would otherwise show)."""
        return format(self.amount, "f")


MAX_AMOUNT = Decimal(10) ** 15  # more than any one job costs; keeps sums exact at 28 digits
MAX_DECIMALS = 12
MAX_WRITTEN_DIGITS = 30  # 15 integer digits and 12 places, with room for trailing zeros
# ASCII digits, a fraction, an exponent: what Decimal itself writes ("1E-7" for a tenth of a
# micro-unit, as offers store it); not "1_000", other scripts' digits or signs
_AMOUNT_RE = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


def money_amount(text: str, path: str = "") -> Decimal:
    """A non-negative decimal amount below 10^15 with at most 12 decimal places."""
    # ASCII decimals only: Decimal() would also take "1_000", "١٠٠", "５" and "-0".
    unsigned = text.strip()[1:] if isinstance(text, str) and text.strip()[:1] == "-" else ""
    if _AMOUNT_RE.match(unsigned) and Decimal(unsigned) != 0:  # "-0" is refused below
        raise PolicyError(f"price amount {text!r} is negative: a price is 0 or more",
                          path=path, hint="a price pays the provider; write e.g. 5, not -5")
    if not isinstance(text, str) or not _AMOUNT_RE.match(text.strip()):
        raise PolicyError(f"price amount {text!r} is not a number such as 12.50",
                          path=path, hint="digits, optionally a point and more digits")
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise PolicyError(f"price amount {text!r} is not a number", path=path) from None
    if not amount.is_finite() or amount < 0:
        raise PolicyError(f"price amount {text!r} must be a non-negative number", path=path)
    if amount >= MAX_AMOUNT:
        raise PolicyError(f"price amount {text!r} is too large", path=path,
                          hint="amounts must be below 10^15")
    exponent = amount.normalize().as_tuple().exponent  # trailing zeros are not places
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        raise PolicyError(f"price amount {text!r} has more than {MAX_DECIMALS} decimal places",
                          path=path)
    # As written, too: '0E-100' or 0.000… with a hundred zeros is 0, but carries its digits
    # and exponent into every price computed from it (exact arithmetic then overflows).
    written = amount.as_tuple()
    if len(written.digits) > MAX_WRITTEN_DIGITS or (
        isinstance(written.exponent, int) and abs(written.exponent) > MAX_WRITTEN_DIGITS
    ):
        raise PolicyError(f"price amount {text!r} is written with too many digits",
                          path=path, hint=f"at most {MAX_WRITTEN_DIGITS}")
    return amount


def currency_code(text: str, path: str = "") -> str:
    """An ISO 4217 code, upper-cased (``cny`` -> ``CNY``)."""
    given = text.strip()
    code = given.upper()  # after the ASCII check below: "ßx".upper() is "SSX"
    if len(code) != 3 or not given.isascii() or not code.isalpha():
        raise PolicyError(f"currency {text!r} is not a three-letter code such as 'CNY'",
                          path=path, hint="use the ISO 4217 code: CNY, EUR, USD, HKD ...")
    if not currencies.known(code):
        near = currencies.closest(code)
        raise PolicyError(
            f"currency {text!r} is not an ISO 4217 code"
            + (f" (did you mean {' or '.join(near)}?)" if near else ""),
            path=path, hint="use the ISO 4217 code: CNY, EUR, USD, HKD ...",
        )
    return code


def _frozen(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(value)


@dataclass(frozen=True)
class Request:
    """What is asked, by whom, and the state of the agreement — at execution time.

    ``None`` means "not known": any constraint that needs the fact fails closed. Iterables for
    ``groups`` and ``fields`` are frozen; datetimes must carry a UTC offset.
    """

    action: str
    assignee: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    purpose: str | None = None
    target: str | None = None
    now: datetime | None = None
    agreed_at: datetime | None = None
    jobs_run: int | None = None
    fields: frozenset[str] | None = None
    output: str | None = None
    region: str | None = None
    epsilon: float | Decimal | None = None
    epsilon_spent: float | Decimal | None = None
    delta: float | Decimal | None = None
    delta_spent: float | Decimal | None = None
    min_group_size: int | None = None
    peer_set_size: int | None = None
    price: Price | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", _frozen(self.groups) or frozenset())
        object.__setattr__(self, "fields", _frozen(self.fields))
        for name in ("now", "agreed_at"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise PolicyError(f"Request.{name} must be timezone-aware",
                                  hint="use datetime.now(timezone.utc)")

    @property
    def identities(self) -> frozenset[str]:
        """The assignee and every group it belongs to."""
        ids = set(self.groups)
        if self.assignee is not None:
            ids.add(self.assignee)
        return frozenset(ids)
