"""Governed SQL cannot single out one person: not by a conditional aggregate, not by an error.

The people fixture: city cN has N people, person i of a city has age 20 + 3i and income
1000 N + i; age 47 is person 9 of c9 and of c10.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from dataspace.compute import QueryFailed, QueryRefused, SqlPolicy, check_query, run_query
from dataspace.compute.errors import FAILED_MESSAGE
from dataspace.compute.sandbox import SandboxLimits, _UnsafeRawQuery


def _rows(sql: str, policy: SqlPolicy, parquet: Path, limits: SandboxLimits) -> list[dict]:
    return run_query(parquet, "people", check_query(sql, policy), limits).table.to_pylist()


# -- conditional aggregates ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sum(income) FILTER (WHERE age = 47 AND city = 'c10') AS x FROM people",
        "SELECT count(*) FILTER (WHERE age = 47 AND city = 'c10') AS x FROM people",
        "SELECT avg(income) FILTER (WHERE age = 47) AS x FROM people WHERE city = 'c10'",
        "SELECT count(CASE WHEN age = 47 THEN 1 END) AS x FROM people WHERE city = 'c10'",
        "SELECT count_if(age = 47) AS x FROM people WHERE city = 'c10'",
        "SELECT count(DISTINCT city) FILTER (WHERE age = 47 AND city = 'c10') AS x FROM people",
        "SELECT max(joined) FILTER (WHERE age = 47) AS x FROM people",
    ],
)
def test_an_aggregate_over_one_person_is_not_released_from_a_large_group(
    sql: str, policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    assert _rows(sql, policy, people_parquet, limits) == [{"x": None}]


# The person aged 47 in c10 has income 10009. Each probe below answered "income > 10005?"
# exactly before these forms were refused: a distinct count of an indicator that is non-NULL
# on every row (2 values or 1), a DISTINCT over a tuple (no per-aggregate threshold), and
# max(x, n), which lists n raw values (with a FILTER, a small group's members among them).
PROBE = "CASE WHEN age = 47 AND city = 'c10' AND income > 10005 THEN 1 ELSE 0 END"
REFUSED_DISTINCT_AND_LISTS = {
    f"SELECT count(DISTINCT {PROBE}) AS b FROM people": "a distinct count may only count",
    f"SELECT approx_count_distinct({PROBE}) AS b FROM people": "a distinct count may only count",
    "SELECT count(DISTINCT CASE WHEN age = 47 THEN city END) AS x FROM people":
        "a distinct count may only count",
    f"SELECT count(DISTINCT {PROBE.replace(' ELSE 0', '')}, 1) AS b FROM people":
        "over 2 expressions",
    "SELECT count(DISTINCT city, age) AS b FROM people": "over 2 expressions",
    "SELECT city, max(age, 100) AS m FROM people GROUP BY city": "list of n raw values",
    "SELECT min(joined, 100) AS m FROM people": "list of n raw values",
    "SELECT max(age, 100) FILTER (WHERE city = 'c10' OR (city = 'c3' AND diagnosis = 'flu')) "
    "AS x FROM people": "list of n raw values",
}  # fmt: skip


@pytest.mark.parametrize("sql", list(REFUSED_DISTINCT_AND_LISTS))
def test_distinct_counts_of_expressions_tuples_and_top_n_lists_are_refused_under_k(
    sql: str, policy: SqlPolicy
) -> None:
    with pytest.raises(QueryRefused, match=REFUSED_DISTINCT_AND_LISTS[sql]):
        check_query(sql, policy)


def test_distinct_counts_of_columns_are_still_released(
    policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    sql = "SELECT count(DISTINCT city) AS n, approx_count_distinct(age) AS a FROM people"
    assert _rows(sql, policy, people_parquet, limits) == [{"n": 10, "a": 10}]  # c1..c10


def test_filtered_average_per_group_releases_only_filters_with_k_rows(
    policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    sql = (
        "SELECT city, avg(income) FILTER (WHERE age >= 35) AS x, "
        "sum(income) FILTER (WHERE age = 47) AS one FROM people GROUP BY city ORDER BY city"
    )
    rows = {r["city"]: r for r in _rows(sql, policy, people_parquet, limits)}
    assert set(rows) == {f"c{n}" for n in range(5, 11)}  # the groups themselves have k rows
    assert rows["c10"]["x"] == pytest.approx(10007.5)  # persons 5..10: six rows
    assert rows["c9"]["x"] == pytest.approx(9007.0)  # persons 5..9: five rows
    assert rows["c8"]["x"] is None  # persons 5..8: four rows
    assert all(r["one"] is None for r in rows.values())  # one person aged 47 per city


REFUSED_ARGUMENTS = [
    "SELECT sum(CASE WHEN age = 47 THEN income ELSE 0 END) FROM people",
    "SELECT sum(if(age = 47, income, 0)) FROM people",
    "SELECT avg(income * (age = 47)) FROM people",
    "SELECT sum(income * (1 - least(abs(age - 47), 1))) FROM people",
    "SELECT sum(coalesce(nullif(age, 47), 0)) FROM people",
    "SELECT sum(CAST(age / 94.0 AS INTEGER)) FROM people",
    "SELECT sum(income * age) FROM people",
    "SELECT sum(income / age) FROM people",
    "SELECT sum(income * 1e300) FROM people",
    "SELECT sum((age + 1e16) - 1e16) FROM people",
    "SELECT stddev(round(income, -3)) FROM people",
    "SELECT max(CASE WHEN age = 47 THEN joined END) FROM people",
    "SELECT city, median(greatest(age, 47)) FROM people GROUP BY city",
]


@pytest.mark.parametrize("sql", REFUSED_ARGUMENTS)
def test_non_linear_aggregate_arguments_are_refused_under_k(sql: str, policy: SqlPolicy) -> None:
    with pytest.raises(QueryRefused, match="may only add, subtract and scale columns"):
        check_query(sql, policy)


def test_linear_arguments_and_raw_output_are_still_allowed(
    make_policy: Callable[..., SqlPolicy], people_parquet: Path, limits: SandboxLimits
) -> None:
    policy = make_policy()
    rows = _rows(
        "SELECT city, sum(income - 2 * age) AS s, avg(age + 1) AS a FROM people "
        "WHERE city = 'c5' GROUP BY city",
        policy,
        people_parquet,
        limits,
    )
    assert rows == [{"city": "c5", "s": 5000 * 5 + 15 - 2 * (100 + 45), "a": 30.0}]
    # no minimum group size, or raw output: nothing to protect by refusing
    check_query("SELECT sum(CASE WHEN age > 3 THEN income END) FROM people",
                make_policy(min_group_size=1))  # fmt: skip
    check_query("SELECT sum(CASE WHEN age > 3 THEN income END) FROM people",
                make_policy(output="raw"))  # fmt: skip


def test_where_narrowing_to_one_person_releases_nothing(
    policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    sql = "SELECT sum(income) AS s FROM people WHERE age = 47 AND city = 'c10'"
    assert _rows(sql, policy, people_parquet, limits) == []


def test_a_column_null_for_all_but_one_row_is_not_released(
    tmp_path: Path, limits: SandboxLimits
) -> None:
    path = tmp_path / "bonus.parquet"
    duckdb.sql(
        f"COPY (SELECT i AS id, CASE WHEN i = 3 THEN 77777.0 END AS bonus FROM range(10) t(i)) "
        f"TO '{path}' (FORMAT parquet)"
    )
    policy = SqlPolicy(table="people", columns={"id": "BIGINT", "bonus": "DOUBLE"},
                       min_group_size=5)  # fmt: skip
    checked = check_query("SELECT sum(bonus) AS s, count(*) AS n FROM people", policy)
    assert run_query(path, "people", checked, limits).table.to_pylist() == [{"s": None, "n": 10}]


def test_contributor_column_counts_distinct_contributors_per_aggregate(
    make_policy: Callable[..., SqlPolicy], people_parquet: Path, limits: SandboxLimits
) -> None:
    policy = make_policy(contributor_column="id_card", min_group_size=5)
    checked = check_query(
        "SELECT sum(income) FILTER (WHERE age >= 35) AS x FROM people WHERE city = 'c9'", policy
    )
    assert (
        'COUNT(DISTINCT "id_card") FILTER(WHERE ("age" >= 35) AND (NOT "income" IS NULL)) >= 5'
        in checked.sql
    )
    assert run_query(people_parquet, "people", checked, limits).table.to_pylist() == [
        {"x": sum(9000.0 + i for i in range(5, 10))}
    ]


def test_having_cannot_fail_on_a_group_under_k(
    policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    # c1 has one person: 1 // (count(*) - 1) would divide by zero there
    sql = "SELECT city, count(*) AS n FROM people GROUP BY city HAVING 1 // (count(*) - 1) >= 0"
    rows = _rows(sql, policy, people_parquet, limits)
    assert sorted(r["n"] for r in rows) == list(range(5, 11))


@pytest.mark.parametrize("where", ["city = 'c10'", "true"])
def test_having_cannot_fail_on_the_key_of_a_group_under_k(
    where: str, policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    """A group key in HAVING, its aggregate made non-NULL again by coalesce: the division
    fails exactly when some group under k has age N (47 exists, 46 does not), unless the
    condition is evaluated for groups of k or more only. (c10 alone: every age group has one
    person; all cities: age 47 has two.)"""
    outcomes = []
    for n in (46, 47):
        sql = (f"SELECT age, count(*) AS n FROM people WHERE {where} GROUP BY age "
               f"HAVING coalesce(count(*), 1) // (age - {n}) >= 0")
        rows = _rows(sql, policy, people_parquet, limits)  # never raises
        outcomes.append(sorted((r["age"], r["n"]) for r in rows))
    assert outcomes[0] == outcomes[1]
    assert all(count >= 5 for _, count in outcomes[0])


# -- engine errors -------------------------------------------------------------------------

# Each would raise in the engine exactly when some row has age N (47 exists, 46 does not).
ORACLES = {
    "cast": "CAST(CASE WHEN age = {n} THEN 'boom' ELSE '1' END AS INTEGER) = 1",
    "integer division": "1 // (age - {n}) >= 0",
    "modulo": "1 % (age - {n}) >= 0",
    "BIGINT overflow": "(2 - least(abs(age - {n}), 1)) * 9223372036854775807 > 0",
    "date overflow": "joined + INTERVAL (1000000000 * (1 - least(abs(age - {n}), 1))) DAY "
    "> DATE '2000-01-01'",
    "text compared with a number": "(CASE WHEN age = {n} THEN 'x' ELSE '1' END) = 1",
    "substring offset": "substring(city, 1 + 10000000000000 * (1 - least(abs(age - {n}), 1)), "
    "1) = 'c'",
    # read as truth values, text and dates are cast row by row: on the rows that reach them
    "text as a truth value": "age = {n} AND diagnosis",
    "date as a truth value": "age = {n} AND joined",
    "text function as a truth value": "age = {n} AND NOT lower(diagnosis)",
    # (a date compared with 'x' or '2024-W01-1', which the engine parses only when a row
    # reaches it, is refused by the checker before anything runs: tests/compute/test_bind.py)
    "text as a truth value, in OR": "(age = {n} AND (diagnosis OR city = 'c1'))",
}


@pytest.mark.parametrize("oracle", ORACLES)
def test_whether_a_query_fails_does_not_depend_on_the_data(
    oracle: str, policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    outcomes = []
    for n in (46, 47):
        where = ORACLES[oracle].format(n=n)
        sql = f"SELECT city, count(*) AS c FROM people WHERE {where} GROUP BY city"
        checked = check_query(sql, policy)
        assert "TRY(" in checked.sql
        result = run_query(people_parquet, "people", checked, limits)  # never raises
        outcomes.append(result.table.column_names)
    assert outcomes[0] == outcomes[1]


TRUTH_ORACLES = {
    # a bare text column or group key read as a truth value: TRY alone returned the text and
    # FILTER's cast to BOOLEAN failed outside it, on the rows the WHERE let through
    "bare column in FILTER":
        "SELECT count(*) FILTER (WHERE diagnosis) AS x FROM people WHERE age = {n}",
    "group key in FILTER":
        "SELECT city, count(*) FILTER (WHERE city) AS x FROM people WHERE age = {n} "
        "GROUP BY city",
    "group key in HAVING":
        "SELECT city, count(*) AS x FROM people WHERE age = {n} GROUP BY city HAVING city",
    "text function in FILTER":
        "SELECT count(*) FILTER (WHERE lower(diagnosis)) AS x FROM people WHERE age = {n}",
    "count_if's argument": "SELECT count_if(age = {n} AND diagnosis) AS x FROM people",
}  # fmt: skip


@pytest.mark.parametrize("oracle", TRUTH_ORACLES)
def test_a_value_read_as_a_truth_value_cannot_fail_on_one_row(
    oracle: str, policy: SqlPolicy, people_parquet: Path, limits: SandboxLimits
) -> None:
    outcomes = []
    for n in (46, 47):
        sql = TRUTH_ORACLES[oracle].format(n=n)
        outcomes.append(_rows(sql, policy, people_parquet, limits))  # never raises
    assert outcomes[0] == outcomes[1]


@pytest.fixture(scope="module")
def wide_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten groups of ten; in group g9 one row has a balance of 10^15, a count of 10^12 and a
    date in the year 3000 -- values that only a widening cast trips over."""
    path = tmp_path_factory.mktemp("wide") / "wide.parquet"
    duckdb.sql(
        f"""
        COPY (
            SELECT 'g' || (i // 10) AS grp,
                   CASE WHEN i = 95 THEN 1e15 ELSE i END::DECIMAL(18, 2) AS balance,
                   CASE WHEN i = 95 THEN 1000000000000 ELSE i END::BIGINT AS visits,
                   CASE WHEN i = 95 THEN DATE '3000-01-01' ELSE DATE '2024-01-01' END AS dt,
                   TIMESTAMP_NS '2024-06-01 00:00:00' AS seen
            FROM range(100) t(i)
        ) TO '{path}' (FORMAT parquet)
        """
    )
    return path


WIDENING = {
    "decimal vs a long decimal literal": "balance > 0.123456789012345678901234567",
    "bigint vs a long decimal literal": "visits > 0.1234567890123456789012345678",
    "date vs timestamp_ns": "dt < seen",
}


@pytest.mark.parametrize("probe", WIDENING)
def test_a_widening_cast_cannot_fail_on_one_row(
    probe: str, wide_parquet: Path, make_policy: Callable[..., SqlPolicy], limits: SandboxLimits
) -> None:
    """Whether g9 holds the extreme row must not decide whether the query fails (g0 does not
    hold it); the comparison is wrapped, the query answers for both."""
    columns = {"grp": "VARCHAR", "balance": "DECIMAL(18,2)", "visits": "BIGINT", "dt": "DATE",
               "seen": "TIMESTAMP_NS"}
    policy = make_policy(table="wide", columns=columns, prohibited_fields=frozenset(),
                         sensitive_columns=frozenset(), identifier_columns=frozenset())
    for group in ("g0", "g9"):
        where = f"grp = '{group}' AND ({WIDENING[probe]} OR grp = 'x')"
        sql = f"SELECT count(*) AS n FROM wide WHERE {where}"
        checked = check_query(sql, policy)
        assert "TRY(" in checked.sql
        run_query(wide_parquet, "wide", checked, limits)  # never raises


def test_plain_comparisons_stay_unwrapped(policy: SqlPolicy) -> None:
    """Comparisons that cannot fail keep their plain form (filters push down as they are)."""
    for where in ("age > 40", "income > 1000.5", "city = 'c1'", "joined < '2024-06-01'",
                  "age BETWEEN 20 AND 30", "city LIKE 'c%'", "age IN (1, 2, 3)",
                  "age > 40 AND city = 'c1'", "NOT (age > 40)"):
        checked = check_query(f"SELECT count(*) AS n FROM people WHERE {where}", policy)
        assert "TRY(" not in checked.sql, where


def test_the_reviewers_cast_probe_is_refused(policy: SqlPolicy) -> None:
    sql = (
        "SELECT SUM(CAST(CASE WHEN name = 'person42' THEN diagnosis ELSE '0' END AS INT)) AS x "
        "FROM people"
    )
    with pytest.raises(QueryRefused):
        check_query(sql, policy)
    sql = sql.replace("name = 'person42'", "age = 47")
    with pytest.raises(QueryRefused, match="may only add, subtract and scale"):
        check_query(sql, policy)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT date_trunc('bogus', joined) AS d, count(*) FROM people GROUP BY 1",
         "date part 'BOGUS' is not a known specifier"),
        ("SELECT date_trunc(city, joined) AS d, count(*) FROM people GROUP BY 1",
         "date part 'CITY' is not a known specifier"),
        ("SELECT count(*) FROM people WHERE date_part(city, joined) = 1",
         "write the specifier as a literal"),
        ("SELECT count(*) FROM people WHERE extract('bogus' FROM joined) = 1",
         "date part 'bogus' is not a known specifier"),
        ("SELECT count(*) FROM people WHERE date_diff('nope', joined, joined) = 1",
         "is not a known specifier"),
    ],
)  # fmt: skip
def test_date_part_specifiers_must_be_known_literals(
    sql: str, reason: str, policy: SqlPolicy
) -> None:
    with pytest.raises(QueryRefused, match=reason):
        check_query(sql, policy)


def test_casts_become_try_casts(policy: SqlPolicy) -> None:
    checked = check_query(
        "SELECT CAST(age AS VARCHAR) AS a, count(*) FROM people GROUP BY 1", policy
    )
    assert 'TRY_CAST("age" AS TEXT)' in checked.sql and 'CAST("age"' not in checked.sql.replace(
        "TRY_CAST", ""
    )


def test_an_engine_failure_is_opaque_to_the_consumer(
    people_parquet: Path, limits: SandboxLimits
) -> None:
    raw = _UnsafeRawQuery("SELECT CAST(diagnosis AS INTEGER) AS d FROM people")
    with pytest.raises(QueryFailed) as caught:
        run_query(people_parquet, "people", raw, limits)
    error = caught.value
    assert error.message == FAILED_MESSAGE and error.code == "query_failed"
    public = str(error.to_dict()) + str(error)
    assert "flu" not in public and "none" not in public and "Conversion" not in public
    assert "Could not convert string" in str(error.internal_detail)  # the provider's log only


# -- several identifier columns --------------------------------------------------------------


@pytest.fixture(scope="session")
def visits_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four wards of six patients each: w1's all saw doctor d1; w2 has no doctor recorded;
    w3's saw five doctors; in w4 one patient has a doctor, the others none."""
    path = tmp_path_factory.mktemp("visits") / "visits.parquet"
    duckdb.sql(
        f"""
        COPY (
            SELECT 'p' || i AS patient_id, 'w' || (i // 6 + 1) AS ward, 100.0 + i AS cost,
                   CASE i // 6 WHEN 0 THEN 'd1' WHEN 1 THEN NULL
                               WHEN 2 THEN 'd' || (10 + i % 5)
                               ELSE CASE WHEN i = 18 THEN 'd7' END END AS doctor_id
            FROM range(24) t(i)
        ) TO '{path}' (FORMAT parquet)
        """
    )
    return path


def test_a_group_of_k_patients_does_not_single_out_their_one_doctor(
    visits_parquet: Path, make_policy: Callable[..., SqlPolicy], limits: SandboxLimits
) -> None:
    columns = {"patient_id": "VARCHAR", "ward": "VARCHAR", "cost": "DOUBLE",
               "doctor_id": "VARCHAR"}
    policy = make_policy(table="visits", columns=columns, prohibited_fields=frozenset(),
                         sensitive_columns=frozenset(), min_group_size=5,
                         identifier_columns=frozenset({"patient_id", "doctor_id"}),
                         contributor_column="patient_id")
    grouped = "SELECT ward, count(*) AS n, sum(cost) AS s FROM visits GROUP BY ward ORDER BY ward"
    rows = run_query(visits_parquet, "visits", check_query(grouped, policy), limits).table
    assert rows.column("ward").to_pylist() == ["w2", "w3"]  # no doctor, or five of them
    filtered = ("SELECT sum(cost) FILTER (WHERE ward = 'w1') AS d1, "
                "sum(cost) FILTER (WHERE ward = 'w3') AS many FROM visits")
    answer = run_query(visits_parquet, "visits", check_query(filtered, policy), limits)
    assert answer.table.to_pylist() == [{"d1": None, "many": sum(100.0 + i for i in range(12, 18))}]
