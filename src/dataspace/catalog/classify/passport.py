"""护照号码 — passport numbers of the People's Republic of China.

No check character is printed in the number itself (only in the machine-readable zone), so
this detector is pattern-only and the weakest of the identifiers:

* ordinary passports: ``E`` + 8 digits, ``E`` + letter (not I/O) + 7 digits (e-passports
  since 2012), ``G`` + 8 digits (older);
* diplomatic / service / public-affairs passports: ``D``, ``S``, ``SE``, ``DE``, ``PE`` or
  ``P`` + 7 digits.

Decoys with the same shape are common (``E20240001`` invoice numbers, ``G00001234`` stock
codes): a column is rejected when its numbers form a dense sequence or many share a long
run of leading zeros, unless the header says passport.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, compact

_PASSPORT = re.compile(r"^(?:[EG]\d{8}|E[A-HJ-NP-Z]\d{7}|(?:D|S|P|DE|SE|PE)\d{7})$")


def is_valid_passport(value: str) -> bool:
    return _PASSPORT.match(compact(value).upper()) is not None


def _digits(value: str) -> int:
    return int("".join(c for c in compact(value) if c.isdigit()) or "0")


class PassportDetector(BaseDetector):
    category = "passport"
    rank = 40
    strength = 0.7
    evidence = "passport numbers of the PRC (pattern only: no check character)"
    vocab = HeaderVocab(
        zh=("护照",),
        en=("passport", "passport_no", "passport_number"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_valid_passport(value)

    def accept_column(self, matched: Sequence[str], *, hinted: bool) -> str | None:
        if hinted or len(matched) < 2:
            return None
        nums = sorted({_digits(v) for v in matched})
        if len(nums) > 1:
            close = sum(1 for a, b in itertools.pairwise(nums) if b - a <= 1000)
            if close / (len(nums) - 1) > 0.5:
                return "the numbers form a dense sequence, like invoice or stock numbers"
        zeros = sum(1 for v in matched if re.search(r"^[A-Z]{1,2}000", compact(v).upper()))
        if zeros / len(matched) > 0.5:
            return "most numbers start with 000, like padded serial numbers"
        return None
