"""`make demo` runs the default scenario (finance, `dataspace demo --size default`): it must do
the whole flow and end verified."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_demo_runs_end_to_end_and_verifies_the_ledger(tmp_path) -> None:
    if os.environ.get("DATASPACE_TEST_DATABASE_URL"):
        pytest.skip("the demo uses the embedded SQLite store")
    env = {**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "160"}
    result = subprocess.run(
        [sys.executable, "-m", "dataspace.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for expected in (
        "uscc",
        "mobile_cn",
        "id_card_cn",
        "一般数据",
        "quality (GB/T 36344)",
        "is now none",
        "verified: entry 2",
        "ledger verified: 8 entries",
    ):
        assert expected in out, expected
    assert list(tmp_path.iterdir()) == [], "the demo removes its temporary node"
