"""Detect what a text file is before DuckDB reads it: binary or text, encoding, CSV dialect.

Everything here reads a bounded prefix (``Limits.sniff_bytes``) or streams in fixed-size chunks;
nothing loads a whole file. Errors are :class:`~dataspace.errors.UnreadableInput` with a
one-line message naming the file (and the line where known) and a hint saying what to do.

Encodings recognised: UTF-8 (with or without BOM), UTF-16 with BOM, GBK and GB18030. GBK is
decoded with the GB18030 codec (a strict superset), so a "GBK" file that later contains a
four-byte GB18030 sequence still imports; the reported encoding is upgraded to ``gb18030``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dataspace.errors import UnreadableInput

CHUNK = 1 << 20

# Leading bytes of common non-text files, with what to tell the user.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook? export it as CSV)"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office file (an .xls workbook? export it as CSV)"),
    (b"\x1f\x8b", "gzip-compressed (decompress it first)"),
    (b"BZh", "bzip2-compressed (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed (decompress it first)"),
    (b"\x7fELF", "an executable"),
    (b"SQLite format 3\x00", "an SQLite database"),
)

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

DELIMITERS = (",", "\t", ";", "|")


def fail(path: Path, what: str, hint: str, **details: object) -> UnreadableInput:
    """Build the one-line error every reader here raises."""
    return UnreadableInput(
        f"cannot import {path.name}: {what}", hint=hint, file=str(path), **details
    )


def read_prefix(path: Path, size: int) -> tuple[bytes, bool]:
    """The first ``size`` bytes and whether they are the whole file."""
    with path.open("rb") as fh:
        data = fh.read(size + 1)
    return data[:size], len(data) <= size


def check_not_binary(path: Path, prefix: bytes) -> None:
    for magic, what in _MAGIC:
        if prefix.startswith(magic):
            raise fail(
                path, f"the file is {what}, not text", "import CSV, TSV, JSON Lines or Parquet"
            )
    if any(prefix.startswith(bom) for bom, _ in _BOMS):
        return
    if b"\x00" in prefix:
        raise fail(
            path,
            "the file is binary (it contains NUL bytes)",
            "import CSV, TSV, JSON Lines or Parquet text saved as UTF-8, GBK or GB18030 "
            "(UTF-16 without a byte-order mark also looks like this: re-save it as UTF-8)",
        )


def detect_encoding(path: Path, prefix: bytes, complete: bool, source: Path | None = None) -> str:
    """One of utf-8, utf-8-sig, utf-16, gbk, gb18030 — judged on the prefix, or, when the
    prefix is plain ASCII (UTF-8 and GBK alike) and the file goes on, on as many bytes of
    ``source`` from its first line holding a non-ASCII byte: a GBK export whose Chinese text
    starts after the first MiB is GBK."""
    for bom, name in _BOMS:
        if prefix.startswith(bom):
            return name
    if source is not None and not complete and prefix.isascii():
        prefix, complete = _first_non_ascii(source, len(prefix))
    for name in ("utf-8", "gbk", "gb18030"):
        try:
            text = codecs.getincrementaldecoder(name)("strict").decode(prefix, final=complete)
        except UnicodeDecodeError as exc:
            if name == "utf-8" and _reads_as_chinese(prefix[: exc.start]):
                # UTF-8 text before a stray byte ('Renée' in Latin-1): UTF-8 with one bad
                # line, which the import then names -- not GBK, which would read every
                # Chinese character as two wrong ones.
                return name
            continue
        _check_text_like(path, text)
        if name == "gbk" and _reads_as_western(prefix):
            raise fail(
                path,
                "read as GBK its text is mostly rare characters, no Chinese file is: it is "
                "probably Latin-1 / Windows-1252 (Western European) text",
                "re-save the file as UTF-8 (Excel: 'CSV UTF-8') and import it again",
            )
        return name
    raise fail(
        path,
        "the encoding is not UTF-8, GBK or GB18030",
        "re-save the file as UTF-8 (Excel: 'CSV UTF-8') and import it again",
    )


def _reads_as_chinese(data: bytes) -> bool:
    """Whether ``data`` (valid UTF-8) holds Chinese and nothing a GBK text misread as UTF-8
    turns into: GBK byte pairs that happen to be valid UTF-8 decode to U+0080-U+07FF (Greek,
    Cyrillic, Hebrew ... in a Chinese file), almost never to ideographs."""
    wide = [ord(ch) for ch in data.decode("utf-8") if ord(ch) > 0x7F]
    cjk = [c for c in wide if 0x3000 <= c <= 0x9FFF or 0xFF00 <= c <= 0xFFEF]
    latin = [c for c in wide if 0xA0 <= c <= 0x24F]
    return bool(cjk) and len(cjk) + len(latin) == len(wide)


def _reads_as_western(data: bytes, sample: int = 5000) -> bool:
    """Whether ``data`` (valid GBK) is Latin-1 or Windows-1252 text misread: there an accented
    letter (a byte of 0xC0-0xFF) followed by an ASCII letter makes a valid GBK pair. Chinese
    text has such pairs only for a few rare characters (镕, 裡), its common characters and
    symbols (㎡, ·, —) have other bytes: True when they are at least two and most of the first
    ``sample`` pairs."""
    pairs = western = 0
    i, end = 0, len(data) - 1
    while i < end and pairs < sample:
        if data[i] < 0x80:
            i += 1
            continue
        lead, trail = data[i], data[i + 1]
        pairs += 1
        if lead >= 0xC0 and (0x41 <= trail <= 0x5A or 0x61 <= trail <= 0x7A):
            western += 1
        i += 2
    return western >= 2 and western * 2 > pairs


def _first_non_ascii(source: Path, size: int) -> tuple[bytes, bool]:
    """``size`` bytes from the start of the first line holding a non-ASCII byte (and whether
    they reach the end of the file): the part of a file whose prefix is plain ASCII that can
    tell UTF-8 from GBK. A file all ASCII yields its own (ASCII) prefix back."""
    with source.open("rb") as fh:
        offset = 0
        tail = b""
        while raw := fh.read(CHUNK):
            found = None if raw.isascii() else _HIGH_BYTE.search(raw)
            if found is not None:
                at = found.start()
                seen = tail + raw[:at]
                start = offset - len(tail) + seen.rfind(b"\n") + 1
                fh.seek(start)
                part = fh.read(size + 1)
                return part[:size], len(part) <= size
            tail = raw[raw.rfind(b"\n") + 1 :] if b"\n" in raw else tail + raw
            offset += len(raw)
    return b"", True


#: GBK's user-defined areas decode to the private use area: what Big5 (traditional Chinese)
#: bytes read as GBK mostly become -- legible text never holds them.
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
_HIGH_BYTE = re.compile(b"[\x80-\xff]")


def _check_text_like(path: Path, text: str) -> None:
    if not text:
        return
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n\f")
    if controls / len(text) > 0.01:
        raise fail(
            path,
            "the file looks binary (many control characters)",
            "import CSV, TSV, JSON Lines or Parquet text",
        )


def decode_prefix(prefix: bytes, encoding: str, complete: bool) -> str:
    codec = "gb18030" if encoding == "gbk" else encoding
    text = codecs.getincrementaldecoder(codec)("replace").decode(prefix, final=complete)
    return text.lstrip("\ufeff")


def transcode_to_utf8(path: Path, dest: Path, encoding: str) -> str:
    """Stream ``path`` into UTF-8 at ``dest`` (no BOM); return the encoding actually seen.

    A file sniffed as GBK is decoded as GB18030; if any character outside GBK turns up, the
    returned label becomes ``gb18030``.
    """
    codec = "gb18030" if encoding == "gbk" else encoding
    label = encoding
    decoder = codecs.getincrementaldecoder(codec)("strict")
    line = 1
    first = True
    private = wide = 0  # private-use and all non-ASCII characters seen
    first_odd: int | None = None
    with path.open("rb") as src, dest.open("wb") as out:
        while True:
            raw = src.read(CHUNK)
            final = not raw
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:
                at = line + raw[: max(exc.start, 0)].count(b"\n")
                raise fail(
                    path,
                    f"line {at} is not valid {label.upper()}",
                    "the file mixes encodings; re-save it as UTF-8 and import it again",
                    line=at,
                ) from None
            if first and text:
                text = text.lstrip("\ufeff")
                first = False
            if codec == "gb18030":
                odd = _PRIVATE_USE.findall(text)
                if odd and first_odd is None:
                    first_odd = line + text[: text.index(odd[0])].count("\n")
                private += len(odd)
                wide += len(text) - len(text.encode("ascii", "ignore"))  # in C, not per char
            if label == "gbk" and text:
                try:
                    text.encode("gbk")
                except UnicodeEncodeError:
                    label = "gb18030"
            out.write(text.encode("utf-8"))
            line += raw.count(b"\n")
            if final:
                break
        out.flush()
    # A rare name character or a GB18030 code the codec maps there is one in thousands; Big5
    # read as GBK puts a good part of its characters there.
    if first_odd is not None and private >= 3 and private > 0.05 * wide:
        raise fail(
            path,
            f"line {first_odd} holds characters of GBK's user-defined area, not text "
            f"({private:,} of {wide:,} non-ASCII characters): the file is probably Big5 "
            "(traditional Chinese) or another encoding",
            "re-save it as UTF-8 and import it again",
            line=first_odd,
        )
    return label


# --- CSV dialect -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    header: list[str]


def _rows(text: str, delimiter: str, complete: bool, limit: int = 200) -> list[list[str]]:
    if not complete:  # drop the possibly cut last line
        cut = text.rfind("\n")
        text = text[: cut + 1] if cut >= 0 else text
    rows: list[list[str]] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if row:
                rows.append(row)
            if len(rows) >= limit:
                break
    except csv.Error:
        pass
    return rows


def sniff_dialect(path: Path, text: str, complete: bool, preferred: str | None) -> Dialect:
    """Pick the delimiter that splits the first rows most consistently; read the header."""
    if not text.split("\n", 1)[0].strip(" \t\r"):  # (decode_prefix took off a BOM)
        # The reader takes the first line for the header: after a blank one, the header
        # would become a row of data and every column text.
        raise fail(path, "line 1 is blank: the header must be the file's first line",
                   "delete the blank lines above the header and import again")
    best: tuple[float, int, int] = (-1.0, 0, 0)
    choice = preferred or ","
    order = ([preferred] if preferred else []) + [d for d in DELIMITERS if d != preferred]
    for rank, delim in enumerate(order):
        rows = _rows(text, delim, complete)
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        consistency = sum(1 for r in rows if len(r) == width) / len(rows)
        score = (consistency, width if consistency == 1.0 else 0, -rank)
        if score > best:
            best, choice = score, delim
    rows = _rows(text, choice, complete, limit=1)
    if not rows and not complete and "\n" not in text:
        raise fail(path, f"line 1, the header, goes on past the first {len(text):,} characters "
                   "read to find it: no line break there",
                   "check that the file is CSV text with one row a line; a wider header needs "
                   "a larger sniff_bytes in node.toml [limits]", line=1)
    if not rows:
        raise fail(path, "the file is empty", "export the data again with a header row and rows")
    header = [name.strip() for name in rows[0]]
    _check_names(path, header)
    return Dialect(choice, header)


#: The widest table imported: profiling, classifying and grading scan a few columns at a
#: time, and 1,000 columns take about half a minute here.
MAX_COLUMNS = 2_000


def _check_names(path: Path, names: list[str]) -> None:
    if len(names) > MAX_COLUMNS:
        raise fail(
            path,
            f"the file has {len(names):,} columns; at most {MAX_COLUMNS:,} are imported",
            "split the table into several datasets that share a key column",
        )
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if empty:
        cols = ", ".join(str(i) for i in empty)
        raise fail(
            path,
            f"column {cols} of the header has no name",
            "give every column a name in the first row",
            columns=empty,
        )
    controls = [i + 1 for i, n in enumerate(names)
                if any(ord(ch) < 32 or ord(ch) == 127 for ch in n)]  # fmt: skip
    if controls:
        # A newline or NUL inside a name breaks every table, log line and export that shows it.
        cols = ", ".join(str(i) for i in controls)
        raise fail(
            path,
            f"column {cols} of the header has a control character (a line break, tab or NUL) "
            "in its name",
            "rename the column (in a CSV, a quoted header cell may not span lines)",
            columns=controls,
        )
    seen: dict[str, int] = {}
    dupes: list[str] = []
    for name in names:
        key = name.strip().lower()  # the engine's names are case-insensitive: Phone = phone
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            dupes.append(name.strip())
    if dupes:
        raise fail(
            path,
            "duplicate column names: " + ", ".join(repr(d) for d in dupes),
            "rename the columns so that each name is unique",
            columns=dupes,
        )


def check_names(path: Path, names: list[str]) -> None:
    """Raise on empty or duplicate column names (also used for Parquet and JSON inputs)."""
    _check_names(path, names)


# --- diagnosing a failed read (error path only, streaming) -------------------------------


def _text_lines(path: Path, encoding: str) -> Iterator[str]:
    codec = "gb18030" if encoding == "gbk" else encoding
    with path.open("r", encoding=codec, errors="strict", newline="") as fh:
        yield from fh


def _bad_line(path: Path, codec: str) -> int:
    """The line of the first byte that does not decode (a text reader decodes ahead of the
    line it hands out, so its count would name an earlier line)."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    lines = 1
    with path.open("rb") as fh:
        while raw := fh.read(CHUNK):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                return lines + raw[: max(exc.start, 0)].count(b"\n")
            lines += raw.count(b"\n")
    return lines


class _LineCounter:
    """Iterate over text lines, remembering the number of the last one handed out."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.line = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        text = next(self._lines)
        self.line += 1
        return text


def diagnose_csv(
    path: Path, utf8_path: Path, encoding: str, dialect: Dialect, max_line_bytes: int
) -> UnreadableInput:
    """Find the first row that DuckDB could not read and say why (rows count from 1 after
    the header; lines count from 1 at the top of the file)."""
    # Python's reader stops at 128 KiB fields by default: a legal 200 KiB value must not
    # hide the real fault further down (the limit is per process; set, then put back).
    previous = csv.field_size_limit(max_line_bytes)
    try:
        return _diagnose_csv(path, utf8_path, encoding, dialect, max_line_bytes)
    finally:
        csv.field_size_limit(previous)


def _diagnose_csv(
    path: Path, utf8_path: Path, encoding: str, dialect: Dialect, max_line_bytes: int
) -> UnreadableInput:
    width = len(dialect.header)
    counter = _LineCounter(_text_lines(utf8_path, "utf-8"))
    try:
        record = -1  # the header is record 0; blank lines are no records (DuckDB skips them)
        for row in csv.reader(counter, delimiter=dialect.delimiter):
            if not row:
                continue
            record += 1
            if record == 0:
                continue
            if len(row) != width:
                return fail(
                    path,
                    f"row {record} (line {counter.line}) has {len(row)} fields, "
                    f"the header has {width}",
                    "fix that row (a missing or extra delimiter, or an unclosed quote) "
                    "and import again",
                    row=record,
                    line=counter.line,
                )
    except UnicodeDecodeError:
        at = _bad_line(utf8_path, "utf-8")
        return fail(
            path,
            f"line {at} is not valid {encoding.upper()}",
            "the file mixes encodings; re-save it as UTF-8 and import it again",
            line=at,
        )
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            return fail(
                path,
                f"line {counter.line} holds a value longer than import_max_line_bytes "
                f"({max_line_bytes:,} bytes)",
                "shorten that value, or raise import_max_line_bytes in node.toml [limits] "
                "(an unclosed quote above it also makes one long value)",
                line=counter.line,
            )
        return fail(
            path,
            f"line {counter.line} cannot be parsed ({exc})",
            "fix the quoting on that line and import again",
            line=counter.line,
        )
    opened = _unclosed_quote(utf8_path, dialect.delimiter)
    if opened is not None:
        return fail(
            path,
            f"the quote opened on line {opened} is never closed: the rest of the file became "
            "one value",
            "close that quote (a quote inside a quoted value is written twice) and import again",
            line=opened,
        )
    return fail(path, "the CSV could not be read", "check the file's format and import again")


def _unclosed_quote(utf8_path: Path, delimiter: str) -> int | None:
    """The line on which a quoted value opens that the file never closes, or None. (The
    lenient reader above takes it as a value running to the end of the file; a strict one
    stops at the end of the data.)"""
    counter = _LineCounter(_text_lines(utf8_path, "utf-8"))
    start = 1  # where the record being read began
    try:
        for _ in csv.reader(counter, delimiter=delimiter, strict=True):
            start = counter.line + 1
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return start
    return None


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json.loads' object hook: refuse what the engine cannot read, with the key."""
    keys = [k for k, _ in pairs]
    if "" in keys:
        raise _KeyProblem("has an empty key")
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise _KeyProblem(f"repeats the key {repeated[0]!r} in one object")
    return dict(pairs)


class _KeyProblem(ValueError):
    pass


def diagnose_jsonl(path: Path, encoding: str) -> UnreadableInput:
    line = 0
    keys = 0
    try:
        for line, text in enumerate(_text_lines(path, encoding), start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text, object_pairs_hook=_pairs)
            except _KeyProblem as exc:
                return fail(path, f"line {line} {exc}",
                            "give every field a name of its own in each object", line=line)
            except RecursionError:
                return fail(path, f"line {line} nests too deeply to be a row",
                            "each line must hold one flat JSON object; fix that line and "
                            "import again", line=line)
            except ValueError as exc:
                return fail(
                    path,
                    f"line {line} is not valid JSON ({exc.args[0].split(':')[0]})",
                    "each line must hold one JSON object; fix that line and import again",
                    line=line,
                )
            if not isinstance(value, dict):
                return fail(
                    path,
                    f"line {line} is a JSON {type(value).__name__}, not an object",
                    "each line must hold one JSON object with the same keys",
                    line=line,
                )
            keys += len(value)
    except UnicodeDecodeError:
        at = _bad_line(path, "gb18030" if encoding == "gbk" else encoding)
        return fail(
            path,
            f"line {at} is not valid {encoding.upper()}",
            "re-save the file as UTF-8 and import it again",
            line=at,
        )
    if line and not keys:
        return fail(path, "its objects have no keys ({})", "write one field per key on each line")
    return fail(path, "the JSON Lines file could not be read", "check it holds one object a line")
