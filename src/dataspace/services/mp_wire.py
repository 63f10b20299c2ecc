"""The wire of multi-party jobs: framed step messages, the signed client, the failure error.

A step travels as one signed ``POST /peer/v1/mp/step`` whose body is a **frame**::

    b"DSMP" | version (1 byte) | header length (4 bytes, big-endian) | header (UTF-8 JSON)
           | for each blob: length (4 bytes, big-endian) | blob

The header is JSON (job id, step number, step name, parameters); the blobs are the protocol
cores' byte messages (PSI points, secure-aggregation envelopes). The answer uses the same frame.
Everything a participant acts on is inside the signed body (RFC 9421 covers its digest), never
in an unsigned header. Errors come back as the node's one JSON error envelope.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from dataspace.errors import DataspaceError, InputError
from dataspace.services.job_wire import error_from_envelope, jsonable
from dataspace.services.node import Node

__all__ = [
    "ABORT_PATH",
    "ALIVE_PATH",
    "FRAME_MEDIA_TYPE",
    "STEP_PATH",
    "MultipartyFailed",
    "PeerRefused",
    "call_peer",
    "pack_frame",
    "unpack_frame",
]

MAGIC, VERSION = b"DSMP", 1
FRAME_MEDIA_TYPE = "application/vnd.dataspace.mp-frame"
STEP_PATH = "/peer/v1/mp/step"
ABORT_PATH = "/peer/v1/mp/abort"
ALIVE_PATH = "/peer/v1/mp/alive"
MAX_BLOBS = 100_000
TRANSPORT_ATTEMPTS = 3  # a step is idempotent, so a lost connection is retried as is


class MultipartyFailed(DataspaceError):
    """A multi-party job ended FAILED: a peer failed, disconnected, timed out or refused."""

    code = "multiparty_failed"
    exit_code = 12
    http_status = 502


class PeerRefused(MultipartyFailed):
    """A participant refused a step (its agreement denies, its data does not fit, ...)."""

    code = "peer_refused"
    http_status = 403


def pack_frame(header: Mapping[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    head = json.dumps(jsonable(dict(header)), separators=(",", ":")).encode("utf-8")
    parts = [MAGIC, bytes([VERSION]), struct.pack(">I", len(head)), head]
    for blob in blobs:
        parts.append(struct.pack(">I", len(blob)))
        parts.append(bytes(blob))
    return b"".join(parts)


def unpack_frame(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Split a frame; refuses a wrong magic or version, truncation and trailing bytes."""
    if len(data) < 9 or data[:4] != MAGIC or data[4] != VERSION:
        raise InputError("not a multi-party step frame", hint="send a DSMP v1 frame")
    (size,) = struct.unpack(">I", data[5:9])
    end = 9 + size
    if end > len(data):
        raise InputError("the step frame's header is truncated")
    try:
        header = json.loads(data[9:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError("the step frame's header is not JSON") from None
    if not isinstance(header, dict):
        raise InputError("the step frame's header is not a JSON object")
    blobs: list[bytes] = []
    at = end
    while at < len(data):
        if at + 4 > len(data) or len(blobs) >= MAX_BLOBS:
            raise InputError("the step frame is truncated or holds too many blobs")
        (n,) = struct.unpack(">I", data[at : at + 4])
        if at + 4 + n > len(data):
            raise InputError("a blob of the step frame is truncated")
        blobs.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    return header, blobs


def call_peer(
    node: Node,
    peer: str,
    path: str,
    body: bytes,
    *,
    timeout: float,
    content_type: str = FRAME_MEDIA_TYPE,
    attempts: int = TRANSPORT_ATTEMPTS,
) -> bytes:
    """POST a signed body to ``peer``; returns the answer's body.

    Transport failures (refused connection, reset, timeout) are retried ``attempts`` times —
    safe because steps are idempotent — then raise :class:`MultipartyFailed`. An error answer
    raises :class:`PeerRefused` carrying the peer's code, message and reasons.
    """
    from dataspace.services.peers import peer_client

    cap = answer_cap(node)
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            with peer_client(node, peer, timeout=timeout) as client:
                return post_capped(client, peer, path, body, content_type=content_type, cap=cap)
        except httpx.TransportError as exc:
            last = exc
            time.sleep(0.2 * (attempt + 1))
            continue
    kind = type(last).__name__ if last else "no answer"
    raise MultipartyFailed(
        f"{peer} did not answer ({kind}: {last})",
        hint=f"check that {peer} is up, then `dataspace job retry`",
        node=peer,
        cause="unreachable",
        transport=kind,
    )


def answer_cap(node: Node) -> int:
    """The most bytes this node reads of a peer's answer: what it accepts as a peer's request
    (``peer_max_body_mb``); a participant must not be able to exhaust the initiator's memory."""
    return int(node.limits.peer_max_body_mb) << 20


def post_capped(
    client: httpx.Client, peer: str, path: str, body: bytes, *, content_type: str, cap: int
) -> bytes:
    """POST ``body``; the answer's body when it is a 200, read ``cap`` bytes at most (a longer
    one fails the job, whatever its Content-Length says); else :func:`refusal`."""
    with client.stream("POST", path, content=body,
                       headers={"content-type": content_type}) as response:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _oversized(peer, cap)
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > cap:
                raise _oversized(peer, cap)
        if response.status_code != 200:
            raise refusal(peer, response.status_code, bytes(data))
        return bytes(data)


def _oversized(peer: str, cap: int) -> MultipartyFailed:
    return MultipartyFailed(
        f"{peer}'s answer passes {cap >> 20} MiB, the most this node reads of one",
        hint="raise peer_max_body_mb in node.toml [limits] if such answers are expected",
        node=peer,
        cause="oversized",
    )


def refusal(peer: str, status: int, content: bytes) -> PeerRefused:
    """The error a peer's non-200 answer (its status and body) stands for."""
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", errors="replace")
    inner = error_from_envelope(body, status)
    details = inner.details if isinstance(inner.details, dict) else {}
    reasons = [
        r for r in details.get("reasons", []) if isinstance(r, dict) and not r.get("held", False)
    ]
    error = PeerRefused(
        f"{peer} refused: {inner.message}",
        hint=inner.hint or "see the job's steps for the peer's reason",
        node=peer,
        peer_code=inner.code,
        reasons=reasons,
        cause="refused",
    )
    if status >= 500:  # the peer failed rather than refused
        error.code = "multiparty_failed"
        error.http_status = 502
    return error
