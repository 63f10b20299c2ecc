"""Binding against the schema alone: what fails whatever the data is found before any run."""

from __future__ import annotations

import pytest

from dataspace.compute import SqlPolicy, check_query
from dataspace.compute.bind import bind_problem, literal_fits
from dataspace.compute.errors import QueryRefused

COLUMNS = {"district": "VARCHAR", "age": "BIGINT", "joined": "DATE", "amount": "DECIMAL(18,2)"}


@pytest.mark.parametrize(("sql", "problem"), [
    ('SELECT count(*) FROM "t" WHERE "district" > 3', "Cannot compare values of type VARCHAR"),
    ("SELECT strftime(\"age\", '%Y') FROM \"t\"", "No function matches"),
    ('SELECT "nowhere" FROM "t"', "not found"),
])
def test_what_the_schema_alone_refuses_is_named(sql: str, problem: str) -> None:
    found = bind_problem(sql, "t", COLUMNS)
    assert found is not None and problem in found and found.startswith("Binder Error")


@pytest.mark.parametrize("sql", [
    'SELECT "district", count(*), sum("amount") FROM "t" WHERE "age" > 3 GROUP BY 1',
    'SELECT count(*) FROM "t" WHERE TRY_CAST("district" AS INTEGER) > 3',
    "SELECT max(\"joined\") FROM \"t\" WHERE \"joined\" > DATE '2024-01-01'",
])
def test_a_query_that_binds_is_let_through(sql: str) -> None:
    assert bind_problem(sql, "t", COLUMNS) is None


def test_a_schema_that_cannot_be_rebuilt_decides_nothing() -> None:
    assert bind_problem('SELECT count(*) FROM "t"', "t", {"x": "NO_SUCH_TYPE"}) is None
    assert bind_problem("SELECT * FROM read_csv('/etc/passwd')", "t", COLUMNS) is None


@pytest.mark.parametrize(("sql", "literal"), [
    ("SELECT count(*) AS n FROM people WHERE age = '三十'", "三十"),
    ("SELECT count(*) AS n FROM people WHERE 'abc' < income", "abc"),
    ("SELECT count(*) AS n FROM people WHERE joined = 'yesterday'", "yesterday"),
    ("SELECT count(*) AS n FROM people WHERE age = 46 AND joined < 'x'", "x"),
    ("SELECT count(*) AS n FROM people WHERE age = 47 AND joined < '2024-W01-1'", "2024-W01-1"),
    ("SELECT count(*) AS n FROM people WHERE age BETWEEN '1' AND 'z'", "z"),
    ("SELECT count(*) AS n FROM people WHERE age IN ('30', 'x')", "x"),
    ("SELECT count(*) FILTER (WHERE age <> 'NULL') AS n FROM people", "NULL"),
    ("SELECT city, count(*) AS n FROM people WHERE age >= '3 0' GROUP BY city", "3 0"),
])
def test_a_literal_the_column_type_cannot_hold_is_refused_not_answered_empty(
    policy: SqlPolicy, sql: str, literal: str,
) -> None:
    with pytest.raises(QueryRefused, match="could match no row") as refused:
        check_query(sql, policy)
    assert f"'{literal}'" in refused.value.message


@pytest.mark.parametrize("condition", [
    "age = '30'", "age = ' 30 '", "income > '1.5e3'", "joined = '2024-1-5'",
    "joined > '2024-01-05'", "age IN ('30', '31')", "city = '三十'", "city > '5'",
])
def test_a_literal_the_column_type_reads_is_let_through(
    policy: SqlPolicy, condition: str,
) -> None:
    check_query(f"SELECT count(*) AS n FROM people WHERE {condition}", policy)


def test_literal_fits_is_the_engines_own_cast() -> None:
    assert literal_fits("30", "INTEGER") and not literal_fits("三十", "INTEGER")
    assert literal_fits("true", "BOOLEAN") and not literal_fits("maybe", "BOOLEAN")
    assert literal_fits("12.25", "DECIMAL(18,2)") and not literal_fits("1e40", "DECIMAL(18,2)")
    assert literal_fits("anything", "NO_SUCH_TYPE")  # undecidable here: the worker decides
