"""居民身份证号 — resident ID numbers (GB 11643-1999).

18 characters: a 6-digit address code (GB/T 2260), an 8-digit birth date, a 3-digit sequence
code and a check character computed with ISO 7064 MOD 11-2 (``X`` stands for 10). Random
18-digit numbers pass the check 1 time in 11, so the birth date (a real calendar date from
1900 up to today) and the province code are checked too; together they let fewer than 1 in
20,000 random numbers through. The 15-digit form issued before 1999 (6-digit address code,
``YYMMDD`` birth date in the 1900s, 3-digit sequence, no check character) is accepted with
the same date and province checks.
"""

from __future__ import annotations

import datetime as dt

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, compact
from dataspace.catalog.classify.regions import PROVINCE_CODES

WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7, 9, 10, 5, 8, 4, 2, 1, 6, 3, ...
CHECK_CHARS = "10X98765432"


def check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def normalise(value: str) -> str:
    return compact(value, " -").upper()


def _valid_birth_date(text: str, today: dt.date | None = None) -> bool:
    try:
        born = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return born.year >= 1900 and born <= (today or dt.date.today())


def is_valid_id(value: str, *, today: dt.date | None = None) -> bool:
    """True for an 18-digit (or legacy 15-digit) resident ID number that passes every check."""
    text = normalise(value)
    if len(text) == 15:
        if not text.isdigit() or text[:2] not in PROVINCE_CODES:
            return False
        return _valid_birth_date("19" + text[6:12], today)
    if len(text) != 18 or not text[:17].isdigit() or not text[:17].isascii():
        return False
    if text[:2] not in PROVINCE_CODES:
        return False
    if not _valid_birth_date(text[6:14], today):
        return False
    return text[17] == check_char(text[:17])


#: the share of valid values that marks a column of checksummed identifiers
CHECKSUMMED_MIN_SHARE = 0.2


class IdCardDetector(BaseDetector):
    category = "id_card_cn"
    rank = 100
    strength = 1.0
    evidence = (
        "valid resident ID numbers "
        "(GB 11643 check character, birth date and province code)"
    )
    vocab = HeaderVocab(
        zh=("身份证", "证件号", "公民身份号码", "身份号码"),
        en=("id_card", "idcard", "id_card_no", "id_no", "id_number", "sfz", "sfzh",
            "citizen_id", "national_id", "resident_id"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_valid_id(value)

    def threshold(self, min_share: float) -> float:
        # A random string passes the check character, a real birth date and a province code
        # far less than once in ten thousand: a fifth of valid numbers is a column of them.
        return min(min_share, CHECKSUMMED_MIN_SHARE)
