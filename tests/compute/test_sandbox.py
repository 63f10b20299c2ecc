"""The locked worker runs checked queries, enforces its limits and survives failures."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from dataspace.compute import (
    QueryFailed,
    QueryOutOfMemory,
    QueryTimeout,
    ResultTooLarge,
    SqlPolicy,
    WorkerCrashed,
    check_query,
)
from dataspace.compute import sandbox as sb
from dataspace.compute.sandbox import QueryResult, SandboxLimits, _UnsafeRawQuery, run_query
from dataspace.errors import NotFound, UsageError

COUNT_BY_CITY = "SELECT city, count(*) AS n, sum(age) AS ages FROM people GROUP BY city ORDER BY n"


def test_min_group_size_releases_only_groups_of_at_least_k(
    people_parquet: Path, make_policy, limits: SandboxLimits
) -> None:
    for k in (1, 3, 10, 11):
        checked = check_query(COUNT_BY_CITY, make_policy(min_group_size=k))
        result = run_query(people_parquet, "people", checked, limits)
        sizes = result.table.column("n").to_pylist()
        assert sizes == list(range(max(k, 1), 11))
        assert result.table.column("city").to_pylist() == [f"c{n}" for n in sizes]


def test_without_group_by_the_whole_result_is_suppressed_below_k(
    people_parquet: Path, make_policy, limits: SandboxLimits
) -> None:
    policy = make_policy(min_group_size=5)
    small = check_query("SELECT count(*) AS n FROM people WHERE city = 'c4'", policy)
    assert run_query(people_parquet, "people", small, limits).table.num_rows == 0
    large = check_query("SELECT count(*) AS n FROM people WHERE city = 'c5'", policy)
    assert run_query(people_parquet, "people", large, limits).table.to_pylist() == [{"n": 5}]


def test_result_carries_usage_figures(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    result = run_query(people_parquet, "people", check_query(COUNT_BY_CITY, policy), limits)
    assert isinstance(result, QueryResult)
    assert result.rows_scanned == 55
    assert result.result_rows == 6 == result.table.num_rows
    assert result.table.column_names == ["city", "n", "ages"]
    assert result.bytes_out > 0
    assert result.cpu_seconds >= 0
    assert 0 < result.wall_seconds < 10


def test_symlinked_dataset_path_is_resolved(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits, tmp_path: Path
) -> None:
    link = tmp_path / "link.parquet"
    link.symlink_to(people_parquet)
    result = run_query(
        link, "people", check_query("SELECT count(*) AS n FROM people", policy), limits
    )
    assert result.table.to_pylist() == [{"n": 55}]


def test_missing_dataset_and_wrong_table_are_refused(
    people_parquet: Path, policy: SqlPolicy, tmp_path: Path
) -> None:
    checked = check_query("SELECT count(*) FROM people", policy)
    with pytest.raises(NotFound):
        run_query(tmp_path / "gone.parquet", "people", checked)
    with pytest.raises(UsageError, match="checked for table 'people'"):
        run_query(people_parquet, "other", checked)


def test_timeout_interrupts_a_slow_query_and_the_next_query_works(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    slow = SandboxLimits(**{**limits.__dict__, "timeout_seconds": 0.5})
    bomb = _UnsafeRawQuery("SELECT count(*) FROM range(1000000000000) a, range(1000000) b")
    with pytest.raises(QueryTimeout, match="interrupted"):
        run_query(people_parquet, "people", bomb, slow)
    ok = run_query(
        people_parquet, "people", check_query("SELECT count(*) AS n FROM people", policy), slow
    )
    assert ok.table.to_pylist() == [{"n": 55}]


def test_worker_that_does_not_stop_is_killed_after_the_grace_period(
    people_parquet: Path, limits: SandboxLimits
) -> None:
    worker = sb._Worker(limits)
    job = {"path": str(people_parquet), "table": "people", "gate": True, "timeout": 60.0,
           "sql": "SELECT count(*) FROM range(1000000000000) a, range(1000000) b",
           "max_rows": 10, "max_bytes": 1000}  # fmt: skip
    try:
        with pytest.raises(QueryTimeout, match="worker was killed"):
            worker.ask(job, wait=0.5)
        assert sb._wait_eof(worker.conn, 5.0), "the killed worker is gone"
    finally:
        worker.finish()
    assert not Path(worker.temp_dir).exists()


def test_memory_limit_refuses_a_memory_bomb(people_parquet: Path, limits: SandboxLimits) -> None:
    small = SandboxLimits(**{**limits.__dict__, "memory_limit_mb": 64, "max_temp_mb": 16})
    with pytest.raises(QueryOutOfMemory, match="out of memory"):
        run_query(
            people_parquet,
            "people",
            _UnsafeRawQuery("SELECT list(range) FROM range(200000000)"),
            small,
        )


def test_result_caps_refuse_oversized_results(
    people_parquet: Path, make_policy, limits: SandboxLimits
) -> None:
    raw = make_policy(output="raw")
    rows = check_query("SELECT city, age FROM people", raw)
    with pytest.raises(ResultTooLarge, match="more than 10 rows"):
        run_query(
            people_parquet,
            "people",
            rows,
            SandboxLimits(**{**limits.__dict__, "max_result_rows": 10}),
        )
    with pytest.raises(ResultTooLarge, match="bytes"):
        run_query(
            people_parquet,
            "people",
            rows,
            SandboxLimits(**{**limits.__dict__, "max_result_bytes": 100}),
        )


def test_temp_dir_is_private_and_wiped(people_parquet: Path, limits: SandboxLimits) -> None:
    root = Path(str(limits.temp_root))
    before = set(root.iterdir())
    seen: list[str] = []
    original = sb._Worker.send

    def spy(self: sb._Worker, job: dict) -> None:
        seen.append(self.temp_dir)
        assert oct(os.stat(self.temp_dir).st_mode & 0o777) == "0o700"
        original(self, job)

    sb._Worker.send = spy  # type: ignore[method-assign]
    try:
        # without the one-SELECT gate COPY can write into the temp dir (cwd); it must not survive
        run_query(
            people_parquet,
            "people",
            _UnsafeRawQuery("COPY people TO 'leak.csv'", gate=False),
            limits,
        )
    finally:
        sb._Worker.send = original  # type: ignore[method-assign]
    sb.settle()
    assert seen and not Path(seen[0]).exists()
    for old in before:
        assert not old.exists()
    assert not list(root.rglob("leak.csv"))
    # only the next, unused worker's dir, holding nothing but its lock marker
    assert all({p.name for p in d.iterdir()} <= {sb.LOCK_MARKER} for d in root.iterdir())



def test_a_spare_worker_whose_temp_dir_was_removed_is_not_used(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    """A /tmp cleaner (or an operator) may remove the waiting spare's dir: the next query
    must still run, on a fresh worker."""
    count = check_query("SELECT count(*) AS n FROM people", policy)
    assert run_query(people_parquet, "people", count, limits).table.to_pylist() == [{"n": 55}]
    sb.settle()  # the spare for the next job is ready
    spares = [d for d in Path(str(limits.temp_root)).iterdir() if d.is_dir()]
    assert spares
    for spare in spares:
        for child in spare.iterdir():
            child.unlink()
        spare.rmdir()
    assert run_query(people_parquet, "people", count, limits).table.to_pylist() == [{"n": 55}]

def test_worker_crash_is_reported_and_the_next_query_works(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    original = sb._Worker.send

    def crash(self: sb._Worker, job: dict) -> None:
        threading.Timer(0.3, os.kill, (self.pid, signal.SIGKILL)).start()
        original(self, job)

    sb._Worker.send = crash  # type: ignore[method-assign]
    try:
        with pytest.raises(WorkerCrashed, match="died without an answer"):
            run_query(
                people_parquet,
                "people",
                _UnsafeRawQuery("SELECT count(*) FROM range(1000000000000) a, range(100) b"),
                limits,
            )
    finally:
        sb._Worker.send = original  # type: ignore[method-assign]
    ok = run_query(
        people_parquet, "people", check_query("SELECT count(*) AS n FROM people", policy), limits
    )
    assert ok.table.to_pylist() == [{"n": 55}]


def test_a_started_query_can_be_cancelled_unread(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    running = sb.start_query(
        people_parquet,
        "people",
        _UnsafeRawQuery("SELECT count(*) FROM range(1000000000000) a, range(100) b"),
        limits,
    )
    worker = running._worker
    running.cancel()
    assert worker.conn.closed
    assert not Path(worker.temp_dir).exists()
    with pytest.raises(UsageError, match="already been collected or cancelled"):
        running.result()
    ok = sb.start_query(
        people_parquet, "people", check_query("SELECT count(*) AS n FROM people", policy), limits
    )
    assert ok.result().table.to_pylist() == [{"n": 55}]


def test_queries_beyond_the_worker_bound_are_refused_until_one_ends(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    """Each worker has its own memory and temp space: at most ``max_workers`` run at once,
    one more is refused at once (503, nothing run), and a slot frees when a query ends —
    collected, cancelled or failed."""
    import dataclasses

    from dataspace.compute.errors import SandboxBusy

    bounded = dataclasses.replace(limits, max_workers=2)
    checked = check_query("SELECT count(*) AS n FROM people", policy)
    first = sb.start_query(people_parquet, "people", checked, bounded)
    second = sb.start_query(people_parquet, "people", checked, bounded)
    with pytest.raises(SandboxBusy, match="all 2 query workers") as refused:
        sb.start_query(people_parquet, "people", checked, bounded)
    assert refused.value.http_status == 503
    first.cancel()
    third = sb.start_query(people_parquet, "people", checked, bounded)
    assert second.result().table.to_pylist() == third.result().table.to_pylist() == [{"n": 55}]
    failing = sb.start_query(people_parquet, "people", _UnsafeRawQuery("SELECT 1 // 0"), bounded)
    with pytest.raises(QueryFailed):
        failing.result()
    slots = [sb.start_query(people_parquet, "people", checked, bounded) for _ in range(2)]
    assert [s.result().table.num_rows for s in slots] == [1, 1]


def test_the_workers_do_not_inherit_the_nodes_environment(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tokens or database URLs a node is given as variables stay with the node process."""
    monkeypatch.setenv("DATASPACE_TEST_SECRET", "s3cr3t")
    monkeypatch.setenv("TZ", "Asia/Shanghai")  # kept: hour() of a TIMESTAMPTZ depends on it
    old = sb._get_zygote()
    old.process.kill()
    old.process.wait()
    run_query(
        people_parquet, "people", check_query("SELECT count(*) AS n FROM people", policy), limits
    )
    zygote = sb._get_zygote()
    assert zygote is not old
    environ = Path(f"/proc/{zygote.process.pid}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0] for item in environ if item}
    assert b"DATASPACE_TEST_SECRET" not in names and {b"PATH", b"TZ"} <= names


def test_job_dirs_a_dead_node_left_are_swept_and_a_live_nodes_are_kept(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits, tmp_path: Path
) -> None:
    """A node killed mid-query leaves its workers' spill dirs; the next node to run a query
    with the same temp root removes them, but not those another live node holds."""
    import dataclasses
    import fcntl

    root = tmp_path / "shared-temp"
    root.mkdir()
    old = time.time() - 3600
    orphan, held, young, foreign = (
        root / f"dataspace-job-{n}" for n in ("orphan", "held", "young", "foreign")
    )
    for folder in (orphan, held, young, foreign):
        folder.mkdir()
        (folder / "duckdb_temp_storage.tmp").write_bytes(b"spilled rows")
        if folder is not foreign:  # a dir of another version of the program takes no lock
            (folder / sb.LOCK_MARKER).touch()
    for folder in (orphan, held, foreign):
        os.utime(folder, (old, old))
    lock = os.open(held, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)  # another live node's worker
    try:
        shared = dataclasses.replace(limits, temp_root=str(root))
        run_query(people_parquet, "people",
                  check_query("SELECT count(*) AS n FROM people", policy), shared)
        assert not orphan.exists()
        assert held.exists() and young.exists() and foreign.exists()
    finally:
        os.close(lock)


def test_a_worker_that_cannot_start_leaves_no_dir_or_descriptor(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    import dataclasses

    root = tmp_path / "own-temp"
    root.mkdir()
    bounded = dataclasses.replace(limits, temp_root=str(root))

    def down() -> sb._Zygote:
        raise OSError("the process server cannot start")

    monkeypatch.setattr(sb, "_get_zygote", down)
    for _ in range(3):
        with pytest.raises(OSError):
            sb._Worker(bounded)
    assert list(root.iterdir()) == []
    # no descriptor of this process still points into that temp root (other tests' workers
    # open and close descriptors in the background meanwhile: count them no other way)
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    assert not [target for target in held if target.startswith(str(root))]


def test_process_server_restarts_after_it_dies(
    people_parquet: Path, policy: SqlPolicy, limits: SandboxLimits
) -> None:
    run_query(
        people_parquet, "people", check_query("SELECT count(*) AS n FROM people", policy), limits
    )
    zygote = sb._get_zygote()
    zygote.process.kill()
    zygote.process.wait()
    ok = run_query(
        people_parquet, "people", check_query("SELECT count(*) AS n FROM people", policy), limits
    )
    assert ok.table.to_pylist() == [{"n": 55}]


def test_limits_read_from_node_settings() -> None:
    limits = SandboxLimits.from_limits(
        {"sandbox_timeout_seconds": 5.0, "sandbox_threads": 1, "other": 1}
    )
    assert (limits.timeout_seconds, limits.threads, limits.memory_limit_mb) == (5.0, 1, 512)


@pytest.mark.parametrize("fails", ["warm-up file", "process start"])
def test_a_process_server_that_cannot_start_leaves_no_socket_open(
    monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    import gc
    import warnings

    def refused(*args: object, **kwargs: object) -> object:
        raise OSError(24, "Too many open files")

    if fails == "warm-up file":
        monkeypatch.setattr(sb, "_warm_up_file", refused)
    else:
        monkeypatch.setattr(sb.subprocess, "Popen", refused)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(OSError, match="Too many open files"):
            sb._Zygote()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_the_warm_up_file_leaves_nothing_and_sweeps_what_a_killed_process_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    left = tmp_path / f"{sb.WARM_UP_PREFIX}99999999.1-abc"  # a pid no process has
    left.mkdir()
    (left / "warm-up.parquet").write_bytes(b"PAR1")
    fd = sb._warm_up_file()
    try:
        assert os.read(fd, 4) == b"PAR1"  # readable through the descriptor alone
    finally:
        os.close(fd)
    assert list(tmp_path.iterdir()) == []
