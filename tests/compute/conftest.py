"""Fixtures for governed SQL: a small 'people' dataset and its agreement policy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from dataspace.compute import SqlPolicy
from dataspace.compute.sandbox import SandboxLimits

COLUMNS = {
    "id_card": "VARCHAR",
    "name": "VARCHAR",
    "city": "VARCHAR",
    "age": "INTEGER",
    "income": "DOUBLE",
    "diagnosis": "VARCHAR",
    "joined": "DATE",
    "notes": "VARCHAR",
}


def _make_policy(**overrides: object) -> SqlPolicy:
    values: dict[str, object] = {
        "table": "people",
        "columns": COLUMNS,
        "prohibited_fields": frozenset({"notes"}),
        "sensitive_columns": frozenset({"diagnosis", "income"}),
        "identifier_columns": frozenset({"id_card", "name"}),
        "min_group_size": 5,
        "output": "aggregate-only",
    }
    values.update(overrides)
    return SqlPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_policy() -> Callable[..., SqlPolicy]:
    """``make_policy(min_group_size=3, output="raw")``: the people policy with overrides."""
    return _make_policy


@pytest.fixture
def policy() -> SqlPolicy:
    return _make_policy()


@pytest.fixture(scope="session")
def people_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """55 people in 10 cities; city c<N> has exactly N people (N = 1..10)."""
    path = tmp_path_factory.mktemp("data") / "people.parquet"
    duckdb.sql(
        f"""
        COPY (
            SELECT printf('11010119900101%04d', row_number() OVER ()) AS id_card,
                   'person' || row_number() OVER () AS name,
                   'c' || n AS city,
                   (20 + i * 3)::INTEGER AS age,
                   (1000.0 * n + i)::DOUBLE AS income,
                   CASE WHEN i % 2 = 0 THEN 'flu' ELSE 'none' END AS diagnosis,
                   DATE '2024-01-01' + (i * 30)::INTEGER AS joined,
                   'secret note' AS notes
            FROM range(1, 11) a(n), range(1, 11) b(i)
            WHERE i <= n
        ) TO '{path}' (FORMAT parquet)
        """
    )
    return path


@pytest.fixture
def limits(tmp_path: Path) -> Iterator[SandboxLimits]:
    root = tmp_path / "sandbox-tmp"
    root.mkdir()
    yield SandboxLimits(
        memory_limit_mb=256,
        threads=1,
        timeout_seconds=10.0,
        kill_grace_seconds=1.0,
        max_temp_mb=64,
        temp_root=str(root),
    )
