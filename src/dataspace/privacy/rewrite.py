"""The DP rewrite of a checked query: which vectors get noise, and clamping inside the engine.

Input: a :class:`~dataspace.compute.CheckedQuery` (checked with minimum group size 1; the DP
layer applies k to *noisy* counts). Output: a :class:`DpPlan` whose query returns the group
keys and one hidden column ``__dp_<i>`` per *release* — an exact aggregate vector that will
get noise:

=====================  ==================================================  ===============
aggregate              engine computes                                     sensitivity
=====================  ==================================================  ===============
COUNT(*), COUNT(x),    the count as written (FILTER kept)                  m
COUNT(DISTINCT x),
COUNT_IF(c)
SUM(x)                 exact integer sum of x clamped to [L, U]            m·max(|L|,|U|)
AVG(x)                 SUM as above and COUNT(x); noisy sum / noisy count  (both)
anything else          refused: no bounded sensitivity                     —
=====================  ==================================================  ===============

``m`` is the offer's ``max_contributions``. Identical releases are computed and paid once.
Grouped queries always release a noisy ``COUNT(*)`` per group (the user's own, or a hidden
one), used for the group release threshold.

With a contributor column (the person or firm a row belongs to), ``m`` is enforced, not
trusted: the query reads the agreed table through a subquery that keeps, after the WHERE, at
most ``m`` rows per contributor, chosen by a random draw per row (so which of one
contributor's rows are kept depends on nothing but that contributor's rows). Rows without a
contributor pass uncut, each taken for a person of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from dataspace.catalog.classify.engine import MASK_CHARS, MISSING_MARKERS
from dataspace.compute.errors import QueryRefused
from dataspace.compute.sqltypes import CheckedQuery
from dataspace.privacy.dp import DpSpec

__all__ = ["DpPlan", "Output", "Release", "no_contributor", "plan_dp"]

DIALECT = "duckdb"
HINT = "see docs/privacy.md for what DP queries allow"
# Names of contribution bounding's own parts, suffixed where the table has such a column
# (the checker keeps a user query from naming them otherwise).
SOURCE, HEAVY, WHO, DRAW = "__dp_rows", "__dp_heavy", "__dp_who", "__dp_draw"
#: What stands for no contributor besides NULL: what the classifier reads as a missing
#: value, blank, and the placeholders exports write for "not yet known".
NO_CONTRIBUTOR = MISSING_MARKERS | {"", "pending", "unknown", "待定", "未知"}


def no_contributor(who: str) -> str:
    """SQL: the row's contributor column ``who`` (quoted SQL) names no one -- NULL, blank, a
    placeholder an export writes for one ('pending' is no person), or a masked value shared
    by many. Such rows are people of their own: pooled, one added such row could push out
    another's. contains() and IN, not LIKE (three times the cost over 10M rows)."""
    text = f"CAST({who} AS VARCHAR)"
    masked = " OR ".join(f"contains({text}, '{ch * 2}')" for ch in MASK_CHARS)
    markers = ", ".join(f"'{m}'" for m in sorted(NO_CONTRIBUTOR))
    return f"({who} IS NULL OR {masked} OR lower(trim({text})) IN ({markers}))"


def _fresh(name: str, taken: frozenset[str]) -> str:
    """``name``, or ``name_1``, ``name_2``, ... : the first no column of the table is called."""
    candidate, n = name, 0
    while candidate.lower() in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate

OutputKind = Literal["key", "count", "sum", "avg"]


@dataclass(frozen=True)
class Release:
    """One exact aggregate vector (a hidden column) that gets noise."""

    column: str  # hidden output column of the engine query
    integer: bool  # counts: True; clamped sums: False
    sensitivity: float
    sql: str


@dataclass(frozen=True)
class Output:
    """One column of the released table."""

    name: str
    kind: OutputKind
    sources: tuple[str, ...]  # key: (engine column,); count/sum: (release,); avg: (sum, count)
    lower: float = 0.0
    upper: float = 0.0


@dataclass(frozen=True)
class DpPlan:
    checked: CheckedQuery  # the rewritten query that runs in the locked worker
    outputs: tuple[Output, ...]
    releases: tuple[Release, ...]
    group_count: str | None  # release holding COUNT(*) per group, for the threshold
    grouped: bool


def _refuse(reason: str) -> QueryRefused:
    return QueryRefused(reason, hint=HINT)


def _has_aggregate(node: exp.Expr) -> bool:
    return any(
        isinstance(n, exp.AggFunc) or (isinstance(n, exp.Anonymous) and n.name.lower() in {"mean"})
        for n in node.walk()
    )


def _decimal_scale(bound: float) -> int:
    digits = len(str(int(bound))) if bound >= 1 else 1
    return max(0, min(6, 17 - digits))


class _Planner:
    def __init__(
        self, checked: CheckedQuery, spec: DpSpec, contributor: str | None,
        columns: frozenset[str],
    ) -> None:
        self.checked = checked
        self.spec = spec
        self.contributor = contributor
        self.taken = frozenset(c.lower() for c in columns) | {checked.table.lower()}
        self.m = spec.max_contributions
        self.releases: dict[str, Release] = {}

    def release(self, sql: str, integer: bool, sensitivity: float) -> str:
        found = self.releases.get(sql)
        if found is None:
            found = Release(f"__dp_{len(self.releases)}", integer, sensitivity, sql)
            self.releases[sql] = found
        return found.column

    def count(self, agg_sql: str) -> str:
        return self.release(agg_sql, True, float(self.m))

    def clamped_sum(self, column: exp.Column, filt: str, what: str) -> tuple[str, float, float]:
        bounds = self.spec.bounds_of(column.name)
        if bounds is None:
            raise _refuse(
                f'{what}("{column.name}") has no clamping bounds in the offer: its '
                f"sensitivity cannot be bounded"
            )
        lower, upper = bounds
        bound = max(abs(lower), abs(upper))
        scale = _decimal_scale(bound)
        col = column.sql(dialect=DIALECT)
        unit = float(10**scale)
        value = f"CAST({col} AS DOUBLE)"
        lo, hi = f"CAST({lower!r} AS DOUBLE)", f"CAST({upper!r} AS DOUBLE)"
        # A CASE, not LEAST(GREATEST(..)): the engine runs it at a fraction of the cost. NULL
        # stays NULL (not summed); NaN compares greater than every number, so it becomes U.
        clamped = (
            f"CAST((CASE WHEN {value} < {lo} THEN {lo} WHEN {value} > {hi} THEN {hi} "
            f"ELSE {value} END) * {unit!r} AS BIGINT)"
        )
        # An exact integer (HUGEINT) sum of the clamped values on a 10^-scale grid: no
        # floating-point summation error can stretch the sensitivity.
        sql = f"CAST(COALESCE(SUM({clamped}){filt}, 0) AS DOUBLE) / {unit!r}"
        # The cast to the grid rounds, moving a value by at most one step past the bound.
        sensitivity = self.m * (bound + 10.0**-scale)
        return self.release(sql, False, sensitivity), lower, upper

    def aggregate(self, name: str, node: exp.Expr) -> Output:
        filt = ""
        inner = node
        if isinstance(node, exp.Filter):
            inner = node.this
            filt = " " + node.expression.sql(dialect=DIALECT).replace("WHERE", "FILTER(WHERE", 1)
            filt += ")"
        if not (isinstance(inner, (exp.AggFunc, exp.Anonymous))) or any(
            _has_aggregate(child) for child in inner.iter_expressions()
        ):
            raise _refuse(
                f"output '{name}' ({node.sql(dialect=DIALECT)[:60]}) is not one aggregate: "
                f"under DP each aggregate is its own output column; combine released values "
                f"afterwards"
            )
        arg = inner.this if not isinstance(inner, exp.Anonymous) else None
        if isinstance(inner, (exp.Count, exp.CountIf)):
            return Output(name, "count", (self.count(node.sql(dialect=DIALECT)),))
        if isinstance(inner, exp.Sum):
            if not isinstance(arg, exp.Column):
                raise _refuse(
                    f"SUM over {inner.sql(dialect=DIALECT)[4:64]} cannot be bounded: under DP, "
                    f"SUM takes one column with clamping bounds in the offer"
                )
            rel, lower, upper = self.clamped_sum(arg, filt, "SUM")
            return Output(name, "sum", (rel,), lower, upper)
        if isinstance(inner, exp.Avg) or (
            isinstance(inner, exp.Anonymous) and inner.name.lower() == "mean"
        ):
            if isinstance(inner, exp.Anonymous):
                arg = inner.expressions[0] if len(inner.expressions) == 1 else None
            if not isinstance(arg, exp.Column):
                raise _refuse(
                    "AVG over an expression cannot be bounded: under DP, AVG takes one column "
                    "with clamping bounds in the offer"
                )
            rel, lower, upper = self.clamped_sum(arg, filt, "AVG")
            count = self.count(f"COUNT({arg.sql(dialect=DIALECT)}){filt}")
            return Output(name, "avg", (rel, count), lower, upper)
        fname = inner.name.lower() if isinstance(inner, exp.Anonymous) else inner.sql_name()
        raise _refuse(
            f"aggregate {fname.lower()} in output '{name}' is not supported under differential "
            f"privacy: its sensitivity cannot be bounded (order statistics such as min, max and "
            f"quantiles release one contributor's value; variance needs bounds on squares)"
        )

    def bound_contributions(self, tree: exp.Select, contributor: str) -> None:
        """Read the table through a subquery that keeps <= m rows (after the WHERE) of each
        contributor. Contributors with <= m rows stream through untouched; only the rows of
        those with more (found by a GROUP BY) go through a window, which keeps m of them by a
        random draw per row. The draw is a column of its own (DuckDB refuses random() in a
        window's ORDER BY); an order without one could depend on other contributors' rows.
        Contributors are told apart by the column's value (a hash would let two collide and
        share m). Rows without one (NULL, a placeholder, a masked value) pass as people of
        their own: pooled, adding one such row could push out another person's."""
        table = tree.args["from_"].this.sql(dialect=DIALECT)
        where = tree.args.get("where")
        filtered = f" {where.sql(dialect=DIALECT)}" if where is not None else ""
        who = exp.column(contributor, quoted=True).sql(dialect=DIALECT)
        source, heavy, draw, person = (
            _fresh(name, self.taken) for name in (SOURCE, HEAVY, DRAW, WHO)
        )
        # tested on every row once (the light side) and on heavy contributors' rows, not in
        # the GROUP BY
        absent = no_contributor(who)
        m = self.m
        bounded = (
            f'(WITH "{source}" AS NOT MATERIALIZED (SELECT * FROM {table}{filtered}), '
            f'"{heavy}" AS (SELECT {who} AS "{person}" FROM "{source}" WHERE {who} IS NOT NULL '
            f"GROUP BY 1 HAVING count(*) > {m}) "
            f'SELECT * FROM "{source}" WHERE {who} IS NULL OR {who} NOT IN '
            f'(SELECT "{person}" FROM "{heavy}") OR {absent} '
            f'UNION ALL SELECT * EXCLUDE ("{draw}") FROM (SELECT *, random() AS "{draw}" '
            f'FROM "{source}" WHERE {who} IN (SELECT "{person}" FROM "{heavy}") '
            f"AND NOT {absent}) "
            f'QUALIFY row_number() OVER (PARTITION BY {who} ORDER BY "{draw}") <= {m}) '
            f"AS {table}"
        )
        parsed = sqlglot.parse_one(f"SELECT 1 FROM {bounded}", dialect=DIALECT)
        tree.set("from_", exp.From(this=parsed.args["from_"].this))
        tree.set("where", None)

    def run(self) -> DpPlan:
        try:
            tree = sqlglot.parse_one(self.checked.sql, dialect=DIALECT)
        except SqlglotError as exc:  # pragma: no cover - the checker round-trips its SQL
            raise _refuse(f"the checked query could not be re-read: {exc}") from None
        assert isinstance(tree, exp.Select)
        if tree.args.get("having") is not None:
            raise _refuse(
                "HAVING is not allowed under DP: it filters groups on exact aggregates; the DP "
                "layer releases groups by their noisy counts"
            )
        for key in ("limit", "offset"):
            if tree.args.get(key) is not None:
                raise _refuse(
                    f"{key.upper()} is not allowed under DP: which groups it keeps depends on "
                    f"groups that are not released"
                )
        order = tree.args.get("order")
        if order is not None and _has_aggregate(order):
            raise _refuse(
                "ORDER BY an aggregate is not allowed under DP: it reveals the order of exact "
                "values; sort the released result instead"
            )
        group = tree.args.get("group")
        grouped = group is not None and bool(group.expressions)
        outputs: list[Output] = []
        items: list[exp.Expr] = []
        for i, item in enumerate(tree.expressions):
            name = item.alias if isinstance(item, exp.Alias) else self.checked.output_columns[i]
            node = item.this if isinstance(item, exp.Alias) else item
            if not _has_aggregate(node):
                column = f"__key_{i}"
                items.append(exp.alias_(node.copy(), column, quoted=True))
                outputs.append(Output(name, "key", (column,)))
            else:
                outputs.append(self.aggregate(name, node))
        if not any(o.kind != "key" for o in outputs):
            raise _refuse("a DP query must release at least one aggregate (COUNT, SUM or AVG)")
        group_count: str | None = None
        if grouped:
            group_count = self.count("COUNT(*)")
        for release in self.releases.values():
            items.append(
                exp.alias_(sqlglot.parse_one(release.sql, dialect=DIALECT), release.column,
                           quoted=True)
            )  # fmt: skip
        tree.set("expressions", items)
        if self.contributor is not None:
            self.bound_contributions(tree, self.contributor)
        if grouped:
            # The engine's group order follows where each group's first row lies in the file
            # (one person added at the top can swap two groups): released rows are sorted by
            # their keys after any ORDER BY of the consumer's (on keys only, checked above).
            assert group is not None
            ordered = list(order.expressions) if order is not None else []
            ordered += [exp.Ordered(this=key.copy(), nulls_first=True)
                        for key in group.expressions]
            tree.set("order", exp.Order(expressions=ordered))
        sql = tree.sql(dialect=DIALECT)
        rewritten = dataclasses.replace(
            self.checked,
            sql=sql,
            output_columns=tuple(
                [o.sources[0] for o in outputs if o.kind == "key"]
                + [r.column for r in self.releases.values()]
            ),
            min_group_size=1,
        )
        return DpPlan(rewritten, tuple(outputs), tuple(self.releases.values()), group_count,
                      grouped)  # fmt: skip


def plan_dp(
    checked: CheckedQuery,
    spec: DpSpec,
    contributor: str | None = None,
    columns: Iterable[str] = (),
) -> DpPlan:
    """Plan the DP release of ``checked``, or :class:`QueryRefused` with the reason.

    ``contributor``: the column naming whose row each row is; with one, every contributor's
    rows are cut to ``spec.max_contributions`` inside the engine. Without one each row is
    taken for a contributor of its own, bounded by the offer's word (docs/privacy.md).
    ``columns``: every column of the table (the cut's own names avoid them).
    """
    if not checked.is_aggregate:
        raise _refuse("a DP query must aggregate: row-level SELECTs are not allowed under DP")
    return _Planner(checked, spec, contributor, frozenset(columns)).run()
