"""Identifier normalisation before hashing, per column kind, and composite key encoding.

Both parties must normalise the same way or equal identifiers will not match, so the kinds
(not the local column names) are part of the hash domain.

=========  ================================================================================
kind       rule
=========  ================================================================================
raw        unchanged
text       trim; full-width ASCII (U+FF01–FF5E) and the ideographic space to half-width
uscc       NFKC, drop spaces and separators, upper-case (统一社会信用代码)
id_card    NFKC, drop spaces and separators, upper-case the check character X (身份证号)
phone      NFKC, drop spaces and separators, strip +86 / 0086 / 86 before an 11-digit mobile
email      NFKC, trim, lower-case
=========  ================================================================================

NFKC is applied only to kinds whose valid values are ASCII, and with it format characters
(zero-width spaces, BOM, soft hyphen) are dropped; for free text it could merge
distinct names (e.g. ㈱ → (株)), so ``text`` only folds the width of ASCII characters.
Values that are not text become text first (:func:`identifier_text`): an integer as its digits,
and a floating-point or decimal value only when it is a whole number a double holds exactly
(``13800138000.0`` → ``13800138000``, as the same phone number stored as an integer or as text
on the other side); any other fraction or magnitude is refused, since the digits it stood for
are already lost. A composite key is the concatenation of
``len(utf8) (4 bytes, big-endian) || utf8`` per column, which no choice of values can make
ambiguous. A row with a null or empty key part is skipped.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from dataspace.privacy.psi.errors import PsiConfigError

__all__ = [
    "EXACT_FLOAT",
    "KINDS",
    "Column",
    "KeySpec",
    "encode_key",
    "identifier_text",
    "normalize",
]

KINDS = ("raw", "text", "uscc", "id_card", "phone", "email")
_SEPARATORS = re.compile(r"[\s\-‐-―·.()/_]")
_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_MOBILE = re.compile(r"(?:\+?86|0086)(1\d{10})")
_UPPER = frozenset({"uscc", "id_card"})
EXACT_FLOAT = 2**53  # every whole number below this in magnitude is exact in a double


def identifier_text(value: object) -> str:
    """The text an identifier value is normalised from. A whole number stored as a float or
    decimal reads as its digits; any other float or decimal is refused (a fraction is no
    identifier, and a double past 2^53 has already lost the digits it was imported from)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        whole = math.isfinite(value) and value.is_integer() and abs(value) < EXACT_FLOAT
    elif isinstance(value, Decimal):  # exact at any size; only a fraction is refused
        whole = value.is_finite() and value == value.to_integral_value()
    else:
        return str(value)
    if not whole:
        raise PsiConfigError(
            f"identifier value {value!r} is a fraction or a number beyond a double's exact"
            " range, so it cannot match the identifier it came from",
            hint="identifier columns must be text or integers: re-import the column as"
            " text (its digits as written), not as a floating-point number",
        )
    return str(int(value))


def _visible(value: str) -> str:
    """NFKC without format characters (zero-width spaces, BOM, soft hyphen): a pasted
    identifier carrying one is the same identifier on the other side."""
    folded = unicodedata.normalize("NFKC", value)
    if folded.isascii():
        return folded
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


def normalize(value: str, kind: str) -> str | None:
    """The normal form of one identifier, or None when nothing is left."""
    if value.isascii() and value.isalnum() and kind in ("raw", "text", "uscc", "id_card"):
        # ASCII letters and digits only: nothing to fold, trim or drop (the common case)
        return value.upper() if kind in _UPPER else value
    if kind == "raw":
        return value or None
    if kind == "text":
        out = value.translate(_WIDTH).strip()
    elif kind in ("uscc", "id_card"):
        out = _SEPARATORS.sub("", _visible(value)).upper()
    elif kind == "phone":
        out = _SEPARATORS.sub("", _visible(value))
        m = _MOBILE.fullmatch(out)
        if m:
            out = m.group(1)
    elif kind == "email":
        out = _visible(value).strip().lower()
    else:
        raise PsiConfigError(f"unknown column kind '{kind}'", hint="kinds: " + ", ".join(KINDS))
    return out or None


def encode_key(parts: Sequence[str]) -> bytes:
    """Length-prefixed encoding of the normalised parts of a (composite) key."""
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8")
        out += len(data).to_bytes(4, "big")
        out += data
    return bytes(out)


@dataclass(frozen=True)
class Column:
    """One key column: its local name and its kind."""

    name: str
    kind: str = "text"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PsiConfigError(
                f"unknown column kind '{self.kind}' for '{self.name}'",
                hint="kinds: " + ", ".join(KINDS),
            )


@dataclass(frozen=True)
class KeySpec:
    """The columns that form the join key, in order."""

    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        if not self.columns:
            raise PsiConfigError("a PSI key needs at least one column")

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        """``"credit_code:uscc"`` or ``"name:text,phone:phone"`` (kind defaults to text)."""
        cols = []
        for part in text.split(","):
            name, _, kind = part.strip().partition(":")
            if not name:
                raise PsiConfigError(f"empty column name in key spec '{text}'")
            cols.append(Column(name, kind or "text"))
        return cls(tuple(cols))

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(c.kind for c in self.columns)

    def describe(self) -> str:
        """What both parties must agree on (kinds, not local names): part of the hash domain."""
        return "+".join(self.kinds)

    def encode_row(self, values: Sequence[object]) -> bytes | None:
        parts = []
        for value, kind in zip(values, self.kinds, strict=True):
            if value is None:
                return None
            norm = normalize(identifier_text(value), kind)
            if norm is None:
                return None
            parts.append(norm)
        return encode_key(parts)
