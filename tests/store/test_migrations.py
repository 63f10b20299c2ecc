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


def test_a_database_without_the_schema_is_refused_not_filled(node) -> None:
    from sqlalchemy import text

    from dataspace.errors import StoreError
    from dataspace.services.node import open_node

    with node.store.write() as session:  # as a state.db moved away, a schema dropped
        session.execute(text("DROP TABLE alembic_version"))
    with pytest.raises(StoreError, match="holds no dataspace schema"):
        open_node(node.root)
    with node.store.read() as session:  # nothing was created over what is there
        assert not inspect_tables(session, "alembic_version")


def inspect_tables(session, name: str) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(session.connection()).has_table(name))


def test_an_upgrade_that_cannot_lock_or_fails_is_a_clear_error(node, monkeypatch) -> None:
    from dataspace.errors import StoreError
    from dataspace.services.node import MIGRATE_LOCK, open_node
    from dataspace.store.db import Store

    _downgrade(node, "0016_jobs_claimed_by-1")
    (node.tmp_dir / MIGRATE_LOCK).mkdir()  # e.g. left by another user
    with pytest.raises(StoreError, match="cannot lock") as refused:
        open_node(node.root)
    assert "owns its directory" in str(refused.value.hint)
    (node.tmp_dir / MIGRATE_LOCK).rmdir()

    def broken(store: Store) -> None:
        raise RuntimeError("a migration met data it did not expect")

    monkeypatch.setattr(Store, "migrate", broken)
    with pytest.raises(StoreError, match="failed, nothing was changed: a migration met data"):
        open_node(node.root)
    assert "0016_jobs_claimed_by" not in node.store.schema_revisions()


def test_an_upgrade_waits_for_another_one_and_says_so(node, caplog) -> None:
    import fcntl
    import os
    import threading
    import time

    from dataspace.services.node import MIGRATE_LOCK, open_node
    from dataspace.store.migrate import HEADS

    _downgrade(node, "0016_jobs_claimed_by-1")
    holder = os.open(node.tmp_dir / MIGRATE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process upgrading it right now
    opened: list = []
    with caplog.at_level(logging.WARNING, logger="dataspace.node"):
        opening = threading.Thread(target=lambda: opened.append(open_node(node.root)))
        opening.start()
        try:
            deadline = time.monotonic() + 30
            while "waiting for another" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "waiting for another process upgrading" in caplog.text
            assert opening.is_alive()  # held up until the other process is done
        finally:
            os.close(holder)
        opening.join(30)
    assert not opening.is_alive() and opened, "the opening thread failed"
    try:
        assert opened[0].store.schema_revisions() == HEADS
    finally:
        opened[0].close()


def test_a_node_whose_sqlite_file_is_gone_is_refused_and_no_empty_file_made(node) -> None:
    from dataspace.errors import StoreError
    from dataspace.services.node import open_node

    if not node.store.url.startswith("sqlite"):
        pytest.skip("a SQLite node's file")
    node.close()
    state = node.root / "state.db"
    for path in node.root.glob("state.db*"):
        path.rename(path.with_name("moved-" + path.name))
    with pytest.raises(StoreError, match="holds no dataspace schema"):
        open_node(node.root)
    assert not state.exists()  # a restore finds the place free


def test_a_file_system_without_locks_is_a_clear_error(node, monkeypatch) -> None:
    import errno
    import os

    from dataspace.errors import StoreError
    from dataspace.services import node as node_service

    _downgrade(node, "0016_jobs_claimed_by-1")

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(node_service.fcntl, "flock", no_locks)
    with pytest.raises(StoreError, match=r"cannot lock .*No locks available") as refused:
        node_service.open_node(node.root)
    assert "local file system" in str(refused.value.hint)


def test_an_upgrade_on_postgresql_waits_in_slices_for_open_tables(node, monkeypatch,
                                                                   caplog) -> None:
    """An older server's open transaction on a table the upgrade alters: the upgrade gives up
    each lock wait after a slice (so queries behind it are not stalled), says so, and either
    goes through once the table is free or, past its limit, fails having changed nothing."""
    import threading

    from sqlalchemy import text

    from dataspace.errors import StoreError
    from dataspace.services.node import open_node
    from dataspace.store import migrate

    if node.store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's table locks")
    _downgrade(node, "0016_jobs_claimed_by-1")
    monkeypatch.setattr(migrate, "LOCK_SLICE_SECONDS", 0.2)
    monkeypatch.setattr(migrate, "LOCK_LIMIT_SECONDS", 1.0)
    older_server = node.store.engine.connect()
    reading = older_server.begin()
    older_server.execute(text("SELECT count(*) FROM jobs"))  # holds its lock until it ends
    try:
        with caplog.at_level(logging.WARNING, logger="dataspace.store"), \
                pytest.raises(StoreError, match="waited 1 s for tables") as refused:
            open_node(node.root)
        assert "older dataspace server" in str(refused.value.hint)
        assert caplog.text.count("the schema upgrade waits") >= 3
        assert older_server.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
        monkeypatch.setattr(migrate, "LOCK_LIMIT_SECONDS", 30.0)
        threading.Timer(1.0, reading.rollback).start()  # the older server finishes its request
        opened = open_node(node.root)
    finally:
        older_server.close()
    try:
        assert opened.store.schema_revisions() == migrate.HEADS
    finally:
        opened.close()


def _sqlite_facts(path) -> dict[str, object]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        facts: dict[str, object] = {
            p: conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_size", "auto_vacuum", "journal_mode", "user_version", "encoding")
        }
        facts["schema"] = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
        facts["revisions"] = sorted(r[0] for r in conn.execute(
            "SELECT version_num FROM alembic_version"))
    return facts


def test_a_new_sqlite_database_is_what_running_the_migrations_builds(
    tmp_path, monkeypatch,
) -> None:
    from dataspace.store import migrate
    from dataspace.store.db import Store

    runs: list[str] = []
    real = migrate.upgrade

    def counted(store: Store, revision: str = "heads") -> None:
        runs.append(store.url)
        real(store, revision)

    monkeypatch.setattr(migrate, "_template", None)  # as in a process that made none yet
    monkeypatch.setattr(migrate, "upgrade", counted)
    for name in ("first.db", "copied.db"):
        store = Store(f"sqlite:///{tmp_path / name}")
        store.migrate()
        assert store.schema_revisions() == migrate.HEADS
        store.close()
    assert [url.rsplit("/", 1)[1] for url in runs] == ["first.db"]  # the second was copied
    by_alembic = Store(f"sqlite:///{tmp_path / 'alembic.db'}")
    real(by_alembic)
    by_alembic.close()
    expected = _sqlite_facts(tmp_path / "alembic.db")
    assert _sqlite_facts(tmp_path / "copied.db") == expected
    assert expected["journal_mode"] == "wal" and len(expected["schema"]) > 50


def test_a_sqlite_database_holding_anything_is_migrated_not_overwritten(tmp_path) -> None:
    import sqlite3

    from dataspace.store.db import Store
    from dataspace.store.migrate import HEADS, start_from_template

    with sqlite3.connect(tmp_path / "own.db") as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
        conn.execute("INSERT INTO mine VALUES (7)")
    store = Store(f"sqlite:///{tmp_path / 'own.db'}")
    try:
        assert start_from_template(store) is False
        store.migrate()
        assert store.schema_revisions() == HEADS
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "own.db") as conn:
        assert conn.execute("SELECT x FROM mine").fetchall() == [(7,)]

