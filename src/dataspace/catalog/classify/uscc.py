"""统一社会信用代码 — unified social credit codes of organisations (GB 32100-2015).

18 characters over the 31-character alphabet ``0-9 A-Z`` without ``I O S V Z``:

====  =====================================================================
1     registration authority code (1 机构编制, 5 民政, 9 市场监管/工商, Y 其他, ...)
2     organisation category code, valid per authority (9 → 1 企业, 2 个体工商户, 3 农民专业合作社)
3–8   administrative division code (GB/T 2260; ``10`` prefix for central organs)
9–17  organisation code (GB 11714), itself ending in a MOD 11 check character
18    check character: weights 3^(i-1) mod 31, check = 31 - (sum mod 31), 31 → 0
====  =====================================================================

An organisation identifier, not personal information.
"""

from __future__ import annotations

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, compact
from dataspace.catalog.classify.id_card import CHECKSUMMED_MIN_SHARE
from dataspace.catalog.classify.regions import PROVINCE_CODES

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1, 3, 9, 27, 19, 26, 16, 17, 20, ...

#: GB 32100-2015 Annex A registration authority -> allowed organisation category codes
#: (with the later additions for 军队 (A) and 农业农村 (N) as published by the State
#: Administration for Market Regulation).
CATEGORIES: dict[str, str] = {
    "1": "1239",  # 机构编制: 机关, 事业单位, 中央编办直接管理机构编制的群众团体, 其他
    "2": "19",  # 外交: 外国常驻新闻机构, 其他
    "3": "1234569",  # 司法行政: 律师执业机构, 公证处, 基层法律服务所, 司法鉴定机构, 仲裁委员会, ...
    "4": "19",  # 文化: 外国在华文化中心, 其他
    "5": "1239",  # 民政: 社会团体, 民办非企业单位, 基金会, 其他
    "6": "129",  # 旅游: 外国旅游部门常驻代表机构, 港澳台地区旅游部门常驻内地代表机构, 其他
    "7": "129",  # 宗教: 宗教活动场所, 宗教院校, 其他
    "8": "19",  # 工会: 基层工会, 其他
    "9": "123",  # 工商: 企业, 个体工商户, 农民专业合作社
    "A": "19",  # 中央军委改革和编制办公室: 军队事业单位, 其他
    "N": "1239",  # 农业: 组级/村级/乡镇级集体经济组织, 其他
    "Y": "1",  # 其他
}

ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def _org_char_value(ch: str) -> int:
    if ch.isdigit():
        return int(ch)
    return ord(ch) - ord("A") + 10


def org_code_check(body: str) -> str:
    """GB 11714 check character for an 8-character organisation code body."""
    total = sum(_org_char_value(c) * w for c, w in zip(body, ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def is_valid_org_code(code: str) -> bool:
    """A 9-character organisation code (GB 11714), hyphen optional: ``M000100Y-4``."""
    text = code.replace("-", "").upper()
    if len(text) != 9 or not text.isascii() or not text[:8].isalnum():
        return False
    return text[8] == org_code_check(text[:8])


def check_char(first17: str) -> str:
    """GB 32100 check character for the first 17 characters (assumed in the alphabet)."""
    total = sum(_VALUE[c] * w for c, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(value: str) -> bool:
    text = compact(value).upper()
    if len(text) != 18 or any(c not in _VALUE for c in text):
        return False
    if text[1] not in CATEGORIES.get(text[0], ""):
        return False
    division = text[2:8]
    if not division.isdigit() or (division[:2] not in PROVINCE_CODES and division[:2] != "10"):
        return False
    if not is_valid_org_code(text[8:17]):
        return False
    return text[17] == check_char(text[:17])


class UsccDetector(BaseDetector):
    category = "uscc"
    rank = 100
    strength = 1.0
    evidence = (
        "valid unified social credit codes "
        "(GB 32100 check character, embedded GB 11714 organisation code, authority and "
        "category codes)"
    )
    vocab = HeaderVocab(
        zh=("统一社会信用代码", "信用代码", "社会信用", "统一代码", "营业执照号", "纳税人识别号"),
        en=("uscc", "credit_code", "social_credit_code", "unified_social_credit_code",
            "usc_code", "taxpayer_id", "tax_id"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_valid_uscc(value)

    def threshold(self, min_share: float) -> float:
        return min(min_share, CHECKSUMMED_MIN_SHARE)  # a check character, as for ID numbers
