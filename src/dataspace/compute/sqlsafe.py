"""Rewrites that make a checked query safe to run: no data-dependent errors, k on every aggregate.

Two dangers remain after the allow-lists of :mod:`dataspace.compute.sqlrules`:

**Engine errors as an oracle.** Whether DuckDB raises can depend on one row: a cast of a
value that does not convert, ``//`` or ``%`` by zero, integer overflow, a date out of range,
a substring offset out of range, an implicit cast of a text column to a number. One bit per
query, bypassing both the minimum group size and differential privacy. :class:`Guard`
rewrites every ``CAST`` to ``TRY_CAST`` and wraps every scalar expression that reads a column
and could raise in ``TRY(...)`` (NULL instead of an error), so no accepted scalar expression
fails on data. Date-part specifiers must be known literals (:func:`unit_problem`).
Aggregates cannot be wrapped in ``TRY``; what is computed *from* aggregates reads only values
thresholded by :func:`threshold` (NULL for groups and aggregates under k), so whether it fails
depends only on values the query could release anyway.

**Conditional aggregates.** ``SUM(x) FILTER (WHERE age = 47)``, ``SUM(CASE WHEN ... THEN x
END)``, ``COUNT(*) FILTER (...)`` release one row's value from a group of k. With a minimum
group size every aggregate is thresholded on the rows that actually feed it
(:func:`threshold`): ``CASE WHEN COUNT(x) FILTER (WHERE f) >= k THEN agg(x) FILTER (WHERE f)
END``; and the argument of a non-counting aggregate must be *linear* in the columns
(:func:`linear_problem`) — columns added or subtracted, scaled by bounded constants — since
anything non-linear (CASE, comparisons, least/abs/sign, casts, products of columns, rounding)
can turn the rows it should blend into an indicator of one row.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from sqlglot import exp

#: Date-part specifiers DuckDB knows (date_trunc, extract, date_part, date_diff).
KNOWN_UNITS = frozenset(
    {
        "year", "years", "y", "yr", "yrs", "quarter", "quarters", "month", "months", "mon",
        "week", "weeks", "w", "day", "days", "d", "dayofmonth", "hour", "hours", "h", "hr",
        "minute", "minutes", "m", "min", "second", "seconds", "s", "sec", "millisecond",
        "milliseconds", "ms", "microsecond", "microseconds", "us", "decade", "decades",
        "century", "centuries", "millennium", "millennia", "dow", "dayofweek", "isodow", "doy",
        "dayofyear", "isoyear", "yearweek", "epoch", "era", "julian",
    }
)  # fmt: skip

#: Largest (and, inverted, smallest) factor a linear aggregate argument may scale a column by,
#: and the largest constant it may add: beyond them floating-point overflow and rounding become
#: non-linear (``x * 1e300`` is inf only for large x; ``(x + 1e16) - 1e16`` rounds x).
MAX_SCALE = 1e6
MAX_OFFSET = 1e9

_STRING_TYPES = ("VARCHAR", "TEXT", "CHAR", "STRING", "BPCHAR")
_COMPARISONS = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.Is,
)  # fmt: skip
#: Functions of one column that cannot raise: date parts of a date or time column (of a text
#: column they would cast it, which can fail), and text functions of any column.
_DATE_PARTS = (exp.Year, exp.Quarter, exp.Month, exp.Week, exp.Day, exp.DayOfWeek,
               exp.DayOfYear, exp.DayOfMonth, exp.Hour, exp.Minute)  # fmt: skip
_TEXT_FUNCTIONS = (exp.Lower, exp.Upper, exp.Length)
_NOT_VALUES = (exp.Where, exp.Distinct, exp.Ordered, exp.Order, exp.Var, exp.DataType,
               exp.Star, exp.Identifier)  # fmt: skip


def unit_of(node: exp.Expr) -> exp.Expr | None:
    """The date-part specifier of date_trunc / extract / date_part / date_diff, if any."""
    if isinstance(node, exp.Extract):
        unit: exp.Expr | None = node.this
        return unit
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc, exp.DateDiff)):
        unit = node.args.get("unit")
        return unit
    if isinstance(node, exp.Anonymous) and node.name.lower() in ("date_part", "datepart"):
        return node.expressions[0] if node.expressions else None
    return None


def unit_problem(node: exp.Expr | None) -> str | None:
    """Why ``node`` is not a usable date-part specifier (None if it is)."""
    if isinstance(node, exp.Var) or (isinstance(node, exp.Literal) and node.is_string):
        name = str(node.this).lower()
        if name in KNOWN_UNITS:
            return None
        return f"date part '{node.this}' is not a known specifier"
    what = node.sql(dialect="duckdb")[:40] if node is not None else "nothing"
    return f"date part {what} is not allowed: write the specifier as a literal, e.g. 'month'"


def constant(node: exp.Expr) -> float | None:
    """The value of a numeric literal (possibly negated or in parentheses), else None."""
    if isinstance(node, exp.Paren):
        return constant(node.this)
    if isinstance(node, exp.Neg):
        inner = constant(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None


def linear_problem(node: exp.Expr, scale: float = 1.0) -> str | None:
    """Why ``node`` is not linear in the columns with bounded constants (None if it is)."""
    if isinstance(node, exp.Column):
        return None
    value = constant(node)
    if value is not None:
        return None if abs(value) <= MAX_OFFSET else f"the constant {value:g} is too large"
    if isinstance(node, (exp.Paren, exp.Neg)):
        return linear_problem(node.this, scale)
    if isinstance(node, (exp.Add, exp.Sub)):
        return linear_problem(node.this, scale) or linear_problem(node.expression, scale)
    if isinstance(node, (exp.Mul, exp.Div)):
        left, right = constant(node.this), constant(node.expression)
        if isinstance(node, exp.Mul) and left is not None:
            factor, rest = left, node.expression
        elif right is not None:
            factor, rest = (right if isinstance(node, exp.Mul) else 1 / right if right else 0.0,
                            node.this)  # fmt: skip
        else:
            return "a product or quotient of two expressions that read columns"
        scale *= abs(factor)
        if not 1 / MAX_SCALE <= scale <= MAX_SCALE:
            return f"a scale factor outside [{1 / MAX_SCALE:g}, {MAX_SCALE:g}]"
        return linear_problem(rest, scale)
    if isinstance(node, exp.Func):
        return f"function {node.sql_name().lower()}"
    return type(node).__name__


def is_string_type(duckdb_type: str) -> bool:
    return duckdb_type.strip().upper().startswith(_STRING_TYPES)


class Guard:
    """Rewrites expressions so that nothing that reads a column can raise in the engine."""

    def __init__(
        self,
        column_types: Mapping[str, str],
        keys: Sequence[exp.Expr],
        is_aggregate: Callable[[exp.Expr], bool],
    ) -> None:
        self.types = {name.lower(): t for name, t in column_types.items()}
        self.is_aggregate = is_aggregate
        self.raw_keys = [_try_casts(key.copy()) for key in keys]
        self.keys = [self._wrap(key.copy()) for key in self.raw_keys]

    def guard(self, node: exp.Expr, *, condition: bool = False) -> exp.Expr:
        """``node`` with group keys replaced by their guarded form and raising parts wrapped;
        ``condition``: ``node`` itself is read as a truth value (a HAVING condition)."""
        node = _try_casts(node.copy())
        return _unkey(self._wrap(self._substitute(node), condition))

    def _substitute(self, node: exp.Expr) -> exp.Expr:
        for raw, guarded in zip(self.raw_keys, self.keys, strict=True):
            if node == raw:
                return _Key(this=guarded.copy())
        for key, value in list(node.args.items()):
            if isinstance(value, exp.Expr):
                node.set(key, self._substitute(value))
            elif isinstance(value, list):
                node.set(key, [self._substitute(v) if isinstance(v, exp.Expr) else v
                               for v in value])  # fmt: skip
        return node

    def _wrap(self, node: exp.Expr, condition: bool = False) -> exp.Expr:
        """``node`` with every part that reads a column and could raise wrapped in TRY;
        ``condition``: ``node`` is read as a truth value (WHERE, HAVING, FILTER, WHEN)."""
        if isinstance(node, _Key):
            guarded: exp.Expr = node.this
            if condition and not self._safe_condition(node):
                return _truth(guarded)
            return guarded
        if (
            not isinstance(node, _NOT_VALUES)
            and not any(self.is_aggregate(n) for n in node.walk())
            and any(isinstance(n, (exp.Column, _Key)) for n in node.walk())
        ):
            if condition:
                return node if self._safe_condition(node) else _truth(_unkey(node))
            return node if self._safe(node) else exp.Try(this=_unkey(node))
        for key, value in list(node.args.items()):
            inner = _is_condition(node, key) or (
                condition and isinstance(node, (exp.And, exp.Or, exp.Not, exp.Paren))
            )
            if isinstance(value, exp.Expr):
                node.set(key, self._wrap(value, inner))
            elif isinstance(value, list):
                node.set(key, [self._wrap(v, inner) if isinstance(v, exp.Expr) else v
                               for v in value])  # fmt: skip
        return node

    def _safe_condition(self, node: exp.Expr) -> bool:
        """Cannot raise when read as a truth value: the engine casts anything but a BOOLEAN to
        one, row by row, and a text or date value that does not convert raises -- on the rows
        the rest of the condition lets through (``WHERE age = 47 AND name``): an oracle."""
        if isinstance(node, (exp.Boolean, exp.Null)):
            return True
        if isinstance(node, (exp.Column, _Key)):
            column = node.this if isinstance(node, _Key) else node
            return isinstance(column, exp.Column) and self._family(column) == "bool"
        if isinstance(node, (exp.Paren, exp.Not)):
            return self._safe_condition(node.this)
        if isinstance(node, (exp.And, exp.Or)):
            return self._safe_condition(node.this) and self._safe_condition(node.expression)
        return isinstance(node, _COMPARISONS) and self._safe(node)

    def _family(self, column: exp.Column) -> str:
        """The column's type family for comparisons: values of one family compare without a
        cast that can fail; any other type is its own family (compared only with itself)."""
        declared = self.types.get(column.name.lower(), "").strip().upper()
        if is_string_type(declared):
            return "text"
        if declared in ("BOOLEAN", "BOOL"):
            return "bool"
        if declared in _INTEGER_TYPES:
            return "integer"
        if declared in ("DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8"):
            return "float"
        if declared == "DATE":
            return "date"
        return declared or "unknown"

    def _safe(self, node: exp.Expr) -> bool:
        """Cannot raise whatever the data: columns, literals, and plain comparisons of them."""
        if isinstance(node, (exp.Column, exp.Literal, exp.Null, exp.Boolean, _Key)):
            return True
        if isinstance(node, exp.Paren):
            return self._safe(node.this)
        if isinstance(node, exp.Not):
            return self._safe_condition(node.this)
        if isinstance(node, _DATE_PARTS + _TEXT_FUNCTIONS) and isinstance(node.this, exp.Column):
            if len([v for v in node.args.values() if v not in (None, False)]) != 1:
                return False
            text = is_string_type(self.types.get(node.this.name.lower(), ""))
            return isinstance(node, _TEXT_FUNCTIONS) or not text
        if isinstance(node, (exp.And, exp.Or)):
            return self._safe_condition(node.this) and self._safe_condition(node.expression)
        if isinstance(node, _COMPARISONS):
            if isinstance(node, exp.Is):
                return isinstance(node.expression, exp.Null) and self._safe(node.this)
            flat: list[exp.Expr] = []
            for op in node.iter_expressions():
                flat.extend(op.expressions if isinstance(op, exp.Tuple) else [op])
            return self._comparable(flat, like=isinstance(node, (exp.Like, exp.ILike)))
        return False

    def _comparable(self, operands: Sequence[exp.Expr], *, like: bool) -> bool:
        """Whether comparing ``operands`` needs no cast that can fail on a value: the columns
        are of one family and every literal is of a kind that family takes as it is. Mixed
        families widen per row (a DATE to TIMESTAMP_NS fails after 2262, a DECIMAL or BIGINT
        to the DECIMAL of a long literal overflows), so they are wrapped."""
        columns = [op for op in operands if isinstance(op, exp.Column)]
        families = {self._family(c) for c in columns}
        if len(families) != 1:
            return False
        family = families.pop()
        if like and family != "text":
            return False
        for op in operands:
            if isinstance(op, (exp.Column, exp.Null)):
                continue
            if isinstance(op, exp.Literal) and op.is_string:
                # text as it is; a date only from a literal that is one -- the engine parses
                # it when a row reaches the comparison, so 'x' would fail on that row
                if family == "date" and not _iso_date(str(op.this)):
                    return False
                if family not in ("text", "date"):
                    return False
            elif isinstance(op, exp.Boolean):
                if family != "bool":
                    return False
            elif constant(op) is not None:
                if family == "float" or (family == "integer" and _whole_literal(op)):
                    continue
                return False
            else:
                return False
        return True


_INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
     "UINTEGER", "UBIGINT", "UHUGEINT", "INT1", "INT2", "INT4", "INT8"}
)  # fmt: skip


def _whole_literal(node: exp.Expr) -> bool:
    """A number literal written without a fraction or exponent (possibly negated), which the
    engine types as an integer: comparing an integer column with it never casts the column
    to a DECIMAL that could overflow."""
    while isinstance(node, (exp.Paren, exp.Neg)):
        node = node.this
    return isinstance(node, exp.Literal) and str(node.this).isdigit()


def _iso_date(text: str) -> bool:
    """A YYYY-MM-DD date the engine parses as such (fromisoformat alone also takes week dates
    such as 2024-W01-1, which the engine does not)."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _truth(node: exp.Expr) -> exp.Expr:
    """``node`` read as a truth value without raising. A comparison or AND/OR/NOT yields a
    boolean (any cast inside happens within the TRY); anything else -- a bare text column, a
    text function, a CASE -- yields its own value, and the cast to BOOLEAN that WHERE or FILTER
    then applies would fail outside the TRY ('unknown' is no boolean)."""
    inner = node.this if isinstance(node, exp.Paren) else node
    if isinstance(inner, (*_COMPARISONS, exp.And, exp.Or, exp.Not)):
        return exp.Try(this=node)
    return exp.TryCast(this=exp.Try(this=node), to=exp.DataType.build("BOOLEAN"))


def _is_condition(node: exp.Expr, key: str) -> bool:
    """Whether ``node``'s argument ``key`` is read as a truth value."""
    return key == "this" and isinstance(node, (exp.Where, exp.Having, exp.If, exp.CountIf))


class _Key(exp.Expression):
    """Marks a group key already guarded (so it stays identical to its GROUP BY form)."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


def _unkey(node: exp.Expr) -> exp.Expr:
    def strip(n: exp.Expr) -> exp.Expr:
        return n.this if isinstance(n, _Key) else n

    return node.transform(strip, copy=False)


def _try_casts(node: exp.Expr) -> exp.Expr:
    def fix(n: exp.Expr) -> exp.Expr:
        if type(n) is exp.Cast:
            return exp.TryCast(this=n.this, to=n.args["to"])
        return n

    return node.transform(fix, copy=False)


@dataclass(frozen=True)
class Units:
    """Whom k counts. ``contributor``: the column whose distinct values must reach k (rows
    when None). ``others``: the other identifier columns -- the rows feeding a release hold
    none of their values or at least k distinct ones, so a group of k patients that all saw
    one doctor does not release that doctor's figures."""

    contributor: exp.Expr | None = None
    others: tuple[exp.Expr, ...] = ()


def _filtered(counted: exp.Expr, conditions: Sequence[exp.Expr]) -> exp.Expr:
    if not conditions:
        return counted
    where = exp.and_(*[exp.paren(c.copy()) if len(conditions) > 1 else c.copy()
                       for c in conditions])  # fmt: skip
    return exp.Filter(this=counted, expression=exp.Where(this=where))


def _distinct(column: exp.Expr) -> exp.Expr:
    return exp.Count(this=exp.Distinct(expressions=[column.copy()]))


def supported(
    k: int, units: Units, conditions: Sequence[exp.Expr] = (), argument: exp.Expr | None = None
) -> exp.Expr:
    """True when the rows passing ``conditions`` with a non-NULL ``argument`` reach k (see
    :class:`Units`)."""
    people = list(conditions)
    if argument is not None:
        people.append(exp.Not(this=exp.Is(this=argument.copy(), expression=exp.Null())))
    if units.contributor is not None:
        counted = _filtered(_distinct(units.contributor), people)
    else:
        rows = exp.Count(this=argument.copy() if argument is not None else exp.Star())
        counted = _filtered(rows, conditions)
    held: list[exp.Expr] = [exp.GTE(this=counted, expression=exp.Literal.number(k))]
    for column in units.others:
        n = _filtered(_distinct(column), people)
        held.append(exp.paren(exp.or_(
            exp.EQ(this=n, expression=exp.Literal.number(0)),
            exp.GTE(this=n.copy(), expression=exp.Literal.number(k)),
        )))  # fmt: skip
    return exp.and_(*held) if len(held) > 1 else held[0]


def threshold(
    agg: exp.Expr,
    k: int,
    units: Units,
    always: bool,
    canonical: Callable[[exp.Expr], str],
) -> exp.Expr:
    """``agg`` (an aggregate, maybe with FILTER) released only if the rows feeding it reach k.

    The rows that feed an aggregate are those that pass its FILTER and, except for COUNT(*),
    have a non-NULL argument (COUNT_IF: a true condition). ``always=False`` leaves an
    aggregate alone when they are the whole group, which the group's own HAVING covers.
    """
    inner = agg.this if isinstance(agg, exp.Filter) else agg
    conditions: list[exp.Expr] = []
    if isinstance(agg, exp.Filter):
        conditions.append(agg.expression.this)
    args = inner.expressions if isinstance(inner, exp.Anonymous) else [inner.this]
    arg = args[0] if args else None
    if isinstance(arg, exp.Distinct):
        arg = arg.expressions[0] if len(arg.expressions) == 1 else None
    argument: exp.Expr | None = None
    if canonical(inner) == "count_if" and arg is not None:
        conditions.append(arg)
    elif arg is not None and not isinstance(arg, exp.Star):
        argument = arg
    if not conditions and argument is None and not always:
        return agg  # the rows feeding it are the group's: the group's HAVING covers it
    return exp.Case(ifs=[exp.If(this=supported(k, units, conditions, argument), true=agg)])


def threshold_each(
    node: exp.Expr,
    k: int,
    units: Units,
    always: bool,
    is_aggregate: Callable[[exp.Expr], bool],
    canonical: Callable[[exp.Expr], str],
) -> exp.Expr:
    """Each aggregate in ``node`` released only if the rows that feed it reach k
    (:func:`threshold` on every aggregate, in place)."""
    if isinstance(node, exp.Filter) and is_aggregate(node.this):
        return threshold(node, k, units, always, canonical)
    if is_aggregate(node):
        return threshold(node, k, units, always, canonical)
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expr):
            node.set(key, threshold_each(value, k, units, always, is_aggregate, canonical))
        elif isinstance(value, list):
            node.set(key, [threshold_each(v, k, units, always, is_aggregate, canonical)
                           if isinstance(v, exp.Expr) else v for v in value])  # fmt: skip
    return node
