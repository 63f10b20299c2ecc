"""The allow-lists of governed SQL: which aggregates, scalar functions and casts a query may use.

Everything not listed here is refused by :mod:`dataspace.compute.sqlcheck` (deny by default).
The lists are small on purpose; each addition should say why it cannot release a raw value
or reach outside the agreed table.
"""

from __future__ import annotations

from sqlglot import exp

#: Aggregates whose result is a count: any allowed column may be their argument, identifier
#: columns included (counting distinct identifiers releases no identifier).
COUNTING: dict[type[exp.Expr], str] = {
    exp.Count: "count",
    exp.ApproxDistinct: "approx_count_distinct",
}

#: Aggregates over numbers that blend every row of the group: not over identifier columns.
BLENDING: dict[type[exp.Expr], str] = {
    exp.CountIf: "count_if",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Stddev: "stddev",
    exp.StddevSamp: "stddev_samp",
    exp.StddevPop: "stddev_pop",
    exp.Variance: "variance",
    exp.VariancePop: "var_pop",
}

#: Aggregates that return one contributor's actual value (an order statistic): only over
#: columns that are neither sensitive nor identifiers.
ORDER_STATISTICS: dict[type[exp.Expr], str] = {
    exp.Min: "min",
    exp.Max: "max",
    exp.Median: "median",
    exp.Quantile: "quantile",
    exp.PercentileCont: "quantile_cont",
    exp.PercentileDisc: "quantile_disc",
    exp.ApproxQuantile: "approx_quantile",
}

#: Aggregates refused outright, in every output mode: they release raw values (a list, a
#: concatenation, one row's value chosen by the engine, or a value-frequency table).
RAW_RELEASING: dict[type[exp.Expr], str] = {
    exp.GroupConcat: "string_agg",
    exp.ArrayAgg: "array_agg",
    exp.ArrayUniqueAgg: "array_agg",
    exp.ArrayConcatAgg: "array_concat_agg",
    exp.First: "first",
    exp.Last: "last",
    exp.AnyValue: "any_value",
    exp.ArgMax: "arg_max",
    exp.ArgMin: "arg_min",
    exp.Mode: "mode",
    exp.FirstValue: "first_value",
    exp.LastValue: "last_value",
}

#: Aggregates sqlglot does not know, by the name DuckDB knows them under.
ANONYMOUS_AGGREGATES: dict[str, str] = {"mean": "avg"}
ANONYMOUS_RAW_RELEASING = frozenset(
    {
        "histogram", "list", "arbitrary", "max_by", "min_by", "argmax", "argmin", "first",
        "last", "mode", "string_agg", "group_concat", "listagg", "array_agg", "list_distinct",
        "approx_top_k", "histogram_exact", "reservoir_quantile", "bitstring_agg",
    }
)  # fmt: skip

#: Functions that read files, the environment or the engine's settings, by name. They are
#: refused like every unlisted function; this list only sharpens the reason given.
OUTSIDE_READING_PREFIXES = ("read_", "parquet_", "duckdb_", "pragma_", "sniff_", "iceberg_")
OUTSIDE_READING = frozenset(
    {
        "getenv", "current_setting", "glob", "query", "query_table", "getvariable",
        "load_aws_credentials", "delta_scan", "sqlite_scan", "postgres_scan", "mysql_scan",
        "which_secret", "current_database", "current_schema", "version", "sql_auto_complete",
    }
)  # fmt: skip

#: Scalar nodes (operators and functions) a query may use anywhere.
SCALAR: frozenset[type[exp.Expr]] = frozenset(
    {
        # arithmetic and logic
        exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg, exp.Paren,
        exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
        exp.Is, exp.Not, exp.And, exp.Or, exp.In, exp.Between, exp.Like, exp.ILike,
        # conditionals
        exp.Case, exp.If, exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least,
        # numbers
        exp.Round, exp.Floor, exp.Ceil, exp.Abs, exp.Ln, exp.Log, exp.Sqrt, exp.Pow, exp.Exp,
        exp.Sign, exp.Trunc,
        # dates and times
        exp.TimestampTrunc, exp.DateTrunc, exp.Extract, exp.Year, exp.Quarter, exp.Month,
        exp.Week, exp.Day, exp.DayOfWeek, exp.DayOfYear, exp.DayOfMonth, exp.Hour, exp.Minute,
        exp.CurrentDate, exp.CurrentTimestamp, exp.DateDiff, exp.TimeToStr,
        # strings (no repeat/lpad/rpad: they build values of any size)
        exp.Lower, exp.Upper, exp.Length, exp.Substring, exp.Trim, exp.Concat, exp.DPipe,
        # literals and the pieces they are made of
        exp.Literal, exp.Boolean, exp.Null, exp.Interval,
    }
)  # fmt: skip
ANONYMOUS_SCALAR = frozenset({"now", "date_part", "datepart", "today", "current_date"})

#: Nodes that are fine as children of the nodes above but mean nothing on their own.
UNIT_PARENTS: tuple[type[exp.Expr], ...] = (
    exp.Extract, exp.TimestampTrunc, exp.DateTrunc, exp.Interval, exp.DateDiff,
)  # fmt: skip

#: Casts: numbers, booleans, dates and times, text. No nested, binary, JSON or other types.
CAST_TYPES: frozenset[object] = frozenset(
    {
        *exp.DataType.NUMERIC_TYPES,
        *exp.DataType.TEMPORAL_TYPES,
        exp.DataType.Type.BOOLEAN,
        exp.DataType.Type.VARCHAR,
        exp.DataType.Type.TEXT,
        exp.DataType.Type.CHAR,
    }
)

NUMERIC_TYPE_PREFIXES = (
    "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL", "NUMERIC",
    "BOOLEAN",
)  # fmt: skip

#: The first keyword of statements that are not a SELECT, for a precise refusal even when
#: sqlglot cannot parse the statement (EXPORT DATABASE, IMPORT DATABASE, ...).
STATEMENT_KEYWORDS = frozenset(
    {
        "COPY", "ATTACH", "DETACH", "INSTALL", "LOAD", "SET", "RESET", "PRAGMA", "EXPORT",
        "IMPORT", "CREATE", "DROP", "ALTER", "INSERT", "UPDATE", "DELETE", "CALL", "USE",
        "CHECKPOINT", "VACUUM", "ANALYZE", "EXPLAIN", "DESCRIBE", "SHOW", "SUMMARIZE", "PIVOT",
        "UNPIVOT", "BEGIN", "COMMIT", "ROLLBACK", "PREPARE", "EXECUTE", "DEALLOCATE", "TRUNCATE",
        "MERGE", "COMMENT", "FORCE", "UNINSTALL",
    }
)  # fmt: skip


def is_numeric_type(duckdb_type: str) -> bool:
    return duckdb_type.strip().upper().startswith(NUMERIC_TYPE_PREFIXES)


def reads_outside(name: str) -> bool:
    name = name.lower()
    return name in OUTSIDE_READING or name.startswith(OUTSIDE_READING_PREFIXES)
