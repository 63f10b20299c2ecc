"""Run Alembic migrations programmatically; no alembic.ini needed.

Alembic is imported only to migrate: every command opens a node and checks :data:`HEADS`,
and loading Alembic would cost it ~0.3 s.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from dataspace.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

    from dataspace.store.db import Store

MIGRATIONS = Path(__file__).parent / "migrations"

logger = logging.getLogger("dataspace.store")

#: On PostgreSQL a migration's ALTER TABLE waits for every transaction open on its table (an
#: older server still running on the database, say), and every later query on the table queues
#: behind it. So an attempt waits at most a slice for a lock, then rolls back whole, says so and
#: tries again, up to the limit: the others keep working meanwhile.
LOCK_SLICE_SECONDS = 2.0
LOCK_LIMIT_SECONDS = 120.0
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout


class UpgradeBlocked(StoreError):
    """The upgrade gave up waiting for tables other connections keep open."""

#: The heads of the migration graph (one per branch: identity, privacy, ledger, metering,
#: transfers, jobs), which tests keep equal to the scripts'. A node's database at other
#: revisions is upgraded when the node is opened, or refused if it knows revisions these
#: scripts do not (a newer version wrote it).
HEADS = frozenset({
    "0002_privacy",
    "0004_identity",
    "0011_witnessed_logs",
    "0014_usage_key_action",
    "0017_owed_notices",
    "0016_jobs_claimed_by",
})


def alembic_config(store: Store) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["store"] = store
    return cfg


def upgrade(store: Store, revision: str = "heads") -> None:
    """Migrate to ``revision`` in one transaction (retried while another connection holds a
    table it alters, see :data:`LOCK_SLICE_SECONDS`)."""
    deadline = time.monotonic() + LOCK_LIMIT_SECONDS
    while True:
        try:
            _upgrade_once(store, revision)
            return
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            if time.monotonic() >= deadline:
                raise UpgradeBlocked(
                    f"the schema upgrade waited {LOCK_LIMIT_SECONDS:.0f} s for tables that other "
                    "connections to the database keep open, and gave up",
                    hint="stop what else uses the node's database (an older dataspace server "
                    "still running?), then open the node again",
                ) from exc
            logger.warning("the schema upgrade waits for tables that other connections to the "
                           "database keep open (an older dataspace server still running?)")


def _upgrade_once(store: Store, revision: str) -> None:
    from alembic import command

    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(LOCK_SLICE_SECONDS * 1000)}")
        cfg = alembic_config(store)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


_template: sqlite3.Connection | None = None
_template_lock = threading.Lock()


def start_from_template(store: Store) -> bool:
    """Migrate a new, empty SQLite database; False (nothing done) if it holds anything.

    The first such database in a process is migrated by Alembic and kept in memory; later ones
    are filled from that copy through SQLite's backup API. The migrations are deterministic on
    an empty database, so the copy is what running them again would build, schema and
    revisions alike: a millisecond where Alembic takes ~0.1 s a node, which the processes that
    create many nodes (a scenario's space, the test suite) paid once per node.
    """
    global _template
    raw = store.engine.raw_connection()
    try:
        target = raw.driver_connection
        assert isinstance(target, sqlite3.Connection)
        if target.execute("SELECT count(*) FROM sqlite_master").fetchone() != (0,):
            return False
        with _template_lock:
            if _template is None:
                upgrade(store)
                copy = sqlite3.connect(":memory:", check_same_thread=False)
                target.backup(copy)
                _template = copy
                return True
            try:
                _template.backup(target)  # one write transaction: all of it or nothing
            except sqlite3.OperationalError:  # another connection is using it: Alembic waits
                return False
        return True
    finally:
        raw.close()


def known_revisions() -> frozenset[str]:
    """Every revision the migration scripts define."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS))
    return frozenset(r.revision for r in scripts.walk_revisions())
