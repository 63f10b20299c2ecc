"""Governed SQL: check a consumer's query against the agreement, then rewrite it.

The consumer's text never reaches the engine. It is parsed with sqlglot (DuckDB dialect),
checked node by node against allow-lists (:mod:`dataspace.compute.sqlrules`) and the
agreement's :class:`SqlPolicy`, and a new query is generated from the checked tree:

* exactly one SELECT over the agreed table, no joins, subqueries, CTEs, set operations,
  window functions, DISTINCT, QUALIFY, SAMPLE, PIVOT, table functions or file paths;
* only known, allowed columns; identifier columns only as the argument of COUNT(...) or
  COUNT(DISTINCT ...) (outside ``raw`` output); sensitive columns never as GROUP BY keys nor
  under an order statistic (min, max, median, quantiles);
* aggregates and scalar functions only from the allow-lists; in ``aggregate-only`` output every
  released value is an aggregate or a GROUP BY key;
* every column is rewritten to its quoted canonical name, every output column gets an explicit
  alias, GROUP BY ordinals, aliases and ALL are expanded to expressions;
* **minimum group size** (k) is enforced by the rewrite: the query gets
  ``HAVING <its own condition> AND COUNT(*) >= k`` (or ``COUNT(DISTINCT contributor) >= k``
  when the policy names a contributor column), and every aggregate is released only if the
  rows feeding it (its FILTER, a non-NULL argument) reach k; the argument of a non-counting
  aggregate must be linear in the columns (:mod:`dataspace.compute.sqlsafe`), that of a
  distinct count one column, and ``min(x, n)``/``max(x, n)`` (n raw values) are refused.
  Without GROUP BY
  the same HAVING suppresses the whole result unless the filtered table has k rows;
* nothing accepted can fail on data: casts run as TRY_CAST and scalar expressions that could
  raise are wrapped in TRY (:class:`dataspace.compute.sqlsafe.Guard`).

Known limits of the rewrite (the DP layer's job): differencing across queries (two filters
that differ by one person), and order statistics over non-sensitive columns, which release
one contributor's value even in a group of k. See docs/sandbox.md, "Known limits".

The node-by-node walk is :class:`dataspace.compute.sqlnodes.NodeChecker`; this module adds
the statement, the names and the rewrite.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from dataspace.compute import sqlrules as rules
from dataspace.compute import sqlsafe
from dataspace.compute.errors import QueryRefused
from dataspace.compute.sqlnodes import _CLAUSE_NAMES, DIALECT, NodeChecker, refuse
from dataspace.compute.sqltypes import Aggregate, CheckedQuery, SqlPolicy

__all__ = ["Aggregate", "CheckedQuery", "SqlPolicy", "check_query", "check_text"]

MAX_SQL_CHARS = 20_000
#: The checker and its rewrite run in the node process before a worker slot is taken, and
#: walk the tree recursively: these bound what one request can cost there (a rewritten
#: aggregate repeats its FILTER once per identifier column).
MAX_DEPTH = 120
MAX_NODES = 2_000
MAX_AGGREGATES = 32

MAX_LIMIT = 2**62  # LIMIT and OFFSET: within the engine's signed 64-bit row counts
_SELECT_ARGS = {"expressions", "from", "from_", "where", "group", "having", "order", "limit",
                "offset", "kind"}  # fmt: skip
_CLAUSE_REASONS = {
    "joins": "JOIN is not allowed: a query reads the agreed table only, once",
    "with": "WITH (CTE) is not allowed: nested queries can select raw rows",
    "with_": "WITH (CTE) is not allowed: nested queries can select raw rows",
    "distinct": "SELECT DISTINCT is not allowed: use GROUP BY, which the minimum group size covers",
    "qualify": "QUALIFY is not allowed: window functions are refused",
    "windows": "WINDOW is not allowed: window functions are refused",
    "laterals": "LATERAL is not allowed: a query reads the agreed table only, once",
    "sample": "USING SAMPLE is not allowed",
    "into": "SELECT INTO is not allowed",
    "exclude": "SELECT * EXCLUDE is not allowed: name the columns",
}
_STATEMENTS: dict[type[exp.Expr], str] = {
    exp.Union: "UNION", exp.Intersect: "INTERSECT", exp.Except: "EXCEPT", exp.Copy: "COPY",
    exp.Attach: "ATTACH", exp.Detach: "DETACH", exp.Install: "INSTALL", exp.Set: "SET",
    exp.Pragma: "PRAGMA", exp.Create: "CREATE", exp.Drop: "DROP", exp.Insert: "INSERT",
    exp.Update: "UPDATE", exp.Delete: "DELETE", exp.Describe: "DESCRIBE", exp.Show: "SHOW",
    exp.Use: "USE", exp.Pivot: "PIVOT",
}  # fmt: skip


def check_query(sql: str, policy: SqlPolicy) -> CheckedQuery:
    """Check ``sql`` against ``policy``: the rewritten query, or :class:`QueryRefused`."""
    try:
        return _Checker(sql, policy).run()
    except RecursionError:  # a shape the size limits did not foresee: refused all the same
        raise refuse("the query is nested too deeply to check",
                     hint="write long OR chains as IN (...)") from None


class _Checker(NodeChecker):
    # -- statement -------------------------------------------------------------------------
    def run(self) -> CheckedQuery:
        tree = self._parse()
        self._check_clauses(tree)
        self._check_from(tree)
        items = self._select_items(tree)
        where = self._normalize(tree.args.get("where"), "where")
        having = self._normalize(tree.args.get("having"), "having")
        order = self._order_ordinals(self._normalize(tree.args.get("order"), "order"), items)
        keys = self._group_keys(tree, items)

        for key in keys:
            self._visit(key, "group")
        for name, item in items:
            self._visit(item, "select", output=name)
        for clause, node in (("where", where), ("having", having), ("order", order)):
            if node is not None:
                self._visit(node.this if clause != "order" else node, clause)

        is_aggregate = bool(keys) or bool(self.aggregates)
        if is_aggregate:
            self._check_covered(items, having, order, keys)
        elif self.policy.output == "aggregate-only":
            raise refuse(
                "a row-level SELECT is not allowed: the agreement releases aggregates only",
                hint="aggregate with COUNT, SUM, AVG, ... and GROUP BY non-sensitive columns",
            )
        if having is not None and not is_aggregate:
            raise refuse("HAVING without aggregates is not allowed")

        out = self._rewrite(tree, items, where, having, order, keys, is_aggregate)
        text = out.sql(dialect=DIALECT)
        self._round_trip(text)
        return CheckedQuery(
            sql=text,
            original=self.sql,
            table=self.policy.table,
            output=self.policy.output,
            output_columns=tuple(name for name, _ in items),
            group_keys=tuple(_key_name(k) for k in keys),
            aggregates=tuple(self.aggregates),
            is_aggregate=is_aggregate,
            min_group_size=self.policy.min_group_size,
            columns_read=tuple(sorted(self.read)),
        )

    def _parse(self) -> exp.Select:
        if len(self.sql) > MAX_SQL_CHARS:
            raise refuse(f"the query is longer than {MAX_SQL_CHARS} characters")
        check_text(self.sql)
        dialect = sqlglot.Dialect.get_or_raise(DIALECT)
        try:
            tokens = dialect.tokenize(self.sql)
        except SqlglotError as exc:
            raise refuse(f"the SQL could not be read: {_first_line(exc)}") from None
        if not tokens:
            raise refuse("the query is empty", hint="send one SELECT")
        first = tokens[0].text.upper()
        if first in rules.STATEMENT_KEYWORDS:
            raise self._not_select(first)
        try:
            statements = [s for s in sqlglot.parse(self.sql, dialect=DIALECT)
                          if s is not None and not isinstance(s, exp.Semicolon)]  # a comment
        except SqlglotError as exc:
            if first not in ("SELECT", "FROM", "WITH", "("):  # a typo in the first word
                raise refuse(f"the SQL is not a statement: it starts with '{tokens[0].text}', "
                             "not SELECT", hint=f"send one SELECT over '{self.policy.table}'",
                             ) from None
            raise refuse(f"the SQL could not be parsed: {_parse_problem(exc)}",
                         hint=_unquoted_name(self.sql, self.policy.table)) from None
        if len(statements) != 1:
            raise refuse(f"exactly one statement is allowed, got {len(statements)}")
        tree = statements[0]
        if isinstance(tree, exp.Subquery):
            raise refuse("the whole query is in parentheses", hint="remove the outer ( )")
        if not isinstance(tree, exp.Select) and type(tree) not in _STATEMENTS:
            raise refuse(f"the SQL is not a statement: it starts with '{tokens[0].text}', not "
                         "SELECT", hint=f"send one SELECT over '{self.policy.table}'")
        if not isinstance(tree, exp.Select):
            raise self._not_select(_STATEMENTS[type(tree)])
        _check_size(tree)
        return tree

    def _not_select(self, what: str) -> QueryRefused:
        return refuse(
            f"{what} statements are not allowed: only one SELECT over '{self.policy.table}' is",
            hint="send one SELECT over the agreed table",
        )

    def _check_clauses(self, tree: exp.Select) -> None:
        for key, value in tree.args.items():
            if value in (None, False, []) or key in _SELECT_ARGS:
                continue
            raise refuse(_CLAUSE_REASONS.get(key, f"the {key.upper()} clause is not allowed"))
        if tree.args.get("kind"):
            raise refuse(f"SELECT {tree.args['kind']} is not allowed")

    def _check_from(self, tree: exp.Select) -> None:
        source = tree.args.get("from_") or tree.args.get("from")
        if source is None:
            raise refuse(
                f"the query has no FROM: it must read the agreed table '{self.policy.table}'"
            )
        table = source.this
        if isinstance(table, exp.Subquery):
            raise refuse("a subquery in FROM is not allowed: nested queries can select raw rows")
        if not isinstance(table, exp.Table):
            raise refuse(f"FROM {table.sql(dialect=DIALECT)} is not allowed: read the agreed table")
        if not isinstance(table.this, exp.Identifier):
            name = self._fname(table.this) if isinstance(table.this, exp.Func) else table.sql()
            raise refuse(
                f"table function {name}(...) in FROM is not allowed: it reads outside the "
                f"agreed table '{self.policy.table}'"
            )
        if table.args.get("db") or table.args.get("catalog"):
            raise refuse(
                f"a qualified table name ({table.sql()}) is not allowed: write "
                f"'{self.policy.table}'"
            )
        for key, value in table.args.items():
            if value not in (None, False, []) and key not in ("this", "alias"):
                raise refuse(f"'{key}' on the table in FROM is not allowed")
        name = table.name
        if name.lower() != self.policy.table.lower():
            if any(ch in name for ch in "/\\.:*?"):
                raise refuse(f"file path '{name}' in FROM is not allowed: only the agreed table is")
            raise refuse(f"table '{name}' is not the agreed dataset '{self.policy.table}'")
        alias = table.args.get("alias")
        if alias is not None:
            if alias.args.get("columns"):
                raise refuse("renaming the table's columns in FROM is not allowed")
            self.table_refs.add(alias.name.lower())

    # -- names -----------------------------------------------------------------------------
    def _select_items(self, tree: exp.Select) -> list[tuple[str, exp.Expr]]:
        items: list[tuple[str, exp.Expr]] = []
        taken: set[str] = set()
        for i, raw in enumerate(tree.expressions):
            alias = raw.alias if isinstance(raw, exp.Alias) else None
            node = raw.this if isinstance(raw, exp.Alias) else raw
            if isinstance(node, exp.Star):
                raise refuse(
                    "SELECT * is not allowed: name the columns"
                    + (" and aggregate them" if self.policy.output == "aggregate-only" else "")
                )
            node = self._normalize(node.copy(), "select")
            assert node is not None
            if alias:
                low = alias.lower()
                if low.startswith("__"):
                    raise refuse(f"output name '{alias}' is reserved (names starting with '__')")
                if low in self.columns and not (
                    isinstance(node, exp.Column) and node.name.lower() == low
                ):
                    raise refuse(
                        f"output name '{alias}' shadows a column of '{self.policy.table}': "
                        f"choose another"
                    )
                name = alias
            else:
                name = self._default_name(node, i)
            base, n = name, 2
            while name.lower() in taken:
                if alias:
                    raise refuse(f"output name '{alias}' is used twice")
                name, n = f"{base}_{n}", n + 1
            taken.add(name.lower())
            self.aliases[name.lower()] = node
            items.append((name, node))
        return items

    def _normalize(self, node: exp.Expr | None, clause: str) -> exp.Expr | None:
        """Rewrite columns to quoted canonical names; resolve output aliases outside SELECT."""
        if node is None:
            return None
        node = node.copy()

        def fix(n: exp.Expr) -> exp.Expr:
            if not isinstance(n, exp.Column):
                return n
            if isinstance(n.this, exp.Star):
                raise refuse(f"SELECT * is not allowed ({n.sql()}): name the columns")
            if n.args.get("db") or n.args.get("catalog"):
                raise refuse(
                    f"column reference {n.sql()} is not allowed: name columns of "
                    f"'{self.policy.table}'"
                )
            qualifier = n.table.lower()
            if qualifier and qualifier not in self.table_refs:
                raise refuse(
                    f"column {n.sql()} refers to '{n.table}', which is not the agreed table"
                )
            low = n.name.lower()
            if low in self.columns:
                canonical = self.columns[low]
                self._check_field(canonical)
                return exp.Column(this=exp.Identifier(this=canonical, quoted=True))
            if clause != "select" and not qualifier and low in self.aliases:
                return self.aliases[low].copy()
            raise refuse(f"unknown column '{n.name}' in {_CLAUSE_NAMES.get(clause, clause)}")

        return node.transform(fix, copy=False)

    def _check_field(self, column: str) -> None:
        low = column.lower()
        p = self.policy
        if low in p.prohibited_fields:
            raise refuse(f"column '{column}' is prohibited by the agreement")
        if p.allowed_fields is not None and low not in p.allowed_fields:
            raise refuse(
                f"column '{column}' is not among the agreement's allowed fields",
                hint="allowed: " + ", ".join(sorted(p.allowed_fields)),
            )

    def _group_keys(self, tree: exp.Select, items: list[tuple[str, exp.Expr]]) -> list[exp.Expr]:
        group = tree.args.get("group")
        if group is None:
            return []
        for form in ("cube", "rollup", "grouping_sets"):
            if group.args.get(form):
                raise refuse(
                    f"GROUP BY {form.upper().replace('_', ' ')} is not allowed: list the keys"
                )
        if group.args.get("all"):
            return [item.copy() for _, item in items if not self._has_aggregate(item)]
        if not group.expressions:
            raise refuse("GROUP BY is unfinished: it names no key",
                         hint="e.g. GROUP BY city, or GROUP BY 1")
        keys: list[exp.Expr] = []
        for raw in group.expressions:
            while isinstance(raw, exp.Paren):  # (1) is the position too
                raw = raw.this
            if isinstance(raw, exp.Literal) and not raw.is_string:
                pos = int(raw.this) if raw.this.isdigit() else 0
                if not 1 <= pos <= len(items):
                    raise refuse(f"GROUP BY {raw.this} does not name a SELECT item")
                keys.append(items[pos - 1][1].copy())
                continue
            key = self._normalize(raw, "group")
            assert key is not None
            keys.append(key)
        return keys

    def _order_ordinals(
        self, order: exp.Expr | None, items: list[tuple[str, exp.Expr]]
    ) -> exp.Expr | None:
        """ORDER BY 2 becomes ORDER BY <the second SELECT item>, so what it sorts on is checked
        and thresholded like any expression: left as a number, it would sort by whatever the
        rewritten query's second column is (under DP, an exact aggregate)."""
        if order is None:
            return None
        for ordered in order.expressions:
            raw = ordered.this
            while isinstance(raw, exp.Paren):  # the engine reads (2) as the position too
                raw = raw.this
            if isinstance(raw, exp.Literal) and not raw.is_string:
                pos = int(raw.this) if raw.this.isdigit() else 0
                if not 1 <= pos <= len(items):
                    raise refuse(f"ORDER BY {raw.this} does not name a SELECT item")
                ordered.set("this", items[pos - 1][1].copy())
            elif isinstance(raw, exp.Var) and raw.name.upper() == "ALL":
                raise refuse("ORDER BY ALL is not allowed: name the SELECT items or their "
                             "numbers", hint="e.g. ORDER BY 1, 2")
            elif not any(isinstance(n, exp.Column | exp.AggFunc) for n in raw.walk()):
                # a constant sorts nothing, and the engine folds some (-(-2)) into positions
                raise refuse(
                    f"ORDER BY {raw.sql(dialect=DIALECT)} is a constant: name a SELECT item "
                    "or its number"
                )
        return order

    # -- aggregate-only coverage and the rewrite -------------------------------------------
    def _check_covered(
        self,
        items: list[tuple[str, exp.Expr]],
        having: exp.Expr | None,
        order: exp.Expr | None,
        keys: list[exp.Expr],
    ) -> None:
        def uncovered(node: exp.Expr) -> exp.Column | None:
            if node in keys or self._is_aggregate(node) or isinstance(node, exp.Filter):
                return None
            if isinstance(node, exp.Column):
                return node
            for child in node.iter_expressions():
                found = uncovered(child)
                if found is not None:
                    return found
            return None

        parts: list[tuple[str, exp.Expr]] = [("the SELECT list", item) for _, item in items]
        if having is not None:
            parts.append(("HAVING", having.this))
        if order is not None:
            parts.append(("ORDER BY", order))
        for where, node in parts:
            col = uncovered(node)
            if col is not None:
                raise refuse(
                    f"column '{col.name}' in {where} is neither aggregated nor a GROUP BY key",
                    hint="aggregate it or add it to GROUP BY",
                )

    def _rewrite(
        self,
        tree: exp.Select,
        items: list[tuple[str, exp.Expr]],
        where: exp.Expr | None,
        having: exp.Expr | None,
        order: exp.Expr | None,
        keys: list[exp.Expr],
        is_aggregate: bool,
    ) -> exp.Select:
        table = exp.Table(this=exp.Identifier(this=self.policy.table, quoted=True))
        guard = sqlsafe.Guard(self.policy.columns, keys, self._is_aggregate)
        k = self.policy.min_group_size
        units = self._units()
        thresholded = is_aggregate and k > 1

        def canonical(agg: exp.Expr) -> str:
            return self._canonical_aggregate(agg, self._fname(agg))

        def release(node: exp.Expr, always: bool, condition: bool = False) -> exp.Expr:
            node = guard.guard(node, condition=condition)
            if not thresholded:
                return node
            return sqlsafe.threshold_each(node, k, units, always, self._is_aggregate, canonical)

        out = exp.Select(
            expressions=[exp.alias_(release(item, False), name, quoted=True)
                         for name, item in items]
        ).from_(table, copy=False)  # fmt: skip
        if where is not None:
            out.set("where", guard.guard(where))
        if keys:
            out.set("group", exp.Group(expressions=[key.copy() for key in guard.keys]))
        # HAVING is evaluated for every group, also those under k. Its aggregates are
        # thresholded on their own rows (NULL under k), and the whole condition is evaluated
        # only for groups of k or more (CASE WHEN count >= k THEN ... END): group keys and
        # NULL-absorbing forms (coalesce, IS NULL, CASE) could otherwise turn a small group's
        # key into an error -- an oracle.
        condition = release(having.this, True, True) if having is not None else None
        if thresholded:
            threshold = sqlsafe.supported(k, units)
            if condition is not None:
                only_k = exp.Case(ifs=[exp.If(this=threshold.copy(), true=exp.paren(condition))])
                condition = exp.and_(only_k, threshold)
            else:
                condition = threshold
        if condition is not None:
            out.set("having", exp.Having(this=condition))
        if order is not None:
            order = release(order, False)
        if order is not None:
            out.set("order", order)
        for key in ("limit", "offset"):
            node = tree.args.get(key)
            if node is None:
                continue
            value = node.args.get("expression") or node.this
            options = node.args.get("limit_options")
            if not (
                isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()
            ) or (options is not None and (options.args.get("percent")
                                            or options.args.get("with_ties"))):
                raise refuse(f"{key.upper()} must be a whole number of rows")
            if int(value.this) > MAX_LIMIT:  # the engine takes a signed 64-bit count
                raise refuse(f"{key.upper()} {value.this} is more rows than the engine counts",
                             hint=f"at most {MAX_LIMIT:,}; results are capped far below anyway")
            if node.args.get("expressions"):  # LIMIT n BY cols: columns no check has seen
                raise refuse(f"{key.upper()} ... BY is not allowed")
            out.set(key, node.copy())
        return out

    def _units(self) -> sqlsafe.Units:
        """k counts the contributor column (rows without one); every other identifier column
        must show none or at least k distinct values, in the table's column order."""
        contributor = self.policy.contributor_column
        chosen = self._canon(contributor) if contributor else None
        others = tuple(
            exp.column(name, quoted=True)
            for low, name in self.columns.items()
            if low in self.policy.identifier_columns and name != chosen
        )
        return sqlsafe.Units(
            exp.column(chosen, quoted=True) if chosen is not None else None, others
        )

    def _canon(self, column: str) -> str:
        return self.columns[column.lower()]

    def _round_trip(self, text: str) -> None:
        try:
            again = sqlglot.parse_one(text, dialect=DIALECT).sql(dialect=DIALECT)
        except SqlglotError:
            again = None
        if again != text:
            raise refuse("the rewritten query does not read back the same; refusing to run it")


def check_text(sql: str) -> None:
    """Refuse SQL holding a lone surrogate: no engine, store or log can hold it."""
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise refuse(
            f"the query holds a character that is not Unicode text at position {exc.start}"
            f" ({sql[exc.start]!r})",
            hint="send the SQL as UTF-8 text",
        ) from None


def _check_size(tree: exp.Expr) -> None:
    """Refuse a tree deeper or larger than the checker is built for (walked without
    recursion: this is what keeps the recursive passes that follow within bounds)."""
    stack, nodes, aggregates = [(tree, 1)], 0, 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        aggregates += isinstance(node, exp.AggFunc)
        if depth > MAX_DEPTH:
            raise refuse(f"the query is nested more than {MAX_DEPTH} levels deep",
                         hint="write long OR chains as IN (...)")
        if nodes > MAX_NODES:
            raise refuse(f"the query has more than {MAX_NODES} parts; split it into several")
        if aggregates > MAX_AGGREGATES:
            raise refuse(f"the query has more than {MAX_AGGREGATES} aggregates; split it into "
                         "several")
        stack.extend((child, depth + 1) for child in node.iter_expressions())


def _key_name(key: exp.Expr) -> str:
    return key.name if isinstance(key, exp.Column) else key.sql(dialect=DIALECT)


def _unquoted_name(sql: str, table: str) -> str | None:
    """A hint when the dataset's name is not a plain SQL name (``sme-loans``, ``税务-2024``)
    and the query writes it without double quotes: SQL reads ``sme-loans`` as a subtraction."""
    if re.fullmatch(r"[^\W\d]\w*", table) or f'"{table}"' in sql or table not in sql:
        return None
    return f'write the dataset\'s name in double quotes: FROM "{table}"'


def _parse_problem(exc: Exception) -> str:
    """The parser's complaint in SQL terms: an unfinished clause by its keyword, not by the
    parser's class name."""
    text = _first_line(exc)
    found = re.search(r"missing for <class '[\w.]*\.(\w+)'>\.?(.*)", text)
    if found:
        clause = re.sub(r"(?<!^)(?=[A-Z])", " ", found.group(1)).upper()
        return f"{clause} is unfinished (it lacks what follows it).{found.group(2)}"
    return text


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
