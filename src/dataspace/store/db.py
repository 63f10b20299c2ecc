"""Engine set-up and transactions for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with synchronous=FULL so a committed ledger append survives a power
cut. Write transactions start with BEGIN IMMEDIATE: two writers queue on the lock instead of
one failing half-way with SQLITE_BUSY. On PostgreSQL a node may live in its own schema
(``search_path``), so several nodes can share one database.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dataspace.errors import Conflict, DataspaceError, StoreError, UsageError

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_WRITE = "dataspace_write"


class Store:
    """A node's state database."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema or None
        self.is_sqlite = url.startswith("sqlite")
        self.engine = _make_engine(url, self.schema)
        self._closed = False
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )
        # SQLite's read transaction already sees one state throughout (WAL snapshot);
        # PostgreSQL's default READ COMMITTED gives each statement a newer one
        snapshots = self.engine if self.is_sqlite else self.engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True)
        self._snapshot_sessions = sessionmaker(snapshots, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        self._check_open()
        with _wrapped(), self._sessions() as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only transaction in which every query sees the same committed state, for
        reads that must agree with each other while writers go on (the ledger audit)."""
        self._check_open()
        with _wrapped(), self._snapshot_sessions() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One atomic write transaction: everything commits together or nothing does."""
        self._check_open()
        with _wrapped(), self._write_sessions() as session, session.begin():
            yield session

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(
                "the node's state database is closed: the node is shutting down",
                hint="retry once the node is running again",
            )

    def schema_revisions(self) -> frozenset[str]:
        """The Alembic revisions the database is at (none if it was never migrated)."""
        with self.read() as session:
            if not inspect(session.connection()).has_table("alembic_version"):
                return frozenset()
            rows = session.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return frozenset(rows)

    def migrate(self) -> None:
        from dataspace.store.migrate import start_from_template, upgrade

        with _wrapped():
            if not (self.is_sqlite and start_from_template(self)):
                upgrade(self)

    def close(self) -> None:
        """Close the pool's connections and refuse any later transaction: a thread still
        running after its node closed (a request past the server's grace period, a
        background round) fails loudly instead of opening a connection nothing would close,
        or writing to the ledger after the node stopped."""
        self._closed = True
        self.engine.dispose()


UNEXPLAINED = "check the node's database; report the error if it persists"


@contextmanager
def _wrapped() -> Iterator[None]:
    try:
        yield
    except DataspaceError:
        raise
    except IntegrityError as exc:
        raise Conflict(
            f"the change conflicts with existing state: {exc.orig}",
            hint="use another name, or remove the existing item first",
        ) from exc
    except OperationalError as exc:
        undecodable = "Could not decode to UTF-8" in str(exc.orig)  # SQLite keeps any bytes
        raise StoreError(
            f"state database error: {exc.orig}",
            hint="a text value in the state database is not UTF-8: a row was edited outside "
            "the node; run `dataspace ledger verify`, restore the database from a backup"
            if undecodable else
            "check that the node's database is reachable and not locked by another process",
        ) from exc
    except DBAPIError as exc:
        damaged = type(exc.orig) is sqlite3.DatabaseError  # "disk image is malformed", "file
        # is not a database": SQLite's plain DatabaseError; its subclasses are other failures
        raise StoreError(
            f"state database error: {exc.orig}",
            hint="the node's state database is damaged or is not one: restore it from a backup"
            if damaged else UNEXPLAINED,
        ) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"state database error: {exc}", hint=UNEXPLAINED) from exc


def _make_engine(url: str, schema: str | None) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql"):
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if schema:
            if not _SCHEMA_RE.match(schema):
                raise UsageError(f"invalid PostgreSQL schema name {schema!r}", hint="use [a-z0-9_]")
            kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
        engine = create_engine(url, **kwargs)
        if schema:
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        return engine
    raise UsageError(
        f"unsupported database URL {url.split(':', 1)[0]!r}",
        hint="use sqlite:///PATH or postgresql://USER@HOST/DB",
    )


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
