"""Governed SQL, node by node: the allow-list walk behind :mod:`dataspace.compute.sqlcheck`.

:class:`NodeChecker` holds the state of one check (the policy, the canonical column names, the
aggregates found, the columns read) and visits every expression of a normalized clause:
subqueries, window functions and unknown functions are refused; identifier columns may only be
counted and sensitive columns neither grouped nor put under an order statistic; aggregates
must be on the allow-lists, not nested, and (with a minimum group size) linear in the columns.
"""

from __future__ import annotations

from sqlglot import exp

from dataspace.compute import sqlrules as rules
from dataspace.compute import sqlsafe
from dataspace.compute.bind import literal_fits
from dataspace.compute.errors import QueryRefused
from dataspace.compute.sqltypes import Aggregate, SqlPolicy

DIALECT = "duckdb"

_CLAUSE_NAMES = {
    "select": "the SELECT list",
    "where": "WHERE",
    "group": "GROUP BY",
    "having": "HAVING",
    "order": "ORDER BY",
    "filter": "a FILTER clause",
}


#: Comparisons whose text literals the engine casts to the type of the column compared.
_VALUE_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ,
                      exp.NullSafeNEQ, exp.Between, exp.In)


def refuse(reason: str, hint: str | None = None) -> QueryRefused:
    return QueryRefused(reason, hint=hint or "see docs/sandbox.md for what governed SQL allows")


class NodeChecker:
    """The state of one check and the node-by-node walk; :class:`~dataspace.compute.sqlcheck`
    adds the statement, the names and the rewrite."""

    def __init__(self, sql: str, policy: SqlPolicy) -> None:
        self.sql = sql
        self.policy = policy
        self.columns = {c.lower(): c for c in policy.columns}
        self.restricted = policy.output != "raw"
        self.table_refs = {policy.table.lower()}
        self.aliases: dict[str, exp.Expr] = {}
        self.aggregates: list[Aggregate] = []
        self.read: set[str] = set()
        self.countable: set[int] = set()  # ids of Column nodes that are a COUNT's direct argument

    # -- node by node ----------------------------------------------------------------------
    def _visit(
        self,
        node: exp.Expr,
        clause: str,
        agg: str | None = None,
        output: str | None = None,
        filtered: bool = False,
    ) -> None:
        where = _CLAUSE_NAMES.get(clause, clause)
        if isinstance(node, exp.Column):
            self._visit_column(node, clause, agg)
            return
        if isinstance(
            node, (exp.Subquery, exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Exists)
        ):
            raise refuse(
                f"a subquery in {where} is not allowed: nested queries can select raw rows"
            )
        if isinstance(node, exp.Window):
            raise refuse(
                f"window function {node.this.sql(dialect=DIALECT)} OVER (...) in {where} is not "
                f"allowed"
            )
        if isinstance(node, exp.Star):
            if not isinstance(node.parent, exp.Count):
                raise refuse("* is allowed only in COUNT(*)")
            return
        if isinstance(node, exp.Filter):
            if not self._is_aggregate(node.this):
                raise refuse("FILTER is allowed only on an aggregate")
            self._visit(node.expression.this, "filter", agg="filter")
            self._visit(node.this, clause, agg, output, filtered=True)
            return
        if isinstance(node, exp.WithinGroup):
            raise refuse("WITHIN GROUP is not allowed: write quantile_cont(column, fraction)")
        if self._is_aggregate(node):
            self._visit_aggregate(node, clause, agg, output, filtered)
            return
        if isinstance(node, (exp.Cast, exp.TryCast)):
            to = node.args["to"]
            if to.this not in rules.CAST_TYPES:
                raise refuse(
                    f"cast to {to.sql(dialect=DIALECT)} in {where} is not allowed: cast to "
                    f"numbers, dates or text"
                )
            self._visit(node.this, clause, agg)
            return
        if isinstance(node, _VALUE_COMPARISONS):
            self._check_literals(node, where)
        unit = sqlsafe.unit_of(node)
        if unit is not None:
            problem = sqlsafe.unit_problem(unit)
            if problem is not None:
                raise refuse(f"{problem} (in {where})")
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            if rules.reads_outside(name):
                raise refuse(
                    f"function {name} in {where} is not allowed: it reads files, the environment "
                    f"or the engine's settings"
                )
            if name not in rules.ANONYMOUS_SCALAR:
                raise refuse(
                    f"function {name} in {where} is not on the allow-list of scalar functions"
                )
        elif isinstance(node, exp.Var):
            if not isinstance(node.parent, rules.UNIT_PARENTS):
                raise refuse(f"'{node.sql()}' in {where} is not allowed")
            return
        elif isinstance(node, (exp.IgnoreNulls, exp.RespectNulls)):
            pass  # modifiers of the aggregate inside, which is checked on its own
        elif isinstance(node, exp.In):
            if node.args.get("query") is not None:
                raise refuse(
                    f"a subquery in {where} is not allowed: nested queries can select raw rows"
                )
            if any(node.args.get(k) for k in node.args if k not in ("this", "expressions")):
                raise refuse(f"IN in {where} is allowed only with a list of values")
        elif isinstance(node, exp.Ordered):
            if clause != "order":
                raise refuse(f"ordering in {where} is not allowed")
        elif isinstance(node, exp.Order):
            if clause != "order":
                raise refuse(f"ORDER BY in {where} is not allowed")
        elif type(node) not in rules.SCALAR:
            if isinstance(node, exp.Func):
                raise refuse(
                    f"function {self._fname(node)} in {where} is not on the allow-list of scalar "
                    f"functions"
                )
            raise refuse(
                f"{node.sql(dialect=DIALECT)[:60]} ({type(node).__name__}) in {where} is not "
                f"allowed"
            )
        for child in node.iter_expressions():
            self._visit(child, clause, agg)

    def _check_literals(self, node: exp.Expr, where: str) -> None:
        """A text literal compared with a column of another type must read as that type: the
        engine casts the constant once, and one that does not convert would make the
        comparison match no row (the guard's TRY turns the error into NULL) -- an empty
        answer, charged, to a query that could never answer. Decided by the SQL and the
        schema alone."""
        flat: list[exp.Expr] = []
        for op in node.iter_expressions():
            flat.extend(op.expressions if isinstance(op, exp.Tuple) else [op])
        literals = [op for op in flat if isinstance(op, exp.Literal) and op.is_string]
        if not literals:
            return
        for col in flat:
            if not isinstance(col, exp.Column) or col.name.lower() not in self.columns:
                continue
            kind = self.policy.columns[self.columns[col.name.lower()]]
            if sqlsafe.is_string_type(kind):
                continue
            for literal in literals:
                if not literal_fits(str(literal.this), kind):
                    raise refuse(
                        f"'{literal.this}' in {where} is not a {kind} value, as column "
                        f"'{col.name}' holds: the comparison could match no row",
                        hint=f"write a {kind} value (e.g. 30 for a number, '2024-01-31' for a "
                             "date), or compare a text column",
                    )

    def _visit_column(self, col: exp.Column, clause: str, agg: str | None) -> None:
        name = col.name
        low = name.lower()
        where = _CLAUSE_NAMES.get(clause, clause)
        self.read.add(name)
        if not self.restricted:
            return
        if low in self.policy.identifier_columns and id(col) not in self.countable:
            place = f"{agg}(...)" if agg and agg != "filter" else where
            raise refuse(
                f"identifier column '{name}' in {place} is not allowed: identifiers may only be "
                "counted, as COUNT(column) or COUNT(DISTINCT column)"
            )
        if low in self.policy.sensitive_columns:
            if clause == "group":
                raise refuse(f"GROUP BY on sensitive column '{name}' is not allowed")
            if agg in rules.ORDER_STATISTICS.values():
                raise refuse(
                    f"function {agg} over sensitive column '{name}' is not allowed: it releases "
                    "one person's value"
                )

    def _visit_aggregate(
        self, node: exp.Expr, clause: str, agg: str | None, output: str | None, filtered: bool
    ) -> None:
        name = self._fname(node)
        where = _CLAUSE_NAMES.get(clause, clause)
        cols = [c.name for c in node.find_all(exp.Column)]
        over = f" over column '{cols[0]}'" if cols else ""
        if type(node) in rules.RAW_RELEASING or name in rules.ANONYMOUS_RAW_RELEASING:
            raise refuse(f"function {name}{over} is not allowed: it releases raw values")
        if agg is not None:
            raise refuse(f"aggregate {name} inside another aggregate is not allowed")
        if clause in ("where", "group"):
            raise refuse(f"aggregate {name} in {where} is not allowed")
        canonical = self._canonical_aggregate(node, name)
        arg = node.this if not isinstance(node, exp.Anonymous) else (node.expressions or [None])[0]
        distinct = isinstance(arg, exp.Distinct)
        if distinct and len(arg.expressions) != 1:
            # DISTINCT a, b counts tuples, and the per-aggregate threshold has no one argument
            raise refuse(
                f"{name}(DISTINCT ...) over {len(arg.expressions)} expressions is not allowed",
                hint="count the distinct values of one column",
            )
        if isinstance(node, exp.Count) and node.expressions:
            # the engine has no count of several arguments: it would fail after admission
            raise refuse(f"{name} takes one argument, got {1 + len(node.expressions)}",
                         hint="count one column, or count(*)")
        if isinstance(node, exp.Min | exp.Max) and node.args.get("count") is not None:
            raise refuse(
                f"{name}(x, n) is not allowed: it releases a list of n raw values",
                hint=f"use {name}(x), one value per group",
            )
        target = arg.expressions[0] if distinct else arg
        counts_distinct = canonical == "approx_count_distinct" or (
            canonical == "count" and distinct
        )
        if (
            self.restricted
            and self.policy.min_group_size > 1
            and counts_distinct
            and not isinstance(target, exp.Column)
        ):
            # CASE WHEN <one person> AND <a test> THEN 1 ELSE 0 END is non-NULL on every row,
            # so the threshold passes, and it has 1 or 2 distinct values: the test's answer
            raise refuse(
                f"{name}({(target.sql(dialect=DIALECT) if target else '')[:60]}) is not "
                "allowed: with a minimum group size, a distinct count may only count a "
                "column's values (the number of distinct values of an expression can depend "
                "on one row)",
                hint="count the distinct values of a column; put conditions in WHERE or in "
                "FILTER (WHERE ...), which the minimum group size covers",
            )
        if canonical in rules.COUNTING.values() and isinstance(target, exp.Column):
            self.countable.add(id(target))
        if (
            canonical in rules.BLENDING.values()
            and canonical != "count_if"
            and isinstance(target, exp.Column)
        ):
            ctype = self.policy.columns[target.name]
            if not rules.is_numeric_type(ctype):
                raise refuse(
                    f"function {name} over column '{target.name}' ({ctype}) is not allowed: it "
                    f"needs a number"
                )
        self.aggregates.append(
            Aggregate(
                function=("count_distinct" if canonical == "count" and distinct else canonical),
                column=target.name if isinstance(target, exp.Column) else None,
                columns=tuple(dict.fromkeys(cols)),
                distinct=distinct,
                filtered=filtered,
                clause=clause,
                output=output,
                sql=node.sql(dialect=DIALECT),
            )
        )
        for child in node.iter_expressions():
            if isinstance(child, exp.Distinct):
                for inner in child.expressions:
                    self._visit(inner, clause, canonical)
            else:
                self._visit(child, clause, canonical)
        if (
            self.restricted
            and self.policy.min_group_size > 1
            and canonical not in rules.COUNTING.values()
            and canonical != "count_if"
            and target is not None
        ):
            problem = sqlsafe.linear_problem(target)
            if problem is not None:
                raise refuse(
                    f"{name}({target.sql(dialect=DIALECT)[:60]}) is not allowed: with a minimum "
                    f"group size, the argument of {name} may only add, subtract and scale "
                    f"columns by constants ({problem} could single out rows)",
                    hint="put conditions in WHERE or in FILTER (WHERE ...), which the minimum "
                    "group size covers",
                )

    def _canonical_aggregate(self, node: exp.Expr, name: str) -> str:
        for table in (rules.COUNTING, rules.BLENDING, rules.ORDER_STATISTICS):
            if type(node) in table:
                return table[type(node)]
        if isinstance(node, exp.Anonymous) and name in rules.ANONYMOUS_AGGREGATES:
            return rules.ANONYMOUS_AGGREGATES[name]
        raise refuse(f"aggregate {name} is not on the allow-list of aggregates")

    def _is_aggregate(self, node: exp.Expr) -> bool:
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            return name in rules.ANONYMOUS_AGGREGATES or name in rules.ANONYMOUS_RAW_RELEASING
        return isinstance(node, exp.AggFunc)

    def _has_aggregate(self, node: exp.Expr) -> bool:
        return any(self._is_aggregate(n) for n in node.walk())

    def _fname(self, node: exp.Expr) -> str:
        if isinstance(node, exp.Anonymous):
            return node.name.lower()
        meta = node.meta
        if "start" in meta and "end" in meta:
            text = self.sql[meta["start"] : meta["end"] + 1].strip()
            if text.replace("_", "").isalnum():
                return text.lower()
        for table in (rules.RAW_RELEASING, rules.COUNTING, rules.BLENDING, rules.ORDER_STATISTICS):
            if type(node) in table:
                return table[type(node)]
        return (
            node.sql_name().lower() if isinstance(node, exp.Func) else type(node).__name__.lower()
        )

    def _default_name(self, node: exp.Expr, i: int) -> str:
        if isinstance(node, exp.Column):
            return node.name
        inner = node.this if isinstance(node, exp.Filter) else node
        if self._is_aggregate(inner):
            fname = self._fname(inner)
            arg = inner.this if not isinstance(inner, exp.Anonymous) else None
            if isinstance(arg, exp.Distinct):
                fname += "_distinct"
                arg = arg.expressions[0] if len(arg.expressions) == 1 else None
            if isinstance(arg, exp.Column):
                return f"{fname}_{arg.name}"
            return fname
        return f"col{i + 1}"
