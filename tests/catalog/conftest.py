"""Fixtures for the catalog tests: limits, and small files written on demand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dataspace.catalog.ingest import ImportResult, import_file
from dataspace.settings import Limits

Write = Callable[..., Path]
Imported = Callable[..., tuple[Path, ImportResult]]


@pytest.fixture
def limits() -> Limits:
    return Limits({"import_threads": 1, "import_memory_limit_mb": 256})


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """write(name, content, encoding='utf-8') -> path in a fresh tmp dir."""

    def _write(name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        data = content if isinstance(content, bytes) else content.encode(encoding)
        path.write_bytes(data)
        return path

    return _write


@pytest.fixture
def imported(tmp_path: Path, write: Write, limits: Limits) -> Imported:
    """imported(name, content, encoding='utf-8') -> (parquet path, ImportResult)."""

    def _imported(
        name: str, content: str | bytes, encoding: str = "utf-8"
    ) -> tuple[Path, ImportResult]:
        src = write(name, content, encoding)
        dest = tmp_path / "data" / (src.stem + ".parquet")
        return dest, import_file(src, dest, limits=limits)

    return _imported
