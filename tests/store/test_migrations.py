"""The Alembic migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

import logging

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dataspace.store.models import Base


def test_migrations_match_the_models(node) -> None:
    with node.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrating_twice_is_a_no_op(node) -> None:
    node.store.migrate()
    node.store.migrate()


def test_heads_name_every_branch_end_of_the_scripts() -> None:
    from alembic.script import ScriptDirectory

    from dataspace.store.migrate import HEADS, MIGRATIONS

    assert set(ScriptDirectory(str(MIGRATIONS)).get_heads()) == HEADS


def _downgrade(node, revision: str) -> None:
    from alembic import command

    from dataspace.store.migrate import alembic_config

    with node.store.engine.begin() as conn:
        cfg = alembic_config(node.store)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_opening_a_node_an_earlier_version_made_upgrades_its_schema(node, caplog) -> None:
    from sqlalchemy import inspect

    from dataspace.services.node import open_node
    from dataspace.store.migrate import HEADS

    _downgrade(node, "0016_jobs_claimed_by-1")  # as a node made before jobs.claimed_by
    assert "0016_jobs_claimed_by" not in node.store.schema_revisions()
    with caplog.at_level(logging.WARNING, logger="dataspace.node"):
        opened = open_node(node.root)
    try:
        assert opened.store.schema_revisions() == HEADS
        with opened.store.engine.connect() as conn:
            assert "claimed_by" in {c["name"] for c in inspect(conn).get_columns("jobs")}
        assert "upgraded node" in caplog.text and "0016_jobs_claimed_by" in caplog.text
        caplog.clear()
        open_node(node.root).close()  # up to date: nothing more to do
        assert "upgraded" not in caplog.text
    finally:
        opened.close()


def test_a_node_a_newer_version_upgraded_is_refused(node) -> None:
    from sqlalchemy import text

    from dataspace.errors import StoreError
    from dataspace.services.node import open_node

    with node.store.write() as session:
        session.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0099_future')"))
    with pytest.raises(StoreError, match="0099_future, which this version of dataspace does"):
        open_node(node.root)
    with node.store.write() as session:
        session.execute(text("DELETE FROM alembic_version WHERE version_num = '0099_future'"))
