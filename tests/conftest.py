"""Shared fixtures: nodes on SQLite, or on PostgreSQL when DATASPACE_TEST_DATABASE_URL is set.

On PostgreSQL every node gets its own schema, dropped when the test ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dataspace.services.node import Node, init_node

DATABASE_URL = os.environ.get("DATASPACE_TEST_DATABASE_URL")
REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "src" / "dataspace" / "samples"


#: Fixtures whose stores follow DATASPACE_TEST_DATABASE_URL. With it set (CI's second phase)
#: only tests that use one, directly or through another fixture, run: the others never open a
#: database that URL names (pure functions, or nodes of their own on SQLite), and CI has just
#: run them in its SQLite phase.
DATABASE_FIXTURES = frozenset({"make_node", "space_factory", "shared_space", "store"})


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.pluginmanager.has_plugin("xdist"):
        _group_module_fixtures(items)
    if not DATABASE_URL:
        return
    keep = [i for i in items if DATABASE_FIXTURES & set(getattr(i, "fixturenames", ()))]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


def _group_module_fixtures(items: list[pytest.Item]) -> None:
    """Tests that share a module- or class-scoped fixture run on one xdist worker, so the
    fixture (a scenario run, a space of node processes) is built once, not once per worker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group"):
            continue
        shared = any(
            d.scope in ("module", "class") for defs in info.name2fixturedefs.values() for d in defs
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


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
def space_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start spaces of real node processes: ``space = space_factory(["tax-bureau", "bank"])``."""
    from helpers.cluster import Space, start_space

    started: list[tuple[Space, dict[str, str]]] = []

    def factory(names: list[str], *, serve: bool = True) -> Space:
        schemas = (
            {n: f"t_{secrets.token_hex(6)}" for n in ["operator", *names]} if DATABASE_URL else {}
        )
        space = start_space(
            tmp_path / f"space{len(started)}",
            names,
            database_url=DATABASE_URL,
            schema_for=schemas,
            serve=serve,
        )
        started.append((space, schemas))
        return space

    yield factory
    for space, schemas in started:
        space.stop()
        for schema in schemas.values():
            _drop_schema(DATABASE_URL or "", schema)


@pytest.fixture
def node(make_node: Callable[..., tuple[Node, str]]) -> Node:
    return make_node("bank-a")[0]
