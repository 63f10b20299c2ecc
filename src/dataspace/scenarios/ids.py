"""Identifiers that look real: 统一社会信用代码 and 身份证 with valid check characters,
names, addresses and GB/T 2260 region codes (reusing the sample generator's algorithms)."""

from __future__ import annotations

import datetime as dt
import random

from dataspace.samples.generate import id_check, make_id, make_name, make_uscc

# County-level GB/T 2260 codes with their names (a handful per province that looks real).
COUNTIES = {
    "410102": "郑州市中原区", "410184": "新郑市", "410522": "安阳县", "410721": "新乡县",
    "411422": "睢县", "411523": "新县", "370211": "青岛市黄岛区", "370881": "曲阜市",
    "371502": "聊城市东昌府区", "320583": "昆山市", "320281": "江阴市", "330782": "义乌市",
    "440306": "深圳市宝安区", "440113": "广州市番禺区", "510116": "成都市双流区",
    "420984": "汉川市", "430181": "浏阳市", "130682": "定州市", "340823": "枞阳县",
    "610431": "武功县", "620702": "张掖市甘州区",
    "650106": "乌鲁木齐市头屯河区",
    "110108": "北京市海淀区", "310115": "上海市浦东新区",
}
STREETS = [
    "人民路", "解放路", "建设路", "中山路", "和平路", "文化路",
    "胜利路", "新华路", "工业路", "长江路", "黄河路",
]


def counties(rng: random.Random, k: int) -> list[str]:
    return rng.sample(sorted(COUNTIES), k)


def firm_code(rng: random.Random, area: str) -> str:
    return make_uscc(rng, area)


def person_id(rng: random.Random, area: str) -> str:
    born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 62))
    code = make_id(rng, born, rng.random() < 0.5)
    first17 = area + code[6:-1]
    return first17 + id_check(first17)


def person_name(rng: random.Random) -> str:
    return make_name(rng)


def address(rng: random.Random, area: str) -> str:
    return f"{COUNTIES.get(area, '')}{rng.choice(STREETS)}{rng.randint(1, 399)}号"


def unique(make: object, n: int, rng: random.Random, area_of: list[str]) -> list[str]:
    """n distinct identifiers, the i-th in area_of[i]."""
    assert callable(make)
    seen: set[str] = set()
    out = []
    for i in range(n):
        while True:
            code = str(make(rng, area_of[i]))
            if code not in seen:
                seen.add(code)
                out.append(code)
                break
    return out
