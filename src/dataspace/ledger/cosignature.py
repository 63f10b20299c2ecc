"""Witness cosignatures on checkpoints: C2SP tlog-cosignature/v1 with Ed25519.

A cosignature is one more signature line on a checkpoint note::

    — <witness name> base64(key ID || u64 timestamp || Ed25519 signature)

over the message ``"cosignature/v1\\n" "time <timestamp>\\n"`` followed by the checkpoint's text
(its three lines and any extension lines). The key ID is the first four bytes of
SHA-256(name || "\\n" || 0x04 || public key): the algorithm byte differs from a note signature's
(0x01), so a cosignature and a note signature by the same key never share a key ID, and the
signed message always starts with ``cosignature/v1``, which no checkpoint's origin line does.
That is why a node can cosign with its own node key (its checkpoints' origin is its name).

By cosigning, a witness states that, as of the timestamp, this is the largest checkpoint of
that log it has seen, and that it is consistent with every earlier one it cosigned. Every
failure raises :class:`SignatureError`; nothing here returns a bool.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dataspace.errors import SignatureError
from dataspace.identity.note import (
    ALG_ED25519,
    SIG_PREFIX,
    NoteSigner,
    b64encode,
    check_name,
    parse_note,
    parse_verifier_key,
)

ALG_COSIGNATURE_V1 = 0x04
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
#: Clock skew allowed to a witness: a cosignature dated later than this past "now" is refused.
MAX_FUTURE_SECONDS = 600


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """First four bytes of SHA-256(name || "\\n" || 0x04 || public key)."""
    data = check_name(name).encode("utf-8") + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    return hashlib.sha256(data).digest()[:4]


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    """What a cosigner signs: the header line, the time line, the checkpoint's text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise SignatureError(f"cosignature timestamp {timestamp} is out of range")
    if not checkpoint_text.endswith("\n"):
        raise SignatureError("a checkpoint's text ends with a newline")
    return f"{HEADER}time {timestamp}\n{checkpoint_text}".encode()


class Cosigner:
    """A witness's signing side: its name (its note signer's) and its Ed25519 key."""

    def __init__(self, signer: NoteSigner) -> None:
        self.name = signer.name
        self._signer = signer
        self.key_id = cosigner_key_id(signer.name, signer.public_bytes)

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """The signature line to append to the checkpoint's note."""
        signature = self._signer.sign(signed_message(checkpoint_text, timestamp))
        blob = self.key_id + struct.pack(">Q", timestamp) + signature
        return f"{SIG_PREFIX}{self.name} {b64encode(blob)}\n"

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self._signer.public_bytes)


class CosignatureVerifier:
    """A witness's name and public key; checks its cosignatures on checkpoint notes."""

    def __init__(self, name: str, public_key: bytes) -> None:
        self.name = check_name(name)
        if len(public_key) != 32:
            raise SignatureError(f"Ed25519 public key for {name!r} must be 32 bytes")
        self.public_bytes = public_key
        self.key_id = cosigner_key_id(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        """A verifier key ``name+hhhhhhhh+base64(alg || key)``: alg 0x04 (a cosigner's key), or
        0x01 (a node's note key, the one its membership entry lists: it cosigns with it)."""
        name, _alg, public = parse_verifier_key(
            vkey.strip(), (ALG_COSIGNATURE_V1, ALG_ED25519), "witness key")
        return cls(name, public)

    def vkey(self) -> str:
        key = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_bytes).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{key}"

    def verify(self, note: str, now: float | None = None) -> int:
        """The timestamp of this witness's cosignature on ``note``. Every line with its name
        and key ID must verify and, given ``now``, be dated no later than
        :data:`MAX_FUTURE_SECONDS` after it; none at all is an error too."""
        parsed = parse_note(note)
        found: list[int] = []
        for sig in parsed.signatures:
            if sig.name != self.name or sig.key_id != self.key_id:
                continue
            if len(sig.signature) != 8 + 64:
                raise SignatureError(f"cosignature by {self.name!r} is not 8 + 64 bytes long")
            (timestamp,) = struct.unpack(">Q", sig.signature[:8])
            try:
                self._key.verify(sig.signature[8:], signed_message(parsed.text, timestamp))
            except InvalidSignature:
                raise SignatureError(
                    f"cosignature by witness {self.name!r} does not verify",
                    hint="the checkpoint was changed after cosigning, or the line was forged",
                ) from None
            if now is not None and timestamp > now + MAX_FUTURE_SECONDS:
                raise SignatureError(
                    f"cosignature by witness {self.name!r} is dated {timestamp}, "
                    f"{timestamp - int(now)} s in the future",
                    hint="check the witness's clock",
                )
            found.append(timestamp)
        if not found:
            raise SignatureError(f"the checkpoint carries no cosignature by witness {self.name!r}")
        return max(found)


def check_quorum(
    note: str,
    witnesses: Iterable[CosignatureVerifier],
    quorum: int | None = None,
    now: float | None = None,
) -> Mapping[str, int]:
    """Witness name → cosignature time, for the witnesses that cosigned ``note``; raises
    :class:`SignatureError` if fewer than ``quorum`` (default: all of them) did, if a line by
    one of them does not verify or is dated in the future (``now``, default the clock), or if
    one key is listed under two names (its signature does not cover the name: one line
    would count twice)."""
    witnesses = list({(w.name, w.public_bytes): w for w in witnesses}.values())  # the ID follows
    keys: dict[bytes, str] = {}
    for w in witnesses:
        if keys.setdefault(w.public_bytes, w.name) != w.name:
            raise SignatureError(
                f"one key is listed as two witnesses ({keys[w.public_bytes]!r}, {w.name!r})",
                hint="each witness has its own key; list it once",
            )
    need = len(witnesses) if quorum is None else quorum
    if not 0 < need <= len(witnesses):
        raise SignatureError(f"a quorum of {need} out of {len(witnesses)} witnesses is not one")
    at = time.time() if now is None else now
    found: dict[str, int] = {}
    missing: list[str] = []
    for witness in witnesses:
        try:
            found[witness.name] = witness.verify(note, at)
        except SignatureError as exc:
            if "carries no cosignature" not in exc.message:
                raise
            missing.append(witness.name)
    if len(found) < need:
        raise SignatureError(
            f"{len(found)} of the {need} witness cosignatures needed "
            f"(missing: {', '.join(missing)})",
            hint="ask the log's node to run `dataspace ledger witness`, then fetch it again",
        )
    return found
