"""Each escape route of docs/sandbox.md, tried at both layers.

Layer 1: the checker refuses the consumer's SQL. Layer 2: the same SQL, sent raw to the locked
worker through ``_UnsafeRawQuery`` (bypassing the checker), is refused by the engine too --
with the worker's one-SELECT gate, and, for statements, by the locked configuration alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataspace.compute import (
    QueryFailed,
    QueryOutOfMemory,
    QueryRefused,
    QueryTimeout,
    SqlPolicy,
    check_query,
)
from dataspace.compute.sandbox import SandboxLimits, _UnsafeRawQuery, run_query

SECRET = "/etc/passwd"

# (route, SQL, whether the locked configuration alone -- no one-SELECT gate -- refuses it)
ROUTES = [
    ("read_csv", f"SELECT * FROM read_csv('{SECRET}')", True),
    ("read_text", f"SELECT * FROM read_text('{SECRET}')", True),
    ("read_blob", f"SELECT * FROM read_blob('{SECRET}')", True),
    ("read_json", f"SELECT * FROM read_json('{SECRET}')", True),
    ("glob", "SELECT * FROM glob('/etc/*')", True),
    ("sniff_csv", f"SELECT * FROM sniff_csv('{SECRET}')", True),
    ("file path in FROM", f"SELECT * FROM '{SECRET}'", True),
    ("httpfs URL", "SELECT * FROM read_parquet('https://example.com/x.parquet')", True),
    ("COPY TO", "COPY people TO '/tmp/dataspace-escape.csv'", True),
    ("COPY FROM", f"COPY people FROM '{SECRET}'", True),
    ("EXPORT DATABASE", "EXPORT DATABASE '/tmp/dataspace-escape'", True),
    ("IMPORT DATABASE", "IMPORT DATABASE '/etc'", True),
    ("ATTACH", "ATTACH '/tmp/dataspace-escape.db' AS x", True),
    ("INSTALL", "INSTALL httpfs", True),
    ("LOAD", "LOAD httpfs", True),
    ("LOAD file", "LOAD '/tmp/evil.duckdb_extension'", True),
    ("SET", "SET enable_external_access = true", True),
    ("SET memory", "SET memory_limit = '100GB'", True),
    ("RESET", "RESET memory_limit", True),
    ("PRAGMA", "PRAGMA threads = 64", True),
    ("CREATE SECRET", "CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')", True),
    ("getenv", "SELECT getenv('HOME')", True),
    ("CREATE TABLE", "CREATE TABLE t AS SELECT 1", False),
    ("CALL", "CALL pragma_version()", False),
]
# Pass the engine (they read settings, not files) and are refused by the checker; what they
# reveal is pinned by test_settings_readable_without_the_checker_are_not_secrets.
SETTINGS_READERS = [
    "SELECT current_setting('temp_directory'), count(*) FROM people",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM pragma_version()",
]


@pytest.mark.parametrize(("route", "sql", "locked"), ROUTES, ids=[r[0] for r in ROUTES])
def test_checker_refuses_the_route(route: str, sql: str, locked: bool, policy: SqlPolicy) -> None:
    with pytest.raises(QueryRefused):
        check_query(sql, policy)


@pytest.mark.parametrize(("route", "sql", "locked"), ROUTES, ids=[r[0] for r in ROUTES])
def test_locked_engine_refuses_the_route(
    route: str, sql: str, locked: bool, people_parquet: Path, limits: SandboxLimits
) -> None:
    with pytest.raises((QueryRefused, QueryFailed)):
        run_query(people_parquet, "people", _UnsafeRawQuery(sql), limits)
    if locked:
        with pytest.raises((QueryRefused, QueryFailed)):
            run_query(people_parquet, "people", _UnsafeRawQuery(sql, gate=False), limits)


@pytest.mark.parametrize("sql", SETTINGS_READERS)
def test_checker_refuses_settings_readers(sql: str, policy: SqlPolicy) -> None:
    with pytest.raises(QueryRefused, match=r"reads|table function"):
        check_query(sql, policy)


def test_settings_readable_without_the_checker_are_not_secrets(
    people_parquet: Path, limits: SandboxLimits
) -> None:
    """current_setting() / duckdb_settings() pass the engine: they show limits and the private
    temp dir, never credentials (none are configured) -- the checker refuses them anyway."""
    raw = _UnsafeRawQuery(
        "SELECT current_setting('temp_directory') AS t, current_setting('memory_limit') AS m"
    )
    row = run_query(people_parquet, "people", raw, limits).table.to_pylist()[0]
    assert row["t"].startswith(str(limits.temp_root))
    assert row["m"].endswith("MiB")


def test_symlink_next_to_the_data_is_not_readable(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    link = people_parquet.parent / f"link-{tmp_path.name}.txt"
    link.symlink_to(secret)
    try:
        sql = f"SELECT * FROM read_text('{link}')"
        with pytest.raises(QueryRefused):
            check_query(sql, policy)
        for gate in (True, False):
            with pytest.raises(QueryRefused, match="Permission"):
                run_query(
                    people_parquet,
                    "people",
                    _UnsafeRawQuery(sql.replace("SELECT *", "SELECT content"), gate),
                    limits,
                )
    finally:
        link.unlink()


def test_memory_bombs_are_stopped_at_both_layers(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    cross = "SELECT count(*) FROM range(1000000000000) a, range(1000000000000) b"
    repeat = "SELECT length(repeat('x', 2000000000)) FROM people"
    for sql in (cross, repeat, "SELECT list(range) FROM range(200000000)"):
        with pytest.raises(QueryRefused):
            check_query(sql, policy)
    tight = SandboxLimits(**{**limits.__dict__, "memory_limit_mb": 64, "timeout_seconds": 0.5})
    with pytest.raises((QueryTimeout, QueryOutOfMemory)):
        run_query(people_parquet, "people", _UnsafeRawQuery(cross), tight)
    with pytest.raises(QueryOutOfMemory):  # outside the buffer manager: the RLIMIT_AS backstop
        run_query(people_parquet, "people", _UnsafeRawQuery(repeat), tight)
