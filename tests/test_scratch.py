"""Scratch names: the cheap check a node runs on open before loading the import clean-up,
and the removal of the RR22 engine's traces, which it writes outside the node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataspace import scratch
from dataspace.scratch import IMPORT_PREFIX, any_named, remove_libpsi_traces
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
    unrelated = traces / "notes.trace"  # not libpsi's name
    unrelated.write_bytes(json.dumps(str(scratch_dir)).encode())
    link = traces / "psi_C3.trace"
    link.symlink_to(ours)
    assert remove_libpsi_traces(scratch_dir, traces) == [ours]
    assert sorted(p.name for p in traces.iterdir()) == sorted(
        [other_node.name, unrelated.name, link.name])


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
