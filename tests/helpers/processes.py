"""Whether a process the tests started (and may not be the parent of) still runs."""

from __future__ import annotations

from pathlib import Path


def running(pid: int) -> bool:
    """Running: a zombie waiting for a reaper that is not its parent counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
