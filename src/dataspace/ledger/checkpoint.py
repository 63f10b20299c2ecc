"""C2SP tlog-checkpoint bodies (c2sp.org/tlog-checkpoint), carried as signed notes.

::

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <root hash, standard base64>\\n
    [<extension line>\\n ...]

The log's key signs the body as a signed note (:mod:`dataspace.identity.note`). A body that
does not follow the format raises :class:`VerificationError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dataspace.errors import SignatureError, VerificationError
from dataspace.identity.note import (
    NoteSigner,
    NoteVerifier,
    OpenedNote,
    b64encode,
    open_note,
    parse_note,
    sign_note,
    strict_b64decode,
)
from dataspace.ledger.merkle import HASH_SIZE

MAX_SIZE = 2**64 - 1


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not self.origin:
            raise VerificationError("checkpoint origin is empty")
        if not 0 <= self.size <= MAX_SIZE:
            raise VerificationError(f"checkpoint size {self.size} is out of range")
        if len(self.root) != HASH_SIZE:
            raise VerificationError(f"checkpoint root is {len(self.root)} bytes, not {HASH_SIZE}")
        for ext in self.extensions:
            _check_line(ext, "extension line")
            if not ext:
                raise VerificationError("checkpoint extension lines may not be empty")

    def format(self) -> str:
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise VerificationError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError(
                f"checkpoint has {len(lines)} lines, needs at least 3 (origin, size, root)"
            )
        origin, size_s, root_s, *extensions = lines
        if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
            raise VerificationError(f"checkpoint size {size_s!r} is not a decimal number")
        if len(size_s) > 20:  # a tree size fits in 64 bits; int() of 4300+ digits raises
            raise VerificationError(f"checkpoint size {size_s[:24]}... is too large")
        try:
            root = strict_b64decode(root_s)
        except ValueError as exc:
            raise VerificationError(f"checkpoint root hash: {exc}") from None
        return cls(origin, int(size_s), root, tuple(extensions))

    def sign(self, signers: list[NoteSigner]) -> str:
        return sign_note(self.format(), signers)


def _check_line(value: str, what: str) -> None:
    if "\n" in value or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise VerificationError(f"checkpoint {what} contains a newline or control character")


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str
    verified_by: list[str]


def open_checkpoint(note: str, verifiers: Iterable[NoteVerifier]) -> SignedCheckpoint:
    """Verify a checkpoint note's signatures, then parse its body."""
    opened: OpenedNote = open_note(note, verifiers)
    return SignedCheckpoint(Checkpoint.parse(opened.text), note, opened.verified_by)


def peek_checkpoint(note: str) -> Checkpoint:
    """Parse a checkpoint note's body WITHOUT checking any signature."""
    try:
        return Checkpoint.parse(parse_note(note).text)
    except SignatureError as exc:
        raise VerificationError(f"not a checkpoint note: {exc.message}") from None
