"""The CLI starts without importing the services' heavy dependencies; they load when used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataspace.cli.lazy import lazy_module

HEAVY = ("sqlalchemy", "pyarrow", "numpy", "duckdb", "sqlglot", "fastapi", "opendp")


def test_starting_the_cli_imports_none_of_the_heavy_dependencies() -> None:
    """Not at import, and not when Typer builds the commands from their signatures (it
    evaluates every parameter's annotation), as it does for every invocation."""
    probe = (
        "import json, sys, typer\n"
        "import dataspace.cli.main\n"
        "typer.main.get_command(dataspace.cli.main.app)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []


def test_a_command_that_needs_a_service_still_finds_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dataspace", "init", str(tmp_path / "n"), "--name", "bank"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "dataspace", "--node", str(tmp_path / "n"), "node", "--json"],
        capture_output=True, text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["name"] == "bank"


def test_a_stand_in_imports_its_module_on_first_use_and_stays_out_of_sys_modules() -> None:
    probe = (
        "import sys\n"
        "from dataspace.cli.lazy import lazy_module\n"
        "stand_in = lazy_module('colorsys')\n"
        "assert 'colorsys' not in sys.modules\n"
        "assert stand_in.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)\n"
        "assert sys.modules['colorsys'] is not stand_in\n"
        "assert stand_in.rgb_to_hsv is sys.modules['colorsys'].rgb_to_hsv\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
    missing = lazy_module("dataspace.no_such_module")
    assert "dataspace.no_such_module" not in sys.modules
    with pytest.raises(ModuleNotFoundError, match=r"dataspace\.no_such_module"):
        missing.anything  # noqa: B018
