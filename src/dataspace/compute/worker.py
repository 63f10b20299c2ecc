"""The worker side of the sandbox: one process, one job, one locked DuckDB.

:func:`serve` runs in a fresh process forked from a server that has already imported this
module (so duckdb and pyarrow are loaded once, not per job). It builds its DuckDB instance
with the job's limits, then waits for the job on its pipe. When the job arrives it

1. limits the process (no core dumps, no file larger than the temp-space limit, cwd = its
   private temp dir),
2. allows exactly one path (the dataset's Parquet file, symlinks resolved by the parent),
   defines the agreed table as a view over it, then turns external access off and locks the
   configuration -- all before any consumer text is looked at,
3. accepts exactly one SELECT statement (DuckDB's own parser decides),
4. runs it under a watchdog thread that calls ``interrupt()`` at the deadline, streams the
   result with row and byte caps, and sends it back as Arrow IPC bytes.

The parent kills the process if it does not answer within a grace period, and wipes the
temp dir in every case. Replies are plain tuples: ``("ok", ipc_bytes, stats)`` or
``("error", kind, message, detail)``: ``message`` is one of this module's fixed texts (it may
reach the consumer), ``detail`` is the engine's own text (it may quote data; it is for the
provider's log only).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import threading
import time
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

import duckdb
import pyarrow as pa

BATCH_ROWS = 65_536
WARM_UP = "SELECT i % 64 AS g, count(*), sum(i::DOUBLE) FROM range(1000000) t(i) GROUP BY g"


def serve(conn: Connection, setup: dict[str, Any]) -> None:
    """Entry point of one worker process."""
    try:
        con = duckdb.connect(
            ":memory:",
            config={
                "threads": int(setup["threads"]),
                "memory_limit": f"{int(setup['memory_limit_mb'])}MB",
                "temp_directory": str(setup["temp_dir"]),
                "max_temp_directory_size": f"{int(setup['max_temp_mb'])}MB",
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "allow_unsigned_extensions": False,
            },
        )
    except duckdb.Error as exc:
        _send(conn, ("error", "crash", "the engine could not start", _first_line(exc)))
        return
    with contextlib.suppress(duckdb.Error):
        # Start the engine's threads and warm its allocator while no job is waiting.
        con.execute(WARM_UP).fetchall()
    warm_fd = setup.get("warm_up_fd")
    if warm_fd is not None:
        try:
            with contextlib.suppress(duckdb.Error):
                # Grow the Parquet reader's buffers on a synthetic file (see sandbox._warm_up_file).
                con.execute(f"SELECT sum(x), sum(y) FROM read_parquet('/proc/self/fd/{warm_fd}')")
                con.fetchall()
        finally:
            with contextlib.suppress(OSError):
                os.close(int(warm_fd))
    try:
        job = conn.recv()
    except (EOFError, OSError):
        return  # a spare worker that was never used
    try:
        reply = _run(con, job, setup)
    except BaseException as exc:  # the parent must always get an answer
        reply = ("error", "crash", "the worker failed", f"{type(exc).__name__}: {_first_line(exc)}")
    _send(conn, reply)
    with contextlib.suppress(Exception):
        con.close()


def _run(
    con: duckdb.DuckDBPyConnection, job: dict[str, Any], setup: dict[str, Any]
) -> tuple[Any, ...]:
    _limit_process(setup)
    path = str(job["path"])
    try:
        con.execute(f"SET allowed_paths = [{_lit(path)}]")
        con.execute(
            f"CREATE VIEW {_ident(job['table'])} AS SELECT * FROM read_parquet({_lit(path)})"
        )
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        return ("error", "crash", "the sandbox could not be set up", _first_line(exc))

    sql = str(job["sql"])
    if job.get("gate", True):
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            return ("error", "failed", FAILED, _first_line(exc))
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            kinds = ", ".join(s.type.name for s in statements) or "none"
            return ("error", "refused", ONE_SELECT, f"got {kinds}")

    done = threading.Event()
    timed_out = threading.Event()

    def watchdog() -> None:
        if not done.wait(float(job["timeout"])):
            timed_out.set()
            con.interrupt()

    threading.Thread(target=watchdog, name="sandbox-watchdog", daemon=True).start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        table = _fetch(con, sql, int(job["max_rows"]))
    except _TooMany as exc:
        return ("error", "too_large", str(exc), "")
    except duckdb.InterruptException:
        return ("error", "timeout", _timeout_text(job), "")
    except duckdb.OutOfMemoryException as exc:
        return ("error", "oom", OUT_OF_MEMORY, _first_line(exc))
    except duckdb.Error as exc:
        if timed_out.is_set():
            return ("error", "timeout", _timeout_text(job), _first_line(exc))
        refusal = _refusal(exc)
        if refusal is not None:
            return ("error", "refused", refusal, _first_line(exc))
        text = str(exc).lower()
        if "temp directory" in text or "disk" in text:
            return ("error", "oom", OUT_OF_MEMORY, _first_line(exc))
        return ("error", "failed", FAILED, _first_line(exc))
    finally:
        done.set()
    payload = _ipc(table)
    if len(payload) > int(job["max_bytes"]):
        return (
            "error",
            "too_large",
            f"the result is {len(payload)} bytes, more than {job['max_bytes']}",
            "",
        )
    stats = {
        "cpu_seconds": time.process_time() - cpu0,
        "engine_seconds": time.perf_counter() - wall0,
        "result_rows": table.num_rows,
    }
    return ("ok", payload, stats)


class _TooMany(Exception):
    pass


#: The fixed texts a reply's ``message`` may carry (the consumer may see them).
FAILED = "the query failed while running"
OUT_OF_MEMORY = "the query ran out of memory or temp space"
ONE_SELECT = "the engine accepts exactly one SELECT statement"
EXTENSIONS_DISABLED = "loading extensions is disabled"
FILES_DISABLED = "file access outside the agreed dataset is disabled"
CONFIGURATION_LOCKED = "the engine's configuration is locked"
PERMISSION_DENIED = "the engine denied permission"


def _refusal(exc: duckdb.Error) -> str | None:
    """The lock that refused ``exc``, as a fixed text; None if no lock did."""
    text = str(exc)
    if "configuration has been locked" in text:
        return CONFIGURATION_LOCKED
    if not (isinstance(exc, duckdb.PermissionException) or text.startswith("Permission Error")):
        return None
    if "extensions is disabled" in text:
        return EXTENSIONS_DISABLED
    if "disabled by configuration" in text or "Cannot access" in text:
        return FILES_DISABLED
    return PERMISSION_DENIED


def _timeout_text(job: dict[str, Any]) -> str:
    return f"the query ran longer than {job['timeout']} s and was interrupted"


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int) -> pa.Table:
    reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        if rows > max_rows:
            raise _TooMany(f"the result has more than {max_rows} rows")
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _limit_process(setup: dict[str, Any]) -> None:
    """OS-level limits for this process: no core dumps, bounded files, cwd in the temp dir."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    max_file = int(setup["max_temp_mb"]) * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))
    # Address-space backstop for allocations outside DuckDB's buffer manager (huge strings):
    # what the process already maps, plus twice the engine's memory limit, plus 512 MiB.
    mapped = _mapped_bytes()
    if mapped:
        cap = mapped + 2 * int(setup["memory_limit_mb"]) * 1024 * 1024 + 512 * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    os.chdir(str(setup["temp_dir"]))


def _mapped_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (no orphaned workers)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _send(conn: Connection, reply: tuple[Any, ...]) -> None:
    with contextlib.suppress(OSError, ValueError):
        if reply[0] == "ok":
            conn.send(("ok", None, reply[2]))
            conn.send_bytes(reply[1])
        else:
            conn.send(reply)


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def zygote(control: Connection, warm_up_fd: int | None = None) -> None:
    """Fork one worker per request; kill workers on request; exit when the parent goes away.

    ``warm_up_fd`` (inherited by every worker) is the synthetic Parquet file a worker scans
    before its job. Requests on ``control``: ``("fork", setup)`` followed by the worker's
    socket (SCM_RIGHTS), answered with the worker's pid; ``("kill", pid)``, answered with
    ``True``.
    """
    live: set[int] = set()

    def reap(_signum: int, _frame: object) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            live.discard(pid)

    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us ends, and the
    # sandbox may start the zygote from a short-lived thread. EOF on ``control`` ends us.
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    while True:
        try:
            op, arg = control.recv()
        except (EOFError, OSError):
            break
        if op == "fork":
            fd = reduction.recv_handle(control)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            try:
                pid = os.fork()
                if pid == 0:  # the worker
                    code = 0
                    try:
                        _die_with_parent()
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                        control.close()
                        serve(Connection(fd), {**arg, "warm_up_fd": warm_up_fd})
                    except BaseException:
                        code = 1
                    finally:
                        os._exit(code)
                live.add(pid)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            os.close(fd)
            control.send(pid)
        elif op == "kill":
            if arg in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(arg, signal.SIGKILL)
            control.send(True)
    for pid in list(live):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":  # pragma: no cover - started by dataspace.compute.sandbox
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--zygote":
        zygote(Connection(int(sys.argv[2])), int(sys.argv[3]) if len(sys.argv) == 4 else None)
    else:
        sys.exit(
            "usage: python -m dataspace.compute.worker --zygote FD [WARM_UP_FD]"
            "  (started by the sandbox)"
        )
