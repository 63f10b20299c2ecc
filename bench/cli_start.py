"""Benchmark: how long a `dataspace` command takes to start, against an eager CLI.

    .venv/bin/python bench/cli_start.py [--runs 15]

Each figure is the median wall time of fresh interpreter processes (byte-code compiled first,
so no run pays for compiling). "eager" imports, before the CLI, every module the command
groups take through `dataspace.cli.lazy` stand-ins — what the CLI imported at start before
the stand-ins; "lazy" is the CLI as shipped. Three commands: `--help` (no node), `node
--json` (opens a node: SQLite, the ledger) and `ledger verify`.
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import pkgutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dataspace
import dataspace.cli
from dataspace.cli.lazy import _Deferred

# every module of the CLI package (the command groups, main, common): where stand-ins live
GROUPS = [importlib.import_module(f"dataspace.cli.{m.name}")
          for m in pkgutil.iter_modules(dataspace.cli.__path__)]


def deferred_modules() -> list[str]:
    """Every module a command group names through a stand-in."""
    names = {v.__name__ for g in GROUPS for v in vars(g).values() if isinstance(v, _Deferred)}
    return sorted(names | {"pyarrow.csv", "pyarrow.parquet", "dataspace.scenarios.base"})


def timed(code: str, argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    compileall.compile_dir(Path(dataspace.__file__).parent, quiet=1)
    eager_imports = "; ".join(f"import {m}" for m in deferred_modules())
    run_cli = "import sys; from dataspace.cli.main import main; main(sys.argv[1:])"
    with tempfile.TemporaryDirectory() as tmp:
        node_dir = str(Path(tmp) / "n")
        subprocess.run([sys.executable, "-m", "dataspace", "init", node_dir, "--name", "bench"],
                       check=True, capture_output=True)
        commands = {
            "--help": ["--help"],
            "node --json": ["--node", node_dir, "node", "--json"],
            "ledger verify": ["--node", node_dir, "ledger", "verify"],
        }
        print(f"{len(deferred_modules())} modules deferred; median of {args.runs} runs")
        print(f"{'command':<16}{'eager':>10}{'lazy':>10}{'ratio':>8}")
        for name, argv in commands.items():
            eager = timed(f"{eager_imports}; {run_cli}", argv, args.runs)
            lazy = timed(run_cli, argv, args.runs)
            print(f"{name:<16}{eager:>9.3f}s{lazy:>9.3f}s{eager / lazy:>7.1f}×")


if __name__ == "__main__":
    main()
