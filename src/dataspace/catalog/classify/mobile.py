"""手机号码 — mainland China mobile numbers.

11 digits, optionally preceded by ``+86``/``86``/``0086`` and grouped with spaces or
dashes, whose first three digits are a segment allocated to a mobile operator under the
MIIT telecommunications numbering plan (电信网编号计划) as of 2025:

13x (all), 145–149, 150–153 and 155–159, 162/165/166/167, 170–178, 18x (all),
190–193 and 195–199.

140–144 are 13-digit IoT numbers and 154, 179 and 194 are unallocated, so they are rejected.
"""

from __future__ import annotations

import re

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, compact

PREFIXES = frozenset(
    [f"13{d}" for d in "0123456789"]
    + [f"14{d}" for d in "56789"]
    + [f"15{d}" for d in "012356789"]
    + [f"16{d}" for d in "2567"]
    + [f"17{d}" for d in "012345678"]
    + [f"18{d}" for d in "0123456789"]
    + [f"19{d}" for d in "012356789"]
)

_COUNTRY = re.compile(r"^(?:\+86|0086|86)(?=1\d{10}$)")


def normalise(value: str) -> str:
    text = compact(value, " -()")
    return _COUNTRY.sub("", text)


def is_valid_mobile(value: str) -> bool:
    text = normalise(value)
    return len(text) == 11 and text.isdigit() and text.isascii() and text[:3] in PREFIXES


class MobileDetector(BaseDetector):
    category = "mobile_cn"
    rank = 60
    strength = 0.9
    evidence = "mainland mobile numbers (11 digits in an allocated 13x–19x segment)"
    vocab = HeaderVocab(
        zh=("手机", "电话", "联系方式", "移动号码", "联系号码"),
        en=("mobile", "phone", "tel", "cell", "cellphone", "telephone", "mobile_no",
            "phone_no", "phone_number", "msisdn", "contact_number"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_valid_mobile(value)
