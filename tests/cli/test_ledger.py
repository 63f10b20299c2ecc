"""`dataspace ledger ...` and `verify-proof` through the real CLI, including tampering."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from dataspace.errors import InputError, LedgerTampered, VerificationError


def _node(cli, tmp_path: Path) -> list[str | Path]:
    assert cli("init", tmp_path / "n", "--name", "bank-a").exit_code == 0
    node = ["--node", tmp_path / "n"]
    cli(*node, "token", "issue", "--name", "a", "--role", "auditor")
    cli(*node, "token", "issue", "--name", "b", "--role", "consumer")
    return node


def test_prove_then_verify_offline_with_only_the_public_key(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)
    out = tmp_path / "proof.json"
    assert cli(*node, "ledger", "prove", "2", "--out", out).exit_code == 0
    key = tmp_path / "n" / "keys" / "node.pub"
    result = cli("verify-proof", out, "--key", key)
    assert result.exit_code == 0, result.stderr
    assert "entry 2" in result.stdout
    # The key can also be given as the string itself.
    assert cli("verify-proof", out, "--key", key.read_text().strip()).exit_code == 0


def test_a_tampered_proof_is_rejected(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)
    out = tmp_path / "proof.json"
    cli(*node, "ledger", "prove", "1", "--out", out)
    bundle = json.loads(out.read_text())
    bundle["entry"] = bundle["entry"].replace("token.issued", "token.revoked")
    out.write_text(json.dumps(bundle))
    result = cli("verify-proof", out, "--key", tmp_path / "n" / "keys" / "node.pub")
    assert result.exit_code == VerificationError.exit_code
    assert "error:" in result.stderr and "dataspace ledger prove" in result.stderr


def test_a_proof_checked_with_another_nodes_key_is_rejected(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)
    cli("init", tmp_path / "other", "--name", "other")
    out = tmp_path / "proof.json"
    cli(*node, "ledger", "prove", "1", "--out", out)
    result = cli("verify-proof", out, "--key", tmp_path / "other" / "keys" / "node.pub")
    assert result.exit_code == VerificationError.exit_code


def test_a_private_key_given_for_the_public_one_is_refused_and_never_shown(
    cli, tmp_path: Path
) -> None:
    node = _node(cli, tmp_path)
    out = tmp_path / "proof.json"
    cli(*node, "ledger", "prove", "1", "--out", out)
    secret = tmp_path / "n" / "keys" / "node.key"
    result = cli("verify-proof", out, "--key", secret)
    assert result.exit_code == VerificationError.exit_code
    assert "is a private key" in result.stderr and "keys/node.pub" in result.stderr
    key_lines = [line for line in secret.read_text().splitlines() if "-----" not in line]
    assert key_lines and not any(line[:20] in result.stderr for line in key_lines)
    (tmp_path / "gbk.pub").write_bytes("银行公钥".encode("gbk"))
    result = cli("verify-proof", out, "--key", tmp_path / "gbk.pub")
    assert result.exit_code == 3 and "not UTF-8" in result.stderr, result.stderr


def test_verify_reports_an_edited_row_with_its_index(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)
    assert cli(*node, "ledger", "checkpoint").exit_code == 0
    with sqlite3.connect(tmp_path / "n" / "state.db") as db:
        db.execute(
            "UPDATE ledger_entries SET entry = replace(entry, 'issued', 'revoked') WHERE idx = 2"
        )
        db.execute(
            "UPDATE ledger_entries SET payload = replace(payload, 'consumer', 'x') WHERE idx = 3"
        )
    result = cli(*node, "ledger", "verify")
    assert result.exit_code == LedgerTampered.exit_code
    assert "entry 2" in result.stderr or "│ 2 " in result.stderr
    assert "edited" in result.stderr and "payload" in result.stderr
    result = cli(*node, "ledger", "verify", "--json")
    assert result.exit_code == LedgerTampered.exit_code
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and answer["error"]["code"] == "ledger_tampered"
    kinds = {(p["index"], p["kind"]) for p in answer["error"]["details"]["problems"]}
    assert {(2, "edited"), (3, "payload edited")} <= kinds


def test_an_entry_edited_into_non_json_is_reported_by_log_and_verify(cli, tmp_path) -> None:
    node = _node(cli, tmp_path)
    with sqlite3.connect(tmp_path / "n" / "state.db") as db:
        db.execute("UPDATE ledger_entries SET entry = 'not json' WHERE idx = 2")
    for command in (("ledger", "log"), ("ledger", "verify")):
        result = cli(*node, *command)
        assert result.exit_code == LedgerTampered.exit_code, (command, result.stderr)
        assert "2" in result.stderr and "edited" in result.stderr


def test_verify_reports_a_deleted_row(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)
    with sqlite3.connect(tmp_path / "n" / "state.db") as db:
        db.execute("DELETE FROM ledger_entries WHERE idx = 1")
    result = cli(*node, "ledger", "verify")
    assert result.exit_code == LedgerTampered.exit_code
    assert "deleted" in result.stderr
    result = cli(*node, "ledger", "verify", "--json")
    assert result.exit_code == LedgerTampered.exit_code
    problems = json.loads(result.stdout)["error"]["details"]["problems"]
    assert (1, "deleted") in {(p["index"], p["kind"]) for p in problems}


def test_a_deleted_row_is_tampering_to_log_and_prove_not_a_gap_or_a_missing_entry(
    cli, tmp_path: Path
) -> None:
    node = _node(cli, tmp_path)
    result = cli(*node, "ledger", "prove", "9")
    assert result.exit_code == 4 and "no ledger entry 9" in result.stderr  # past the end
    with sqlite3.connect(tmp_path / "n" / "state.db") as db:
        db.execute("DELETE FROM ledger_entries WHERE idx = 3")
    for command in (("ledger", "log", "--start", "2", "--limit", "3"), ("ledger", "log"),
                    ("ledger", "prove", "3")):
        result = cli(*node, *command)
        assert result.exit_code == LedgerTampered.exit_code, (command, result.stdout)
        assert "ledger verify" in result.stderr, result.stderr
        if command[1] == "log":
            assert "entry 3 is missing" in result.stderr, result.stderr
    result = cli(*node, "ledger", "log", "--start", "2", "--limit", "1")
    assert result.exit_code == 0  # the page before the gap is whole


def test_a_held_checkpoint_catches_a_rollback_that_deleted_stored_ones(cli, tmp_path) -> None:
    node = _node(cli, tmp_path)
    held = tmp_path / "held.txt"
    held.write_text(cli(*node, "ledger", "checkpoint").stdout)
    with sqlite3.connect(tmp_path / "n" / "state.db") as db:
        db.execute("DELETE FROM ledger_entries WHERE idx = 2")
        db.execute("DELETE FROM ledger_nodes")
        db.execute("DELETE FROM ledger_checkpoints")
        db.execute("UPDATE ledger_head SET size = 2")
    assert cli(*node, "ledger", "verify").exit_code in (0, LedgerTampered.exit_code)
    result = cli(*node, "ledger", "verify", "--checkpoint", held)
    assert result.exit_code == LedgerTampered.exit_code


def test_a_replaced_signing_key_is_caught_even_with_every_checkpoint_dropped(
    cli, tmp_path: Path
) -> None:
    """The operator swaps in a new key pair of the same name and drops the checkpoints the old
    key signed: entry 0 still records the key the node was created with."""
    node = _node(cli, tmp_path)
    published = tmp_path / "published.pub"
    shutil.copy(tmp_path / "n" / "keys" / "node.pub", published)
    assert cli(*node, "ledger", "verify", "--key", published).exit_code == 0
    assert cli("init", tmp_path / "forger", "--name", "bank-a").exit_code == 0
    for name in ("node.key", "node.pub"):
        shutil.copy(tmp_path / "forger" / "keys" / name, tmp_path / "n" / "keys" / name)
    with sqlite3.connect(tmp_path / "n" / "state.db") as db:
        db.execute("DELETE FROM ledger_checkpoints")
    assert cli(*node, "ledger", "checkpoint").exit_code == 0  # signed with the new key
    result = cli(*node, "ledger", "verify", "--json")
    assert result.exit_code == LedgerTampered.exit_code, result.stdout
    problems = json.loads(result.stdout)["error"]["details"]["problems"]
    replaced = [p for p in problems if p["kind"] == "key replaced"]
    assert [p["index"] for p in replaced] == [0]
    assert published.read_text().split("+")[1] in replaced[0]["reason"]  # the old key's id
    # checked with the key published at creation, the new checkpoint does not open either
    result = cli(*node, "ledger", "verify", "--key", published)
    assert result.exit_code == LedgerTampered.exit_code
    # a file that holds no key is named, its content not echoed
    (tmp_path / "p1.json").write_text('{"format": "x"}')
    result = cli(*node, "ledger", "verify", "--key", tmp_path / "p1.json")
    assert result.exit_code == InputError.exit_code
    assert "p1.json does not hold a public key" in result.stderr and "format" not in result.stderr


def test_a_public_key_file_that_is_not_the_private_keys_half_stops_the_node(
    cli, tmp_path: Path
) -> None:
    """Only node.pub swapped: every checkpoint then failed to open and `ledger verify` told
    the operator not to trust the log, which was intact."""
    node = _node(cli, tmp_path)
    assert cli("init", tmp_path / "other", "--name", "bank-a").exit_code == 0
    shutil.copy(tmp_path / "other" / "keys" / "node.pub", tmp_path / "n" / "keys" / "node.pub")
    result = cli(*node, "ledger", "verify")
    assert result.exit_code == 2
    assert "keys/node.pub is not the public key of" in result.stderr
    assert "entry 0 (node.created)" in result.stderr


def test_an_auditor_verifies_a_copy_of_the_database_with_the_published_key_alone(
    cli, tmp_path: Path
) -> None:
    node = _node(cli, tmp_path)
    held = tmp_path / "held.note"
    held.write_text(cli(*node, "ledger", "checkpoint").stdout)
    audit_dir = tmp_path / "auditor"
    audit_dir.mkdir()
    copy, published = audit_dir / "state.db", audit_dir / "bank-a.pub"
    with sqlite3.connect(tmp_path / "n" / "state.db") as src, sqlite3.connect(copy) as dst:
        src.backup(dst)  # a consistent copy, whatever the node's WAL holds
    shutil.copy(tmp_path / "n" / "keys" / "node.pub", published)
    shutil.rmtree(tmp_path / "n")  # no node folder, no private key
    result = cli("ledger", "verify", "--db", copy, "--key", published, "--checkpoint", held)
    assert result.exit_code == 0, result.stderr
    assert "ledger verified: 4 entries, 3 checkpoints" in result.stdout  # 2 stored + held
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE ledger_entries SET entry = replace(entry, 'issued', 'revoked') "
                   "WHERE idx = 2")
    result = cli("ledger", "verify", "--db", copy, "--key", published, "--json")
    assert result.exit_code == LedgerTampered.exit_code
    assert (2, "edited") in {(p["index"], p["kind"]) for p in
                             json.loads(result.stdout)["error"]["details"]["problems"]}
    result = cli("ledger", "verify", "--db", copy)
    assert result.exit_code == 2 and "--db needs --key" in result.stderr
    (audit_dir / "notes.txt").write_text("not a database\n" * 100)
    sqlite3.connect(audit_dir / "empty.db").close()
    for name, said in (("missing.db", "no such file"), ("notes.txt", "is not a SQLite database"),
                       ("empty.db", "holds no dataspace ledger")):
        result = cli("ledger", "verify", "--db", audit_dir / name, "--key", published)
        assert result.exit_code == InputError.exit_code, (name, result.stderr)
        assert said in result.stderr, (name, result.stderr)
    assert not (audit_dir / "missing.db").exists()  # no empty database left behind


def test_log_lists_every_state_change(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)
    rows = json.loads(cli(*node, "ledger", "log", "--json").stdout)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["entry"]["action"] == "node.created"


def test_prove_latest_picks_the_newest_entry_with_that_action(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)  # entries: node.created, 3 x token.issued
    out = tmp_path / "proof.json"
    result = cli(*node, "ledger", "prove", "--latest", "token.issued", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert json.loads(out.read_text())["index"] == 3
    unknown = cli(*node, "ledger", "prove", "--latest", "token_issued")  # "_" is literal
    assert unknown.exit_code == 4
    assert cli(*node, "ledger", "prove").exit_code == 2


def _consistency_bundle(cli, root: Path, old_size: int, out: Path) -> Path:
    result = cli("--node", root, "ledger", "prove", "--from", str(old_size), "--out", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote consistency proof from size {old_size}" in result.stdout
    return out


def test_a_consistency_proof_is_checked_against_the_checkpoint_you_hold(
    cli, tmp_path: Path
) -> None:
    """A node that forks its history and signs the fork with its own key can hand out a
    consistency bundle that carries the fork's checkpoint at the old size: it verifies on
    its own terms, and fails against the checkpoint an auditor kept from before."""
    node = _node(cli, tmp_path)
    shutil.copytree(tmp_path / "n", tmp_path / "fork")
    fork = ["--node", tmp_path / "fork"]
    key = tmp_path / "n" / "keys" / "node.pub"
    cli(*node, "token", "issue", "--name", "c", "--role", "consumer")
    held = tmp_path / "held.txt"
    held.write_text(cli(*node, "ledger", "checkpoint").stdout, encoding="utf-8")
    old_size = int(held.read_text().split("\n")[1])
    cli(*fork, "token", "issue", "--name", "forged", "--role", "provider")
    assert cli(*fork, "ledger", "checkpoint").exit_code == 0  # the fork's own note at old_size
    cli(*fork, "token", "issue", "--name", "d", "--role", "consumer")
    forked = _consistency_bundle(cli, tmp_path / "fork", old_size, tmp_path / "forked.json")

    alone = cli("verify-proof", forked, "--key", key)
    assert alone.exit_code == 0, alone.stderr
    assert "bundle's own signed checkpoint" in alone.stdout  # says whose older log it is
    against = cli("verify-proof", forked, "--key", key, "--old-checkpoint", held)
    assert against.exit_code == VerificationError.exit_code
    assert f"but your older checkpoint is of size {old_size} (root" in against.stderr

    cli(*node, "token", "issue", "--name", "e", "--role", "consumer")
    honest = _consistency_bundle(cli, tmp_path / "n", old_size, tmp_path / "honest.json")
    result = cli("verify-proof", honest, "--key", key, "--old-checkpoint", held, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["old_checkpoint"] == "held"
    inclusion = tmp_path / "proof.json"
    cli(*node, "ledger", "prove", "1", "--out", inclusion)
    wrong_kind = cli("verify-proof", inclusion, "--key", key, "--old-checkpoint", held)
    assert wrong_kind.exit_code == 2


def test_bad_proof_files_and_out_paths_are_clear_errors(cli, tmp_path: Path) -> None:
    """No traceback: a directory, deep nesting, an integer past Python's limit, a missing file,
    and --out in a directory that does not exist each get one line saying what is wrong."""
    node = _node(cli, tmp_path)
    key = tmp_path / "n" / "keys" / "node.pub"
    deep, digits = tmp_path / "deep.json", tmp_path / "digits.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    digits.write_text('{"index": 1' + "0" * 5000 + "}")
    cases = {tmp_path: "cannot read", deep: "nests deeper than 48 levels",
             digits: "is not usable JSON: Exceeds the limit",
             tmp_path / "missing.json": "does not exist"}
    for path, says in cases.items():
        result = cli("verify-proof", path, "--key", key)
        assert result.exit_code == InputError.exit_code, (path, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr
    result = cli(*node, "ledger", "prove", "0", "--out", tmp_path / "nowhere" / "p.json")
    assert result.exit_code == InputError.exit_code and "cannot write" in result.stderr
    (tmp_path / "list.json").write_text("[]")  # JSON, but no bundle: the file, not the proof
    result = cli("verify-proof", tmp_path / "list.json", "--key", key)
    assert result.exit_code == InputError.exit_code
    assert "a proof bundle is a JSON object; this file holds list" in result.stderr
    for args, says in ((("ledger", "prove"), "give one of: an entry index"),
                       (("ledger", "prove", "1", "--from", "2"), "give one of"),
                       (("ledger", "prove", "--", "-1"), "entry index -1 is negative")):
        result = cli(*node, *args)
        assert result.exit_code == 2 and says in result.stderr, (args, result.stderr)


def test_a_bundle_without_its_payload_says_the_payload_was_not_checked(
    cli, tmp_path: Path
) -> None:
    node = _node(cli, tmp_path)
    out = tmp_path / "proof.json"
    cli(*node, "ledger", "prove", "1", "--out", out)
    bundle = json.loads(out.read_text())
    bundle["payload"] = None  # the format allows a payload withheld
    out.write_text(json.dumps(bundle))
    result = cli("verify-proof", out, "--key", tmp_path / "n" / "keys" / "node.pub")
    assert result.exit_code == 0, result.stderr
    assert "its payload was withheld and is not checked" in " ".join(result.stdout.split())


def test_a_page_past_the_end_of_the_log_is_empty(cli, tmp_path: Path) -> None:
    node = _node(cli, tmp_path)
    result = cli(*node, "ledger", "log", "--start", str(2**63), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
    result = cli(*node, "ledger", "log", "--start", "100000")  # a person is told why
    assert result.exit_code == 2 and "is past its end" in result.stderr, result.stderr


def test_a_log_longer_than_one_page_says_where_the_rest_is(cli, tmp_path: Path) -> None:
    """Only the oldest 50 entries were shown, with no word that more existed."""
    node = _node(cli, tmp_path)
    size = len(json.loads(cli(*node, "ledger", "log", "--limit", "1000", "--json").stdout))
    assert size > 2
    shown = cli(*node, "ledger", "log", "--limit", "2").stdout
    assert f"entries 0 to 1 of {size}; the next: --start 2; the newest: --start {size - 2}" \
        in " ".join(shown.split())
    tail = cli(*node, "ledger", "log", "--start", str(size - 2), "--limit", "2").stdout
    assert "the next" not in tail and f"entries {size - 2} to {size - 1} of {size}" in tail


def test_verify_proof_arguments_that_are_wrong_are_usage_errors(cli, tmp_path: Path) -> None:
    """Bad arguments are not failed proofs: they exit 2 or 3, naming the argument."""
    node = _node(cli, tmp_path)
    out = tmp_path / "proof.json"
    cli(*node, "ledger", "prove", "1", "--out", out)
    key = ["--key", tmp_path / "n" / "keys" / "node.pub"]
    witness = ["--witness", tmp_path / "n" / "keys" / "node.pub"]
    for quorum in ("0", "-1", "2"):
        result = cli("verify-proof", out, *key, *witness, "--quorum", quorum)
        assert result.exit_code == 2, result.stderr
        assert f"--quorum {quorum} is not between 1 and the 1 --witness" in result.stderr
    result = cli("verify-proof", out, "--key", tmp_path / "nosuch.pub")
    assert result.exit_code == InputError.exit_code
    assert "is neither a file nor a key string" in result.stderr


def test_an_out_file_that_cannot_be_finished_is_not_left_half_written(
    cli, tmp_path: Path, monkeypatch
) -> None:
    import errno

    node = _node(cli, tmp_path)
    out = tmp_path / "proof.json"

    def disk_full(self: Path, text: str, encoding: str | None = None) -> int:
        with open(self, "w", encoding=encoding) as half:
            half.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    result = cli(*node, "ledger", "prove", "1", "--out", out)
    assert result.exit_code == InputError.exit_code
    assert "No space left on device" in result.stderr and "free space" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n"]  # neither the file nor a stage
