"""地址 — Chinese postal addresses (a heuristic).

A value is an address when it is mostly Han characters, 6 to 120 characters long, names an
administrative area (a province name, or a word ending in 省, 市, 自治区, 区, 县, 旗, 州,
镇, 乡 or 街道) *before* a street-level part (路, 街, 大道, 巷, 弄, 胡同, 村, 组, 小区,
大厦, 苑, 花园) and ends in a precise location: a house number (号, 栋, 幢, 座, 单元, 室,
楼, 层, 户) or digits. Company names (北京市朝阳区某某科技有限公司) and prose have the area
words but not the street-plus-number ending. Under an address header the house number may
be missing (北京市海淀区中关村大街): area and street suffice there.
"""

from __future__ import annotations

import re

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, is_han, to_halfwidth
from dataspace.catalog.classify.regions import PROVINCE_NAMES

_AREA = re.compile(
    "(?:"
    + "|".join(PROVINCE_NAMES)
    + r"|[\u4e00-\u9fff]{1,8}?(?:省|市|自治区|区|县|旗|州|镇|乡|街道))"
)
_STREET = re.compile(
    r"(?:路|街|大道|道|巷|弄|胡同|村|组|小区|大厦|苑|花园|广场|公寓|新村|里)"
)
_PRECISE = re.compile(
    r"(?:\d+|[一二三四五六七八九十百零〇]+)\s*(?:号|栋|幢|座|单元|室|楼|层|户|组)|\d{1,5}$"
)


def is_address(value: str, *, precise: bool = True) -> bool:
    text = to_halfwidth(value).strip()
    if not 6 <= len(text) <= 120:
        return False
    han = sum(1 for c in text if is_han(c))
    if han < 4 or han < len(text) * 0.5:
        return False
    area = _AREA.search(text)
    if area is None:
        return False
    street = _STREET.search(text, area.end())
    if street is None:
        return False
    return not precise or _PRECISE.search(text, street.start()) is not None


class AddressDetector(BaseDetector):
    category = "address_cn"
    rank = 20
    strength = 0.8
    evidence = "Chinese postal addresses (area, street and house number)"
    vocab = HeaderVocab(
        zh=("地址", "住址", "居住地", "户籍", "家庭住址", "通讯地址", "收货地址", "住所"),
        en=("address", "addr", "home_address", "residence", "street_address", "mailing_address",
            "shipping_address", "dz"),
        exclude_zh=("ip地址", "网址", "邮件地址", "邮箱地址", "网络地址"),
        exclude_en=("ip", "ip_addr", "ip_address", "mac", "email", "url", "web", "remote_addr"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return is_address(value, precise=not hinted)
