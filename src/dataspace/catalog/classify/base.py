"""Shared pieces of the classifier: the finding record, the detector protocol, and helpers.

A *detector* answers one question about one value ("is this a valid resident ID number?")
and one question about a column name ("does this header suggest my category?"). The engine
(:mod:`dataspace.catalog.classify.engine`) runs every detector over a column's sample and
turns the shares into :class:`Finding` records.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

SOURCES = ("values", "header", "values+header", "override")


@dataclass(frozen=True)
class Finding:
    """What the classifier concluded about one column, and why."""

    category: str
    label: str
    pi_class: str
    share: float
    confidence: float
    reason: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "label": self.label,
            "pi_class": self.pi_class,
            "share": round(self.share, 4),
            "confidence": round(self.confidence, 4),
            "reason": self.reason,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            category=str(data["category"]),
            label=str(data["label"]),
            pi_class=str(data["pi_class"]),
            share=float(data["share"]),
            confidence=float(data["confidence"]),
            reason=str(data["reason"]),
            source=str(data["source"]),
        )


@runtime_checkable
class Detector(Protocol):
    """One category's value validator and header vocabulary."""

    category: str
    #: higher wins when two detectors explain the same values ("most specific wins")
    rank: int
    #: how much a validating value proves (checksummed ids near 1, word lists lower)
    strength: float
    #: plural noun phrase used in reasons: "valid 18-digit resident ID numbers (...)"
    evidence: str
    #: whether a column name alone may produce a (low-confidence) finding
    header_only: bool

    def match(self, value: str, *, hinted: bool = False) -> bool:
        """True if ``value`` is an instance of the category.

        ``hinted`` is True when the column header already suggests the category; detectors
        whose values are ambiguous on their own (numbers for income, ``I10`` for a
        diagnosis) accept them only then.
        """
        ...

    def header_hint(self, name: str) -> str | None:
        """The keyword in ``name`` that suggests this category, or None."""
        ...

    def threshold(self, min_share: float) -> float:
        """Share of sampled values needed to classify the column."""
        ...

    def accept_column(self, matched: Sequence[str], *, hinted: bool) -> str | None:
        """Column-level veto: a reason to reject a column whose values all match, or None."""
        ...


# --- normalisation ---------------------------------------------------------------------

_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH[0x3000] = 0x20  # ideographic space


def to_halfwidth(value: str) -> str:
    """Full-width ASCII (０-９, Ａ-Ｚ, ＠, ...) to half-width; other characters unchanged."""
    return value.translate(_FULLWIDTH)


_WHOLE_NUMBER = re.compile(r"([0-9]{11,})\.0+")


def compact(value: str, drop: str = " -") -> str:
    """What an identifier detector reads: NFKC (full-width digits and letters to half-width;
    no-break, ideographic and other spaces to spaces), format characters (zero-width spaces,
    soft hyphens, byte order marks) removed, trimmed, the characters in ``drop`` removed — a
    space there removes every kind of whitespace, tabs included — and a long digit string
    written as a float by a spreadsheet or pandas (``13812345678.0``) without its ``.0``."""
    text = unicodedata.normalize("NFKC", value)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf").strip()
    for ch in drop:
        text = "".join(c for c in text if not c.isspace()) if ch == " " else text.replace(ch, "")
    whole = _WHOLE_NUMBER.fullmatch(text)
    return whole.group(1) if whole else text


def is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def all_han(text: str) -> bool:
    return bool(text) and all(is_han(c) for c in text)


# --- header vocabulary -----------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEP = re.compile(r"[^0-9a-z\u3400-\u9fff]+")


def header_tokens(name: str) -> str:
    """``"clientIP-Addr"`` -> ``"_client_ip_addr_"``; Chinese characters are kept as they are."""
    text = unicodedata.normalize("NFKC", name)
    text = _CAMEL.sub("_", text).lower()
    return "_" + "_".join(t for t in _SEP.split(text) if t) + "_"


@dataclass(frozen=True)
class HeaderVocab:
    """Keywords that suggest a category in a column name.

    ``zh`` keywords match as substrings (Chinese has no word separators); ``en`` keywords
    match whole tokens or token sequences (``"id_card"`` matches ``idCard`` and
    ``customer_id_card`` but ``"ip"`` does not match ``zip``). ``exclude`` keywords veto.
    """

    zh: tuple[str, ...] = ()
    en: tuple[str, ...] = ()
    exclude_zh: tuple[str, ...] = ()
    exclude_en: tuple[str, ...] = ()

    def hint(self, name: str) -> str | None:
        tokens = header_tokens(name)
        if any(k in tokens for k in self.exclude_zh):
            return None
        if any(f"_{k}_" in tokens for k in self.exclude_en):
            return None
        for k in self.zh:
            if k in tokens:
                return k
        for k in self.en:
            if f"_{k}_" in tokens:
                return k
        return None


class BaseDetector:
    """Defaults for the :class:`Detector` protocol; subclasses set the attributes and ``match``."""

    category: str = ""
    rank: int = 0
    strength: float = 0.8
    evidence: str = ""
    header_only: bool = True
    vocab: HeaderVocab = HeaderVocab()

    def match(self, value: str, *, hinted: bool = False) -> bool:  # pragma: no cover
        raise NotImplementedError

    def header_hint(self, name: str) -> str | None:
        return self.vocab.hint(name)

    def threshold(self, min_share: float) -> float:
        return min_share

    def accept_column(self, matched: Sequence[str], *, hinted: bool) -> str | None:
        return None


def wordlist(text: str) -> tuple[str, ...]:
    """Whitespace-separated words of a literal (keeps long vocabularies readable)."""
    return tuple(text.split())


def words(*groups: Iterable[str]) -> frozenset[str]:
    """A case-folded word set from several iterables."""
    return frozenset(w.casefold() for g in groups for w in g)
