"""The bytes a protocol message travels as between nodes.

One message carries one array. Layout (network byte order for the header, little-endian
payload)::

    magic   4  b"DSMP"
    version 1  1
    dtype   1  1 = uint64 (ring elements), 2 = float64, 3 = int64
    ndim    1
    flags   1  0 (reserved)
    seq     8  sender's message counter (detects loss and reordering)
    sender, recipient, tag   each a 2-byte length and UTF-8 text
    shape   ndim x 8
    payload prod(shape) x itemsize

The tag names the protocol step (``"mul/17/e"``, ``"triple/42/a"``); the receiver asks for
the tag it expects and rejects any other (:class:`MalformedMessage`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import MalformedMessage

MAGIC = b"DSMP"
VERSION = 1
_FIXED = struct.Struct(">4sBBBBQ")
_LEN = struct.Struct(">H")
_DTYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype("<u8"),
    2: np.dtype("<f8"),
    3: np.dtype("<i8"),
}
_CODES = {dt.kind + str(dt.itemsize): code for code, dt in _DTYPES.items()}


@dataclass(frozen=True)
class Message:
    sender: str
    recipient: str
    tag: str
    array: npt.NDArray[np.generic]
    seq: int = 0


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise MalformedMessage(f"header field too long ({len(raw)} bytes)")
    return _LEN.pack(len(raw)) + raw


def encode(message: Message) -> bytes:
    arr = np.asarray(message.array)
    code = _CODES.get(arr.dtype.kind + str(arr.dtype.itemsize))
    if code is None:
        raise MalformedMessage(f"cannot send arrays of dtype {arr.dtype}")
    if arr.ndim > 255:
        raise MalformedMessage("too many dimensions")
    head = _FIXED.pack(MAGIC, VERSION, code, arr.ndim, 0, message.seq)
    fields = _text(message.sender) + _text(message.recipient) + _text(message.tag)
    shape = struct.pack(f">{arr.ndim}Q", *arr.shape)
    payload = np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
    return b"".join((head, fields, shape, payload))


def decode(data: bytes) -> Message:
    try:
        magic, version, code, ndim, _flags, seq = _FIXED.unpack_from(data, 0)
        if magic != MAGIC or version != VERSION or code not in _DTYPES:
            raise MalformedMessage("not a dataspace MPC message (bad magic, version or dtype)")
        pos = _FIXED.size
        texts = []
        for _ in range(3):
            (n,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            texts.append(data[pos : pos + n].decode("utf-8"))
            pos += n
        shape = struct.unpack_from(f">{ndim}Q", data, pos)
        pos += 8 * ndim
        dtype = _DTYPES[code]
        count = math.prod(shape)
        if len(data) - pos != count * dtype.itemsize:
            raise MalformedMessage("payload length does not match the declared shape")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"truncated or corrupt MPC message: {exc}") from exc
    return Message(texts[0], texts[1], texts[2], array, seq)
