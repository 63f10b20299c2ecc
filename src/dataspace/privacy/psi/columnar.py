"""Identifier normalisation and key encoding over whole Arrow columns.

The same keys as :meth:`.normalize.KeySpec.encode_row`, byte for byte (a property test holds
the two together), without a Python object per row where it can: values of kinds ``raw``,
``text``, ``uscc`` and ``id_card`` that are ASCII letters and digits only — the common case —
are folded by Arrow kernels and length-prefixed by numpy; only the rest (full-width forms,
separators, phone numbers, e-mail addresses, values of other types) go through
:func:`.normalize.normalize` one by one. A batch of a million 统一社会信用代码 so becomes its
keys in tens of milliseconds instead of seconds, and ten million never become ten million
Python objects.

Keys are returned hex-encoded (``large_string``): the form the RR22 engine reads from CSV, and
one whose bytewise order is that of the encoded keys.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataspace.privacy.psi.normalize import EXACT_FLOAT, KeySpec, identifier_text, normalize

__all__ = ["encode_hex", "encoded_to_hex"]

_FOLDED_IF_ALNUM = frozenset({"raw", "text", "uscc", "id_card"})  # as normalize's fast path
_UPPER = frozenset({"uscc", "id_card"})


def encode_hex(columns: Sequence[pa.Array | pa.ChunkedArray], spec: KeySpec) -> pa.Array:
    """Each row's encoded key, hex-encoded; null where the row has no valid key (a null or
    empty part). ``columns`` hold the key's columns in ``spec``'s order."""
    if len(columns) != len(spec.columns):
        raise ValueError(f"{len(columns)} key columns given, the key has {len(spec.columns)}")
    parts = [_encoded_part(_flat(col), kind) for col, kind in zip(columns, spec.kinds, strict=True)]
    if len(parts) == 1:
        joined = parts[0]
    else:  # a null part makes the row's key null
        joined = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.large_binary()))
    return encoded_to_hex(joined)


def encoded_to_hex(encoded: pa.Array) -> pa.Array:
    """Binary values as lowercase hex strings (nulls kept)."""
    encoded = encoded.cast(pa.large_binary())
    offsets, data = _buffers(encoded)
    digits = binascii.hexlify(data.data)  # one C call over all values' bytes, back to back
    hexed = pa.Array.from_buffers(
        pa.large_string(), len(encoded), [None, pa.py_buffer(offsets * 2), pa.py_buffer(digits)]
    )
    return _nulls_of(encoded, hexed)


def _flat(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array; string chunks widened first (their 32-bit offsets would overflow past
    2 GiB of text when combined)."""
    if not isinstance(col, pa.ChunkedArray):
        return col
    if pa.types.is_string(col.type):
        col = pa.chunked_array([c.cast(pa.large_string()) for c in col.chunks], pa.large_string())
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _encoded_part(values: pa.Array, kind: str) -> pa.Array:
    """One column's part of the key: ``len(utf8)`` (4 bytes, big-endian) ``|| utf8`` of the
    normalised value; null where the value is null or normalises to nothing."""
    normal = _normalised(values, kind).cast(pa.large_binary())
    offsets, data = _buffers(normal)
    n = len(normal)
    lengths = np.diff(offsets)
    prefixes = lengths.astype(">u4")
    width = int(lengths[0]) if n else 0
    if n and not normal.null_count and (lengths == width).all():
        # one length (统一社会信用代码: 18): rows of 4 + width bytes, filled column-wise
        rows = np.empty((n, 4 + width), dtype=np.uint8)
        rows[:, :4] = prefixes.view(np.uint8).reshape(n, 4)
        rows[:, 4:] = data.reshape(n, width)
        stride = np.arange(n + 1, dtype=np.int64) * (4 + width)
        return pa.Array.from_buffers(
            pa.large_binary(), n, [None, pa.py_buffer(stride), pa.py_buffer(rows)]
        )
    prefix = pa.Array.from_buffers(pa.binary(4), n, [None, pa.py_buffer(prefixes)])
    joined = pc.binary_join_element_wise(
        prefix.cast(pa.large_binary()), normal, pa.scalar(b"", pa.large_binary())
    )  # null where the value is null
    return joined


def _normalised(values: pa.Array, kind: str) -> pa.Array:
    """The normal form of each value as ``large_string``; null for none."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        # Arrow's ascii_upper misreads value offsets that do not start at 0 (a slice, or an
        # array from elsewhere; pyarrow 26): a fresh copy starts them at 0
        text = pa.concat_arrays([values]).cast(pa.large_string())
    elif pa.types.is_integer(values.type):
        text = values.cast(pa.large_string())  # as str() of the int
    elif pa.types.is_floating(values.type):
        text = _whole_digits(values)
    else:  # decimals, dates, bools...: as encode_row reads the Python value
        pylist = values.to_pylist()
        return pa.array(
            [None if v is None else normalize(identifier_text(v), kind) for v in pylist],
            pa.large_string(),
        )
    if kind in _FOLDED_IF_ALNUM:
        fast = pc.fill_null(pc.ascii_is_alnum(text), False)
        if kind in _UPPER:
            text = pc.ascii_upper(text)
    else:
        fast = pa.array(np.zeros(len(text), dtype=bool))
    slow = pc.and_(pc.invert(fast), pc.is_valid(text))
    if pc.any(slow).as_py():
        raw = values.filter(slow).to_pylist()
        slow_values = [normalize(identifier_text(v), kind) for v in raw]
        text = pc.replace_with_mask(text, slow, pa.array(slow_values, pa.large_string()))
    # an empty normal form is no key (the fast path never yields one: "" is not alnum)
    return pc.if_else(pc.equal(pc.binary_length(text), 0), pa.scalar(None, pa.large_string()), text)


def _whole_digits(values: pa.Array) -> pa.Array:
    """A float column's values as the digits of whole numbers (``identifier_text``'s rule),
    or the refusal of the first value that is not one."""
    numbers = np.asarray(pc.fill_null(values, 0.0).to_numpy(zero_copy_only=False), np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(numbers) & (np.floor(numbers) == numbers)
        whole &= np.abs(numbers) < EXACT_FLOAT
    if not whole.all():
        identifier_text(float(numbers[int(np.argmin(whole))]))  # raises, naming the value
    digits = pa.array(numbers.astype(np.int64)).cast(pa.large_string())
    return _nulls_of(values, digits)


def _nulls_of(source: pa.Array, values: pa.Array) -> pa.Array:
    """``values`` with ``source``'s nulls."""
    if source.null_count == 0:
        return values
    return pc.if_else(pc.is_valid(source), values, pa.scalar(None, values.type))


def _buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A ``large_binary`` array's offsets (rebased to 0) and the data bytes they span."""
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    base = int(offsets[0]) if len(offsets) else 0
    end = int(offsets[-1]) if len(offsets) else 0
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)[base:end]
        if data_buf is not None
        else np.zeros(0, np.uint8)
    )
    return offsets - base, data
