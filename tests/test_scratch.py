"""Scratch names: the cheap check a node runs on open before loading the import clean-up."""

from __future__ import annotations

from pathlib import Path

from dataspace.scratch import IMPORT_PREFIX, any_named


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
