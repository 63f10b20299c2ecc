"""Shared fixtures: nodes on SQLite, or on PostgreSQL when DATASPACE_TEST_DATABASE_URL is set.

On PostgreSQL every node gets its own schema, dropped when the test ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dataspace.services.node import Node, init_node

DATABASE_URL = os.environ.get("DATASPACE_TEST_DATABASE_URL")
REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "src" / "dataspace" / "samples"


def _drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., tuple[Node, str]]]:
    """Create nodes: ``node, admin_secret = make_node("bank-a")``."""
    created: list[tuple[Node, str | None]] = []

    def factory(name: str = "bank-a") -> tuple[Node, str]:
        schema = f"t_{secrets.token_hex(6)}" if DATABASE_URL else None
        node, secret = init_node(
            tmp_path / name, name, database_url=DATABASE_URL, database_schema=schema
        )
        created.append((node, schema))
        return node, secret

    yield factory
    for node, schema in created:
        node.close()
        if DATABASE_URL and schema:
            _drop_schema(DATABASE_URL, schema)


@pytest.fixture
def node(make_node: Callable[..., tuple[Node, str]]) -> Node:
    return make_node("bank-a")[0]
