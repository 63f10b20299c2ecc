"""The PSI wire format: every message is bytes, a fixed header then a payload.

    magic "DPSI" | version u8 | kind u8 | session 16 bytes | seq u32 | count u32 | flags u8
    payload: HELLO / ACCEPT  count bytes of UTF-8 JSON
             A_POINTS / A_REPLY / B_POINTS   count x 32-byte points
             MATCHES         count x u64 (little-endian) indices into the B_POINTS stream

``seq`` numbers the chunks of one stream from 0; flag bit 0 marks the last chunk. A message
whose payload length disagrees with its count is truncated and refused.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from dataspace.privacy.psi.errors import PsiMessageRefused
from dataspace.privacy.psi.group import POINT_SIZE

__all__ = ["HEADER", "Kind", "Message", "pack", "pack_json", "unpack"]

MAGIC = b"DPSI"
VERSION = 2  # 2: points hashed onto the curve only (group.DOMAIN v2); v1 points never match
HEADER = struct.Struct(">4sBB16sIIB")
LAST = 1


class Kind(IntEnum):
    HELLO = 1
    ACCEPT = 2
    A_POINTS = 3
    A_REPLY = 4
    B_POINTS = 5
    MATCHES = 6


_ITEM = {Kind.A_POINTS: POINT_SIZE, Kind.A_REPLY: POINT_SIZE, Kind.B_POINTS: POINT_SIZE,
         Kind.MATCHES: 8, Kind.HELLO: 1, Kind.ACCEPT: 1}  # fmt: skip


@dataclass(frozen=True)
class Message:
    kind: Kind
    session: bytes
    seq: int
    count: int
    last: bool
    payload: bytes

    def json(self) -> dict[str, Any]:
        try:
            body = json.loads(self.payload)
        except ValueError as exc:
            raise PsiMessageRefused(f"{self.kind.name} payload is not JSON") from exc
        if not isinstance(body, dict):
            raise PsiMessageRefused(f"{self.kind.name} payload is not a JSON object")
        return body


def pack(kind: Kind, session: bytes, seq: int, payload: bytes, *, last: bool) -> bytes:
    count = len(payload) // _ITEM[kind]
    return HEADER.pack(MAGIC, VERSION, kind, session, seq, count, LAST if last else 0) + payload


def pack_json(kind: Kind, session: bytes, body: dict[str, Any]) -> bytes:
    return pack(kind, session, 0, json.dumps(body, sort_keys=True).encode(), last=True)


def unpack(data: bytes) -> Message:
    if len(data) < HEADER.size:
        raise PsiMessageRefused(
            f"PSI message of {len(data)} bytes is shorter than its header",
            hint="the message was truncated; restart the job",
        )
    magic, version, kind, session, seq, count, flags = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PsiMessageRefused("not a dataspace PSI message")
    if version != VERSION:
        # a v1 peer's points are hashed differently: the intersection would be silently empty
        raise PsiMessageRefused(f"PSI message version {version}, this node speaks {VERSION}",
                                hint="both nodes must run the same PSI version; upgrade the older")
    try:
        k = Kind(kind)
    except ValueError:
        raise PsiMessageRefused(f"unknown PSI message kind {kind}") from None
    payload = data[HEADER.size :]
    if len(payload) != count * _ITEM[k]:
        raise PsiMessageRefused(
            f"{k.name} #{seq} announces {count} items but carries {len(payload)} bytes",
            hint="the message was truncated or padded; restart the job",
        )
    return Message(k, session, seq, count, bool(flags & LAST), payload)
