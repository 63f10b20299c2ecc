from __future__ import annotations

import json
from pathlib import Path

from dataspace.services import tokens
from dataspace.services.node import open_node


def test_issue_list_revoke_and_each_step_is_logged(cli, tmp_path: Path) -> None:
    cli("init", tmp_path / "n", "--name", "bank-a")
    node = ["--node", tmp_path / "n"]
    issued = cli(*node, "token", "issue", "--name", "analyst", "--role", "consumer")
    assert issued.exit_code == 0, issued.stderr
    secret = issued.stdout.strip().splitlines()[-1]
    opened = open_node(tmp_path / "n")
    info = tokens.authenticate(opened, secret)
    assert info.role == "consumer"
    listed = json.loads(cli(*node, "token", "list", "--json").stdout)
    assert {t["name"] for t in listed} == {"admin", "analyst"}
    assert all("secret" not in json.dumps(t) for t in listed)
    assert cli(*node, "token", "revoke", info.id).exit_code == 0
    entries = json.loads(cli(*node, "ledger", "log", "--json").stdout)
    actions = [e["entry"]["action"] for e in entries]
    assert actions == ["node.created", "token.issued", "token.issued", "token.revoked"]
    assert secret not in json.dumps(entries)
    opened.close()


def test_unknown_role_is_refused(cli, tmp_path: Path) -> None:
    cli("init", tmp_path / "n", "--name", "bank-a")
    result = cli("--node", tmp_path / "n", "token", "issue", "--name", "x", "--role", "root")
    assert result.exit_code == 2
    assert "unknown role 'root'" in result.stderr
