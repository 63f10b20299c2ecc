from __future__ import annotations

from pathlib import Path

from dataspace.errors import NotFound, UsageError


def test_transfer_terminate_names_what_is_wrong(cli, tmp_path: Path) -> None:
    assert cli("init", tmp_path / "n", "--name", "bank").exit_code == 0
    node = ("--node", tmp_path / "n")
    result = cli(*node, "transfer", "terminate", "urn:uuid:none", "--reason", "not needed")
    assert result.exit_code == NotFound.exit_code
    assert "no transfer process 'urn:uuid:none'" in result.stderr
    result = cli(*node, "transfer", "terminate", "urn:uuid:none", "--reason", " ")
    assert result.exit_code == UsageError.exit_code and "reason" in result.stderr
    assert cli(*node, "transfer", "terminate", "urn:uuid:none").exit_code == 2  # no --reason
