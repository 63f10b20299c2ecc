"""Import a CSV/TSV, JSON Lines or Parquet file into one Parquet file, streaming.

The engine is DuckDB, in-process and locked down for the duration of one import: it may read
the source file and write only inside a private work directory next to ``dest``; extension
autoinstall/autoload are off; ``memory_limit`` and ``threads`` come from :class:`Limits`.

Pipeline for CSV/TSV:

1. read ``sniff_bytes`` from the top: refuse empty and binary files, detect the encoding
   (UTF-8, UTF-8 with BOM, UTF-16 with BOM, GBK, GB18030), sniff the delimiter among
   ``, \\t ; |`` and read the header (empty or duplicate names are an error);
2. GBK/GB18030/UTF-16 files are transcoded to UTF-8 in the work directory, 1 MiB at a time;
3. one DuckDB pass reads every value as text and decides each column's type over *all* rows
   (see :data:`TYPE_RULE`); a second pass casts and writes Parquet (zstd).

The Parquet file is written in the work directory (named ``.importing-<dest>-*``), fsynced
and moved into place with :func:`os.replace`, so ``dest`` either holds a complete import or
nothing. :func:`cleanup_partial_imports` removes work directories left by a killed import.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace import scratch
from dataspace.catalog import encoding as enc
from dataspace.errors import DataspaceError, UnreadableInput, UsageError
from dataspace.settings import Limits

PARTIAL_PREFIX = scratch.IMPORT_PREFIX

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

TYPE_RULE = """\
A CSV column gets a type only if every non-empty value in the whole file fits it:
BOOLEAN (true/false), BIGINT, DOUBLE, DATE (YYYY-MM-DD), TIMESTAMP (YYYY-MM-DD hh:mm[:ss]).
Missing-value markers (N/A, NA, #N/A, NULL, None, NaN, 空; any case) are missing
values in such a column, and the import's notes say how many were read so. A column of
numbers kept as text because of a few other values is named in the notes, with them.
A column stays VARCHAR, whatever else it holds, if any value is an identifier-like digit
string: a leading zero (00123), 11 or more digits, signed or not (phone, bank card, ID
numbers, +8613812345678; also when a spreadsheet wrote them as 13812345678.0) or 17 digits
followed by a digit or X (resident ID). A number that would not read back from a DOUBLE as
written is not a DOUBLE: more than 17 significant digits, or 16–17 that are not the DOUBLE's
shortest form (0.30000000000000004 is; 12345678901234567.89 is not). Dates in other
spellings stay VARCHAR."""

_INT = r"[+-]?[0-9]+"
_NUM = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
_IDENT = r"[+-]?0[0-9]+|[+-]?[0-9]{11,}(\.0+)?|[0-9]{17}[0-9Xx]"
#: significant digits every DOUBLE reads back as written (16-17 only when they are its
#: shortest form: see _reads_back)
_DOUBLE_DIGITS = 15
_COLUMNS_PER_SCAN = 32
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TS = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
#: what spreadsheets and exports write for "no value" (compared in lower case): in a column
#: of numbers, dates or booleans otherwise they are missing values, not a reason for text
#: (not "-" or "无": a spreadsheet's dash or "none" is often a zero, which is no missing value)
MISSING = ("n/a", "na", "#n/a", "null", "none", "nan", "空")
_MISSING_SQL = "(" + ", ".join("'" + m + "'" for m in MISSING) + ")"
#: a column this share of whose values are numbers, yet kept as text, is named in a note
_MOSTLY = 0.9
_NOTES_MAX = 20  # notes of an import (a wide file of such columns gets a count of the rest)
_MARKED = "+missing"  # suffix of an inferred type: the column holds missing-value markers


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class ImportResult:
    rows: int
    columns: tuple[Column, ...]
    source_format: str
    source_encoding: str | None
    bytes: int
    sha256: str
    delimiter: str | None = None
    #: what the import decided that the provider should know (values read as missing, a
    #: column of numbers kept as text because of one value)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": [{"name": c.name, "type": c.type} for c in self.columns],
            "source_format": self.source_format,
            "source_encoding": self.source_encoding,
            "delimiter": self.delimiter,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "notes": list(self.notes),
        }


# --- public API ---------------------------------------------------------------------------


def import_file(src: Path, dest: Path, *, limits: Limits, fmt: str | None = None) -> ImportResult:
    """Convert ``src`` into one Parquet file at ``dest`` (atomically replaced)."""
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise enc.fail(src, "no such file", "check the path and try again")
    try:
        fmt = _resolve_format(src, fmt, limits)
        dest.parent.mkdir(parents=True, exist_ok=True)
        prefix = f"{PARTIAL_PREFIX}{scratch.process_tag()}-{dest.name}-"
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))
    except OSError as exc:
        raise _os_error(src, dest, exc) from None
    try:
        out = work / "out.parquet"
        source = _safe_source(src.resolve(), work)
        before = _fingerprint(source)
        with _connect(limits, work, source) as con:
            encoding: str | None
            delimiter: str | None
            notes: list[str] = []
            if fmt in ("csv", "tsv"):
                encoding, delimiter = _import_csv(con, src, source, out, work, fmt, limits,
                                                  notes)
            elif fmt == "jsonl":
                encoding, delimiter = _import_jsonl(con, src, source, out, work, limits), None
            else:
                _import_parquet(con, src, source, out)
                encoding, delimiter = None, None
            rows, columns = _describe(con, out)
        if _fingerprint(source) != before:
            # Read in two passes (types, then rows): a file rewritten between them would be
            # stored under the first pass's header and types.
            raise enc.fail(src, "the file changed while it was imported",
                           "import it again once nothing writes to it")
        if rows == 0:
            raise enc.fail(src, "no data rows", "the file has no rows to import; add rows")
        digest, size = _sha256(out)
        scratch.fsync_path(out)
        os.replace(out, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        raise _os_error(src, dest, exc) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ImportResult(rows, columns, fmt, encoding, size, digest, delimiter, _capped(notes))


def _os_error(src: Path, dest: Path, exc: OSError) -> DataspaceError:
    return DataspaceError(
        f"cannot import {src.name}: {exc.strerror or exc} ({exc.filename or dest})",
        hint="check that the file is readable and the data directory writable, with free space",
        file=str(src),
    )


def cleanup_partial_imports(data_dir: Path, alive: Path | None = None) -> list[Path]:
    """Remove ``.importing-<pid>-*`` leftovers of killed imports anywhere under ``data_dir``.

    Only leftovers whose writing process is gone are removed, so a node may be opened (by the
    CLI, say) while its server is importing.
    """
    removed: list[Path] = []
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return removed
    for root, dirs, files in os.walk(data_dir):
        for name in [d for d in dirs if is_stale(d, alive)]:
            path = Path(root) / name
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            dirs.remove(name)
        for name in files:
            if is_stale(name, alive):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def is_stale(name: str, alive: Path | None = None) -> bool:
    """True for a ``.importing-<pid>-`` name whose process is gone (see scratch.is_stale)."""
    return scratch.is_stale(name, PARTIAL_PREFIX, alive)


# --- format detection ---------------------------------------------------------------------


def _resolve_format(src: Path, fmt: str | None, limits: Limits) -> str:
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = {"json": "jsonl", "ndjson": "jsonl", "txt": "csv"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise UsageError(
                f"unknown import format '{fmt}'", hint="use one of: " + ", ".join(FORMATS)
            )
        return fmt
    by_ext = _EXTENSIONS.get(src.suffix.lower())
    prefix, _ = enc.read_prefix(src, 4096)
    if prefix.startswith(b"PAR1"):
        return "parquet"
    if by_ext:
        return by_ext
    if prefix.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "jsonl"
    return "csv"


# --- DuckDB -------------------------------------------------------------------------------


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def _connect(limits: Limits, work: Path, source: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    (work / "duckdb.tmp").mkdir(exist_ok=True)
    con = duckdb.connect(
        ":memory:",
        config={
            "threads": int(limits.import_threads),
            "memory_limit": f"{int(limits.import_memory_limit_mb)}MB",
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "temp_directory": str(work / "duckdb.tmp"),
        },
    )
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET allowed_paths = [{_lit(str(source))}]")
        con.execute(f"SET allowed_directories = [{_lit(str(work) + os.sep)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        yield con
    finally:
        con.close()


def _fingerprint(path: Path) -> tuple[int, int, int]:
    found = path.stat()
    return found.st_size, found.st_mtime_ns, found.st_ino


def _safe_source(src: Path, work: Path) -> Path:
    """DuckDB expands globs in paths; copy a source whose path contains glob characters."""
    if any(ch in str(src) for ch in "*?[]{}"):
        copy = work / ("source" + src.suffix.lower())
        shutil.copyfile(src, copy)
        return copy
    return src


def _library_error(src: Path, exc: duckdb.Error) -> DataspaceError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, duckdb.OutOfMemoryException):
        return UnreadableInput(
            f"cannot import {src.name}: out of memory ({first})",
            hint="raise import_memory_limit_mb in node.toml [limits]",
            file=src.name,
        )
    return enc.fail(src, f"the file could not be read ({first})", "check its format")


def _copy(con: duckdb.DuckDBPyConnection, select: str, out: Path) -> None:
    con.execute(f"COPY ({select}) TO {_lit(str(out))} (FORMAT parquet, COMPRESSION zstd)")


def _describe(con: duckdb.DuckDBPyConnection, out: Path) -> tuple[int, tuple[Column, ...]]:
    rel = f"read_parquet({_lit(str(out))})"
    rows_row = con.execute(f"SELECT count(*) FROM {rel}").fetchone()
    cols = con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
    return int(rows_row[0] if rows_row else 0), tuple(Column(str(c[0]), str(c[1])) for c in cols)


# --- CSV ----------------------------------------------------------------------------------


def _import_csv(
    con: duckdb.DuckDBPyConnection,
    src: Path,
    source: Path,
    out: Path,
    work: Path,
    fmt: str,
    limits: Limits,
    notes: list[str],
) -> tuple[str, str]:
    prefix, complete = enc.read_prefix(source, int(limits.sniff_bytes))
    if not prefix.strip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").strip():
        raise enc.fail(src, "the file is empty", "export the data again with a header and rows")
    enc.check_not_binary(src, prefix)
    encoding = enc.detect_encoding(src, prefix, complete, source)
    text = enc.decode_prefix(prefix, encoding, complete)
    dialect = enc.sniff_dialect(src, text, complete, "\t" if fmt == "tsv" else None)
    data = source
    if encoding not in ("utf-8", "utf-8-sig"):
        data = work / "source.utf8.csv"
        encoding = enc.transcode_to_utf8(source, data, encoding)
    names = dialect.header
    columns = "{" + ", ".join(f"{_lit(n)}: 'VARCHAR'" for n in names) + "}"
    reader = (
        f"read_csv({_lit(str(data))}, delim={_lit(dialect.delimiter)}, quote='\"', "
        f"escape='\"', header=true, auto_detect=false, columns={columns}, "
        f"max_line_size={int(limits.import_max_line_bytes)}, strict_mode=true, "
        f"null_padding=false)"
    )
    try:
        types = _infer_types(con, reader, names, notes)
        if types is None:
            raise enc.fail(
                src, "no data rows (only a header)", "add rows below the header and import again"
            )
        select = ", ".join(_cast(n, t) for n, t in zip(names, types, strict=True))
        _copy(con, f"SELECT {select} FROM {reader}", out)
    except duckdb.OutOfMemoryException as exc:
        raise _library_error(src, exc) from None
    except duckdb.Error:
        raise enc.diagnose_csv(src, data, encoding, dialect,
                               int(limits.import_max_line_bytes)) from None  # fmt: skip
    return encoding, dialect.delimiter


def _infer_types(
    con: duckdb.DuckDBPyConnection, reader: str, names: list[str], notes: list[str]
) -> list[str] | None:
    """Each column's type from its values; ``None`` for no rows. A few columns a scan: one
    query over all of a 400-column file took half a minute (its plan grows faster than its
    width). What a provider should know of the decisions is added to ``notes``."""
    types: list[str] = []
    for start in range(0, max(len(names), 1), _COLUMNS_PER_SCAN):
        chunk = _infer_chunk(con, reader, names[start : start + _COLUMNS_PER_SCAN], notes)
        if chunk is None:
            return None
        types += chunk
    return types


def _infer_chunk(
    con: duckdb.DuckDBPyConnection, reader: str, names: list[str], notes: list[str]
) -> list[str] | None:
    parts = ["count(*)"]
    for name in names:
        v = f"trim({quote(name)})"
        marker = f"lower({v}) IN {_MISSING_SQL}"
        number = (f"regexp_full_match({v}, '{_NUM}') AND isfinite(try_cast({v} AS DOUBLE)) "
                  f"AND {_reads_back(v)}")
        parts += [
            f"count({quote(name)}) - count(*) FILTER (WHERE {marker})",
            f"count(*) FILTER (WHERE {marker})",
            f"count(*) FILTER (WHERE lower({v}) IN ('true', 'false'))",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_INT}') "
            f"AND try_cast({v} AS BIGINT) IS NOT NULL)",
            f"count(*) FILTER (WHERE {number})",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_DATE}') "
            f"AND try_cast({v} AS DATE) IS NOT NULL)",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_TS}') "
            f"AND try_cast({v} AS TIMESTAMP) IS NOT NULL)",
            f"coalesce(bool_or(regexp_full_match({v}, '{_IDENT}')), false)",
            # examples for the notes, from this same scan: markers, and what is no number
            f"min({v}) FILTER (WHERE {marker})",
            f"max({v}) FILTER (WHERE {marker})",
            f"min({v}) FILTER (WHERE NOT ({number}) AND NOT ({marker}))",
        ]
    width = 11
    row = con.execute(f"SELECT {', '.join(parts)} FROM {reader}").fetchone()
    if row is None or row[0] == 0:
        return None
    types: list[str] = []
    for i, name in enumerate(names):
        # n: the values that are not missing-value markers; missing: the markers
        (n, missing, boolean, integer, number, date, ts, ident, first_marker, last_marker,
         other) = row[1 + width * i : 1 + width * (i + 1)]
        if n == 0 or ident:  # text whatever it holds: its markers stay text too
            types.append("VARCHAR")
            continue
        if boolean == n:
            types.append("BOOLEAN")
        elif integer == n:
            types.append("BIGINT")
        elif number == n:
            types.append("DOUBLE")
        elif date == n:
            types.append("DATE")
        elif date + ts == n:
            types.append("TIMESTAMP")
        else:
            types.append("VARCHAR")
            if number >= _MOSTLY * (n + missing):
                notes.append(f"{name}: kept as text, though {number:,} of its "
                             f"{n + missing:,} values are numbers (the others include "
                             f"{other!r}); correct those and import again to compute on it")
            continue
        if missing:
            seen = sorted({first_marker, last_marker})
            notes.append(f"{name}: {missing:,} value(s) read as missing ("
                         + ", ".join(repr(x) for x in seen) + ")")
            types[-1] += _MARKED  # cast with its markers read as missing
    return types


def _capped(notes: list[str]) -> tuple[str, ...]:
    """At most :data:`_NOTES_MAX` notes; the rest are counted in one more."""
    if len(notes) <= _NOTES_MAX:
        return tuple(notes)
    return (*notes[:_NOTES_MAX], f"and {len(notes) - _NOTES_MAX} more column(s) like these")


def _reads_back(v: str) -> str:
    """SQL: the number ``v`` comes back from a DOUBLE as written. Up to 15 significant digits
    always do (trailing zeros of a fraction are none); 16 or 17 do when the DOUBLE's shortest
    form is the text itself (0.30000000000000004, as Python and pandas write it)."""
    mantissa = f"regexp_replace(split_part(lower({v}), 'e', 1), '(\\.[0-9]*?)0+$', '\\1')"
    digits = f"length(ltrim(regexp_replace({mantissa}, '[^0-9]', '', 'g'), '0'))"
    written = f"regexp_replace(ltrim({mantissa}, '+'), '\\.$', '')"
    return (f"({digits} <= {_DOUBLE_DIGITS} OR ({digits} <= 17 AND "
            f"CAST(try_cast({v} AS DOUBLE) AS VARCHAR) = {written}))")


def _cast(name: str, type_: str) -> str:
    col = quote(name)
    if type_ == "VARCHAR":
        return col
    cast = "CAST"
    if type_.endswith(_MARKED):
        # every other value of the column passed this cast when its type was inferred, so
        # only the markers come out NULL (a CASE over the markers ran a 200-column import out
        # of memory)
        type_, cast = type_.removesuffix(_MARKED), "try_cast"
    if type_ == "BOOLEAN":
        return f"{cast}(lower(trim({col})) AS BOOLEAN) AS {col}"
    if type_ == "DOUBLE" and cast == "try_cast":  # 'NaN' would cast to a NaN, not to NULL
        return f"try_cast(nullif(lower(trim({col})), 'nan') AS DOUBLE) AS {col}"
    return f"{cast}(trim({col}) AS {type_}) AS {col}"


# --- JSON Lines ---------------------------------------------------------------------------


def _import_jsonl(
    con: duckdb.DuckDBPyConnection,
    src: Path,
    source: Path,
    out: Path,
    work: Path,
    limits: Limits,
) -> str:
    prefix, complete = enc.read_prefix(source, int(limits.sniff_bytes))
    if not prefix.strip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").strip():
        raise enc.fail(src, "the file is empty", "export the data again, one JSON object a line")
    enc.check_not_binary(src, prefix)
    encoding = enc.detect_encoding(src, prefix, complete, source)
    data = source
    if encoding not in ("utf-8", "utf-8-sig"):
        data = work / "source.utf8.jsonl"
        encoding = enc.transcode_to_utf8(source, data, encoding)
    def reader(columns: str = "") -> str:
        return (
            f"read_json({_lit(str(data))}, format='auto', records=true, sample_size=-1, "
            f"maximum_object_size={int(limits.import_max_line_bytes)}, dateformat='%Y-%m-%d'"
            f"{columns})"
        )

    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader()}").fetchall()
        enc.check_names(src, [str(r[0]) for r in described])
        kept = _lossy_doubles_as_text(con, reader, described)
        fixed = _columns(kept) if kept != described else ""  # else as DuckDB reads it
        described, select = _scalar_json_as_text(con, reader(fixed), kept)
        _check_flat(src, described, "write one field per key (no nested objects or arrays)")
        _copy(con, f"SELECT {select} FROM {reader(fixed)}", out)
    except duckdb.OutOfMemoryException as exc:
        raise _library_error(src, exc) from None
    except duckdb.Error:
        raise enc.diagnose_jsonl(src, encoding) from None
    return encoding


def _columns(described: list[Any]) -> str:
    """read_json's ``columns`` argument fixing every key's type as described."""
    pairs = ", ".join(f"{_lit(str(r[0]))}: {_lit(str(r[1]))}" for r in described)
    return f", columns={{{pairs}}}" if described else ""


def _lossy_doubles_as_text(
    con: duckdb.DuckDBPyConnection, reader: Callable[[str], str], described: list[Any]
) -> list[Any]:
    """A key DuckDB reads as DOUBLE because one line holds a number past 64 bits would turn
    every 18-digit ID number on the other lines into a rounded float: a DOUBLE key whose
    numbers do not all come back as written is text instead (the CSV rule, ``_reads_back``)."""
    doubles = [str(r[0]) for r in described if str(r[1]) == "DOUBLE"]
    if not doubles:
        return described
    as_text = reader(_columns([(r[0], "VARCHAR") for r in described]))
    checks = []
    for name in doubles:
        v = f"trim({quote(name)})"
        checks.append(
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_NUM}') AND NOT {_reads_back(v)})"
        )
    row = con.execute(f"SELECT {', '.join(checks)} FROM {as_text}").fetchone()
    lossy = {name for name, n in zip(doubles, row or (), strict=False) if n}
    return [(r[0], "VARCHAR", *r[2:]) if str(r[0]) in lossy else r for r in described]


def _scalar_json_as_text(
    con: duckdb.DuckDBPyConnection, reader: str, described: list[Any]
) -> tuple[list[Any], str]:
    """A key that is a number on some lines and a string on others (an ID exported as a
    number where its check character is a digit, quoted where it is X) comes back as JSON:
    as long as no line holds an object or array there, it is text, written as on the line."""
    mixed = [str(r[0]) for r in described if str(r[1]) == "JSON"]
    flat = set()
    for name in mixed:
        nested = con.execute(
            f"SELECT count(*) FROM {reader} WHERE json_type({quote(name)}) IN ('OBJECT', 'ARRAY')"
        ).fetchone()
        if nested is not None and nested[0] == 0:
            flat.add(name)
    columns = [
        f"json_extract_string({quote(str(r[0]))}, '$') AS {quote(str(r[0]))}"
        if str(r[0]) in flat else quote(str(r[0]))
        for r in described
    ]
    kept = [(r[0], "VARCHAR", *r[2:]) if str(r[0]) in flat else r for r in described]
    return kept, ", ".join(columns) if columns else "*"


def _is_nested(kind: str) -> bool:
    # JSON: what DuckDB makes of a JSON Lines key holding objects on some rows, text on others
    return (kind.endswith("]") or kind in ("JSON", "VARIANT")
            or any(t in kind for t in ("STRUCT", "MAP(", "UNION(")))


def _check_flat(src: Path, described: list[Any], hint: str) -> None:
    """Refuse nested columns (STRUCT, LIST, ARRAY, MAP, UNION): classification and grading
    read flat values, so a mobile number inside ``contact.mobile`` would go ungraded."""
    nested = [f"{name} ({kind})" for name, kind, *_ in described if _is_nested(str(kind))]
    if nested:
        raise enc.fail(
            src,
            f"nested column(s) {', '.join(nested[:5])}: personal data inside them could not be "
            "classified or graded",
            hint,
        )


# --- Parquet ------------------------------------------------------------------------------


def _import_parquet(con: duckdb.DuckDBPyConnection, src: Path, source: Path, out: Path) -> None:
    prefix, _ = enc.read_prefix(source, 4)
    if not prefix:
        raise enc.fail(src, "the file is empty", "export the Parquet file again")
    if prefix != b"PAR1":
        raise enc.fail(src, "not a Parquet file (no PAR1 header)", "check the file or its format")
    reader = f"read_parquet({_lit(str(source))})"
    # the file's own names: the engine renames a duplicate (m, m_1) before DESCRIBE; an
    # unreadable footer is reported below, as the engine words it
    with contextlib.suppress(pa.ArrowException, OSError):
        enc.check_names(src, list(pq.read_schema(source).names))
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
        enc.check_names(src, [str(r[0]) for r in described])
        _check_flat(src, described, "flatten the file (one column per field) and import it again")
        _copy(con, f"SELECT * FROM {reader}", out)
    except duckdb.OutOfMemoryException as exc:
        raise _library_error(src, exc) from None
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise enc.fail(
            src,
            f"the Parquet file is corrupt or truncated ({first})",
            "copy or export the file again",
        ) from None


# --- files --------------------------------------------------------------------------------


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        scratch.fsync_path(path)


__all__ = [
    "PARTIAL_PREFIX",
    "TYPE_RULE",
    "Column",
    "ImportResult",
    "UnreadableInput",
    "cleanup_partial_imports",
    "import_file",
]
