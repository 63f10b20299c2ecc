"""Run a checked query next to the data, in a locked-down DuckDB worker process.

Each job gets its own process (:mod:`dataspace.compute.worker`), forked from a small process
server (the *zygote*, a clean interpreter that has imported duckdb and pyarrow once), and its own
private temp dir. One idle
worker is kept ready (started after the previous job, never reused) so a job does not wait for
the engine to start. The parent

* resolves the dataset path (symlinks followed, must be a regular Parquet file) and counts its
  rows from the Parquet footer (``rows_scanned``, deterministic for billing);
* sends the job, waits ``timeout + grace`` seconds, kills the worker if it has not answered;
* wipes the temp dir whatever happened (after an answer, in the background: :func:`settle`
  waits for it), and maps every failure to a :class:`DataspaceError`.

:class:`_UnsafeRawQuery` sends SQL without the checker. It exists for the tests that prove the
locked engine refuses each escape route on its own; nothing else may use it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.compute.errors import (
    FAILED_MESSAGE,
    QueryFailed,
    QueryOutOfMemory,
    QueryRefused,
    QueryTimeout,
    ResultTooLarge,
    SandboxBusy,
    SandboxError,
    WorkerCrashed,
)
from dataspace.compute.sqlcheck import CheckedQuery
from dataspace.errors import DataspaceError, NotFound, UsageError
from dataspace.scratch import process_tag, sweep

WORKER_MODULE = "dataspace.compute.worker"


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one governed query (to move into the settings table as ``sandbox_*``)."""

    memory_limit_mb: int = 512
    threads: int = 2
    timeout_seconds: float = 30.0
    kill_grace_seconds: float = 2.0
    max_temp_mb: int = 1024
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 * 1024 * 1024
    temp_root: str | None = None
    #: Queries that may run at once in this process: each worker has its own memory limit,
    #: temp space and threads, so without a bound N requests use N times them.
    max_workers: int = 4

    @classmethod
    def from_limits(cls, limits: Mapping[str, Any]) -> SandboxLimits:
        """Read ``sandbox_<field>`` entries of a node's limits, defaults for the rest."""
        values = {
            name: limits[f"sandbox_{name}"]
            for name in cls.__dataclass_fields__
            if f"sandbox_{name}" in limits
        }
        return cls(**values)


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    rows_scanned: int
    result_rows: int
    bytes_out: int
    cpu_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class _UnsafeRawQuery:
    """Raw SQL for the locked worker, bypassing the checker. Tests only.

    ``gate=False`` also skips the worker's one-SELECT gate, to show what the locked
    configuration alone refuses.
    """

    sql: str
    gate: bool = True


def run_query(
    parquet_path: str | os.PathLike[str],
    table_name: str,
    checked: CheckedQuery | _UnsafeRawQuery,
    limits: SandboxLimits | None = None,
) -> QueryResult:
    """Run ``checked`` against the Parquet file as table ``table_name`` in a fresh worker."""
    return start_query(parquet_path, table_name, checked, limits).result()


def start_query(
    parquet_path: str | os.PathLike[str],
    table_name: str,
    checked: CheckedQuery | _UnsafeRawQuery,
    limits: SandboxLimits | None = None,
) -> RunningQuery:
    """Hand ``checked`` to a worker and return at once; :meth:`RunningQuery.result` waits.

    The caller may do its own work meanwhile (the DP path commits the budget reservation) and
    must then call ``result()`` or ``cancel()``.
    """
    limits = limits or SandboxLimits()
    if isinstance(checked, CheckedQuery) and checked.table != table_name:
        raise UsageError(f"the query was checked for table '{checked.table}', not '{table_name}'")
    if not isinstance(checked, (CheckedQuery, _UnsafeRawQuery)):
        raise UsageError("run_query needs a CheckedQuery: pass the SQL through check_query first")
    started = time.perf_counter()
    path, rows = _dataset(Path(parquet_path))
    job = {
        "path": str(path),
        "table": table_name,
        "sql": checked.sql,
        "gate": checked.gate if isinstance(checked, _UnsafeRawQuery) else True,
        "timeout": limits.timeout_seconds,
        "max_rows": limits.max_result_rows,
        "max_bytes": limits.max_result_bytes,
    }
    _claim_slot(limits)
    try:
        worker = _take_worker(limits)
        try:
            worker.send(job)
        except BaseException:
            worker.finish()
            _refill(limits)
            raise
    except BaseException:
        _release_slot()
        raise
    return RunningQuery(worker, job, rows, started)


def _claim_slot(limits: SandboxLimits) -> None:
    """Take one of the ``max_workers`` slots, or refuse at once: a queue would hold the
    caller's request thread as long as the queries ahead of it."""
    global _running
    with _lock:
        if _running >= max(1, limits.max_workers):
            raise SandboxBusy(
                f"all {limits.max_workers} query workers of this node are busy; nothing was run",
                hint="try again shortly",
            )
        _running += 1


def _release_slot() -> None:
    global _running
    with _lock:
        _running = max(0, _running - 1)


class RunningQuery:
    """A job a worker is running; exactly one of :meth:`result` or :meth:`cancel` ends it."""

    def __init__(self, worker: _Worker, job: dict[str, Any], rows: int, started: float) -> None:
        self._worker = worker
        self._job = job
        self._rows = rows
        self._started = started
        self._done = False

    def result(self) -> QueryResult:
        """Wait for the answer (killing the worker at the deadline) or raise its error."""
        self._end()
        worker, limits = self._worker, self._worker.limits
        deadline = self._started + limits.timeout_seconds + limits.kill_grace_seconds
        try:
            stats, payload = worker.receive(self._job, max(0.0, deadline - time.perf_counter()))
        except BaseException:
            worker.finish()
            _release_slot()
            _refill(limits)
            raise
        # The answer is in hand: the worker's exit and its temp-dir wipe need not delay it.
        _release_slot()
        _refill(limits, retire=worker)
        table = pa.ipc.open_stream(payload).read_all()
        return QueryResult(
            table=table,
            rows_scanned=self._rows,
            result_rows=table.num_rows,
            bytes_out=len(payload),
            cpu_seconds=float(stats["cpu_seconds"]),
            wall_seconds=time.perf_counter() - self._started,
        )

    def cancel(self) -> None:
        """Stop the job unread: its worker is killed and its temp dir wiped."""
        self._end()
        self._worker.kill_now()
        self._worker.finish()
        _release_slot()
        _refill(self._worker.limits)

    def _end(self) -> None:
        if self._done:
            raise UsageError("this query has already been collected or cancelled")
        self._done = True


def shutdown() -> None:
    """Stop the idle worker and the process server (called at exit)."""
    global _spare, _zygote, _closing
    _closing = True
    settle()
    with _lock:
        spare, _spare = _spare, None
        zygote, _zygote = _zygote, None
    if spare is not None:
        spare.finish()
    if zygote is not None:
        zygote.stop()


def _dataset(path: Path) -> tuple[Path, int]:
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except (OSError, RuntimeError):
        raise NotFound(
            f"dataset file {path} does not exist", hint="re-import the dataset"
        ) from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"dataset file {path} is not a regular file")
    try:
        rows = pq.read_metadata(real).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise DataspaceError(
            f"dataset file {path} is not readable Parquet ({exc})", hint="re-import the dataset"
        ) from None
    return real, int(rows)


# -- workers -----------------------------------------------------------------------------------
_lock = threading.Lock()
_spare: _Worker | None = None
_zygote: _Zygote | None = None
_refills: set[threading.Thread] = set()
_closing = False
_running = 0  # queries handed to a worker and not yet collected or cancelled


#: Rows of the synthetic Parquet file each idle worker scans once before its job (see
#: :func:`_warm_up_file`). Measured on the 10M-row bench: 1M rows removes part of the first
#: scan's extra cost, 3M rows all of it (~15 ms); dictionary-encoded columns do not help.
WARM_UP_ROWS = 3_000_000


# TZ: the engine's time zone must stay the node's (hour() of a TIMESTAMPTZ depends on it);
# LD_LIBRARY_PATH, PYTHONHOME: some Python builds cannot start without them
_WORKER_ENV = frozenset({"PATH", "LANG", "TZ", "TMPDIR", "TEMP", "TMP", "HOME", "PYTHONPATH",
                         "PYTHONHOME", "LD_LIBRARY_PATH", "PYTHONHASHSEED", "VIRTUAL_ENV",
                         "SYSTEMROOT"})


class _Zygote:
    """``python -m dataspace.compute.worker --zygote``: forks the workers, one per job."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        # Only what a Python process needs: the node's own environment (tokens, database
        # URLs, keys passed as variables) has no business next to a consumer's query.
        env = {k: v for k, v in os.environ.items() if k in _WORKER_ENV or k.startswith("LC_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            warm_fd = _warm_up_file()
        except BaseException:
            ours.close()
            theirs.close()
            raise
        try:
            with theirs:
                self.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        WORKER_MODULE,
                        "--zygote",
                        str(theirs.fileno()),
                        str(warm_fd),
                    ],
                    pass_fds=[theirs.fileno(), warm_fd],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
        except BaseException:
            ours.close()  # no process server: nothing will use our end
            raise
        finally:
            os.close(warm_fd)
        self.conn = Connection(ours.detach())
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, setup: dict[str, Any]) -> tuple[int, Connection]:
        ours, theirs = socket.socketpair()
        try:
            with self.lock:
                self.conn.send(("fork", setup))
                reduction.send_handle(self.conn, theirs.fileno(), self.process.pid)
                pid = int(self.conn.recv())
        except (EOFError, OSError):
            ours.close()
            raise WorkerCrashed(
                "the sandbox's process server is gone; it restarts with the next query"
            ) from None
        finally:
            theirs.close()
        return pid, Connection(ours.detach())

    def kill(self, pid: int) -> None:
        with contextlib.suppress(EOFError, OSError), self.lock:
            self.conn.send(("kill", pid))
            self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


WARM_UP_PREFIX = "dataspace-warm-up-"


def _warm_up_file() -> int:
    """A read-only descriptor of a synthetic Parquet file whose name is already gone.

    A fresh DuckDB instance's first large scan of plain-encoded Parquet columns runs ~25%
    slower than its later ones (the engine's buffers are not yet grown); each idle worker
    pays that on this file instead of on the consumer's job. Unlinked at once, so nothing
    is left behind whatever happens to the processes; the zygote's workers inherit the
    descriptor and read it as ``/proc/self/fd/N``.
    """
    import duckdb  # the node imports it anyway; kept local so the module loads without it

    # named after this process: one killed while writing leaves a folder the next removes
    sweep(Path(tempfile.gettempdir()), WARM_UP_PREFIX)
    folder = tempfile.mkdtemp(prefix=f"{WARM_UP_PREFIX}{process_tag()}-")
    path = os.path.join(folder, "warm-up.parquet")
    try:
        con = duckdb.connect(":memory:", config={"threads": 1})
        try:
            con.execute(
                f"COPY (SELECT i / 7.0 AS x, i AS y FROM range({WARM_UP_ROWS}) t(i)) "
                f"TO '{path}' (FORMAT parquet, COMPRESSION zstd)"
            )
        finally:
            con.close()
        return os.open(path, os.O_RDONLY)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _get_zygote() -> _Zygote:
    global _zygote
    with _lock:
        if _zygote is None or not _zygote.alive():
            if _zygote is not None:
                _zygote.stop()
            _zygote = _Zygote()
        return _zygote


_SWEPT: set[str] = set()  # temp roots this process has cleared of orphaned job dirs
ORPHAN_AGE_SECONDS = 60.0
LOCK_MARKER = ".locked-by-node"  # in a job dir: its node holds a lock on it while alive


def _sweep_orphans(root: str | None) -> None:
    """Remove job temp dirs (spilled query data) that no live node holds: a node killed
    mid-query leaves its workers' dirs behind. Each node holds a lock on the dirs of its
    workers (see :class:`_Worker`), so another node's dirs on the same machine are kept; a dir
    younger than a minute is kept too (its lock may be about to be taken). Once per root and
    process."""
    base = root or tempfile.gettempdir()
    with _lock:
        if base in _SWEPT:
            return
        _SWEPT.add(base)
    cutoff = time.time() - ORPHAN_AGE_SECONDS
    for path in Path(base).glob("dataspace-job-*"):
        try:
            # only dirs whose owner took a lock (the marker says so): dirs of other versions
            # of this program take none, and may be in use
            if not (path / LOCK_MARKER).exists() or path.stat().st_mtime > cutoff:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held: a live node's worker
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


class _Worker:
    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        _sweep_orphans(limits.temp_root)
        self.temp_dir = tempfile.mkdtemp(prefix="dataspace-job-", dir=limits.temp_root)
        # held for the dir's life by this (the node's) process: released if the node dies,
        # which marks the dir as an orphan for the next sweep
        self._dir_lock = os.open(self.temp_dir, os.O_RDONLY)
        try:
            fcntl.flock(self._dir_lock, fcntl.LOCK_EX)
            Path(self.temp_dir, LOCK_MARKER).touch()
            self.zygote = _get_zygote()
            self.pid, self.conn = self.zygote.fork({**asdict(limits), "temp_dir": self.temp_dir})
        except BaseException:
            self._wipe()  # no dir and no descriptor left behind by a worker that never started
            raise
        self.answered = False

    def ask(self, job: dict[str, Any], wait: float) -> tuple[dict[str, Any], bytes]:
        self.send(job)
        return self.receive(job, wait)

    def send(self, job: dict[str, Any]) -> None:
        try:
            self.conn.send(job)
        except OSError:
            raise WorkerCrashed(
                "the query worker died before it got the query",
                hint="retry; other queries are not affected",
            ) from None

    def receive(self, job: dict[str, Any], wait: float) -> tuple[dict[str, Any], bytes]:
        try:
            if not self.conn.poll(wait):
                self._kill()
                raise QueryTimeout(
                    f"the query did not finish within {job['timeout']} s and its worker was killed",
                    hint="narrow the query, or ask the provider for a longer sandbox timeout",
                )
            reply = self.conn.recv()
            if reply[0] == "ok":
                payload = self.conn.recv_bytes()
                self.answered = True
                return reply[2], payload
        except (EOFError, OSError):
            raise WorkerCrashed(
                "the query worker died without an answer",
                hint="the query may have exhausted memory; other queries are not affected",
            ) from None
        self.answered = True
        raise _error(reply[1], reply[2], reply[3] if len(reply) > 3 else None, self.limits)

    def _kill(self) -> None:
        self.zygote.kill(self.pid)

    def kill_now(self) -> None:
        """Kill the worker whatever it is doing (its answer is not wanted)."""
        if self.zygote.alive():
            self._kill()

    def _wipe(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        fd, self._dir_lock = self._dir_lock, -1  # closed once: a reused number is not ours
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def finish(self) -> None:
        """Make sure the worker is gone (EOF on its socket), then wipe its temp dir."""
        try:
            grace = self.limits.kill_grace_seconds if self.answered else 0.0
            # a worker whose process server died was killed with it (PR_SET_PDEATHSIG)
            if self.zygote.alive() and not _wait_eof(self.conn, grace):
                self._kill()
                _wait_eof(self.conn, 5.0)
        finally:
            with contextlib.suppress(OSError):
                self.conn.close()
            self._wipe()


def _wait_eof(conn: Connection, seconds: float) -> bool:
    """True once the worker has exited (its end of the socket closes with the process)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if conn.poll(max(0.0, deadline - time.monotonic())):
                conn.recv_bytes()  # a late reply nobody waits for: drain it
                continue
        except (EOFError, OSError):
            return True
        return False


def _take_worker(limits: SandboxLimits) -> _Worker:
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is not None:
        usable = spare.zygote.alive() and not _has_news(spare.conn)
        # a temp dir removed while the spare waited (a /tmp cleaner, an operator) would fail
        # the job it is given
        if usable and spare.limits == limits and Path(spare.temp_dir).is_dir():
            return spare
        spare.finish()
    return _Worker(limits)


def _has_news(conn: Connection) -> bool:
    """An idle worker that has something to say (an error, or EOF) is not usable."""
    try:
        return conn.poll(0)
    except (EOFError, OSError):
        return True


def settle() -> None:
    """Wait until answered workers are gone and their temp dirs wiped (tests, shutdown)."""
    for thread in list(_refills):
        thread.join(10)


def _refill(limits: SandboxLimits, retire: _Worker | None = None) -> None:
    """In the background: see ``retire`` exit and wipe its temp dir, then start the next
    job's worker (the engine start-up is ~20 ms)."""

    def start() -> None:
        global _spare
        try:
            if retire is not None:
                retire.finish()
            if _closing:
                return
            try:
                fresh = _Worker(limits)
            except (OSError, DataspaceError):
                return
            with _lock:
                old, _spare = (fresh, None) if _closing else (_spare, fresh)
            if old is not None:
                old.finish()
        finally:
            _refills.discard(threading.current_thread())

    if _closing and retire is None:
        return
    thread = threading.Thread(target=start, name="sandbox-refill", daemon=True)
    _refills.add(thread)
    thread.start()


def _error(
    kind: str, message: str, detail: str | None, limits: SandboxLimits
) -> SandboxError | DataspaceError:
    """The consumer-facing error for a worker's reply.

    ``message`` is one of the worker's fixed texts; ``detail`` (the engine's own words, which
    can quote a row's value) goes to ``internal_detail`` only, for the provider's log.
    """
    error: SandboxError | QueryRefused | QueryFailed
    if kind == "refused":
        error = QueryRefused(
            f"the engine refused the query: {message}",
            hint="only one SELECT over the agreed table can run",
        )
    elif kind == "failed":
        error = QueryFailed(
            FAILED_MESSAGE,
            hint="check types and casts; the engine's own words can quote the data, so only "
                 "the provider's server log has them (under this job's id)",
        )
    elif kind == "timeout":
        error = QueryTimeout(
            message, hint=f"narrow the query; the limit is {limits.timeout_seconds} s"
        )
    elif kind == "oom":
        error = QueryOutOfMemory(
            "the query ran out of memory or temp space",
            hint=(
                f"narrow the query; limits: {limits.memory_limit_mb} MB memory, "
                f"{limits.max_temp_mb} MB temp"
            ),
        )
    elif kind == "too_large":
        error = ResultTooLarge(message, hint="aggregate further or add a LIMIT")
    else:
        error = WorkerCrashed(f"the query worker failed ({message})")
    error.internal_detail = detail or None
    return error


atexit.register(shutdown)
