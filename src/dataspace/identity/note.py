"""C2SP signed notes (c2sp.org/signed-note), Ed25519 keys only.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines::

    <text>\\n
    \\n
    — <key name> <base64(key ID || signature)>\\n

The key ID is the first four bytes of SHA-256(name || "\\n" || 0x01 || public key), so a
signature names the key it claims. Verifier keys travel as ``name+hhhhhhhh+base64(0x01||pub)``
(the same strings Go's golang.org/x/mod/sumdb/note reads); Go's private key strings
``PRIVATE+KEY+name+hhhhhhhh+base64(0x01||seed)`` are accepted too.

Verification follows the spec: signatures by unknown keys are ignored, a signature by a known
key that does not verify rejects the note, and at least one known key must have signed.
Every failure raises :class:`SignatureError`; nothing here returns a bool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dataspace.errors import SignatureError
from dataspace.identity.keys import public_bytes

ALG_ED25519 = 0x01
SIG_PREFIX = "— "  # U+2014 EM DASH, then a space
MAX_SIGNATURES = 100


def strict_b64decode(value: str) -> bytes:
    """Decode standard, padded base64 and refuse any other spelling of the same bytes."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != value:
        raise ValueError("not canonical base64")
    return raw


def b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def check_name(name: str) -> str:
    """A key name: non-empty, no Unicode whitespace, no '+'."""
    if not name:
        raise SignatureError("key name is empty", hint="name the key, e.g. after the node's origin")
    if "+" in name or any(ch.isspace() for ch in name):
        raise SignatureError(
            f"key name {name!r} contains whitespace or '+'",
            hint="key names may not contain spaces, other whitespace or '+'",
        )
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise SignatureError(f"key name {name!r} contains a control character")
    return name


def key_id(name: str, public_key: bytes, algorithm: int = ALG_ED25519) -> bytes:
    """First four bytes of SHA-256(name || "\\n" || algorithm || public key)."""
    data = name.encode("utf-8") + b"\n" + bytes([algorithm]) + public_key
    return hashlib.sha256(data).digest()[:4]


def _split_key(
    text: str, algorithms: Collection[int], what: str, *, secret: bool = False
) -> tuple[str, str, bytes]:
    """``name+hhhhhhhh+base64(alg || 32 bytes)`` split and decoded: (name, hhhhhhhh, bytes),
    the algorithm one of ``algorithms``. The key ID is the caller's to check. A ``secret``
    key's text is never repeated in an error."""
    if not secret and ("PRIVATE KEY-----" in text or text.startswith("PRIVATE+KEY+")):
        # a node.key (PEM) or a note signer key given for a public key
        raise SignatureError(f"the {what} given is a private key (not repeated here)",
                             hint="pass the public key, e.g. the node's keys/node.pub; keep "
                             "node.key to yourself")
    parts = text.split("+", 2)  # names hold no '+', base64 may
    if len(parts) != 3:
        shown = "" if secret else f" {text if len(text) <= 80 else text[:60] + '…'!r}"
        raise SignatureError(f"malformed {what}{shown}",
                             hint="expected name+hhhhhhhh+base64-key, e.g. a node.pub")
    name, hash_hex, b64 = parts
    check_name(name)
    try:
        raw = strict_b64decode(b64)
    except ValueError as exc:
        raise SignatureError(f"malformed {what} for {name!r}: {exc}") from None
    if len(raw) != 33 or raw[0] not in algorithms:
        raise SignatureError(f"{what} for {name!r} is not an Ed25519 key",
                             hint="only Ed25519 keys (algorithm 0x01) are supported")
    return name, hash_hex, raw


def parse_verifier_key(
    vkey: str, algorithms: Collection[int], what: str = "verifier key"
) -> tuple[str, int, bytes]:
    """``name+hhhhhhhh+base64(alg || key)`` read and checked: an Ed25519 key (32 bytes) under
    one of ``algorithms``, whose key ID is ``hhhhhhhh``. Returns (name, alg, key)."""
    name, hash_hex, raw = _split_key(vkey, algorithms, what)
    expected = key_id(name, raw[1:], raw[0]).hex()
    if hash_hex != expected:
        raise SignatureError(f"{what} for {name!r} names key ID {hash_hex}, "
                             f"but the key's ID is {expected}")
    return name, raw[0], raw[1:]


def _check_text(text: str) -> bytes:
    if not text.endswith("\n"):
        raise SignatureError("malformed note: text must end with a newline")
    for ch in text:
        if (ord(ch) < 0x20 and ch != "\n") or ord(ch) == 0x7F:
            raise SignatureError(
                f"malformed note: text contains control character U+{ord(ch):04X}",
                hint="only newlines may appear among the ASCII control characters",
            )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise SignatureError("malformed note: text is not valid UTF-8") from None


class NoteVerifier:
    """A named Ed25519 public key that checks note signatures."""

    def __init__(self, name: str, public_key: Ed25519PublicKey | bytes) -> None:
        self.name = check_name(name)
        raw = public_key if isinstance(public_key, bytes) else public_bytes(public_key)
        if len(raw) != 32:
            raise SignatureError(
                f"Ed25519 public key for {name!r} must be 32 bytes, got {len(raw)}"
            )
        self.public_bytes = raw
        self.key_id = key_id(name, raw)
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Read a verifier key string ``name+hhhhhhhh+base64(0x01||pub)``."""
        name, _alg, public = parse_verifier_key(vkey, (ALG_ED25519,))
        return cls(name, public)

    def verifier_key(self) -> str:
        return (
            f"{self.name}+{self.key_id.hex()}+{b64encode(bytes([ALG_ED25519]) + self.public_bytes)}"
        )

    def verify(self, message: bytes, signature: bytes) -> None:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(
                f"signature by key {self.name!r} ({self.key_id.hex()}) does not verify",
                hint="the note was changed after signing, or signed by another key of that name",
            ) from None

    def __repr__(self) -> str:
        return f"NoteVerifier({self.verifier_key()!r})"


class NoteSigner:
    """A named Ed25519 private key that signs notes."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_name(name)
        self._key = private_key
        self.public_bytes = public_bytes(private_key)
        self.key_id = key_id(name, self.public_bytes)

    @classmethod
    def parse(cls, skey: str) -> NoteSigner:
        """Read Go's private key string ``PRIVATE+KEY+name+hhhhhhhh+base64(0x01||seed)``."""
        prefix = "PRIVATE+KEY+"
        if not skey.startswith(prefix):
            raise SignatureError("malformed private key string", hint="expected PRIVATE+KEY+...")
        name, hash_hex, raw = _split_key(skey[len(prefix) :], (ALG_ED25519,), "private key",
                                         secret=True)
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id.hex() != hash_hex:
            raise SignatureError(f"private key string for {name!r} names the wrong key ID")
        return signer

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.public_bytes)

    def verifier_key(self) -> str:
        return self.verifier().verifier_key()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def signature_line(self, text: str) -> str:
        sig = self.sign(_check_text(text))
        return f"{SIG_PREFIX}{self.name} {b64encode(self.key_id + sig)}\n"

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, {self.key_id.hex()})"


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes
    line: str


@dataclass(frozen=True)
class ParsedNote:
    """A note split into its text and signature lines; nothing verified yet."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signatures by the given keys verified."""

    text: str
    verified_by: list[str]


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` with every signer; the text must end with a newline."""
    _check_text(text)
    if not signers:
        raise SignatureError("a note needs at least one signer")
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


def parse_note(note: str) -> ParsedNote:
    """Split a note into text and signatures (malformed notes raise); verifies nothing."""
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise SignatureError("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise SignatureError("malformed note: it has no signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise SignatureError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    sigs: list[NoteSignature] = []
    for number, line in enumerate(lines, 1):
        if not line.startswith(SIG_PREFIX):
            raise SignatureError(
                f"malformed note: signature line {number} does not start with '— '"
            )
        name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not b64:
            raise SignatureError(f"malformed note: signature line {number} has no signature")
        try:
            check_name(name)
            raw = strict_b64decode(b64)
        except (SignatureError, ValueError) as exc:
            raise SignatureError(f"malformed note: signature line {number}: {exc}") from None
        if len(raw) < 5:
            raise SignatureError(f"malformed note: signature line {number} is too short")
        sigs.append(NoteSignature(name, raw[:4], raw[4:], line))
    return ParsedNote(text, tuple(sigs))


def open_note(note: str, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Check a note's signatures: every line by a known key must verify (a repeated one
    too: a second line by a known key that does not verify rejects the note), and at least
    one key must be known. Lines by unknown keys are ignored."""
    parsed = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = parsed.text.encode("utf-8")
    verified: list[str] = []
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        verifier.verify(message, sig.signature)
        if sig.name not in verified:
            verified.append(sig.name)
    if not verified:
        signers = {(s.name, s.key_id.hex()) for s in parsed.signatures}
        names = ", ".join(f"{name} (key id {kid})" for name, kid in sorted(signers))
        mine = {v.name: v.key_id.hex() for v in known.values()}
        same_name = sorted(f"{n}: key id {mine[n]} given, {k} signed" for n, k in signers
                           if n in mine and mine[n] != k)  # fmt: skip
        raise SignatureError(
            "note is not signed by any known key",
            hint=(f"the name matches but the key does not ({'; '.join(same_name)}): another "
                  "key signed it under that name" if same_name else
                  f"it is signed by: {names}; pass the verifier key of one of them"),
        )  # fmt: skip
    return OpenedNote(parsed.text, verified)
