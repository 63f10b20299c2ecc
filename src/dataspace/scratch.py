"""Scratch files named after the process that writes them: ``<prefix><pid>.<start>-...``.

So that what a killed process left behind (a partial import, an RR22 run's keys and
certificates) can be told from what a live process is still writing, and removed when a
node opens without touching a running server's work. No heavy imports: every CLI call
opens a node.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path

__all__ = [
    "ALIVE_DIR",
    "IMPORT_PREFIX",
    "INIT_PREFIX",
    "LIBPSI_TRACES",
    "REMOVING_PREFIX",
    "RR22_PREFIX",
    "SPILL_PREFIX",
    "STAGING_PREFIX",
    "UPLOAD_PREFIX",
    "any_named",
    "fsync_path",
    "is_stale",
    "process_gone",
    "process_tag",
    "register_alive",
    "remove_libpsi_traces",
    "staging_path",
    "sweep",
    "sweep_alive",
    "write_whole",
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


def any_named(folder: Path, prefix: str | tuple[str, ...]) -> bool:
    """Whether anything under ``folder``, at any depth, is named ``<prefix>...`` (one of the
    prefixes): the cheap check that lets a node open without loading the code that cleans up
    after an import or a removal."""
    return any(
        name.startswith(prefix)
        for _, dirs, files in os.walk(folder)
        for name in (*dirs, *files)
    )


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one,
    never part of it: written to a staging name beside it, flushed, moved into place."""
    staged = staging_path(path)
    with staged.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, path)


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


#: Under a node's tmp/: one lock file per live process that opened the node, named by its
#: tag and locked (flock) for the process's life. A lock is seen from every pid namespace
#: sharing the node's folder, where a pid says nothing (containers on one volume).
ALIVE_DIR = ".alive"
ALIVE_GRACE_SECONDS = 60.0  # a lock file younger than this may not be locked yet
_alive_held: dict[tuple[int, Path], int] = {}  # (pid, alive folder) -> the locked descriptor


def register_alive(alive: Path) -> None:
    """Hold this process's lock file in ``alive`` until the process ends (once per folder)."""
    key = (os.getpid(), alive)
    if key in _alive_held:
        return
    try:
        alive.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(alive / process_tag(), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # a read-only node: its sweeps fall back to the pid
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another namespace's process with our very pid and start: theirs
        os.close(fd)
        return
    if not _alive_held:
        atexit.register(_unregister_alive)
    _alive_held[key] = fd


def _unregister_alive() -> None:
    """At a normal exit: remove this process's lock files (a killed one's are swept)."""
    for (pid, alive), fd in list(_alive_held.items()):
        if pid == os.getpid():
            with contextlib.suppress(OSError):
                (alive / process_tag()).unlink()
            with contextlib.suppress(OSError):
                os.close(fd)
            del _alive_held[(pid, alive)]


def _lock_says(alive: Path, tag: str) -> bool | None:
    """Whether the process ``tag`` is alive by its lock file in ``alive``; None if it has none
    there (it never registered: judge by its pid)."""
    try:
        fd = os.open(alive / tag, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:  # there but unreadable to us: someone's, and perhaps alive
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # held
    finally:
        os.close(fd)
    return False


def sweep_alive(alive: Path) -> None:
    """Remove the lock files of processes that are gone (none is held, and not just made)."""
    if not alive.is_dir():
        return
    cutoff = time.time() - ALIVE_GRACE_SECONDS
    for lock in alive.iterdir():
        with contextlib.suppress(OSError):
            if lock.stat().st_mtime <= cutoff and _lock_says(alive, lock.name) is False:
                lock.unlink()


def is_stale(name: str, prefix: str, alive: Path | None = None) -> bool:
    """True for a ``<prefix><pid>[.<start time>]-`` name whose process is gone (see
    :func:`process_gone`)."""
    if not name.startswith(prefix):
        return False
    return process_gone(name[len(prefix) :].split("-", 1)[0], alive)


def process_gone(tag: str, alive: Path | None = None) -> bool:
    """Has the process of this :func:`process_tag` ended? Its lock file in ``alive`` (a
    node's, see :func:`register_alive`) is not held; without one, no process has that pid, or
    the one that has it started at another time (the pid was reused)."""
    if alive is not None and (held := _lock_says(alive, tag)) is not None:
        return not held
    pid_text, _, start = tag.partition(".")
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


def sweep(folder: Path, prefix: str, alive: Path | None = None) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><pid>-`` whose process is gone (see
    :func:`is_stale`) and that this user owns (in a shared folder such as the system temp,
    another user's are theirs to clean); one that cannot be removed is left, not raised
    about."""
    removed: list[Path] = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if not is_stale(entry.name, prefix, alive):
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
