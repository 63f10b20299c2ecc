from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataspace.catalog.ingest import (
    PARTIAL_PREFIX,
    ImportResult,
    cleanup_partial_imports,
    import_file,
)
from dataspace.errors import InputError, UnreadableInput, UsageError
from dataspace.samples import sample_path
from dataspace.settings import Limits

Write = Callable[..., Path]
Imported = Callable[..., tuple[Path, ImportResult]]

CHINESE = "姓名,城市,金额\n张三,北京,12.5\n李四,上海,7\n"


def rows_of(path: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = pq.read_table(path).to_pylist()
    return rows


def types_of(result: ImportResult) -> dict[str, str]:
    return {c.name: c.type for c in result.columns}


# --- encodings and formats -----------------------------------------------------------------


def test_utf8_csv_with_chinese_names_and_values_round_trips(imported: Imported) -> None:
    dest, result = imported("people.csv", CHINESE)
    assert rows_of(dest) == [
        {"姓名": "张三", "城市": "北京", "金额": 12.5},
        {"姓名": "李四", "城市": "上海", "金额": 7.0},
    ]
    assert result.rows == 2
    assert result.source_format == "csv"
    assert result.source_encoding == "utf-8"
    assert result.delimiter == ","
    assert types_of(result) == {"姓名": "VARCHAR", "城市": "VARCHAR", "金额": "DOUBLE"}


def test_utf8_with_bom_keeps_the_first_column_name_clean(imported: Imported) -> None:
    dest, result = imported("bom.csv", b"\xef\xbb\xbf" + CHINESE.encode())
    assert result.source_encoding == "utf-8-sig"
    assert result.columns[0].name == "姓名"
    assert rows_of(dest)[0]["姓名"] == "张三"


def test_gbk_csv_is_detected_and_transcoded(imported: Imported) -> None:
    dest, result = imported("gbk.csv", CHINESE, "gbk")
    assert result.source_encoding == "gbk"
    assert rows_of(dest)[1] == {"姓名": "李四", "城市": "上海", "金额": 7.0}


def test_gb18030_with_characters_outside_gbk_is_reported_as_gb18030(imported: Imported) -> None:
    text = "姓名,备注\n吉祥,普通\n𠮷野家,含扩展B区字符\n"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")
    dest, result = imported("gb18030.csv", text, "gb18030")
    assert result.source_encoding == "gb18030"
    assert rows_of(dest)[1]["姓名"] == "𠮷野家"


def test_gbk_file_with_gb18030_only_characters_late_is_upgraded(imported: Imported) -> None:
    text = "name,note\n" + "王五,正常\n" * 5 + "𠮷,late\n"
    _, result = imported("late.csv", text, "gb18030")
    assert result.source_encoding == "gb18030"


def test_gbk_text_that_starts_past_the_sniffed_prefix_is_gbk(imported: Imported) -> None:
    """The first MiB is plain ASCII (UTF-8 and GBK alike): the whole file decides."""
    text = "id,city\n" + "".join(f"{i},x\n" for i in range(150_000)) + "150000,上海\n"
    assert len(text) > 1 << 20
    dest, result = imported("late-gbk.csv", text, "gbk")
    assert result.source_encoding == "gbk" and rows_of(dest)[-1]["city"] == "上海"


@pytest.mark.parametrize("rows", [0, 150_000])
def test_utf8_with_one_stray_byte_is_refused_at_its_line(
    write: Write, tmp_path: Path, limits: Limits, rows: int
) -> None:
    """Not read as GBK (上海 would become 涓婃捣): UTF-8 with a bad line, named exactly."""
    body = "id,city\n" + "".join(f"{i},x\n" for i in range(rows))
    data = body.encode() + "1,上海\n".encode() + b"2,Ren\xe9e\n"
    err = bad(write, tmp_path, limits, "stray.csv", data)
    assert f"line {rows + 3} is not valid UTF-8" in err.message


def test_a_rare_character_gbk_keeps_for_names_still_imports(imported: Imported) -> None:
    """GB18030 maps a few real characters (and name registers their rare ones) into the
    private use area: one among many is text, not Big5."""
    data = ("name,city\n" + "张三,上海\n" * 50).encode("gbk") + b"\xfe\x51,x\n"
    _, result = imported("rare.csv", data)
    assert result.source_encoding == "gb18030"


def test_big5_is_refused_rather_than_read_as_gbk(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    """Big5 bytes decode as GB18030 without error, as private-use characters: garbage."""
    text = "姓名,城市\n陳大文,臺北\n" * 20
    assert text.encode("big5").decode("gb18030")  # no error: the trap
    err = bad(write, tmp_path, limits, "big5.csv", text, encoding="big5")
    assert "probably Big5" in err.message and err.details["line"] == 1


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_western_european_text_is_refused_rather_than_read_as_gbk(
    write: Write, tmp_path: Path, limits: Limits, encoding: str
) -> None:
    """An accented letter and the ASCII letter after it make a valid GBK pair (ü + r: 黵)."""
    text = "name,city,amount\nMüller,Zürich,100\nGarçon,Orléans,200\nRenée,Montréal,300\n"
    assert text.encode(encoding).decode("gbk")  # no error: the trap
    err = bad(write, tmp_path, limits, "west.csv", text, encoding=encoding)
    assert "probably Latin-1 / Windows-1252" in err.message and "UTF-8" in str(err.hint)


@pytest.mark.parametrize(("name", "text"), [
    ("rare_names.csv", "姓名,地址\n" + "".join(
        f"{n},上海浦东新区\n" for n in ("王喆", "李堃", "张昇", "赵珺", "周玥", "朱镕", "裡仁"))),
    ("areas.csv", "小区,面积,价格\n" + "A1,80.5㎡,300\n" * 50),
    ("dashes.csv", "id,note\n" + "1,2020—2021·年报\n" * 50),
    ("traditional.csv", "name,place\n" + "陳,臺灣\n林,們裡\n" * 20),
])
def test_gbk_text_with_rare_characters_and_symbols_is_not_taken_for_western_text(
    imported: Imported, name: str, text: str
) -> None:
    _, result = imported(name, text.encode("gbk"))
    assert result.source_encoding == "gbk"


def test_tsv_by_extension(imported: Imported) -> None:
    dest, result = imported("t.tsv", "a\tb\n1\tx,y\n2\tz\n")
    assert result.delimiter == "\t"
    assert rows_of(dest) == [{"a": 1, "b": "x,y"}, {"a": 2, "b": "z"}]


@pytest.mark.parametrize("delim", [";", "|", "\t"])
def test_delimiter_is_sniffed(imported: Imported, delim: str) -> None:
    text = f"a{delim}b{delim}c\n1{delim}2{delim}3\n4{delim}5{delim}6\n"
    _, result = imported("d.csv", text)
    assert result.delimiter == delim
    assert [c.name for c in result.columns] == ["a", "b", "c"]


def test_quoted_fields_with_delimiters_and_newlines(imported: Imported) -> None:
    dest, _ = imported("q.csv", 'a,b\n"x, y","line1\nline2"\n"he said ""hi""",z\n')
    assert rows_of(dest) == [
        {"a": "x, y", "b": "line1\nline2"},
        {"a": 'he said "hi"', "b": "z"},
    ]


def test_parquet_input_keeps_its_types(tmp_path: Path, limits: Limits) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"户号": ["0101", "0102"], "kwh": [1.5, 2.0]}), src)
    result = import_file(src, tmp_path / "out.parquet", limits=limits)
    assert result.source_format == "parquet"
    assert result.source_encoding is None
    assert rows_of(tmp_path / "out.parquet") == [
        {"户号": "0101", "kwh": 1.5},
        {"户号": "0102", "kwh": 2.0},
    ]


def test_jsonl_input(imported: Imported) -> None:
    lines = [
        {"身份证号": "11010519491231002X", "age": 30, "visit": "2024-05-01"},
        {"身份证号": "110105194912310021", "age": None, "visit": "2024-05-02"},
    ]
    text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    dest, result = imported("p.jsonl", text)
    assert result.source_format == "jsonl"
    assert types_of(result) == {"身份证号": "VARCHAR", "age": "BIGINT", "visit": "DATE"}
    assert rows_of(dest)[0]["身份证号"] == "11010519491231002X"


def test_format_is_sniffed_from_content_without_extension(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    src = write("noext", '{"a": 1}\n{"a": 2}\n')
    assert import_file(src, tmp_path / "o.parquet", limits=limits).source_format == "jsonl"
    src = write("noext2", "a,b\n1,2\n")
    assert import_file(src, tmp_path / "o2.parquet", limits=limits).source_format == "csv"


def test_fmt_forces_the_format(write: Write, tmp_path: Path, limits: Limits) -> None:
    src = write("data.dat", "a|b\n1|2\n")
    result = import_file(src, tmp_path / "o.parquet", limits=limits, fmt="csv")
    assert result.delimiter == "|"
    with pytest.raises(UsageError, match="unknown import format"):
        import_file(src, tmp_path / "o.parquet", limits=limits, fmt="xlsx")


def test_result_hash_and_size_describe_the_written_file(imported: Imported) -> None:
    dest, result = imported("h.csv", CHINESE)
    assert result.bytes == dest.stat().st_size
    assert result.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert result.to_dict()["columns"][0] == {"name": "姓名", "type": "VARCHAR"}


# --- types ---------------------------------------------------------------------------------


def test_identifier_columns_stay_strings(imported: Imported) -> None:
    body = "".join(
        f"{i:05d},1380013{i:04d},62220212345678{i:04d},11010519900101{i:03d}1,{i},{i}.5,"
        f"2024-01-{i % 28 + 1:02d},true\n"
        for i in range(1, 50)
    )
    body += "00050,13800130050,6222021234567800050,11010519491231002X,50,1.5,2024-02-01,false\n"
    header = "branch,mobile,card,id,n,x,d,flag\n"
    dest, result = imported("ids.csv", header + body)
    assert types_of(result) == {
        "branch": "VARCHAR",
        "mobile": "VARCHAR",
        "card": "VARCHAR",
        "id": "VARCHAR",
        "n": "BIGINT",
        "x": "DOUBLE",
        "d": "DATE",
        "flag": "BOOLEAN",
    }
    last = rows_of(dest)[-1]
    assert last["branch"] == "00050"
    assert last["card"] == "6222021234567800050"
    assert last["id"] == "11010519491231002X"


def test_numbers_a_double_would_change_stay_text(imported: Imported) -> None:
    """-1e20 and 1.2345678901234568e+16 are not what the file says; +86 numbers keep '+'."""
    dest, result = imported("big.csv", "a,b,c,d\n-99999999999999999999,12345678901234567.89,"
                            "+8613812345678,1.25\n5,1.5,+8613912345678,2e3\n")
    assert types_of(result) == {"a": "VARCHAR", "b": "VARCHAR", "c": "VARCHAR", "d": "DOUBLE"}
    assert rows_of(dest)[0] == {"a": "-99999999999999999999", "b": "12345678901234567.89",
                                "c": "+8613812345678", "d": 1.25}  # fmt: skip
    # what Python and pandas write reads back as written: still numbers
    _, floats = imported("floats.csv", "a,b,c\n0.30000000000000004,12.3400000000000000,"
                         "0.1234567890123456\n0.3333333333333333,1,2\n")  # fmt: skip
    assert set(types_of(floats).values()) == {"DOUBLE"}


def test_a_late_non_number_keeps_the_column_text(imported: Imported) -> None:
    body = "".join(f"{i}\n" for i in range(5000)) + "about 7\n"  # ("n/a" is a missing value)
    _, result = imported("late.csv", "v\n" + body)
    assert types_of(result) == {"v": "VARCHAR"}
    assert "the others include 'about 7'" in result.notes[0]


def test_dates_in_other_spellings_stay_text_and_timestamps_are_typed(imported: Imported) -> None:
    text = "d,t\n2024/1/2,2024-01-02 10:00:00\n2024-01-03,2024-01-03T11:30\n"
    _, result = imported("dates.csv", text)
    assert types_of(result) == {"d": "VARCHAR", "t": "TIMESTAMP"}


def test_empty_cells_are_null(imported: Imported) -> None:
    dest, _ = imported("n.csv", "a,b\n1,\n,x\n")
    assert rows_of(dest) == [{"a": 1, "b": None}, {"a": None, "b": "x"}]


# --- bad input -----------------------------------------------------------------------------


def bad(
    write: Write, tmp_path: Path, limits: Limits, name: str, content: str | bytes, **kw: str
) -> UnreadableInput:
    src = write(name, content, kw.pop("encoding", "utf-8"))
    dest = tmp_path / "data" / "out.parquet"
    with pytest.raises(UnreadableInput) as info:
        import_file(src, dest, limits=limits, **kw)
    assert name in str(info.value)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert not list(dest.parent.glob(PARTIAL_PREFIX + "*"))
    return info.value


def test_empty_file_is_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "empty.csv", b"")
    assert "empty" in err.message
    err = bad(write, tmp_path, limits, "blank.csv", b"\n\n  \n")
    assert "empty" in err.message


def test_a_header_longer_than_the_sniffed_prefix_is_named_not_called_empty(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    wide = "id," + "h" * (int(limits.sniff_bytes) + 10) + "\n1,2\n"
    err = bad(write, tmp_path, limits, "wide.csv", wide)
    assert "line 1, the header, goes on past the first" in err.message
    assert "sniff_bytes" in str(err.hint) and err.details["line"] == 1
    err = bad(write, tmp_path, limits, "one_line.csv", "x" * (int(limits.sniff_bytes) * 2))
    assert "no line break" in err.message


def test_a_blank_line_above_the_header_is_refused(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    """Else the header became a row of data and every column text, silently."""
    for content in ("\nid,amount\n1,10\n", "\ufeff \r\nid,amount\n1,10\n"):
        err = bad(write, tmp_path, limits, "blank-top.csv", content)
        assert err.message.endswith("line 1 is blank: the header must be the file's first line")


def test_header_only_is_refused_with_no_data_rows(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    err = bad(write, tmp_path, limits, "header.csv", "a,b,c\n")
    assert "no data rows" in err.message
    assert isinstance(err, InputError)


def test_a_long_legal_value_does_not_hide_a_ragged_row(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    """Python's reader stopped at 128 KiB fields: a 200 KiB note on line 3 was blamed."""
    rows = "".join(f"{i},ok\n" for i in range(1, 1001)).replace("2,ok", "2," + "n" * 200_000)
    err = bad(write, tmp_path, limits, "long.csv", "id,note\n" + rows + "1001,a,b\n")
    assert "row 1001 (line 1002) has 3 fields, the header has 2" in err.message


def test_a_value_beyond_the_line_limit_says_so(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    small = Limits({"import_threads": 1, "import_memory_limit_mb": 256,
                    "import_max_line_bytes": 100_000})
    err = bad(write, tmp_path, small, "huge.csv", "id,note\n1,ok\n2," + "n" * 150_000 + "\n")
    assert "line 3 holds a value longer than import_max_line_bytes (100,000 bytes)" in err.message


def test_a_control_character_in_a_column_name_is_refused(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    err = bad(write, tmp_path, limits, "ctl.csv", 'id,"two\nlines",x\n1,2,3\n')
    assert "column 2 of the header has a control character" in err.message
    src = tmp_path / "ctl.parquet"
    pq.write_table(pa.table({"a": [1], "b\x00c": [2]}), src)
    with pytest.raises(UnreadableInput, match="column 2 of the header has a control"):
        import_file(src, tmp_path / "out.parquet", limits=limits)


def test_a_blank_line_is_no_row_in_the_row_number(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    err = bad(write, tmp_path, limits, "gap.csv", "a,b\n1,2\n\n3,4\n5,6,7\n")
    assert "row 3 (line 5) has 3 fields" in err.message and err.details["row"] == 3


def test_a_file_rewritten_during_the_import_is_refused(
    write: Write, tmp_path: Path, limits: Limits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV is read twice (types, then rows): rewritten in between, its new rows would be
    stored under the old header."""
    from dataspace.catalog import ingest

    src = write("live.csv", "身份证号,金额\n1,10\n")
    real = ingest._describe

    def rewritten_meanwhile(con, out):  # type: ignore[no-untyped-def]
        src.write_text("x,y\nx0,y0\nx1,y1\n", encoding="utf-8")
        return real(con, out)

    monkeypatch.setattr(ingest, "_describe", rewritten_meanwhile)
    dest = tmp_path / "data" / "out.parquet"
    with pytest.raises(UnreadableInput, match="the file changed while it was imported"):
        import_file(src, dest, limits=limits)
    assert not dest.exists() and not list(dest.parent.glob(PARTIAL_PREFIX + "*"))


def test_png_is_refused_as_binary(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "logo.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert "PNG" in err.message


def test_random_bytes_are_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    noise = bytes((i * 7919 + 13) % 256 for i in range(4096))
    err = bad(write, tmp_path, limits, "noise.csv", noise)
    assert "binary" in err.message or "encoding" in err.message


def test_undetectable_encoding_is_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "latin.csv", b"a,b\n\x81\x20x,1\n\xff\xfey,2\n"[::1])
    assert "encoding" in err.message
    assert "UTF-8" in (err.hint or "")


def test_ragged_row_names_the_row_and_the_counts(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    err = bad(write, tmp_path, limits, "rag.csv", "a,b,c\n1,2,3\n4,5\n6,7,8\n")
    assert "row 2 (line 3) has 2 fields, the header has 3" in err.message
    assert err.details["row"] == 2


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_an_unclosed_quote_names_the_line_it_opens_on(
    write: Write, tmp_path: Path, limits: Limits, newline: str
) -> None:
    """Its field count comes out right (the rest of the file is one value): the error said
    only that the CSV could not be read."""
    text = newline.join(["id,note", "1,fine", '2,"multi', 'line ok"', '3,"never closed', "4,x", ""])
    err = bad(write, tmp_path, limits, "quote.csv", text)
    assert "the quote opened on line 5 is never closed" in err.message
    assert err.details["line"] == 5
    assert "written twice" in (err.hint or "")


def test_ragged_row_late_in_a_gbk_file(write: Write, tmp_path: Path, limits: Limits) -> None:
    text = "名称,值\n" + "甲,1\n" * 300 + "乙,2,3\n"
    err = bad(write, tmp_path, limits, "raggbk.csv", text, encoding="gbk")
    assert "row 301" in err.message


def test_duplicate_column_names_are_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "dup.csv", "id,金额,金额\n1,2,3\n")
    assert "duplicate column names: '金额'" in err.message


def test_empty_column_name_is_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "nohead.csv", "id,,x\n1,2,3\n")
    assert "column 2 of the header has no name" in err.message


def test_corrupt_parquet_is_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "bad.parquet", b"PAR1" + b"\x00garbage" * 10 + b"PAR1")
    assert "corrupt" in err.message


def test_truncated_parquet_is_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": list(range(1000))}), good)
    err = bad(write, tmp_path, limits, "cut.parquet", good.read_bytes()[:-40])
    assert "corrupt or truncated" in err.message


@pytest.mark.parametrize("column", [
    pa.array([{"mobile": "13812345678"}, {"mobile": "13912345678"}]),
    pa.array([["13812345678"], ["13912345678"]]),
])
def test_nested_parquet_columns_are_refused(
    tmp_path: Path, limits: Limits, column: pa.Array
) -> None:
    """A mobile number inside a STRUCT or LIST would be read as one text blob and go
    unclassified and ungraded: such a file is refused, naming the column."""
    src = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "contact": column}), src)
    with pytest.raises(UnreadableInput, match=r"nested column\(s\) contact") as info:
        import_file(src, tmp_path / "out.parquet", limits=limits)
    assert "flatten" in (info.value.hint or "")
    assert not (tmp_path / "out.parquet").exists()


def test_nested_json_objects_are_refused(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "nested.jsonl",
              '{"id": 1, "contact": {"mobile": "13812345678"}}\n')
    assert "nested column(s) contact" in err.message


def test_a_key_number_on_some_lines_and_text_on_others_is_text(imported: Imported) -> None:
    """ID numbers exported as numbers where the check character is a digit, quoted where it
    is X: DuckDB reads the key as JSON, which is not nested -- it is text, as written."""
    dest, result = imported("ids.jsonl", '{"sfz": 110105194912310021, "ok": true}\n'
                            '{"sfz": "11010519491231002X", "ok": 1}\n{"sfz": null, "ok": "N/A"}\n')
    assert types_of(result) == {"sfz": "VARCHAR", "ok": "VARCHAR"}
    assert [r["sfz"] for r in rows_of(dest)] == ["110105194912310021", "11010519491231002X",
                                                 None]  # fmt: skip
    assert [r["ok"] for r in rows_of(dest)] == ["true", "1", "N/A"]


def test_a_number_past_64_bits_does_not_round_the_ids_on_other_lines(imported: Imported) -> None:
    """DuckDB reads a key as DOUBLE when one line holds a number past 64 bits, and the
    18-digit ID numbers on the other lines would come back rounded: it is text, as written."""
    dest, result = imported("big.jsonl", '{"sfz": 110105194912310021, "kwh": 1.5}\n'
                            '{"sfz": 99999999999999999999, "kwh": 0.30000000000000004}\n'
                            '{"sfz": null, "kwh": 2}\n')
    assert types_of(result) == {"sfz": "VARCHAR", "kwh": "DOUBLE"}
    rows = rows_of(dest)
    assert [r["sfz"] for r in rows] == ["110105194912310021", "99999999999999999999", None]
    assert [r["kwh"] for r in rows] == [1.5, 0.30000000000000004, 2.0]


def test_a_key_nested_on_one_line_is_still_refused(
    write: Write, tmp_path: Path, limits: Limits
) -> None:
    err = bad(write, tmp_path, limits, "mixed.jsonl", '{"c": 1}\n{"c": {"mobile": "1"}}\n')
    assert "nested column(s) c" in err.message


@pytest.mark.parametrize(("content", "message"), [
    ('{"a": 1}\n{"": 2}\n', "line 2 has an empty key"),
    ('{"a": 1}\n{"a": 1, "a": 2}\n', "line 2 repeats the key 'a' in one object"),
    ("{}\n{}\n", "its objects have no keys"),
    ('{"a": 1}\n{"a": ' + "[" * 5000 + "]" * 5000 + "}\n", "line 2 nests too deeply"),
])
def test_json_lines_key_problems_name_the_line(
    write: Write, tmp_path: Path, limits: Limits, content: str, message: str
) -> None:
    assert message in bad(write, tmp_path, limits, "keys.jsonl", content).message


def test_invalid_json_names_the_line(write: Write, tmp_path: Path, limits: Limits) -> None:
    err = bad(write, tmp_path, limits, "bad.jsonl", '{"a": 1}\n{"a": 2\n{"a": 3}\n')
    assert "line 2 is not valid JSON" in err.message
    assert err.details["line"] == 2


def test_missing_file_is_refused(tmp_path: Path, limits: Limits) -> None:
    with pytest.raises(UnreadableInput, match="no such file"):
        import_file(tmp_path / "nope.csv", tmp_path / "o.parquet", limits=limits)


# --- atomicity -----------------------------------------------------------------------------

KILLED_IMPORT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from dataspace.catalog.ingest import import_file
    from dataspace.settings import Limits

    def stalled_replace(src, dst):  # the import is complete but not yet in place
        print("ready", flush=True)
        time.sleep(60)

    os.replace = stalled_replace
    import_file(Path(sys.argv[1]), Path(sys.argv[2]), limits=Limits())
    """
)


def test_killed_import_leaves_nothing_at_dest(tmp_path: Path) -> None:
    src = tmp_path / "big.csv"
    src.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(2000)))
    data = tmp_path / "data"
    dest = data / "ds" / "big.parquet"
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_IMPORT, str(src), str(dest)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not dest.exists()
    leftovers = list(dest.parent.glob(PARTIAL_PREFIX + "*"))
    assert leftovers and all(
        p.name.startswith(f".importing-{proc.pid}.") and "-big.parquet-" in p.name
        for p in leftovers
    )
    keep = data / "other.parquet"
    keep.write_bytes(b"keep")
    removed = cleanup_partial_imports(data)
    assert removed == leftovers
    assert not list(dest.parent.glob(PARTIAL_PREFIX + "*"))
    assert keep.exists()


def test_cleanup_spares_the_work_of_a_live_import(tmp_path: Path) -> None:
    live = tmp_path / f"{PARTIAL_PREFIX}{os.getpid()}-x.parquet-abc"
    live.mkdir()
    assert cleanup_partial_imports(tmp_path) == []
    assert live.exists()


def test_cleanup_of_a_missing_dir_is_a_no_op(tmp_path: Path) -> None:
    assert cleanup_partial_imports(tmp_path / "nope") == []


def test_import_replaces_an_existing_dest(
    imported: Imported, tmp_path: Path, limits: Limits, write: Write
) -> None:
    dest, _ = imported("first.csv", "a\n1\n")
    src = write("second.csv", "b\nx\n")
    import_file(src, dest, limits=limits)
    assert rows_of(dest) == [{"b": "x"}]


# --- shipped samples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "encoding"),
    [
        ("sme_loans.csv", "csv", "utf-8"),
        ("tax_records.csv", "csv", "gbk"),
        ("patients.jsonl", "jsonl", "utf-8"),
        ("grid_power.parquet", "parquet", None),
    ],
)
def test_shipped_samples_import(
    tmp_path: Path, limits: Limits, name: str, fmt: str, encoding: str | None
) -> None:
    src = sample_path(name)
    assert src.stat().st_size <= 200 * 1024
    result = import_file(src, tmp_path / "s.parquet", limits=limits)
    assert (result.source_format, result.source_encoding) == (fmt, encoding)
    types = types_of(result)
    for col in (
        "统一社会信用代码",
        "纳税人识别号",
        "身份证号",
        "户号",
        "contract_no",
        "法人手机号",
    ):
        if col in types:
            assert types[col] == "VARCHAR", col


def test_sample_generator_is_deterministic(tmp_path: Path) -> None:
    from dataspace.samples import SAMPLES, SAMPLES_DIR
    from dataspace.samples.generate import main

    main(tmp_path)
    for name in SAMPLES:
        assert (tmp_path / name).read_bytes() == (SAMPLES_DIR / name).read_bytes(), name


def test_import_does_not_take_long_on_small_files(imported: Imported) -> None:
    start = time.perf_counter()
    imported("s.csv", CHINESE)
    assert time.perf_counter() - start < 5


def test_unwritable_data_dir_is_a_dataspace_error(write: Write, tmp_path: Path) -> None:
    from dataspace.errors import DataspaceError

    src = write("ok.csv", "a\n1\n")
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(DataspaceError, match=r"cannot import ok\.csv"):
        import_file(src, blocker / "out.parquet", limits=Limits())


@pytest.mark.parametrize("names", [["m", "m"], ["Phone", "phone"]])
def test_duplicate_parquet_column_names_are_refused_not_renamed(
    tmp_path: Path, limits: Limits, names: list[str]
) -> None:
    """The engine would read them as m, m_1 (or Phone, phone_1) without a word."""
    src = tmp_path / "dupes.parquet"
    table = pa.Table.from_arrays([pa.array(["13812345678"]), pa.array(["x"])], names=names)
    pq.write_table(table, src)
    with pytest.raises(UnreadableInput, match="duplicate column names"):
        import_file(src, tmp_path / "out.parquet", limits=limits)
    assert not (tmp_path / "out.parquet").exists()


def test_missing_value_markers_are_missing_in_a_column_of_numbers(imported: Imported) -> None:
    """One `N/A` among a thousand amounts made the column text without a word; a sum or a DP
    bound on it was then refused as "VARCHAR, not numeric"."""
    lines = ["id,amount,paid_on,flag,remark"]
    for i in range(1000):
        amount = ["N/A", "null", "NaN"][i % 3] if i % 250 == 7 else str(i * 1.5)
        paid = "空" if i == 3 else f"2024-01-{i % 28 + 1:02d}"
        lines.append(f"K{i},{amount},{paid},{'NA' if i == 5 else 'true'},{'NA' if i else 'x'}")
    path, result = imported("markers.csv", "\n".join(lines) + "\n")
    assert types_of(result) == {"id": "VARCHAR", "amount": "DOUBLE", "paid_on": "DATE",
                                "flag": "BOOLEAN", "remark": "VARCHAR"}
    rows = rows_of(path)
    assert rows[7]["amount"] is None and rows[8]["amount"] == 12.0
    assert rows[3]["paid_on"] is None and rows[5]["flag"] is None
    assert rows[1]["remark"] == "NA"  # a text column keeps its text
    assert [r["amount"] for r in rows].count(None) == 4  # NaN too: missing, not a NaN
    assert result.notes == ("amount: 4 value(s) read as missing ('N/A', 'null')",
                            "paid_on: 1 value(s) read as missing ('空')",
                            "flag: 1 value(s) read as missing ('NA')")


def test_a_column_of_numbers_kept_as_text_is_named_with_what_kept_it(
    imported: Imported,
) -> None:
    lines = ["amount"] + [str(i) for i in range(999)] + ["about 5"]
    _, result = imported("mostly.csv", "\n".join(lines) + "\n")
    assert types_of(result) == {"amount": "VARCHAR"}
    assert result.notes == ("amount: kept as text, though 999 of its 1,000 values are numbers "
                            "(the others include 'about 5'); correct those and import again to "
                            "compute on it",)


def test_a_wide_file_of_such_columns_gets_twenty_notes_and_a_count_of_the_rest(
    imported: Imported,
) -> None:
    """Each note is a scan of its own: a 200-column file must not scan 200 more times."""
    header = ",".join(f"c{i}" for i in range(30))
    body = "\n".join(",".join("N/A" if r == 1 else str(r * i) for i in range(30))
                     for r in range(3))
    _, result = imported("wide.csv", header + "\n" + body + "\n")
    assert set(types_of(result).values()) == {"BIGINT"}
    assert len(result.notes) == 21 and result.notes[-1] == "and 10 more column(s) like these"


def test_a_text_column_keeps_its_markers_as_written_and_gets_no_note(
    imported: Imported,
) -> None:
    """A phone column (text by the identifier rule) and one of markers alone were noted as
    "read as missing" while their values were kept, and trimmed."""
    lines = ["phone,remark,plain"] + [f"1380013800{i},NA , {i}" for i in range(9)]
    lines.append("N/A, none,9")
    path, result = imported("text.csv", "\n".join(lines) + "\n")
    assert types_of(result) == {"phone": "VARCHAR", "remark": "VARCHAR", "plain": "BIGINT"}
    rows = rows_of(path)
    assert rows[9]["phone"] == "N/A" and rows[0]["remark"] == "NA " and rows[9]["remark"] == \
        " none"
    assert result.notes == ()


def test_a_number_that_would_not_read_back_is_named_in_the_note(imported: Imported) -> None:
    lines = ["v"] + [str(i) for i in range(99)] + ["0.12345678901234567"]
    _, result = imported("long.csv", "\n".join(lines) + "\n")
    assert types_of(result) == {"v": "VARCHAR"}
    assert "(the others include '0.12345678901234567')" in result.notes[0]


def test_a_dash_is_no_missing_value(imported: Imported) -> None:
    """Spreadsheets write a zero as '-': read as missing, it would move counts and means."""
    _, result = imported("dash.csv", "v\n" + "".join(f"{i}\n" for i in range(20)) + "-\n")
    assert types_of(result) == {"v": "VARCHAR"}
    assert "(the others include '-')" in result.notes[0]
