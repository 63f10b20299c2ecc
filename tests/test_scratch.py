"""Scratch names: the cheap check a node runs on open before loading the import clean-up,
and the removal of the RR22 engine's traces, which it writes outside the node."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from dataspace import scratch
from dataspace.scratch import (
    IMPORT_PREFIX,
    SPILL_PREFIX,
    UPLOAD_PREFIX,
    any_named,
    remove_libpsi_traces,
)
from dataspace.services.node import Node, open_node


def test_any_named_finds_a_prefixed_file_or_folder_at_any_depth(tmp_path: Path) -> None:
    assert not any_named(tmp_path / "missing", IMPORT_PREFIX)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "data.parquet").write_bytes(b"")
    (tmp_path / "a" / "x.importing-1-y").write_bytes(b"")  # the prefix elsewhere in a name
    assert not any_named(tmp_path, IMPORT_PREFIX)
    (tmp_path / "a" / "b" / f"{IMPORT_PREFIX}123-x.parquet").write_bytes(b"")
    assert any_named(tmp_path, IMPORT_PREFIX)
    (tmp_path / "a" / "b" / f"{IMPORT_PREFIX}123-x.parquet").unlink()
    (tmp_path / f"{IMPORT_PREFIX}9-work").mkdir()
    assert any_named(tmp_path, IMPORT_PREFIX)


def _trace(folder: Path, name: str, run: Path) -> Path:
    """A stand-in for libpsi's trace: binary framing around the engine's JSON argument."""
    path = folder / f"psi_{name}.trace"
    argument = json.dumps({"rank": 0, "input": str(run / "in.csv")})
    path.write_bytes(b"\x00\x0aT2N" + argument.encode() + b"\x12track_event")
    return path


def test_only_traces_naming_the_folder_are_removed(tmp_path: Path) -> None:
    traces, scratch_dir = tmp_path / "tmp", tmp_path / "node é" / "tmp" / "rr22"
    traces.mkdir()
    ours = _trace(traces, "A1", scratch_dir / "dataspace-rr22-1-x")  # json-escaped é
    other_node = _trace(traces, "B2", tmp_path / "other" / "tmp" / "rr22" / "run")
    longer = _trace(traces, "F6", Path(f"/mnt{scratch_dir}") / "run")  # ends like it
    unrelated = traces / "notes.trace"  # not libpsi's name
    unrelated.write_bytes(json.dumps(str(scratch_dir)).encode())
    link = traces / "psi_C3.trace"
    link.symlink_to(ours)
    assert remove_libpsi_traces(scratch_dir, traces) == [ours]
    assert sorted(p.name for p in traces.iterdir()) == sorted(
        [other_node.name, longer.name, unrelated.name, link.name])


def test_opening_a_node_removes_the_traces_of_its_rr22_runs(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = tmp_path / "system-tmp"
    traces.mkdir()
    monkeypatch.setattr(scratch, "LIBPSI_TRACES", traces)
    rr22_scratch = node.tmp_dir / "rr22"
    rr22_scratch.mkdir()
    left = _trace(traces, "D4", rr22_scratch / "dataspace-rr22-99999999-run")
    foreign = _trace(traces, "E5", tmp_path / "elsewhere")
    open_node(node.root).close()
    assert not left.exists() and foreign.exists()


def test_opening_a_node_removes_uploads_whose_server_died(node: Node) -> None:
    from dataspace.node.routers.datasets import _make_workdir

    live = _make_workdir(node)  # this process's, as the API names it
    (live / "people.csv").write_text("id\n1\n", encoding="utf-8")
    dead = node.tmp_dir / f"{UPLOAD_PREFIX}99999999-0123abcd"  # a pid no process has
    dead.mkdir()
    (dead / "people.csv").write_text("id\n110105194912310000\n", encoding="utf-8")
    open_node(node.root).close()
    assert not dead.exists() and (live / "people.csv").exists()


def test_a_dataset_read_spills_privately_and_sweeps_what_dead_readers_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataspace.catalog import sample
    from dataspace.settings import Limits

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    monkeypatch.setattr(sample, "_swept_spills", False)
    dead = system_tmp / f"{SPILL_PREFIX}99999999-x"
    dead.mkdir()
    (dead / "duckdb_temp_block-0.tmp").write_bytes(b"ID-498897")
    mine = system_tmp / f"{SPILL_PREFIX}{os.getpid()}-y"  # a read of this process, going on
    mine.mkdir()
    other = system_tmp / "dataspace-job-abc"  # not a reader's: left alone
    other.mkdir()
    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": [f"P{i}" for i in range(50)]}), data)
    seen: list[Path] = []
    with sample.open_parquet(data, Limits()) as (con, rel):
        assert con.execute(f"SELECT count(*) FROM {rel}").fetchone() == (50,)
        seen = [p for p in system_tmp.iterdir() if p not in (mine, other)]
        modes = [p.stat().st_mode & 0o777 for p in seen]
    assert len(seen) == 1 and seen[0].name.startswith(f"{SPILL_PREFIX}{scratch.process_tag()}-")
    assert modes == [0o700]
    assert sorted(system_tmp.iterdir()) == sorted([mine, other])


def test_opening_a_node_removes_staged_files_of_dead_writers_only(node: Node) -> None:
    from dataspace.scratch import STAGING_PREFIX, staging_path

    removed, kept = [], []
    for folder in (node.root / "results", node.data_dir / "mp", node.data_dir / "models",
                   node.root / "keys", node.root / "space", node.root):
        folder.mkdir(parents=True, exist_ok=True)
        dead = folder / f"{STAGING_PREFIX}99999999-abc-x.arrow"  # a pid no process has
        dead.write_bytes(b"partial")
        live = staging_path(folder / "y.arrow")  # this process is writing it
        live.write_bytes(b"partial")
        final = folder / "z.arrow"
        final.write_bytes(b"whole")
        removed.append(dead)
        kept += [live, final]
    open_node(node.root).close()
    assert [p for p in removed if p.exists()] == [] and all(p.exists() for p in kept)


def test_the_sweep_takes_an_impossible_pid_for_dead_and_leaves_other_users_entries(
    tmp_path: Path,
) -> None:
    from dataspace.scratch import sweep

    if os.getuid() != 0:
        pytest.skip("needs root to give a file to another user")
    huge = tmp_path / f"{SPILL_PREFIX}{'9' * 30}-x"  # no process id is that large
    huge.mkdir()
    theirs = tmp_path / f"{SPILL_PREFIX}99999999-y"  # dead, but another user's
    theirs.write_bytes(b"")
    os.chown(theirs, 65534, 65534)
    assert sweep(tmp_path, SPILL_PREFIX) == [huge]
    assert theirs.exists()


def test_a_reused_pid_does_not_keep_a_dead_writers_scratch_alive() -> None:
    from dataspace.scratch import is_stale, process_tag

    me = process_tag()
    pid, _, start = me.partition(".")
    assert pid == str(os.getpid()) and start.isdigit()
    assert not is_stale(f"{UPLOAD_PREFIX}{me}-abc", UPLOAD_PREFIX)  # this very process
    # the same pid, another start: a process before a restart (pid 1 of every container)
    assert is_stale(f"{UPLOAD_PREFIX}{pid}.{int(start) + 1}-abc", UPLOAD_PREFIX)
    assert not is_stale(f"{UPLOAD_PREFIX}{pid}-abc", UPLOAD_PREFIX)  # pid only: kept
    assert is_stale(f"{UPLOAD_PREFIX}99999999.5-abc", UPLOAD_PREFIX)  # no such pid


def test_a_held_lock_file_keeps_scratch_of_another_pid_namespace_alive(tmp_path: Path) -> None:
    import subprocess
    import sys

    from dataspace.scratch import is_stale, sweep_alive

    alive = tmp_path / "alive"
    alive.mkdir()
    # pid 1 of another container: here pid 1 is alive with another start time, so the pid
    # alone would call its scratch stale
    tag = "1.12345"
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys\n"
            f"fd = os.open({str(alive / tag)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    name = f"{UPLOAD_PREFIX}{tag}-abc"
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert is_stale(name, UPLOAD_PREFIX)  # by the pid: wrong for another namespace
        assert not is_stale(name, UPLOAD_PREFIX, alive)  # by its lock: alive
        os.utime(alive / tag, (0, 0))
        sweep_alive(alive)
        assert (alive / tag).exists()  # held: kept
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert is_stale(name, UPLOAD_PREFIX, alive)  # its holder is gone
    young = alive / "2.1"
    young.touch()  # not locked yet, perhaps about to be
    sweep_alive(alive)
    assert not (alive / tag).exists() and young.exists()


def test_opening_a_node_registers_the_process_and_a_normal_exit_unregisters_it(
    node: Node, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from dataspace.scratch import process_tag

    assert (node.alive_dir / process_tag()).exists()  # this test process opened it
    done = subprocess.run(
        [sys.executable, "-c", (
            "import sys\n"
            "from dataspace.scratch import process_tag\n"
            "from dataspace.services.node import open_node\n"
            "open_node(sys.argv[1]).close()\n"
            "print(process_tag())\n"
        ), str(node.root)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert not (node.alive_dir / done.stdout.strip()).exists()
