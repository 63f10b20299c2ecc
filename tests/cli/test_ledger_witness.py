"""`dataspace ledger witness` and `verify-proof --witness` over real node processes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataspace.errors import VerificationError


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
