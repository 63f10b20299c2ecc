"""Scratch files named after the process that writes them: ``<prefix><pid>.<start>-...``.

So that what a killed process left behind (a partial import, an RR22 run's keys and
certificates) can be told from what a live process is still writing, and removed when a
node opens without touching a running server's work. No heavy imports: every CLI call
opens a node.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

__all__ = [
    "IMPORT_PREFIX",
    "INIT_PREFIX",
    "LIBPSI_TRACES",
    "REMOVING_PREFIX",
    "RR22_PREFIX",
    "SPILL_PREFIX",
    "STAGING_PREFIX",
    "UPLOAD_PREFIX",
    "any_named",
    "is_stale",
    "process_tag",
    "remove_libpsi_traces",
    "staging_path",
    "sweep",
]

IMPORT_PREFIX = ".importing-"  # an import's staging folder or staged file in data/
RR22_PREFIX = "dataspace-rr22-"  # an RR22 link's or run's folder
UPLOAD_PREFIX = "upload-"  # an API upload's folder in the node's tmp/
SPILL_PREFIX = "dataspace-spill-"  # where DuckDB spills reading a dataset (system temp)
INIT_PREFIX = ".initialising-"  # in a node directory until its init has finished
REMOVING_PREFIX = ".removing-"  # a dataset's file set aside while its removal commits
STAGING_PREFIX = ".staging-"  # a file written whole beside its final name, then moved there
#: Where libpsi (the RR22 engine) writes a trace of every run, whatever TMPDIR says: the
#: engine's command line (both parties' addresses, the run's scratch paths) and its timings.
LIBPSI_TRACES = Path("/tmp")
LIBPSI_TRACE_GLOB = "psi_*.trace"


def any_named(folder: Path, prefix: str) -> bool:
    """Whether anything under ``folder``, at any depth, is named ``<prefix>...``: the cheap
    check that lets a node open without loading the code that cleans up after an import."""
    return any(
        name.startswith(prefix)
        for _, dirs, files in os.walk(folder)
        for name in (*dirs, *files)
    )


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc's field 22); None if it
    cannot be read. Two processes with one pid (reused, or pid 1 of every container start)
    have different start times."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


_tag: tuple[int, str] | None = None


def process_tag() -> str:
    """This process in a scratch name: ``<pid>.<start time>`` (the pid alone without /proc).
    No ``-`` in it: names continue ``<prefix><tag>-...``."""
    global _tag
    pid = os.getpid()
    if _tag is None or _tag[0] != pid:  # computed once per process (a fork gets its own)
        start = _start_time(pid)
        _tag = (pid, f"{pid}.{start}" if start else str(pid))
    return _tag[1]


def staging_path(final: Path) -> Path:
    """Where to write ``final`` before moving it into place: beside it (same file system),
    named after this process so that a node opened after a kill removes it."""
    return final.parent / f"{STAGING_PREFIX}{process_tag()}-{uuid.uuid4().hex[:12]}-{final.name}"


def is_stale(name: str, prefix: str) -> bool:
    """True for a ``<prefix><pid>[.<start time>]-`` name whose process is gone: no process
    has that pid, or the one that has it started at another time (the pid was reused)."""
    if not name.startswith(prefix):
        return False
    pid_text, _, start = name[len(prefix) :].split("-", 1)[0].partition(".")
    if not pid_text.isdigit():
        return True  # not written by a live process of ours
    try:
        os.kill(int(pid_text), 0)
    except (ProcessLookupError, OverflowError):  # gone, or never a process id
        return True
    except PermissionError:
        pass  # alive, owned by someone else: compare start times as for our own
    if not start:
        return False  # a pid-only name (no /proc when written): alive as far as we can tell
    now = _start_time(int(pid_text))
    return now is not None and now != start


def sweep(folder: Path, prefix: str) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><pid>-`` whose process is gone and
    that this user owns (in a shared folder such as the system temp, another user's are
    theirs to clean); one that cannot be removed is left, not raised about."""
    removed: list[Path] = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if not is_stale(entry.name, prefix):
                continue
            try:
                if entry.lstat().st_uid != os.getuid():
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError:  # gone meanwhile, or not ours to remove
                continue
            removed.append(entry)
    return removed


def remove_libpsi_traces(naming: Path, folder: Path | None = None) -> list[Path]:
    """Remove libpsi's trace files that this user owns and that name a path under ``naming``
    (a run's folder, or a node's RR22 scratch folder holding runs): the engine's command line,
    which each trace records, holds the run's file paths as JSON strings."""
    spellings = {str(naming), str(naming.resolve())}  # as given, and through any symlink
    # a JSON string that starts with the folder: not a longer path that merely ends like it
    needles = [('"' + json.dumps(path)[1:-1] + "/").encode() for path in spellings]
    removed: list[Path] = []
    for trace in (folder or LIBPSI_TRACES).glob(LIBPSI_TRACE_GLOB):
        try:
            if trace.is_symlink() or trace.stat().st_uid != os.getuid():
                continue
            content = trace.read_bytes()
            if any(needle in content for needle in needles):
                trace.unlink(missing_ok=True)
                removed.append(trace)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return removed
