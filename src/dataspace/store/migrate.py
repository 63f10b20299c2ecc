"""Run Alembic migrations programmatically; no alembic.ini needed.

Alembic is imported only to migrate: every command opens a node and checks :data:`HEADS`,
and loading Alembic would cost it ~0.3 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

    from dataspace.store.db import Store

MIGRATIONS = Path(__file__).parent / "migrations"

#: The heads of the migration graph (one per branch: identity, privacy, ledger, metering,
#: transfers, jobs), which tests keep equal to the scripts'. A node's database at other
#: revisions is upgraded when the node is opened, or refused if it knows revisions these
#: scripts do not (a newer version wrote it).
HEADS = frozenset({
    "0002_privacy",
    "0004_identity",
    "0011_witnessed_logs",
    "0014_usage_key_action",
    "0015_delete_by",
    "0016_jobs_claimed_by",
})


def alembic_config(store: Store) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["store"] = store
    return cfg


def upgrade(store: Store, revision: str = "heads") -> None:
    from alembic import command

    with store.engine.begin() as conn:
        cfg = alembic_config(store)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def known_revisions() -> frozenset[str]:
    """Every revision the migration scripts define."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS))
    return frozenset(r.revision for r in scripts.walk_revisions())
