"""Witnessing over real node processes: `dataspace ledger witness`, the serving node's own
rounds (`[ledger] witnesses`), and `verify-proof --witness`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from dataspace.errors import UsageError, VerificationError
from dataspace.identity.note import parse_note
from dataspace.ledger import log
from dataspace.ledger.checkpoint import peek_checkpoint
from dataspace.services import ledger
from dataspace.services.node import Node


def test_members_cosign_over_http_and_a_proof_checks_their_cosignatures(
    cli: Callable[..., Any], space_factory: Callable[..., Any], tmp_path: Path
) -> None:
    space = space_factory(["bank", "tax-bureau", "power-grid"])
    bank, tax, grid = (space.nodes[n] for n in ("bank", "tax-bureau", "power-grid"))
    node = ["--node", bank.root]
    result = cli(*node, "ledger", "witness", "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["witnesses"] == {"tax-bureau": {"cosigned": True},
                                   "power-grid": {"cosigned": True}}
    out = tmp_path / "proof.json"
    assert cli(*node, "ledger", "prove", "1", "--out", out).exit_code == 0
    keys = ["--key", bank.root / "keys" / "node.pub"]
    witnesses = ["--witness", tax.root / "keys" / "node.pub",
                 "--witness", grid.root / "keys" / "node.pub"]
    checked = cli("verify-proof", out, *keys, *witnesses)
    assert checked.exit_code == 0, checked.stderr
    assert "cosigned by witnesses dataspace/power-grid, dataspace/tax-bureau" in checked.stdout
    # a witness that did not cosign: refused unless the quorum leaves it out
    others = [*witnesses, "--witness", space.operator.root / "keys" / "node.pub"]
    assert cli("verify-proof", out, *keys, *others).exit_code == VerificationError.exit_code
    assert cli("verify-proof", out, *keys, *others, "--quorum", "2").exit_code == 0
    assert cli(*node, "ledger", "verify").exit_code == 0
    # the witnesses logged what they cosigned
    tax_log = cli("--node", tax.root, "ledger", "log", "--json", "--limit", "500")
    cosigned = [e for e in json.loads(tax_log.stdout) if e["entry"]["action"] ==
                "witness.cosigned"]
    assert cosigned and cosigned[-1]["payload"]["member"] == "bank"


def _docs_witness_config() -> dict[str, Any]:
    """The node.toml example under "Witnesses" in docs/ledger.md."""
    text = (Path(__file__).parents[2] / "docs" / "ledger.md").read_text(encoding="utf-8")
    section = text[text.index("## Witnesses"):]
    block = section[section.index("```toml\n") + 8 :]
    return tomllib.loads(block[: block.index("```")])


def _configure(root: Path, extra: dict[str, Any]) -> None:
    path = root / "node.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    for name, table in extra.items():
        config.setdefault(name, {}).update(table)
    path.write_text(tomli_w.dumps(config), encoding="utf-8")


def _cosigners(node: Node) -> tuple[int, set[str]]:
    """The newest stored checkpoint's size and who cosigned it."""
    with node.store.read() as session:
        note = log.latest_checkpoint(session)
    if note is None:
        return 0, set()
    return (peek_checkpoint(note).size,
            {s.name for s in parse_note(note).signatures[1:]})


def _wait(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _cosignings(node: Node) -> int:
    return sum(e["entry"]["action"] == "witness.cosigned"
               for e in ledger.entries(node, limit=1000))


def test_a_serving_node_has_its_checkpoints_cosigned_by_the_witnesses_it_names(
    cli: Callable[..., Any], space_factory: Callable[..., Any], tmp_path: Path
) -> None:
    space = space_factory(["bank", "tax-bureau", "power-grid"], serve=False)
    bank, tax, grid = (space.nodes[n] for n in ("bank", "tax-bureau", "power-grid"))
    config = _docs_witness_config()
    assert config["ledger"]["witnesses"] == ["tax-bureau", "power-grid"]
    fast = {"limits": {"ledger_witness_interval_seconds": 1}}
    _configure(bank.root, {**config, **fast})
    _configure(tax.root, {"ledger": {"witnesses": ["bank"]}, **fast})  # they witness each other
    space.start()
    bank_node, tax_node = bank.open(), tax.open()
    try:
        _wait(lambda: _cosigners(bank_node)[1] == {"dataspace/tax-bureau", "dataspace/power-grid"}
              and _cosigners(tax_node)[1] == {"dataspace/bank"}, "the first cosignatures")
        # settled: witnessing each other adds witness.cosigned entries only, which start no round
        before = (_cosignings(bank_node), _cosignings(tax_node))
        time.sleep(3)
        assert (_cosignings(bank_node), _cosignings(tax_node)) == before
        with bank_node.store.write() as session:  # a real change is cosigned within a round
            log.append(session, actor="test", action="test.event", payload={})
        grown = ledger.size(bank_node)
        _wait(lambda: _cosigners(bank_node) == (grown, {"dataspace/tax-bureau",
                                                        "dataspace/power-grid"}),
              "the grown log's cosignatures")
    finally:
        bank_node.close()
        tax_node.close()
    out = tmp_path / "proof.json"
    assert cli("--node", bank.root, "ledger", "prove", str(grown - 1), "--out", out).exit_code == 0
    checked = cli("verify-proof", out, "--key", bank.root / "keys" / "node.pub",
                  "--witness", tax.root / "keys" / "node.pub",
                  "--witness", grid.root / "keys" / "node.pub")
    assert checked.exit_code == 0, checked.stderr


def test_a_bad_witnesses_section_stops_the_server_before_it_serves(
    space_factory: Callable[..., Any],
) -> None:
    space = space_factory(["bank"], serve=False)
    bank = space.nodes["bank"]
    _configure(bank.root, {"ledger": {"witnesses": "tax-bureau"}})
    done = subprocess.run(
        [sys.executable, "-m", "dataspace.node.server", "--node", str(bank.root), "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == UsageError.exit_code, done.stderr
    assert "[ledger] witnesses must be a list of member names" in done.stderr
