"""Fixtures for DP queries: a small sales table with known sums, and its agreement policy."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from dataspace.compute import SqlPolicy
from dataspace.privacy import DpSpec
from dataspace.services.node import Node
from dataspace.store import Store

COLUMNS = {"customer": "VARCHAR", "region": "VARCHAR", "amount": "DOUBLE", "age": "INTEGER"}


@pytest.fixture(scope="session")
def sales(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 rows: regions north/south/east/west x 250, amount = i % 100, plus a tiny region
    'isle' of 2 rows, and one outlier row of amount 1e12 in 'north'."""
    path = tmp_path_factory.mktemp("dp") / "sales.parquet"
    duckdb.sql(
        f"""COPY (
            SELECT 'c' || i AS customer,
                   ['north', 'south', 'east', 'west'][i % 4 + 1] AS region,
                   (i % 100)::DOUBLE AS amount, (20 + i % 50)::INTEGER AS age
            FROM range(1000) t(i)
            UNION ALL SELECT 'c1000', 'isle', 10.0, 30 UNION ALL SELECT 'c1001', 'isle', 10.0, 31
            UNION ALL SELECT 'c1002', 'north', 1e12, 40
        ) TO '{path}' (FORMAT parquet)"""
    )
    return path


@pytest.fixture
def policy() -> SqlPolicy:
    return SqlPolicy(
        table="sales",
        columns=COLUMNS,
        identifier_columns=frozenset({"customer"}),
        sensitive_columns=frozenset({"amount"}),
        min_group_size=5,
    )


@pytest.fixture
def spec() -> DpSpec:
    return DpSpec(epsilon=1.0, delta=1e-6, bounds={"amount": (0, 100), "age": (0, 120)})


@pytest.fixture
def store(node: Node) -> Store:
    return node.store
