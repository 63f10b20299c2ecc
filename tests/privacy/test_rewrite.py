"""The DP rewrite: clamping inside the engine, sensitivities, refusals."""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from dataspace.compute import QueryRefused, SqlPolicy, check_query
from dataspace.privacy import DpSpec, plan_dp


def _plan(sql: str, policy: SqlPolicy, spec: DpSpec):  # type: ignore[no-untyped-def]
    return plan_dp(check_query(sql, dataclasses.replace(policy, min_group_size=1)), spec)


def test_sum_is_clamped_inside_the_engine(policy: SqlPolicy, spec: DpSpec) -> None:
    plan = _plan("SELECT region, SUM(amount) AS s FROM sales GROUP BY region", policy, spec)
    sums = [r for r in plan.releases if not r.integer]
    assert len(sums) == 1 and sums[0].sensitivity == pytest.approx(100.0, abs=1e-5)
    # Run the rewritten query: out-of-range, infinite and NaN values count as a bound; NULL as
    # nothing; in-range values exactly (on the grid).
    con = duckdb.connect()
    con.execute("CREATE TABLE sales (region VARCHAR, amount DOUBLE)")
    values = [-1e9, 1e300, float("inf"), float("-inf"), float("nan"), None, 50.25, 0.000_000_4]
    con.executemany("INSERT INTO sales VALUES ('r', ?)", [[v] for v in values])
    (row,) = con.execute(plan.checked.sql).fetchall()
    released = dict(zip(plan.checked.output_columns, row, strict=True))
    assert released[sums[0].column] == pytest.approx(0 + 100 + 100 + 0 + 100 + 50.25, abs=1e-9)


def test_count_sensitivity_is_max_contributions(policy: SqlPolicy) -> None:
    spec = DpSpec(epsilon=1, delta=1e-6, max_contributions=3)
    plan = _plan("SELECT region, COUNT(*) FROM sales GROUP BY region", policy, spec)
    assert [r.sensitivity for r in plan.releases] == [3.0]
    assert plan.group_count == plan.releases[0].column


def test_sum_sensitivity_scales_with_contributions(policy: SqlPolicy) -> None:
    spec = DpSpec(epsilon=1, bounds={"amount": (-50, 20)}, max_contributions=2)
    plan = _plan("SELECT SUM(amount) FROM sales", policy, spec)
    assert plan.releases[0].sensitivity == pytest.approx(100.0, abs=1e-4)
    assert not plan.grouped


def test_avg_is_noisy_sum_over_noisy_count_and_shares_releases(
    policy: SqlPolicy, spec: DpSpec
) -> None:
    plan = _plan(
        "SELECT region, SUM(amount), AVG(amount), COUNT(*) FROM sales GROUP BY region",
        policy,
        spec,
    )
    # SUM(amount) is shared with AVG; COUNT(amount) for AVG; COUNT(*) for the threshold.
    assert len(plan.releases) == 3
    avg = next(o for o in plan.outputs if o.kind == "avg")
    assert len(avg.sources) == 2


def test_a_hidden_count_is_added_for_the_group_threshold(policy: SqlPolicy, spec: DpSpec) -> None:
    plan = _plan("SELECT region, SUM(amount) FROM sales GROUP BY region", policy, spec)
    assert plan.group_count is not None
    assert {o.name for o in plan.outputs} == {"region", "sum_amount"}


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("SELECT region, MAX(age) FROM sales GROUP BY region", "not supported under differential"),
        ("SELECT MIN(age) FROM sales", "sensitivity cannot be bounded"),
        ("SELECT MEDIAN(age) FROM sales", "not supported under differential"),
        ("SELECT STDDEV(age) FROM sales", "not supported under differential"),
        ("SELECT SUM(age * 2) FROM sales", "cannot be bounded"),
        ("SELECT SUM(CASE WHEN age = 47 THEN amount ELSE 0 END) FROM sales", "cannot be bounded"),
        ("SELECT AVG(CAST(amount AS INTEGER)) FROM sales", "cannot be bounded"),
        ("SELECT region, SUM(amount) + 1 FROM sales GROUP BY region", "not one aggregate"),
        ("SELECT region, COUNT(*) FROM sales GROUP BY region HAVING COUNT(*) > 3", "HAVING"),
        ("SELECT region, COUNT(*) FROM sales GROUP BY region LIMIT 2", "LIMIT"),
        ("SELECT region, COUNT(*) c FROM sales GROUP BY region ORDER BY c", "ORDER BY"),
        # an ordinal names the SELECT item (else: the rewritten query's exact aggregate)
        ("SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY 2 DESC", "ORDER BY an"),
        ("SELECT region, SUM(age) FROM sales GROUP BY region ORDER BY 2", "ORDER BY an"),
        ("SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY 3", "does not name"),
        ("SELECT COUNT(*) FROM sales GROUP BY region ORDER BY 1", "ORDER BY an"),
        ("SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY (2) DESC", "ORDER BY an"),
        ("SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY ((2))", "ORDER BY an"),
        ("SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY -(-2)", "a constant"),
        ("SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY 1 + 1", "a constant"),
    ],
)
def test_unboundable_queries_are_refused(
    sql: str, match: str, spec: DpSpec, make_policy_without_sensitive: SqlPolicy
) -> None:
    with pytest.raises(QueryRefused, match=match):
        _plan(sql, make_policy_without_sensitive, spec)


def test_order_by_a_key_ordinal_sorts_on_the_key(policy: SqlPolicy, spec: DpSpec) -> None:
    plan = _plan("SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY 1 DESC",
                 policy, spec)
    assert plan.checked.sql.endswith('ORDER BY "region" DESC, "region" NULLS FIRST')


def test_sum_without_bounds_is_refused(policy: SqlPolicy) -> None:
    with pytest.raises(QueryRefused, match="no clamping bounds"):
        _plan("SELECT SUM(amount) FROM sales", policy, DpSpec(epsilon=1))


@pytest.fixture
def make_policy_without_sensitive(policy: SqlPolicy) -> SqlPolicy:
    return dataclasses.replace(policy, sensitive_columns=frozenset())


def test_dp_plan_cannot_raise_on_data(policy: SqlPolicy, spec: DpSpec) -> None:
    """Scalar parts are wrapped in TRY (NULL instead of an error), casts become TRY_CAST."""
    plan = _plan(
        "SELECT year(CAST(age AS DATE)) AS y, COUNT(*) FILTER (WHERE 1 // (age - 47) = 0) AS n "
        "FROM sales WHERE CAST(region AS INTEGER) IS NULL GROUP BY 1",
        policy,
        spec,
    )
    sql = plan.checked.sql
    assert 'WHERE TRY(TRY_CAST("region" AS INT) IS NULL)' in sql
    assert 'FILTER(WHERE TRY(1 // ("age" - 47) = 0))' in sql
    assert 'GROUP BY TRY(YEAR(TRY_CAST("age" AS DATE)))' in sql
    assert " CAST(" not in sql.replace("TRY_CAST(", "")


def _visits(con: duckdb.DuckDBPyConnection) -> None:
    """Contributor 'a' has 10 rows (8 of amount 0, 2 of amount 50), 'b' one, 'c' three, and
    two rows have no contributor."""
    con.execute("CREATE TABLE sales (customer VARCHAR, region VARCHAR, amount DOUBLE, age INT)")
    rows = [("a", "r", 0.0)] * 8 + [("a", "r", 50.0)] * 2 + [("b", "r", 7.0)]
    rows += [("c", "r", 1.0), ("c", "r", 2.0), ("c", "r", 3.0), (None, "r", 4.0), (None, "r", 5.0)]
    con.executemany("INSERT INTO sales VALUES (?, ?, ?, 30)", rows)


def _bounded(sql: str, policy: SqlPolicy, spec: DpSpec) -> tuple[str, list[dict[str, float]]]:
    plan = plan_dp(check_query(sql, dataclasses.replace(policy, min_group_size=1)), spec,
                   "customer")  # fmt: skip
    con = duckdb.connect()
    _visits(con)
    out = []
    for _ in range(40):
        (row,) = con.execute(plan.checked.sql).fetchall()
        out.append(dict(zip(plan.checked.output_columns, row, strict=True)))
    return plan.checked.sql, out


def test_each_contributor_is_cut_to_m_rows_inside_the_engine(policy: SqlPolicy) -> None:
    spec = DpSpec(epsilon=1, bounds={"amount": (0, 100)}, max_contributions=2)
    _, runs = _bounded("SELECT COUNT(*) AS n, SUM(amount) AS s FROM sales", policy, spec)
    # a: 2 of 10, b: 1, c: 2 of 3, and the two rows without a contributor.
    assert {r["__dp_0"] for r in runs} == {7}
    sums = {r["__dp_1"] for r in runs}
    # Which rows are kept is drawn per query: a's kept rows are 0+0, 0+50 or 50+50, c's two
    # of 1, 2, 3 -- the sums vary from run to run (40 runs, all equal with chance < 1e-20).
    assert len(sums) > 1 and all(0 + 7 + 3 + 9 <= s <= 100 + 7 + 5 + 9 for s in sums)
    # m = 1: one row each of a, b, c; the rows without a contributor pass uncut, each a
    # person of its own (pooled, one more such row could push out another person's).
    # Over 3.5: one of a's two 50s, b's 7, and both rows without a contributor (4 and 5).
    _, runs = _bounded("SELECT COUNT(*) AS n, SUM(amount) AS s FROM sales WHERE amount > 3.5",
                       policy, dataclasses.replace(spec, max_contributions=1))  # fmt: skip
    assert {(r["__dp_0"], r["__dp_1"]) for r in runs} == {(4, 66.0)}
    _, runs = _bounded("SELECT COUNT(*) AS n FROM sales", policy, dataclasses.replace(
        spec, max_contributions=1))  # fmt: skip
    assert {r["__dp_0"] for r in runs} == {5}


def test_the_cut_comes_after_the_where(policy: SqlPolicy) -> None:
    """a's two rows of amount 50 both pass the WHERE: they are both kept, every time (a cut
    before the WHERE would keep both in 1 run of 45)."""
    spec = DpSpec(epsilon=1, bounds={"amount": (0, 100)}, max_contributions=2)
    sql, runs = _bounded(
        "SELECT SUM(amount) AS s FROM sales WHERE amount > 5", policy, spec
    )
    assert {r["__dp_0"] for r in runs} == {107.0}
    assert '"__dp_rows" AS NOT MATERIALIZED (SELECT * FROM "sales" WHERE "amount" > 5)' in sql


def test_without_a_contributor_column_rows_are_not_cut(policy: SqlPolicy) -> None:
    spec = DpSpec(epsilon=1, max_contributions=2)
    plan = _plan("SELECT COUNT(*) FROM sales", policy, spec)
    assert "QUALIFY" not in plan.checked.sql
    con = duckdb.connect()
    _visits(con)
    assert con.execute(plan.checked.sql).fetchall() == [(16,)]


def test_contributors_are_told_apart_by_value_not_by_a_hash(policy: SqlPolicy) -> None:
    """DuckDB hashes a HUGEINT as hash(upper) xor hash(lower): 0, 2^64 + 1 and 2^65 + 2 all
    hash to 0. Three people with a row each keep their three rows at m = 1."""
    ids = SqlPolicy(table="sales", columns={"customer": "HUGEINT", "region": "VARCHAR"},
                    identifier_columns=frozenset({"customer"}))  # fmt: skip
    plan = plan_dp(check_query("SELECT COUNT(*) FROM sales", ids), DpSpec(epsilon=1),
                   "customer")  # fmt: skip
    con = duckdb.connect()
    con.execute("CREATE TABLE sales (customer HUGEINT, region VARCHAR)")
    con.executemany("INSERT INTO sales VALUES (?, 'r')", [[0], [2**64 + 1], [2**65 + 2]])
    assert con.execute("SELECT count(DISTINCT hash(customer)) FROM sales").fetchone() == (1,)
    assert con.execute(plan.checked.sql).fetchall() == [(3,)]


def test_a_column_named_like_the_cuts_own_parts_is_left_alone(policy: SqlPolicy) -> None:
    """A table with a column "__dp_draw": the cut draws under another name, so the kept rows
    are still random and the column keeps its values."""
    odd = SqlPolicy(table="sales", columns={"customer": "VARCHAR", "__dp_draw": "DOUBLE"},
                    identifier_columns=frozenset({"customer"}))  # fmt: skip
    spec = DpSpec(epsilon=1, bounds={"__dp_draw": (0, 100)}, max_contributions=2)
    plan = plan_dp(check_query('SELECT SUM("__dp_draw") FROM sales', odd), spec, "customer",
                   odd.columns)  # fmt: skip
    con = duckdb.connect()
    con.execute('CREATE TABLE sales (customer VARCHAR, "__dp_draw" DOUBLE)')
    con.executemany("INSERT INTO sales VALUES ('a', ?)", [[float(v)] for v in range(50)])
    sums = {con.execute(plan.checked.sql).fetchone()[0] for _ in range(20)}  # type: ignore[index]
    assert len(sums) > 1 and all(s == int(s) and 1 <= s <= 97 for s in sums)


def test_placeholders_and_masked_values_are_no_contributor(policy: SqlPolicy) -> None:
    """'pending' or '138****1234' is no person: pooled, one added such row could push out
    another's (2m against noise for m). Like NULL they pass uncut, each a person."""
    plan = plan_dp(check_query("SELECT COUNT(*) FROM sales", dataclasses.replace(
        policy, min_group_size=1)), DpSpec(epsilon=1, max_contributions=1), "customer")
    con = duckdb.connect()
    con.execute("CREATE TABLE sales (customer VARCHAR, region VARCHAR, amount DOUBLE, age INT)")
    rows = ["a"] * 4 + ["pending"] * 5 + [" N/A "] * 2 + ["138****1234"] * 3 + ["待定"]
    con.executemany("INSERT INTO sales VALUES (?, 'r', 1, 30)", [[r] for r in rows])
    assert con.execute(plan.checked.sql).fetchall() == [(1 + 5 + 2 + 3 + 1,)]
