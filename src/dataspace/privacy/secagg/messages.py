"""The bytes that travel between parties and the coordinator.

One envelope for every message::

    b"DSAG" | version (1 byte) | header length (4 bytes, big-endian) | header | payload

The header is UTF-8 JSON: ``kind``, ``protocol``, ``session`` (hex), ``sender`` and
``recipient`` (party indices ≥ 1; 0 is the coordinator; recipient 0 from the coordinator means
"every party"), small integer ``fields`` and the names and lengths of the binary ``blobs``
concatenated in the payload (keys, ciphertexts, share values, ``uint64`` vectors). No pickle,
no code: a malformed envelope is refused with :class:`SecAggError`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataspace.privacy.secagg.encoding import UintVector
from dataspace.privacy.secagg.errors import SecAggError

__all__ = ["COORDINATOR", "Message", "decode"]

MAGIC = b"DSAG"
VERSION = 1
COORDINATOR = 0
MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class Message:
    kind: str
    protocol: str
    session: bytes
    sender: int
    recipient: int = COORDINATOR
    fields: Mapping[str, Any] = field(default_factory=dict)
    blobs: Mapping[str, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        header = {
            "kind": self.kind,
            "protocol": self.protocol,
            "session": self.session.hex(),
            "sender": self.sender,
            "recipient": self.recipient,
            "fields": dict(self.fields),
            "blobs": [[name, len(blob)] for name, blob in self.blobs.items()],
        }
        raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
        return b"".join(
            [MAGIC, bytes([VERSION]), struct.pack(">I", len(raw)), raw, *self.blobs.values()]
        )

    def blob(self, name: str, size: int | None = None) -> bytes:
        try:
            value = self.blobs[name]
        except KeyError:
            raise SecAggError(f"{self.kind} message lacks '{name}'") from None
        if size is not None and len(value) != size:
            raise SecAggError(f"'{name}' in {self.kind} must be {size} bytes, got {len(value)}")
        return value

    def indexed(self, prefix: str) -> dict[int, bytes]:
        """Blobs named ``prefix`` + party index, by index."""
        out: dict[int, bytes] = {}
        for name, value in self.blobs.items():
            if name.startswith(prefix):
                suffix = name[len(prefix) :]
                if not (suffix.isascii() and suffix.isdigit()) or suffix != str(int(suffix)):
                    # "ct²" passes isdigit but not int(); "ct01" and "ct1" would collide
                    raise SecAggError(f"bad blob name {name!r} in {self.kind}")
                out[int(suffix)] = value
        return out

    def int_list(self, name: str) -> list[int]:
        value = self.fields.get(name)
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise SecAggError(f"'{name}' in {self.kind} must be a list of party indices")
        return list(value)

    def vector(self, name: str, length: int) -> UintVector:
        raw = self.blob(name, 8 * length)
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64, copy=True)


def vector_bytes(v: UintVector) -> bytes:
    return v.astype("<u8", copy=False).tobytes()


def decode(data: bytes) -> Message:
    """Parse an envelope; refuses anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SecAggError("a secure-aggregation message must be bytes")
    data = bytes(data)
    if len(data) < 9 or data[:4] != MAGIC:
        raise SecAggError("not a secure-aggregation message (bad magic)")
    if data[4] != VERSION:
        raise SecAggError(f"unsupported secure-aggregation message version {data[4]}")
    (size,) = struct.unpack(">I", data[5:9])
    if size > MAX_HEADER or 9 + size > len(data):
        raise SecAggError("secure-aggregation message header is truncated or too large")
    try:
        header = json.loads(data[9 : 9 + size].decode())
        kind, protocol = header["kind"], header["protocol"]
        session = bytes.fromhex(header["session"])
        sender, recipient = header["sender"], header["recipient"]
        fields = header["fields"]
        layout = [(str(n), int(k)) for n, k in header["blobs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise SecAggError(f"malformed secure-aggregation header: {exc}") from None
    if not (
        isinstance(kind, str)
        and isinstance(protocol, str)
        and isinstance(sender, int)
        and isinstance(recipient, int)
        and isinstance(fields, dict)
    ):
        raise SecAggError("malformed secure-aggregation header")
    blobs: dict[str, bytes] = {}
    offset = 9 + size
    for name, length in layout:
        if length < 0 or offset + length > len(data) or name in blobs:
            raise SecAggError("secure-aggregation payload does not match its header")
        blobs[name] = data[offset : offset + length]
        offset += length
    if offset != len(data):
        raise SecAggError("secure-aggregation message has trailing bytes")
    return Message(kind, protocol, session, sender, recipient, fields, blobs)
