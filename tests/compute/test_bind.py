"""Binding against the schema alone: what fails whatever the data is found before any run."""

from __future__ import annotations

import pytest

from dataspace.compute.bind import bind_problem

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
