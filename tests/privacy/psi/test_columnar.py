"""Column-wise key encoding equals the row-wise one, byte for byte, whatever the values."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.privacy.psi import KeySpec
from dataspace.privacy.psi.columnar import encode_hex, encoded_to_hex
from dataspace.privacy.psi.errors import PsiConfigError
from dataspace.privacy.psi.normalize import KINDS

# ASCII letters and digits (the Arrow path), and everything normalisation folds or drops
_CHARS = st.sampled_from([*"aZ09xX", *" \t\n-.·()/_+@", *"＠Ａｚ０９", "\u3000", "é", "㈱", "华"])
_VALUE = st.one_of(st.none(), st.text(_CHARS, max_size=12))


def _row_wise(spec: KeySpec, columns: list[list[object]]) -> list[str | None]:
    return [
        None if (enc := spec.encode_row(row)) is None else enc.hex()
        for row in zip(*columns, strict=True)
    ]


@settings(max_examples=150, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=3),
    data=st.data(),
)
def test_column_wise_keys_equal_row_wise_keys(kinds: list[str], data: st.DataObject) -> None:
    spec = KeySpec.parse(",".join(f"c{i}:{k}" for i, k in enumerate(kinds)))
    n = data.draw(st.integers(0, 40))
    columns = [data.draw(st.lists(_VALUE, min_size=n, max_size=n)) for _ in kinds]
    got = encode_hex([pa.array(c, pa.string()) for c in columns], spec).to_pylist()
    assert got == _row_wise(spec, columns)
    # the same values as large strings, offset into a longer array, in two chunks
    skip = data.draw(st.integers(0, 3))
    pad: list[str | None] = ["x"] * skip
    shifted = [pa.array(pad + c, pa.large_string()).slice(skip) for c in columns]
    assert encode_hex(shifted, spec).to_pylist() == got
    cut = data.draw(st.integers(0, n))
    chunked = [pa.chunked_array([a.slice(0, cut), a.slice(cut)]) for a in shifted]
    assert encode_hex(chunked, spec).to_pylist() == got


def test_one_width_columns_slices_chunks_and_other_types_encode_as_row_wise() -> None:
    spec = KeySpec.parse("code:uscc")
    codes = [f"9111{i:014d}" for i in range(50)] + ["91110108ma0123456x"]
    column = pa.array(codes)
    assert encode_hex([column], spec).to_pylist() == _row_wise(spec, [codes])
    assert encode_hex([column.slice(7, 20)], spec).to_pylist() == _row_wise(spec, [codes[7:27]])
    chunked = pa.chunked_array([column.slice(0, 10), column.slice(10)])
    assert encode_hex([chunked], spec).to_pylist() == _row_wise(spec, [codes])
    ints = [5, -3, None, 0, 12345678901234]
    assert encode_hex([pa.array(ints)], spec).to_pylist() == _row_wise(spec, [ints])
    others: list[object] = [1.0, None, datetime.date(2026, 11, 29), True]
    for value in others:
        one = [value]
        assert encode_hex([pa.array(one)], KeySpec.parse("v:text")).to_pylist() == _row_wise(
            KeySpec.parse("v:text"), [one]
        )


def test_hex_keeps_the_order_of_the_bytes_and_nulls() -> None:
    values = [b"\x00\x00\x00\x02ab", None, b"\x00\x00\x00\x01a", b"\xff", b""]
    hexed = encoded_to_hex(pa.array(values, pa.binary())).to_pylist()
    assert hexed == ["000000026162", None, "0000000161", "ff", ""]
    present = [(v, h) for v, h in zip(values, hexed, strict=True) if v is not None]
    assert sorted(present) == sorted(present, key=lambda p: p[1])


def test_a_key_needs_as_many_columns_as_its_spec() -> None:
    with pytest.raises(ValueError, match="2 key columns given"):
        encode_hex([pa.array(["a"]), pa.array(["b"])], KeySpec.parse("a:text"))


def test_python_rows_encode_as_row_wise_whatever_their_types() -> None:
    from dataspace.privacy.psi.rr22 import _column

    spec = KeySpec.parse("v:text")
    for values in (
        [1, 2.0, None],  # Arrow alone would print 1 as "1.0"
        [True, 0, None],
        ["a", 1, None],
        [2**70, 3],  # beyond int64
        [datetime.date(2026, 11, 29), "x"],
        [(1, 2), None],
    ):
        assert encode_hex([_column(values)], spec).to_pylist() == _row_wise(spec, [values])


@pytest.mark.parametrize("kind", ["phone", "text", "raw"])
@pytest.mark.parametrize("typ", [pa.float64(), pa.float32()])
def test_whole_floats_key_as_the_same_integers_and_text(kind: str, typ: pa.DataType) -> None:
    spec = KeySpec.parse(f"v:{kind}")
    big = 13800138000 if typ == pa.float64() else 16777216  # exact in each width
    floats = [float(big), None, -7.0, -0.0]
    got = encode_hex([pa.array(floats, typ)], spec).to_pylist()
    assert got == encode_hex([pa.array([f"{big}", None, "-7", "0"])], spec).to_pylist()
    assert got == encode_hex([pa.array([big, None, -7, 0])], spec).to_pylist()
    assert got == _row_wise(spec, [floats])


@pytest.mark.parametrize("bad", [2.5, 2.0**53, -(2.0**60), float("nan"), float("inf")])
def test_a_float_that_is_not_an_exact_whole_number_is_refused_both_ways(bad: float) -> None:
    spec = KeySpec.parse("v:phone")
    with pytest.raises(PsiConfigError, match="fraction"):
        encode_hex([pa.array([1.0, None, bad], pa.float64())], spec)
    with pytest.raises(PsiConfigError, match="fraction"):
        spec.encode_row([bad])
