from __future__ import annotations

import sqlite3
import stat
import tomllib
from pathlib import Path

from dataspace.errors import NodeExists, NodeNotFound, UsageError


def test_init_creates_key_config_wal_store_and_prints_admin_token_once(cli, tmp_path: Path) -> None:
    result = cli("init", tmp_path / "n", "--name", "bank-a")
    assert result.exit_code == 0, result.stderr
    root = tmp_path / "n"
    key = root / "keys" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in result.stdout  # the private key is never printed
    config = tomllib.loads((root / "node.toml").read_text())
    assert config["node"]["name"] == "bank-a"
    for folder in (root, root / "data", root / "tmp", root / "keys"):  # the owner's alone
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    with sqlite3.connect(root / "state.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        stored = [r[0] for r in db.execute("SELECT secret_sha256 FROM api_tokens")]
    secret = next(line for line in result.stdout.splitlines() if line.startswith("dst_"))
    assert secret not in (root / "state.db").read_bytes().decode("latin-1")
    assert len(stored) == 1 and len(stored[0]) == 64
    assert result.stdout.count(secret) == 1


def test_init_refuses_an_existing_node_and_changes_nothing(cli, tmp_path: Path) -> None:
    assert cli("init", tmp_path / "n", "--name", "bank-a").exit_code == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "n").rglob("*"))
    result = cli("init", tmp_path / "n", "--name", "bank-b")
    assert result.exit_code == NodeExists.exit_code
    assert "already holds a node" in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "n").rglob("*")) == before


def test_init_rejects_a_bad_name_without_creating_anything(cli, tmp_path: Path) -> None:
    result = cli("init", tmp_path / "n", "--name", "Bank A/..")
    assert result.exit_code != 0
    assert "invalid node name" in result.stderr
    assert not (tmp_path / "n").exists()


def test_commands_without_a_node_say_how_to_get_one(cli, tmp_path: Path) -> None:
    result = cli("dataset", "list")
    assert result.exit_code == NodeNotFound.exit_code
    assert "--node DIR" in result.stderr
    result = cli("--node", tmp_path / "nowhere", "dataset", "list")
    assert result.exit_code == NodeNotFound.exit_code
    assert "no node at" in result.stderr


def test_node_env_variable_selects_the_node(cli, tmp_path: Path, monkeypatch) -> None:
    cli("init", tmp_path / "n", "--name", "grid")
    monkeypatch.setenv("DATASPACE_NODE", str(tmp_path / "n"))
    result = cli("node", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"name": "grid"' in result.stdout


def test_a_world_readable_private_key_is_refused(cli, tmp_path: Path) -> None:
    cli("init", tmp_path / "n", "--name", "bank-a")
    (tmp_path / "n" / "keys" / "node.key").chmod(0o644)
    result = cli("--node", tmp_path / "n", "ledger", "checkpoint")
    assert result.exit_code == UsageError.exit_code
    assert "chmod 600" in result.stderr


def test_bare_group_shows_help(cli) -> None:
    result = cli("dataset")
    shown = result.stdout + result.stderr
    assert "add" in shown and "reclassify" in shown
