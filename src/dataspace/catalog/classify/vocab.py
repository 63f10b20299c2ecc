"""A detector driven by word lists and patterns, for categories without a checksum.

Health, religion, marital status and the like are recognised from what the values *say*
(diagnosis names, ICD-10 codes, religion names) and from the column name. Values that are
only meaningful next to a telling header (``I10``, ``12``, ``M``) are accepted only when the
header hints at the category (``hinted=True``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dataspace.catalog.classify.base import BaseDetector, HeaderVocab, to_halfwidth, words


class VocabDetector(BaseDetector):
    """Matches exact terms, contained terms or patterns; looser sets when hinted."""

    def __init__(
        self,
        *,
        category: str,
        evidence: str,
        vocab: HeaderVocab,
        terms: Iterable[str] = (),
        contains: Iterable[str] = (),
        patterns: Iterable[str] = (),
        hinted_terms: Iterable[str] = (),
        hinted_patterns: Iterable[str] = (),
        rank: int = 10,
        strength: float = 0.7,
        header_only: bool = True,
    ) -> None:
        self.category = category
        self.evidence = evidence
        self.vocab = vocab
        self.rank = rank
        self.strength = strength
        self.header_only = header_only
        self._terms = words(terms)
        self._contains = tuple(contains)
        self._patterns = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
        self._hinted_terms = words(hinted_terms)
        self._hinted_patterns = tuple(re.compile(p, re.IGNORECASE) for p in hinted_patterns)

    def match(self, value: str, *, hinted: bool = False) -> bool:
        text = to_halfwidth(value).strip()
        if not text:
            return False
        folded = text.casefold()
        if folded in self._terms or any(t in text for t in self._contains):
            return True
        if any(p.fullmatch(text) for p in self._patterns):
            return True
        if hinted:
            if folded in self._hinted_terms:
                return True
            return any(p.fullmatch(text) for p in self._hinted_patterns)
        return False
