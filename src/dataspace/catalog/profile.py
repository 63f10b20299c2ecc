"""Profile an imported Parquet file: per-column counts, ranges, moments and top values.

The profile is computed once after import, before classification. Classification then decides
which columns are sensitive, and :meth:`Profile.to_dict` drops what could identify a person
from those columns (``redact=``): top values and min/max. Persist only the redacted dict.

Top values never list a value seen only once (it would single out a row), and nearly-unique
columns (distinct ≥ 90 % of non-null values) get no top values at all.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataspace.catalog.sample import open_parquet, quote
from dataspace.settings import Limits

_NUMBER = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
)  # fmt: skip
_TEMPORAL = ("DATE", "TIMESTAMP", "TIME")
NEARLY_UNIQUE = 0.9
EXACT_DISTINCT_ROWS = 1_000_000  # above this, distinct counts are HyperLogLog estimates
COLUMNS_PER_SCAN = 32


def kind_of(type_: str) -> str:
    """number, temporal, string, boolean or other — from a DuckDB type name."""
    base = type_.upper().split("(")[0].strip()
    if base in _NUMBER:
        return "number"
    if base.startswith(_TEMPORAL):
        return "temporal"
    if base == "VARCHAR":
        return "string"
    if base == "BOOLEAN":
        return "boolean"
    return "other"


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return str(value)


@dataclass
class ColumnProfile:
    name: str
    type: str
    nulls: int
    null_rate: float
    distinct: int
    min: Any = None
    max: Any = None
    mean: float | None = None
    std: float | None = None
    top_values: list[tuple[Any, int]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return kind_of(self.type)

    def to_dict(self, *, redacted: bool = False, few: bool = False) -> dict[str, Any]:
        """``redacted``: no extremes or top values; ``few`` (with it): values in too few rows
        for even a mean, which would be one row's value."""
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "nulls": self.nulls,
            "null_rate": self.null_rate,
            "distinct": self.distinct,
        }
        if self.kind in ("number", "temporal", "string") and not redacted:
            body["min"] = jsonable(self.min)
            body["max"] = jsonable(self.max)
        if self.kind == "number" and not (redacted and few):
            body["mean"] = self.mean
            body["std"] = self.std
        if redacted:
            body["redacted"] = True
        else:
            body["top_values"] = [{"value": jsonable(v), "count": c} for v, c in self.top_values]
        return body


@dataclass
class Profile:
    rows: int
    columns: list[ColumnProfile]
    distinct_exact: bool = True

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def to_dict(self, redact: Collection[str] = (), min_rows: int = 1) -> dict[str, Any]:
        """JSON-able profile; columns named in ``redact`` lose top values and min/max, and
        their mean and deviation too when fewer than ``min_rows`` rows hold a value."""
        return {
            "rows": self.rows,
            "distinct_exact": self.distinct_exact,
            "columns": [
                c.to_dict(redacted=c.name in redact, few=self.rows - c.nulls < min_rows)
                for c in self.columns
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild a (possibly redacted) profile from :meth:`to_dict` output."""
        cols = [
            ColumnProfile(
                name=c["name"],
                type=c["type"],
                nulls=int(c["nulls"]),
                null_rate=float(c["null_rate"]),
                distinct=int(c["distinct"]),
                min=c.get("min"),
                max=c.get("max"),
                mean=c.get("mean"),
                std=c.get("std"),
                top_values=[(t["value"], int(t["count"])) for t in c.get("top_values", [])],
            )
            for c in data["columns"]
        ]
        return cls(
            rows=int(data["rows"]),
            columns=cols,
            distinct_exact=bool(data.get("distinct_exact", True)),
        )


def profile_parquet(
    path: Path, *, limits: Limits, skip_top_values: Collection[str] = ()
) -> Profile:
    """Profile every column of the Parquet file at ``path`` with DuckDB.

    ``skip_top_values`` names columns already known to be sensitive: their top values are
    not even computed.
    """
    top_n = int(limits.profile_top_values)
    with open_parquet(path, limits) as (con, rel):
        schema = [
            (str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
        ]
        total = con.execute(f"SELECT count(*) FROM {rel}").fetchone()
        rows = int(total[0]) if total is not None else 0
        exact = rows <= EXACT_DISTINCT_ROWS
        # A few columns a scan: every distinct count holds a hash table, and a bank's
        # 200-column table in one query ran out of the import's memory.
        row: list[Any] = []
        for start in range(0, len(schema), COLUMNS_PER_SCAN):
            parts = []
            for name, type_ in schema[start : start + COLUMNS_PER_SCAN]:
                parts += _column_parts(quote(name), kind_of(type_), exact)
            got = con.execute(f"SELECT {', '.join(parts)} FROM {rel}").fetchone()
            assert got is not None
            row += got
        row.insert(0, rows)
        columns: list[ColumnProfile] = []
        for i, (name, type_) in enumerate(schema):
            nonnull, distinct, lo, hi, mean, std = row[1 + 6 * i : 7 + 6 * i]
            nulls = rows - int(nonnull)
            cp = ColumnProfile(
                name=name,
                type=type_,
                nulls=nulls,
                null_rate=round(nulls / rows, 6) if rows else 0.0,
                distinct=min(int(distinct), int(nonnull)),
                min=lo,
                max=hi,
                mean=_finite(mean),
                std=_finite(std),
            )
            wants_top = (
                name not in skip_top_values
                and kind_of(type_) != "other"
                and top_n > 0
                and nonnull > 0
                and cp.distinct < NEARLY_UNIQUE * nonnull
            )
            if wants_top:
                col = quote(name)
                cp.top_values = [
                    (v, int(c))
                    for v, c in con.execute(
                        f"SELECT {col}, count(*) AS n FROM {rel} WHERE {col} IS NOT NULL "
                        f"GROUP BY {col} HAVING count(*) >= 2 ORDER BY n DESC, {col} "
                        f"LIMIT {top_n}"
                    ).fetchall()
                ]
            columns.append(cp)
    return Profile(rows=rows, columns=columns, distinct_exact=exact)


def _column_parts(col: str, kind: str, exact: bool) -> list[str]:
    """count, distinct, min, max, mean, deviation of one column (NULL where it has none)."""
    distinct = f"count(DISTINCT {col})" if exact else f"approx_count_distinct({col})"
    parts = [f"count({col})", distinct]
    parts += [f"min({col})", f"max({col})"] if kind in ("number", "temporal", "string") else [
        "NULL", "NULL"]  # fmt: skip
    if kind == "number":
        parts += [f"avg(CAST({col} AS DOUBLE))", f"stddev_samp(CAST({col} AS DOUBLE))"]
    else:
        parts += ["NULL", "NULL"]
    return parts


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
