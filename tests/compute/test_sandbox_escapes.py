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
from dataspace.compute.worker import (
    CONFIGURATION_LOCKED,
    EXTENSIONS_DISABLED,
    FILES_DISABLED,
    ONE_SELECT,
)

# {secret}: a readable CSV file outside the dataset; {json}: the same as JSON Lines; {out}: a
# writable directory. Without the locks each route below would work (tested by removing them).
# (route, SQL, what the gate refuses with, what the locked configuration alone refuses with;
#  None: the configuration alone allows it -- an in-memory table, bounded by memory_limit)
ROUTES: list[tuple[str, str, str, str | None]] = [
    ("read_csv", "SELECT * FROM read_csv('{secret}')", FILES_DISABLED, FILES_DISABLED),
    ("read_text", "SELECT * FROM read_text('{secret}')", FILES_DISABLED, FILES_DISABLED),
    ("read_blob", "SELECT * FROM read_blob('{secret}')", FILES_DISABLED, FILES_DISABLED),
    ("read_json", "SELECT * FROM read_json('{json}')", FILES_DISABLED, FILES_DISABLED),
    ("glob", "SELECT * FROM glob('/etc/*')", FILES_DISABLED, FILES_DISABLED),
    ("sniff_csv", "SELECT * FROM sniff_csv('{secret}')", FILES_DISABLED, FILES_DISABLED),
    ("file path in FROM", "SELECT * FROM '{secret}'", FILES_DISABLED, FILES_DISABLED),
    (
        "httpfs URL",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
        FILES_DISABLED,
        FILES_DISABLED,
    ),
    ("COPY TO", "COPY people TO '{out}/escape.csv'", ONE_SELECT, FILES_DISABLED),
    (
        "COPY FROM",
        "CREATE TABLE x (a VARCHAR); COPY x FROM '{secret}'",
        ONE_SELECT,
        FILES_DISABLED,
    ),
    ("EXPORT DATABASE", "EXPORT DATABASE '{out}/export'", ONE_SELECT, FILES_DISABLED),
    ("IMPORT DATABASE", "IMPORT DATABASE '{out}'", ONE_SELECT, FILES_DISABLED),
    ("ATTACH", "ATTACH '{out}/escape.db' AS x", ONE_SELECT, FILES_DISABLED),
    ("INSTALL", "INSTALL httpfs", ONE_SELECT, FILES_DISABLED),
    ("LOAD", "LOAD httpfs", ONE_SELECT, EXTENSIONS_DISABLED),
    ("LOAD file", "LOAD '{out}/evil.duckdb_extension'", ONE_SELECT, EXTENSIONS_DISABLED),
    ("SET", "SET enable_external_access = true", ONE_SELECT, CONFIGURATION_LOCKED),
    ("SET memory", "SET memory_limit = '100GB'", ONE_SELECT, CONFIGURATION_LOCKED),
    ("RESET", "RESET memory_limit", ONE_SELECT, CONFIGURATION_LOCKED),
    ("PRAGMA", "PRAGMA threads = 64", ONE_SELECT, CONFIGURATION_LOCKED),
    (
        "CREATE SECRET",
        "CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')",
        ONE_SELECT,
        FILES_DISABLED,
    ),
    ("CREATE TABLE", "CREATE TABLE t AS SELECT 1", ONE_SELECT, None),
    ("CALL", "CALL pragma_version()", ONE_SELECT, None),
]
# Pass the engine (they read settings, not files) and are refused by the checker; what they
# reveal is pinned by test_settings_readable_without_the_checker_are_not_secrets.
SETTINGS_READERS = [
    "SELECT current_setting('temp_directory'), count(*) FROM people",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM pragma_version()",
]


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "secret.csv"
    secret.write_text("name,diagnosis\nperson1,secret\n")
    lines = tmp_path / "secret.json"
    lines.write_text('{"name": "person1", "diagnosis": "secret"}\n')
    (tmp_path / "evil.duckdb_extension").write_bytes(b"\0" * 512)
    return {"secret": str(secret), "json": str(lines), "out": str(tmp_path)}


@pytest.mark.parametrize(("route", "sql", "gated", "locked"), ROUTES, ids=[r[0] for r in ROUTES])
def test_checker_refuses_the_route(
    route: str, sql: str, gated: str, locked: str | None, policy: SqlPolicy,
    places: dict[str, str],
) -> None:  # fmt: skip
    with pytest.raises(QueryRefused):
        check_query(sql.format(**places), policy)


@pytest.mark.parametrize(("route", "sql", "gated", "locked"), ROUTES, ids=[r[0] for r in ROUTES])
def test_locked_engine_refuses_the_route(
    route: str, sql: str, gated: str, locked: str | None, people_parquet: Path,
    limits: SandboxLimits, places: dict[str, str],
) -> None:  # fmt: skip
    """Each route is refused by the lock that closes it -- not by any error that happens along."""
    text = sql.format(**places)
    expected = [(True, gated)] + ([(False, locked)] if locked is not None else [])
    for gate, reason in expected:
        with pytest.raises(QueryRefused) as caught:
            run_query(people_parquet, "people", _UnsafeRawQuery(text, gate=gate), limits)
        assert caught.value.message == f"the engine refused the query: {reason}", (gate, route)
        assert caught.value.internal_detail  # the engine's words, for the provider's log
    assert not (Path(places["out"]) / "escape.csv").exists()


def test_getenv_does_not_exist_in_the_engine(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    """No lock closes getenv: the Python client's DuckDB does not have it (pinned here)."""
    with pytest.raises(QueryRefused, match="reads files, the environment"):
        check_query("SELECT getenv('HOME'), count(*) FROM people", policy)
    raw = _UnsafeRawQuery(
        "SELECT count(*) AS n FROM duckdb_functions() WHERE function_name = 'getenv'"
    )
    assert run_query(people_parquet, "people", raw, limits).table.to_pylist() == [{"n": 0}]
    with pytest.raises(QueryFailed) as caught:
        run_query(people_parquet, "people", _UnsafeRawQuery("SELECT getenv('HOME')"), limits)
    assert "getenv does not exist" in str(caught.value.internal_detail)
    assert "HOME" not in caught.value.message and "/root" not in caught.value.message


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
            with pytest.raises(QueryRefused, match=FILES_DISABLED):
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


def test_the_warm_up_file_is_not_readable_by_the_job(
    people_parquet: Path, limits: SandboxLimits
) -> None:
    """Workers scan an inherited synthetic Parquet file before their job; the job cannot."""
    from dataspace.compute import sandbox

    run_query(people_parquet, "people", _UnsafeRawQuery("SELECT 1"), limits)  # zygote up
    warm_up_fd = int(sandbox._get_zygote().process.args[-1])
    for path in (f"/proc/self/fd/{warm_up_fd}", f"/dev/fd/{warm_up_fd}"):
        for gate in (True, False):
            with pytest.raises(QueryRefused, match=FILES_DISABLED):
                run_query(
                    people_parquet,
                    "people",
                    _UnsafeRawQuery(f"SELECT count(*) FROM read_parquet('{path}')", gate),
                    limits,
                )
