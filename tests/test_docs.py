"""Every ```python block in README.md and docs/ runs, and the README walkthrough runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
