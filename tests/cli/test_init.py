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
    assert '"owed_notices": 0' in result.stdout  # notices its peers missed, none yet


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


def test_a_node_toml_with_values_this_version_cannot_use_is_refused_by_name(
    cli, tmp_path: Path
) -> None:
    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    config = tmp_path / "n" / "node.toml"
    good = config.read_text()
    for old, new, says in [
        ('name = "bank"', "name = 5", "[node] name must be a str, got 5"),
        ("port = 8600", 'port = "abc"', "[server] port must be a int, got 'abc'"),
        ("port = 8600", "port = 99999", "[server] port must be 1-65535, got 99999"),
        ('name = "bank"', 'name = "bank a"', "[node] name: invalid node name"),
    ]:
        assert old in good
        config.write_text(good.replace(old, new, 1))
        result = cli("--node", tmp_path / "n", "node")
        assert result.exit_code == UsageError.exit_code and says in result.stderr, (new, result)
        assert "fix or restore node.toml" in result.stderr
    config.write_text(good)
    assert cli("--node", tmp_path / "n", "node").exit_code == 0
    wrong_port = cli("--node", tmp_path / "n", "serve", "--port", "99999")
    assert wrong_port.exit_code == 2 and "less than or equal to 65535" in wrong_port.stderr
    pub = tmp_path / "n" / "keys" / "node.pub"
    pub.rename(pub.with_name("elsewhere"))
    lost = cli("--node", tmp_path / "n", "node")
    assert lost.exit_code == UsageError.exit_code and "lost its key file" in lost.stderr


def test_init_on_a_file_or_where_nothing_can_be_made_is_a_clear_error(cli, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("hi")
    on_file = cli("init", tmp_path / "afile", "--name", "x")
    assert on_file.exit_code == NodeExists.exit_code and "is a file" in on_file.stderr
    assert (tmp_path / "afile").read_text() == "hi"
    under_file = cli("init", tmp_path / "afile" / "n", "--name", "x")
    assert under_file.exit_code == UsageError.exit_code
    assert "cannot create the node directory" in under_file.stderr


def test_an_unexpected_error_is_one_line_unless_the_traceback_is_asked_for(
    cli, tmp_path: Path, monkeypatch
) -> None:
    import pytest

    from dataspace.services import node as node_service

    def broken(*_args: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(node_service, "open_node", broken)
    result = cli("--node", tmp_path, "node")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "error: unexpected ValueError: a bug"
    assert "DATASPACE_TRACEBACK=1" in result.stderr and "Traceback" not in result.stderr
    monkeypatch.setenv("DATASPACE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="a bug"):
        cli("--node", tmp_path, "node")


def test_a_damaged_state_database_says_so_and_what_to_do(cli, tmp_path: Path) -> None:
    from dataspace.errors import StoreError

    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    with open(tmp_path / "n" / "state.db", "r+b") as db:
        db.truncate(5000)
    result = cli("--node", tmp_path / "n", "node")
    assert result.exit_code == StoreError.exit_code
    assert "malformed" in result.stderr and "restore it from a backup" in result.stderr
    assert "sqlalche" not in result.stderr


def test_joining_with_an_empty_or_unreadable_list_says_what_to_pass(cli, tmp_path: Path) -> None:
    from dataspace.errors import InputError

    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    key = tmp_path / "n" / "keys" / "node.pub"
    (tmp_path / "empty.note").write_text("")
    (tmp_path / "gbk.note").write_bytes("成员名单".encode("gbk"))
    for note, says in (("empty.note", "is empty"), ("gbk.note", "it is not UTF-8 text")):
        result = cli("--node", tmp_path / "n", "space", "join", tmp_path / note,
                     "--operator-key", key)
        assert result.exit_code == InputError.exit_code and says in result.stderr, result.stderr
        assert "space sign --out FILE" in result.stderr


def test_a_ledger_row_that_is_not_utf8_points_at_the_audit(cli, tmp_path: Path) -> None:
    """SQLite keeps any bytes an editor writes into a text column; its driver then cannot
    read the row. The hint is about the edited row, not about a locked database."""
    import sqlite3

    from dataspace.errors import StoreError

    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    with sqlite3.connect(tmp_path / "n" / "state.db") as db:
        db.execute("UPDATE ledger_entries SET payload = CAST(X'7BFF7D' AS TEXT) WHERE idx = 0")
    result = cli("--node", tmp_path / "n", "ledger", "log")
    assert result.exit_code == StoreError.exit_code
    assert "not UTF-8" in result.stderr and "dataspace ledger verify" in result.stderr
    assert "locked" not in result.stderr


def test_a_share_just_below_one_is_never_printed_as_a_hundred_percent() -> None:
    """'below 100%: amount 100%' for 999 valid values of 1,000."""
    from dataspace.cli.dataset import _share

    assert [_share(x) for x in (0.999, 0.9999, 0.996, 0.5)] == ["99.9%", "99.9%", "99.6%", "50%"]
