"""Data quality along the dimensions of GB/T 36344-2018, each scored 0..100 with its figures.

==============  ====================================================================  ======
dimension       score                                                                 weight
==============  ====================================================================  ======
completeness    non-null cells / all cells                                            0.25
validity        mean over checked columns of the share of valid non-null values       0.25
uniqueness      100 × (1 − duplicate full rows / rows); key candidates listed         0.15
consistency     mean over format-bearing text columns of the dominant shape's share   0.20
timeliness      100 while the newest date is ≤ 30 days old, then halving every 180    0.15
==============  ====================================================================  ======

Overall = weighted mean of the applicable dimensions (weights renormalised).

*Validity* checks a column classified with a category against that category's detector
(``validate_value``, on the classifier's reservoir sample), and an unclassified text column
whose values are mostly (≥ ``classify_min_share``) numbers or dates against that type, over all
rows. Typed columns are valid by construction and not counted. *Consistency* reduces each
sampled text value to a shape (digit runs → ``9``, full-width digits → ``９``, letter runs →
``a``/``A``/``Aa``, mixed codes → ``X9``, Chinese → ``汉``, punctuation kept), ignores free
text (top three shapes under 90 %) and reports mixed date formats, full/half-width digits and
mixed case. *Timeliness* uses typed date/timestamp columns and text columns that are mostly
dates, ignores dates after ``now`` (due dates) and columns classified as personal data (birth
dates say nothing about freshness).

No figure carries a value of a classified column: shapes and counts only.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataspace.catalog.profile import Profile, jsonable
from dataspace.catalog.sample import lit, open_parquet, quote, sample_columns
from dataspace.settings import Limits

WEIGHTS: dict[str, float] = {
    "completeness": 0.25,
    "validity": 0.25,
    "uniqueness": 0.15,
    "consistency": 0.20,
    "timeliness": 0.15,
}
FRESH_DAYS = 30.0
HALF_LIFE_DAYS = 180.0
FREE_TEXT_TOP3 = 0.9

DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y.%m.%d",
    "%Y%m%d",
    "%Y年%m月%d日",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
)
_NUM = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
_DATE_SHAPE = re.compile(r"^9(?P<sep>[-/.])9(?P=sep)9( 9:9(:9)?)?$|^9汉9汉9汉$|^9-9-X9:9(:9)?$")
_TOKEN = re.compile(
    r"[0-9A-Za-z]+|[０-９]+|[Ａ-Ｚａ-ｚ]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|\s+|."
)

Validator = Callable[[str, str], bool]


@dataclass
class Dimension:
    name: str
    score: float | None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def applicable(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "applicable": self.applicable,
            "weight": WEIGHTS[self.name],
            **self.figures,
        }


@dataclass
class QualityReport:
    dimensions: dict[str, Dimension]
    overall: float | None
    assessed_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "standard": "GB/T 36344-2018",
            "assessed_at": self.assessed_at,
            "overall": self.overall,
            "dimensions": {name: d.to_dict() for name, d in self.dimensions.items()},
        }


# --- shapes -------------------------------------------------------------------------------


def shape(value: str) -> str:
    """The format shape of a value: runs collapsed, case and width kept."""
    out: list[str] = []
    for match in _TOKEN.finditer(value):
        tok = match.group()
        first = tok[0]
        if first.isascii() and first.isalnum():
            out.append(_word_shape(tok))
        elif "０" <= first <= "９":
            out.append("９")
        elif "Ａ" <= first <= "ｚ":
            out.append("Ａ")
        elif first.isspace():
            out.append(" ")
        elif len(tok) > 1 or "\u3400" <= first <= "\ufaff":
            out.append("汉")
        else:
            out.append(tok)
    return "".join(out)


def family(value: str) -> str:
    """The shape with upper-case codes and digit strings merged (``X9`` → ``9``): a credit
    code whose body happens to be all digits is as well-formed as one with letters."""
    return shape(value).replace("X9", "9")


def _word_shape(word: str) -> str:
    if word.isdigit():
        return "9"
    letters = "".join(ch for ch in word if ch.isalpha())
    case = (
        "a"
        if letters.islower()
        else "A"
        if letters.isupper()
        else ("Aa" if letters.istitle() and len(letters) > 1 else "aA")
    )
    return case if word.isalpha() else {"a": "x9", "A": "X9"}.get(case, "Xx9")


def _issues(shapes: Counter[str]) -> list[str]:
    issues: list[str] = []
    names = list(shapes)
    if any("９" in s for s in names) and any("9" in s for s in names):
        issues.append("full-width and half-width digits")
    date_shapes = [s for s in names if _DATE_SHAPE.match(s) or s == "9"]
    if len([s for s in date_shapes if s != "9"]) >= 2 or (
        len(date_shapes) >= 2 and any(_DATE_SHAPE.match(s) for s in date_shapes)
    ):
        issues.append("mixed date formats")
    folded = Counter(re.sub(r"Aa|aA|A|a", "a", s) for s in names)
    if any(n > 1 for n in folded.values()):
        issues.append("mixed letter case")
    return issues


# --- assessment ---------------------------------------------------------------------------


def assess_quality(
    path: Path,
    profile: Profile,
    findings: Mapping[str, str | None],
    *,
    limits: Limits,
    now: dt.datetime,
    validator: Validator | None = None,
) -> QualityReport:
    """Score the Parquet file at ``path`` on the five GB/T 36344 dimensions."""
    if validator is None:  # imported late: the classifier imports the catalog too
        validator = importlib.import_module("dataspace.catalog.classify").validate_value
    min_share = float(limits.classify_min_share)
    text_cols = [c.name for c in profile.columns if c.kind == "string"]
    classified = {c: cat for c, cat in findings.items() if cat}
    want = set(text_cols) | set(classified)
    samples = sample_columns(path, limits=limits, columns=want) if want else {}
    now_naive = _naive_utc(now)

    with open_parquet(path, limits) as (con, rel):
        text_stats = _text_stats(con, rel, text_cols)
        duplicates = _duplicates(con, rel, profile)
        keys = _key_candidates(con, rel, profile)
        newest = _newest(con, rel, profile, text_stats, classified, min_share, now_naive)

    dims = {
        "completeness": _completeness(profile),
        "validity": _validity(profile, classified, samples, text_stats, validator, min_share),
        "uniqueness": _uniqueness(profile, duplicates, keys),
        "consistency": _consistency(text_cols, samples),
        "timeliness": _timeliness(newest, now_naive),
    }
    applicable = [d for d in dims.values() if d.score is not None]
    weight = sum(WEIGHTS[d.name] for d in applicable)
    overall = (
        round(sum(WEIGHTS[d.name] * (d.score or 0.0) for d in applicable) / weight, 2)
        if weight
        else None
    )
    return QualityReport(dims, overall, now.isoformat())


def _naive_utc(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is not None:
        return now.astimezone(dt.UTC).replace(tzinfo=None)
    return now


def _pct(share: float) -> float:
    return round(100.0 * share, 2)


def _completeness(profile: Profile) -> Dimension:
    cells = profile.rows * len(profile.columns)
    if not cells:
        return Dimension("completeness", None, {"reason": "no cells"})
    filled = sum(profile.rows - c.nulls for c in profile.columns)
    return Dimension(
        "completeness",
        _pct(filled / cells),
        {
            "cells": cells,
            "non_null_cells": filled,
            "columns": {c.name: round(1 - c.nulls / profile.rows, 6) for c in profile.columns},
        },
    )


def _text_stats(con: Any, rel: str, cols: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per text column: (non-null, numeric, date-parseable) counts over all rows."""
    if not cols:
        return {}
    fmts = "[" + ", ".join(lit(f) for f in DATE_FORMATS) + "]"
    parts: list[str] = []
    for name in cols:
        v = f"trim({quote(name)})"
        parts += [
            f"count({quote(name)})",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_NUM}'))",
            f"count(try_strptime({v}, {fmts}))",
        ]
    row = con.execute(f"SELECT {', '.join(parts)} FROM {rel}").fetchone()
    return {
        name: (int(row[3 * i]), int(row[3 * i + 1]), int(row[3 * i + 2]))
        for i, name in enumerate(cols)
    }


def _validity(
    profile: Profile,
    classified: Mapping[str, str],
    samples: Mapping[str, list[str | None]],
    text_stats: Mapping[str, tuple[int, int, int]],
    validator: Validator,
    min_share: float,
) -> Dimension:
    columns: dict[str, dict[str, Any]] = {}
    nonnull = {c.name: profile.rows - c.nulls for c in profile.columns}
    for name, category in classified.items():
        values = [v for v in samples.get(name, []) if v is not None]
        if not values:
            continue
        valid = sum(1 for v in values if validator(category, v))
        columns[name] = {
            "rule": f"detector:{category}",
            "checked": len(values),
            "invalid": len(values) - valid,
            "share": round(valid / len(values), 6),
            "sampled": len(values) < nonnull.get(name, len(values)),
        }
    for name, (n, numeric, dates) in text_stats.items():
        if name in columns or n == 0:
            continue
        for rule, ok in (("number", numeric), ("date", dates)):
            if ok / n >= min_share:
                columns[name] = {
                    "rule": f"type:{rule}",
                    "checked": n,
                    "invalid": n - ok,
                    "share": round(ok / n, 6),
                    "sampled": False,
                }
                break
    if not columns:
        return Dimension("validity", None, {"reason": "no column has a rule to check"})
    score = _pct(sum(c["share"] for c in columns.values()) / len(columns))
    return Dimension("validity", score, {"columns": columns})


def _duplicates(con: Any, rel: str, profile: Profile) -> int:
    if not profile.rows:
        return 0
    row = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT * FROM {rel})").fetchone()
    return profile.rows - int(row[0])


def _key_candidates(con: Any, rel: str, profile: Profile) -> list[str]:
    keys: list[str] = []
    for col in profile.columns:
        if profile.rows and col.nulls == 0 and col.distinct >= 0.97 * profile.rows:
            row = con.execute(f"SELECT count(DISTINCT {quote(col.name)}) FROM {rel}").fetchone()
            if int(row[0]) == profile.rows:
                keys.append(col.name)
    return keys


def _uniqueness(profile: Profile, duplicates: int, keys: list[str]) -> Dimension:
    if not profile.rows:
        return Dimension("uniqueness", None, {"reason": "no rows"})
    share = duplicates / profile.rows
    return Dimension(
        "uniqueness",
        _pct(1 - share),
        {
            "rows": profile.rows,
            "duplicate_rows": duplicates,
            "duplicate_share": round(share, 6),
            "key_candidates": keys,
        },
    )


def _consistency(text_cols: list[str], samples: Mapping[str, list[str | None]]) -> Dimension:
    columns: dict[str, dict[str, Any]] = {}
    free_text: list[str] = []
    for name in text_cols:
        values = [v for v in samples.get(name, []) if v is not None]
        if not values:
            continue
        shapes = Counter(shape(v) for v in values)
        families = Counter(family(v) for v in values)
        top = families.most_common(5)
        if sum(n for _, n in families.most_common(3)) / len(values) < FREE_TEXT_TOP3:
            free_text.append(name)
            continue
        columns[name] = {
            "checked": len(values),
            "dominant": top[0][0],
            "share": round(top[0][1] / len(values), 6),
            "shapes": [{"shape": s, "count": n} for s, n in top],
            "issues": _issues(shapes),
        }
    if not columns:
        return Dimension(
            "consistency", None, {"reason": "no text column with a format", "free_text": free_text}
        )
    score = _pct(sum(c["share"] for c in columns.values()) / len(columns))
    return Dimension("consistency", score, {"columns": columns, "free_text": free_text})


def _newest(
    con: Any,
    rel: str,
    profile: Profile,
    text_stats: Mapping[str, tuple[int, int, int]],
    classified: Mapping[str, str],
    min_share: float,
    now: dt.datetime,
) -> dict[str, dt.datetime | None]:
    limit = f"TIMESTAMP {lit(now.isoformat(sep=' '))}"
    fmts = "[" + ", ".join(lit(f) for f in DATE_FORMATS) + "]"
    exprs: dict[str, str] = {}
    for col in profile.columns:
        if col.name in classified:
            continue
        if col.kind == "temporal" and col.type.upper().startswith(("DATE", "TIMESTAMP")):
            exprs[col.name] = f"CAST({quote(col.name)} AS TIMESTAMP)"
        elif col.name in text_stats:
            n, numeric, dates = text_stats[col.name]
            if n and dates / n >= min_share and numeric / n < min_share:
                exprs[col.name] = f"try_strptime(trim({quote(col.name)}), {fmts})"
    if not exprs:
        return {}
    parts = [f"max({e}) FILTER (WHERE {e} <= {limit})" for e in exprs.values()]
    row = con.execute(f"SELECT {', '.join(parts)} FROM {rel}").fetchone()
    return dict(zip(exprs, row, strict=True))


def _timeliness(newest: Mapping[str, dt.datetime | None], now: dt.datetime) -> Dimension:
    if not newest:
        return Dimension("timeliness", None, {"reason": "no date or timestamp column"})
    seen = {k: _as_datetime(v) for k, v in newest.items() if v is not None}
    if not seen:
        return Dimension("timeliness", None, {"reason": "no date on or before now"})
    column, latest = max(seen.items(), key=lambda kv: kv[1])
    age = max(0.0, (now - latest).total_seconds() / 86400)
    score = 100.0 if age <= FRESH_DAYS else 100.0 * 0.5 ** ((age - FRESH_DAYS) / HALF_LIFE_DAYS)
    return Dimension(
        "timeliness",
        round(score, 2),
        {
            "column": column,
            "newest": jsonable(latest),
            "age_days": round(age, 2),
            "fresh_days": FRESH_DAYS,
            "half_life_days": HALF_LIFE_DAYS,
            "columns": {k: jsonable(v) for k, v in seen.items()},
        },
    )


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return _naive_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    return dt.datetime.fromisoformat(str(value))
