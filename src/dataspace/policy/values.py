"""Typed right operands: dateTimes with offsets, ISO 8601 durations, decimals, term lists.

Each parser raises :class:`Malformed` with a message; the evaluator turns it into a
fail-closed reason.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from dataspace.policy.model import Operand


class Malformed(ValueError):
    """A right operand (or fact) that does not have the type its left operand needs."""


def as_datetime(value: Operand) -> datetime:
    if not isinstance(value, str):
        raise Malformed(f"expected an ISO 8601 dateTime string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(f"{value!r} is not an ISO 8601 dateTime") from None
    if "T" not in value or parsed.utcoffset() is None:
        raise Malformed(f"{value!r} needs a time and a UTC offset, e.g. 2026-12-31T23:59:59+08:00")
    return parsed


_DURATION = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)


@dataclass(frozen=True)
class Duration:
    """An ISO 8601 duration; years and months are calendar units, added to a start time."""

    years: int = 0
    months: int = 0
    days: int = 0
    seconds: Decimal = Decimal(0)

    @classmethod
    def parse(cls, value: Operand) -> Duration:
        if not isinstance(value, str):
            raise Malformed(f"expected an ISO 8601 duration string, got {value!r}")
        m = _DURATION.fullmatch(value)
        if not m or value in ("P", "PT") or value.endswith("T"):
            raise Malformed(f"{value!r} is not an ISO 8601 duration (e.g. P30D, P1Y, PT12H)")
        g = {k: v for k, v in m.groupdict().items() if v is not None}
        return cls(
            years=int(g.get("years", 0)),
            months=int(g.get("months", 0)),
            days=int(g.get("days", 0)) + 7 * int(g.get("weeks", 0)),
            seconds=Decimal(g.get("hours", 0)) * 3600 + Decimal(g.get("minutes", 0)) * 60
            + Decimal(g.get("seconds", 0)),
        )

    def after(self, start: datetime) -> datetime:
        """``start + self``; month ends clamp (Jan 31 + P1M = Feb 28/29). A sum past year
        9999 is :class:`Malformed` (no agreement runs that long; Python cannot say when)."""
        month_index = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + month_index // 12, month_index % 12 + 1
        try:
            day = min(start.day, calendar.monthrange(year, month)[1])
            shifted = start.replace(year=year, month=month, day=day)
            return shifted + timedelta(days=self.days, seconds=float(self.seconds))
        except (OverflowError, ValueError):
            raise Malformed(f"{start.isoformat()} plus this duration is past year 9999") from None


#: Numbers a policy may state: up to 10^30 in magnitude, down to 10^-30 in precision. Beyond
#: that a comparison can take minutes (Decimal('1e1000000')) or str() of an int can raise.
MAX_EXPONENT = 30
MAX_DIGITS = 60


def as_decimal(value: Operand | float | Decimal) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise Malformed(f"expected a number, got {value!r}")
    if isinstance(value, int) and abs(value) >= 10**MAX_EXPONENT:
        raise Malformed(f"a number of {value.bit_length()} bits is out of range (|x| < 1e30)")
    if isinstance(value, str) and len(value) > MAX_DIGITS + 10:
        raise Malformed(f"{value[:20]}... is too long to be a number this node compares")
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise Malformed(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise Malformed(f"{value!r} is not a finite number")
    if number and not -MAX_EXPONENT <= number.adjusted() < MAX_EXPONENT:
        raise Malformed(f"{value!r} is out of range (1e-30 <= |x| < 1e30)")
    return number


def as_int(value: Operand) -> int:
    number = as_decimal(value)
    if number != number.to_integral_value():
        raise Malformed(f"expected an integer, got {value!r}")
    return int(number)


def as_terms(value: Operand) -> tuple[str, ...]:
    """A string or a list of strings, as a tuple."""
    items = value if isinstance(value, tuple) else (value,)
    if not items or not all(isinstance(item, str) and item for item in items):
        raise Malformed(f"expected a string or a non-empty list of strings, got {value!r}")
    return tuple(str(item) for item in items)


def as_term(value: Operand) -> str:
    if not isinstance(value, str) or not value:
        raise Malformed(f"expected a single term, got {value!r}")
    return value
