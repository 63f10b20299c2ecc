"""Scratch files named after the process that writes them: ``<prefix><pid>-...``.

So that what a killed process left behind (a partial import, an RR22 run's keys and
certificates) can be told from what a live process is still writing, and removed when a
node opens without touching a running server's work. No heavy imports: every CLI call
opens a node.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["IMPORT_PREFIX", "RR22_PREFIX", "any_named", "is_stale", "sweep"]

IMPORT_PREFIX = ".importing-"  # an import's staging folder or staged file in data/
RR22_PREFIX = "dataspace-rr22-"  # an RR22 link's or run's folder


def any_named(folder: Path, prefix: str) -> bool:
    """Whether anything under ``folder``, at any depth, is named ``<prefix>...``: the cheap
    check that lets a node open without loading the code that cleans up after an import."""
    return any(
        name.startswith(prefix)
        for _, dirs, files in os.walk(folder)
        for name in (*dirs, *files)
    )


def is_stale(name: str, prefix: str) -> bool:
    """True for a ``<prefix><pid>-`` name whose process is gone."""
    if not name.startswith(prefix):
        return False
    pid_text = name[len(prefix) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return True  # not written by a live process of ours
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False


def sweep(folder: Path, prefix: str) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><pid>-`` whose process is gone."""
    removed: list[Path] = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if is_stale(entry.name, prefix):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed
