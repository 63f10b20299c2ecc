"""Read-only DuckDB access to an imported Parquet file, and column samples for the classifier.

:func:`open_parquet` is the one way profile, sample and quality code open a dataset: a fresh
in-memory DuckDB that may read that one file and nothing else, with the import limits.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

import duckdb

from dataspace.errors import DataspaceError, UnreadableInput
from dataspace.scratch import SPILL_PREFIX, process_tag, sweep
from dataspace.settings import Limits

SAMPLE_SEED = 20240101


def lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def quote(name: str) -> str:
    """A SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


_swept_spills = False


def _spill_folder() -> tempfile.TemporaryDirectory[str]:
    """A private folder (0700) for what DuckDB spills reading a dataset: raw values. Named
    after this process; the first read of a process removes those of processes that died."""
    global _swept_spills
    if not _swept_spills:
        _swept_spills = True
        sweep(Path(tempfile.gettempdir()), SPILL_PREFIX)
    return tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{process_tag()}-")


@contextlib.contextmanager
def open_parquet(
    path: Path, limits: Limits, *, threads: int | None = None
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """Yield ``(connection, relation)`` where ``relation`` is SQL reading the Parquet file."""
    path = Path(path).resolve()
    if not path.is_file():
        raise UnreadableInput(f"no dataset file at {path}", hint="import the dataset again")
    with _spill_folder() as tmp:
        con = duckdb.connect(
            ":memory:",
            config={
                "threads": threads or int(limits.import_threads),
                "memory_limit": f"{int(limits.import_memory_limit_mb)}MB",
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "temp_directory": tmp,
            },
        )
        try:
            con.execute("SET enable_progress_bar = false")
            con.execute(f"SET allowed_paths = [{lit(str(path))}]")
            con.execute(f"SET allowed_directories = [{lit(tmp + os.sep)}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            yield con, f"read_parquet({lit(str(path))})"
        except duckdb.OutOfMemoryException:
            # values too large to profile within the limit: the input's size, not a fault
            raise UnreadableInput(
                "the dataset could not be profiled within import_memory_limit_mb "
                f"({int(limits.import_memory_limit_mb)} MB): its values are too large",
                hint="raise import_memory_limit_mb in node.toml [limits], or import fewer or "
                "shorter values",
            ) from None
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataspaceError(
                f"cannot read dataset file {path.name}: {first}",
                hint="the file may be damaged; import the dataset again",
                file=str(path),
            ) from None
        finally:
            con.close()


def sample_columns(
    path: Path, *, limits: Limits, columns: Collection[str] | None = None
) -> dict[str, list[str | None]]:
    """Up to ``classify_sample_rows`` non-null values per column, as text, sampled uniformly.

    Values are rendered by DuckDB's own cast to VARCHAR, so text columns come back exactly as
    stored (identifiers keep their leading zeros and trailing X). The sample is a reservoir
    sample with a fixed seed: the same file gives the same sample.
    """
    n = int(limits.classify_sample_rows)
    out: dict[str, list[str | None]] = {}
    # a seeded reservoir sample is repeatable on one thread
    with open_parquet(path, limits, threads=1) as (con, rel):
        names = [str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()]
        for name in names:
            if columns is not None and name not in columns:
                continue
            col = quote(name)
            rows = con.execute(
                f"SELECT v FROM (SELECT CAST({col} AS VARCHAR) AS v FROM {rel} "
                f"WHERE {col} IS NOT NULL) USING SAMPLE reservoir({n} ROWS) "
                f"REPEATABLE ({SAMPLE_SEED})"
            ).fetchall()
            out[name] = [r[0] for r in rows]
    return out
