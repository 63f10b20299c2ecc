"""Every ```python block in README.md and docs/ runs, and the README walkthrough runs as written."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataspace.scenarios.cluster import free_port

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks(lang: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, m in enumerate(FENCE.finditer(doc.read_text(encoding="utf-8"))):
            if m.group(1) == lang:
                found.append((f"{doc.relative_to(REPO)}#{i}", m.group(2)))
    return found


@pytest.mark.parametrize(("where", "code"), _blocks("python"), ids=lambda v: v if "#" in v else "")
def test_python_example_runs(where: str, code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"


def test_readme_two_node_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Offer → negotiation → DP query → bill → ledger proof, between two real node processes.

    Only the ports change (to free ones), so parallel runs cannot collide.
    """
    import signal

    if os.environ.get("DATASPACE_TEST_DATABASE_URL"):
        pytest.skip("the walkthrough uses the embedded SQLite store")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- walkthrough-two-nodes -->\s*```bash\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no <!-- walkthrough-two-nodes --> bash block"
    script = match.group(1)
    for port in ("8601", "8602"):
        assert port in script
        script = script.replace(port, str(free_port()))
    (tmp_path / "src").symlink_to(REPO / "src")
    env = {k: v for k, v in os.environ.items() if k != "DATASPACE_NODE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["COLUMNS"] = "200"
    proc = subprocess.Popen(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # servers left behind by a failed step
    assert proc.returncode == 0, f"walkthrough failed:\n{out[-4000:]}\n{err[-4000:]}"
    assert "FINALIZED" in out and "ε left" in out and "50.00 CNY" in out
    assert "at most 2 rows per 纳税人识别号 counted" in out
    assert "verified: entry" in out and "job.result_received" in out


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's ```bash walkthrough, run from a directory laid out like the repository."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no <!-- walkthrough --> bash block"
    (tmp_path / "src").symlink_to(REPO / "src")
    env = {k: v for k, v in os.environ.items() if k != "DATASPACE_NODE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    script = "set -euo pipefail\n" + match.group(1)
    if os.environ.get("DATASPACE_TEST_DATABASE_URL"):
        pytest.skip("the walkthrough uses the embedded SQLite store")
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"walkthrough failed:\n{result.stdout}\n{result.stderr}"
    assert "verified" in result.stdout
