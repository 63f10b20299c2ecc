"""银行卡号 — payment card numbers (ISO/IEC 7812).

16–19 digits (spaces or dashes between groups allowed; American Express' 15 digits too)
that pass the Luhn check *and* start with an issuer prefix a card in China plausibly has:
UnionPay 62 (and the older domestic 60, 9x prefixes), Visa 4, Mastercard 51–55 and
2221–2720, American Express 34/37, JCB 3528–3589, Discover 6011/644–649/65, Diners 36/38.
Luhn alone lets 1 random number in 10 through; with the prefix test about 1 in 25, far
below the share a column needs to be classified.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, compact


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(body: str) -> str:
    """The digit that makes ``body + digit`` pass the Luhn check."""
    for d in "0123456789":
        if luhn_ok(body + d):
            return d
    raise AssertionError("unreachable")  # pragma: no cover


def issuer(digits: str) -> str | None:
    """The card scheme a number's prefix (IIN) belongs to, or None."""
    n = len(digits)
    p2, p4 = int(digits[:2]), int(digits[:4])
    if n == 15:
        return "American Express" if p2 in (34, 37) else None
    if p2 == 62:
        return "UnionPay"
    if digits[0] == "4":
        return "Visa"
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return "Mastercard"
    if 3528 <= p4 <= 3589:
        return "JCB"
    if p4 == 6011 or 644 <= int(digits[:3]) <= 649 or p2 == 65:
        return "Discover"
    if p2 in (36, 38):
        return "Diners Club"
    if p2 == 60 or (digits[0] == "9" and n == 19):
        return "China domestic"
    return None


def normalise(value: str) -> str:
    return compact(value, " -")


def is_valid_card(value: str) -> bool:
    digits = normalise(value)
    if not (15 <= len(digits) <= 19) or not digits.isdigit() or not digits.isascii():
        return False
    return issuer(digits) is not None and luhn_ok(digits)


class BankCardDetector(BaseDetector):
    category = "bank_card"
    rank = 80
    strength = 0.95
    evidence = "valid payment card numbers (Luhn check digit and a known issuer prefix)"
    vocab = HeaderVocab(
        zh=("银行卡", "卡号", "银行账号", "银行账户", "信用卡", "借记卡", "账号"),
        en=("bank_card", "card_no", "card_number", "cardno", "card_num", "pan", "account_no",
            "acct_no", "bank_account", "credit_card", "debit_card"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_valid_card(value)

    def accept_column(self, matched: Sequence[str], *, hinted: bool) -> str | None:
        if hinted or len(matched) < 20:
            return None
        # A run of consecutive numbers (ticket or order numbers) passes Luhn for 1 in 10
        # values whatever its prefix; real card numbers are not consecutive.
        nums = sorted({int(normalise(v)) for v in matched})
        close = sum(1 for a, b in itertools.pairwise(nums) if b - a <= 20)
        if len(nums) > 1 and close / (len(nums) - 1) > 0.5:
            return "the numbers form a dense sequence, like order or ticket numbers"
        return None
