"""The bytes a protocol message travels as between nodes.

One message carries one array. Layout (network byte order for the header, little-endian
payload)::

    magic   4  b"DSMP"
    version 1  1
    dtype   1  1 = uint64 (ring elements), 2 = float64, 3 = int64
    ndim    1
    flags   1  bit 0: zero padding precedes the payload (other bits reserved, 0)
    seq     8  sender's message counter (detects loss and reordering)
    sender, recipient, tag   each a 2-byte length and UTF-8 text
    shape   ndim x 8
    padding 0-7 zero bytes, so that the payload starts at a multiple of 8 (flag bit 0)
    payload prod(shape) x itemsize

The padding lets the receiver compute on the payload in place: numpy is markedly slower on
unaligned words. The tag names the protocol step (``"beaver/t17/ef"``, ``"triple/t42"``);
the receiver asks for the tag it expects and rejects any other (:class:`MalformedMessage`).
Several arrays can travel as one payload (:func:`pack_arrays`).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
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
PADDED = 1  # flags bit 0
_SHAPES = [struct.Struct(f">{n}Q") for n in range(256)]
MAX_PACKED = 1 << 16  # arrays in one packed payload (pack_arrays)
MAX_NDIM = 8


@dataclass(frozen=True)
class Message:
    sender: str
    recipient: str
    tag: str
    array: npt.NDArray[np.generic]
    seq: int = 0


@functools.lru_cache(maxsize=1024)
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
    head = _FIXED.pack(MAGIC, VERSION, code, arr.ndim, PADDED, message.seq)
    fields = _text(message.sender) + _text(message.recipient) + _text(message.tag)
    shape = _SHAPES[arr.ndim].pack(*arr.shape)
    pad = bytes(-(len(head) + len(fields) + len(shape)) % 8)
    payload = np.ascontiguousarray(arr, dtype=_DTYPES[code])
    # join copies the array's buffer once (no intermediate ``tobytes``)
    return b"".join((head, fields, shape, pad, payload.reshape(-1).view(np.uint8).data))


def decode(data: bytes) -> Message:
    try:
        magic, version, code, ndim, flags, seq = _FIXED.unpack_from(data, 0)
        if magic != MAGIC or version != VERSION or code not in _DTYPES or flags & ~PADDED:
            raise MalformedMessage("not a dataspace MPC message (bad magic, version or dtype)")
        pos = _FIXED.size
        texts = []
        for _ in range(3):
            n = int.from_bytes(data[pos : pos + 2], "big")
            if pos + 2 + n > len(data):
                raise MalformedMessage("truncated MPC message header")
            texts.append(data[pos + 2 : pos + 2 + n].decode("utf-8"))
            pos += 2 + n
        shape = _SHAPES[ndim].unpack_from(data, pos)
        pos += 8 * ndim
        if flags & PADDED:
            pos += -pos % 8
        dtype = _DTYPES[code]
        count = math.prod(shape)
        if len(data) - pos != count * dtype.itemsize:
            raise MalformedMessage("payload length does not match the declared shape")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape)
        if not array.flags.aligned:  # the bytes object itself was not 8-aligned
            array = array.copy()
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"truncated or corrupt MPC message: {exc}") from exc
    return Message(texts[0], texts[1], texts[2], array, seq)


def encode_arrays(
    sender: str, recipient: str, tag: str, arrays: Sequence[npt.NDArray[np.uint64]], seq: int = 0
) -> bytes:
    """The bytes of ``encode(Message(sender, recipient, tag, pack_arrays(arrays), seq))``,
    copying each array once (not first into the packed array, then into the message)."""
    head = _pack_head(arrays).astype("<u8")
    total = head.size + sum(int(a.size) for a in arrays)
    fixed = _FIXED.pack(MAGIC, VERSION, _CODES["u8"], 1, PADDED, seq)
    fields = _text(sender) + _text(recipient) + _text(tag)
    shape = _SHAPES[1].pack(total)
    pad = bytes(-(len(fixed) + len(fields) + len(shape)) % 8)
    parts = [np.ascontiguousarray(a, dtype="<u8").reshape(-1) for a in arrays]
    return b"".join(
        (fixed, fields, shape, pad, head.data, *(p.view(np.uint8).data for p in parts))
    )


def _pack_head(arrays: Sequence[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
    head: list[int] = [len(arrays)]
    for a in arrays:
        head += [a.ndim, *a.shape]
    return np.array(head, dtype=np.uint64)


def pack_arrays(arrays: Sequence[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
    """Several ring arrays as the payload of one message:
    ``[count, ndim_0, *shape_0, ndim_1, *shape_1, ..., data_0, data_1, ...]``."""
    parts = [_pack_head(arrays)] + [np.ravel(a) for a in arrays]
    return np.concatenate(parts).astype(np.uint64, copy=False)


def unpack_arrays(flat: npt.NDArray[np.generic]) -> list[npt.NDArray[np.uint64]]:
    """The arrays :func:`pack_arrays` packed (views into ``flat``); checks every length."""
    data = np.asarray(flat, dtype=np.uint64).reshape(-1)
    if data.size == 0 or int(data[0]) > MAX_PACKED:
        raise MalformedMessage("empty bundle or too many arrays in it")
    count = int(data[0])
    head = data[1 : 1 + count * (MAX_NDIM + 1)].tolist()
    shapes, pos = [], 0
    for _ in range(count):
        if pos >= len(head) or head[pos] > MAX_NDIM or pos + 1 + head[pos] > len(head):
            raise MalformedMessage("truncated bundle header")
        ndim = head[pos]
        shapes.append(tuple(head[pos + 1 : pos + 1 + ndim]))
        pos += 1 + ndim
    pos += 1
    out = []
    for shape in shapes:
        size = math.prod(shape)
        if pos + size > data.size:
            raise MalformedMessage("bundle shorter than its declared shapes")
        out.append(data[pos : pos + size].reshape(shape))
        pos += size
    if pos != data.size:
        raise MalformedMessage("bundle longer than its declared shapes")
    return out
