"""`make demo`: the node foundation end to end on the sample data that ships with the package.

Creates a node in a temporary directory and runs the real CLI commands against it, printing
each command before its output: import (UTF-8, GBK, JSON Lines, Parquet), classification,
grading and quality, a provider's correction with regrading, a signed checkpoint, an inclusion
proof verified offline with only the public key, and a full ledger verification.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from dataspace.cli.main import main as cli_main

SAMPLES = Path(__file__).parent / "samples"
console = Console(highlight=False)


def _run(*argv: str) -> None:
    console.print(Rule(style="dim"))
    console.print(
        "[bold cyan]$ dataspace " + " ".join(shlex.quote(a) for a in argv) + "[/bold cyan]"
    )
    try:
        cli_main(list(argv))
    except SystemExit as exc:
        if exc.code not in (0, None):
            console.print(f"[red]command failed with exit code {exc.code}[/red]")
            raise


def run(workdir: Path) -> None:
    node_dir = workdir / "bank-a"
    _run("init", str(node_dir), "--name", "bank-a")
    node = ["--node", str(node_dir)]
    _run(
        *node,
        "dataset",
        "add",
        str(SAMPLES / "sme_loans.csv"),
        "--name",
        "sme-loans",
        "--title",
        "中小企业贷款台账",
        "--domain",
        "finance",
        "--description",
        "Loans to small firms with 90-day delinquency",
    )
    _run(
        *node,
        "dataset",
        "add",
        str(SAMPLES / "tax_records.csv"),
        "--name",
        "纳税记录",
        "--title",
        "企业纳税信用记录 (GBK)",
        "--domain",
        "tax",
    )
    _run(
        *node,
        "dataset",
        "add",
        str(SAMPLES / "patients.jsonl"),
        "--name",
        "patients",
        "--title",
        "门诊患者",
        "--domain",
        "health",
    )
    _run(
        *node,
        "dataset",
        "add",
        str(SAMPLES / "grid_power.parquet"),
        "--name",
        "grid-power",
        "--title",
        "企业月度用电",
        "--domain",
        "energy",
    )
    # The loans are to firms, not people: the provider corrects the finance finding, and the
    # dataset is regraded (the correction is in the ledger).
    _run(*node, "dataset", "reclassify", "sme-loans", "--column", "loan_amount", "--as", "none")
    _run(*node, "dataset", "reclassify", "sme-loans", "--column", "overdue_90d", "--as", "none")
    _run(*node, "dataset", "list")
    _run(*node, "ledger", "log")
    _run(*node, "ledger", "checkpoint")
    proof_file = workdir / "proof.json"
    _run(*node, "ledger", "prove", "2", "--out", str(proof_file))
    _run("verify-proof", str(proof_file), "--key", str(node_dir / "keys" / "node.pub"))
    _run(*node, "ledger", "verify")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="dataspace-demo-") as tmp:
        try:
            run(Path(tmp))
        except SystemExit as exc:
            sys.exit(exc.code)
    console.print(Rule(style="dim"))
    console.print(
        "[green]demo finished: node created, data imported and graded, ledger verified[/green]"
    )


if __name__ == "__main__":
    main()
