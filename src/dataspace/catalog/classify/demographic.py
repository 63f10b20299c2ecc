"""Basic personal attributes: minors under 14, gender, marital history, ethnicity.

PIPL Art. 28 makes *any* personal information of a minor under fourteen sensitive, so the
minor detector works differently: a column whose header says age or birth date is flagged
when at least :data:`MINOR_MIN_SHARE` of its values are ages under 14 (or birth dates less
than 14 years ago) — not when most are.
"""

from __future__ import annotations

import datetime as dt
import re

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, to_halfwidth, wordlist
from dataspace.catalog.classify.vocab import VocabDetector

MINOR_AGE = 14
#: share of an age/birth-date column's values under 14 that marks it as minors' data
MINOR_MIN_SHARE = 0.01

_AGE = re.compile(r"^(\d{1,3})(?:\.0+)?\s*(?:岁|周岁|y|yrs|years)?$", re.IGNORECASE)
_DATE = re.compile(r"^(\d{4})[-/.年]?(\d{1,2})[-/.月]?(\d{1,2})日?(?:[ T].*)?$")


def _age_on(born: dt.date, today: dt.date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def is_minor_value(value: str, *, today: dt.date | None = None) -> bool:
    """An age under 14, or a birth date less than 14 years before ``today``."""
    text = to_halfwidth(value).strip()
    m = _AGE.match(text)
    if m:
        return int(m.group(1)) < MINOR_AGE
    m = _DATE.match(text)
    if m:
        try:
            born = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return False
        now = today or dt.date.today()
        return born <= now and _age_on(born, now) < MINOR_AGE
    return False


class MinorAgeDetector(BaseDetector):
    """Ages / birth dates of children, in a column whose header says age or birth date."""

    category = "minor"
    rank = 12
    strength = 0.85
    header_only = False
    evidence = f"ages under {MINOR_AGE} or birth dates less than {MINOR_AGE} years ago"
    vocab = HeaderVocab(
        zh=("年龄", "周岁", "岁数", "出生日期", "出生年月", "生日", "出生"),
        en=("age", "birth", "dob", "birthday", "birth_date", "date_of_birth", "birthdate"),
    )

    def match(self, value: str, *, hinted: bool = False) -> bool:
        return hinted and is_minor_value(value)

    def threshold(self, min_share: float) -> float:
        return MINOR_MIN_SHARE


MINOR_TERMS = VocabDetector(
    category="minor",
    evidence="terms for children and minors",
    vocab=HeaderVocab(
        zh=("未成年", "儿童", "少儿", "幼儿", "婴儿", "监护人", "小学生", "幼儿园"),
        en=("minor", "minors", "child", "children", "kid", "kids", "pupil", "guardian",
            "juvenile", "infant"),
    ),
    terms=("未成年", "未成年人", "儿童", "幼儿", "婴儿", "婴幼儿", "少年", "小学生", "幼儿园",
           "minor", "child", "infant", "toddler"),
    rank=11,
)

GENDER = VocabDetector(
    category="gender",
    evidence="gender values",
    vocab=HeaderVocab(zh=("性别",), en=("gender", "sex", "xb")),
    terms=("男", "女", "男性", "女性"),
    hinted_terms=("m", "f", "male", "female", "man", "woman", "未知", "unknown", "其他"),
    rank=8,
)

MARITAL = VocabDetector(
    category="marital",
    evidence="marital status values",
    vocab=HeaderVocab(
        zh=("婚姻", "婚史", "婚否"),
        en=("marital", "marital_status", "marriage", "married"),
    ),
    terms=("已婚", "未婚", "离异", "离婚", "丧偶", "再婚", "初婚", "复婚", "已婚有子女"),
    hinted_terms=("married", "single", "divorced", "widowed", "separated", "是", "否"),
    rank=8,
)

ETHNIC_GROUPS = wordlist(
    "汉 蒙古 回 藏 维吾尔 苗 彝 壮 布依 朝鲜 满 侗 瑶 白 土家 哈尼 哈萨克 傣 黎 傈僳 佤 畲 "
    "高山 拉祜 水 东乡 纳西 景颇 柯尔克孜 土 达斡尔 仫佬 羌 布朗 撒拉 毛南 仡佬 锡伯 阿昌 "
    "普米 塔吉克 怒 乌孜别克 俄罗斯 鄂温克 德昂 保安 裕固 京 塔塔尔 独龙 鄂伦春 赫哲 门巴 "
    "珞巴 基诺"
)

ETHNICITY = VocabDetector(
    category="ethnicity",
    evidence="names of China's 56 ethnic groups",
    vocab=HeaderVocab(zh=("民族",), en=("ethnicity", "ethnic", "ethnic_group", "mz")),
    terms=[f"{g}族" for g in ETHNIC_GROUPS],
    hinted_terms=ETHNIC_GROUPS,
    rank=8,
)

DETECTORS = (MinorAgeDetector(), MINOR_TERMS, GENDER, MARITAL, ETHNICITY)
