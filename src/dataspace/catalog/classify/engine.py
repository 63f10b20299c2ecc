"""Run the detectors over a column sample and decide what the column holds.

1. Every detector checks the sampled non-null values (distinct values once, weighted by
   how often they occur). A detector whose header keyword appears in the column name runs
   with ``hinted=True`` and may accept looser values.
2. A detector *classifies* the column when the share of values it validates reaches its
   threshold (``min_share``, or a small presence threshold for minors) and its column-level
   check raises no objection (dense sequences are not passports or cards).
3. Overlaps: candidates are taken most specific first (``rank``); a candidate is dropped
   when at least half of the values it matched were already explained by an accepted one.
   So a column of resident ID numbers is not also a bank-card column because 1 in 10 of
   them happens to pass Luhn, and precise coordinates are not also reported as coarse ones.
4. A header keyword whose values do not confirm it yields a header-only finding with low
   confidence that says so.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from dataspace.catalog.classify import (
    address,
    bank_card,
    demographic,
    email,
    geo,
    id_card,
    mobile,
    names,
    network,
    passport,
    sensitive,
    uscc,
    vehicle_plate,
)
from dataspace.catalog.classify.base import Detector, Finding
from dataspace.catalog.classify.categories import CATEGORIES
from dataspace.errors import UsageError

#: confidence of a finding from the column name alone, values silent (empty or masked)
HEADER_ONLY_CONFIDENCE = 0.45
#: confidence of a header-only finding when the values contradict it
CONTRADICTED_HEADER_CONFIDENCE = 0.2
#: values needed before "values do not confirm" counts as a contradiction
CONTRADICTION_MIN_VALUES = 20

DETECTORS: tuple[Detector, ...] = (
    id_card.IdCardDetector(),
    uscc.UsccDetector(),
    bank_card.BankCardDetector(),
    email.EmailDetector(),
    vehicle_plate.VehiclePlateDetector(),
    mobile.MobileDetector(),
    network.Ipv4Detector(),
    network.Ipv6Detector(),
    geo.PreciseGeoDetector(),
    geo.GeoDetector(),
    passport.PassportDetector(),
    names.PersonNameDetector(),
    address.AddressDetector(),
    *sensitive.DETECTORS,
    *demographic.DETECTORS,
)


@dataclass
class _Result:
    detector: Detector
    hint: str | None
    matched: int
    matched_values: set[str]
    share: float | None  # None: stopped early, certainly below threshold
    threshold: float


def _run(
    det: Detector, counts: Counter[str], n: int, hint: str | None, thr: float
) -> _Result:
    hinted = hint is not None
    budget = n - math.ceil(thr * n - 1e-9)  # misses allowed before the threshold is out of reach
    matched = misses = 0
    values: set[str] = set()
    for value, count in counts.items():
        if det.match(value, hinted=hinted):
            matched += count
            values.add(value)
        else:
            misses += count
            if misses > budget and not hinted:
                return _Result(det, hint, matched, values, None, thr)
    return _Result(det, hint, matched, values, matched / n if n else 0.0, thr)


def _size_factor(n: int) -> float:
    return n / (n + 5)


def _values_finding(r: _Result, name: str, n: int, min_share: float) -> Finding:
    det = r.detector
    info = CATEGORIES[det.category]
    share = r.share or 0.0
    presence = r.threshold < 0.5
    base = det.strength * _size_factor(n) * (1.0 if presence else share)
    reason = f"{r.matched:,} of {n:,} sampled values are {det.evidence}"
    if presence:
        reason += f" (at least {r.threshold:.0%} marks the column)"
    if r.hint is not None:
        confidence = 1 - (1 - base) / 2
        reason += f"; the column name '{name}' agrees (keyword '{r.hint}')"
        source = "values+header"
    else:
        confidence = base
        source = "values"
    return Finding(det.category, info.label, info.pi_class, share, round(confidence, 4),
                   reason, source)


def _header_finding(
    r: _Result, name: str, n: int, explained_by: str | None, masked: int
) -> Finding:
    det = r.detector
    info = CATEGORIES[det.category]
    share = r.share or 0.0
    reason = f"header only: the column name '{name}' contains '{r.hint}'"
    if n == 0:
        reason += "; no non-null values were sampled"
        confidence = HEADER_ONLY_CONFIDENCE
    else:
        reason += f"; values do not confirm it ({r.matched:,} of {n:,} are {det.evidence}"
        reason += f", {masked:,} masked)" if masked else ")"
        # Masked values ("110105********002X") are silent, not evidence against the name.
        unmasked = n - masked
        contradicted = unmasked >= CONTRADICTION_MIN_VALUES and r.matched < 0.1 * unmasked
        if explained_by:
            reason += f"; the values look like {explained_by} instead"
            contradicted = True
        confidence = CONTRADICTED_HEADER_CONFIDENCE if contradicted else HEADER_ONLY_CONFIDENCE
    return Finding(det.category, info.label, info.pi_class, share, confidence, reason, "header")


#: what masks digits: a run of two or more stands where digits were ("138****5678"); one
#: after a Han character masks a name's given part ("张*")
MASK_CHARS = "*＊"
_MASKED = re.compile(
    f"[{re.escape(MASK_CHARS)}]{{2,}}|(?<=[\u4e00-\u9fff])[{re.escape(MASK_CHARS)}]"
)

#: what exports write for "no value": not a failed identifier (30 % "NULL" beside 70 % valid
#: ID numbers is a column of ID numbers)
MISSING_MARKERS = frozenset({"null", "none", "nil", "nan", "n/a", "na", "#n/a", "-", "--", "—",
                             "无", "空", "暂无", "不详"})


def is_missing(value: str | None) -> bool:
    """None, blank, or a placeholder an export writes for a missing value."""
    return value is None or not value.strip() or value.strip().lower() in MISSING_MARKERS


def classify_column(
    name: str,
    values: Sequence[str | None],
    *,
    min_share: float = 0.8,
    detectors: Sequence[Detector] | None = None,
) -> list[Finding]:
    """What ``values`` (a sample of one column, rendered as strings) contain.

    Findings are sorted by confidence, best first; an empty list means nothing was found.
    ``min_share`` is the share of the values present (not null, blank or a placeholder such
    as ``NULL`` or ``N/A``: :data:`MISSING_MARKERS`) that must validate.
    """
    if not 0 < min_share <= 1:
        raise UsageError(f"min_share must be in (0, 1], got {min_share}",
                         hint="use e.g. 0.8 (the classify_min_share setting)")
    counts = Counter(v for v in values if v is not None and not is_missing(v))
    n = sum(counts.values())
    masked = sum(c for v, c in counts.items() if _MASKED.search(v))
    results = []
    for det in detectors if detectors is not None else DETECTORS:
        hint = det.header_hint(name)
        results.append(_run(det, counts, n, hint, det.threshold(min_share)))

    candidates = [
        r for r in results
        if n and r.share is not None and r.matched and r.share >= r.threshold
        and r.detector.accept_column(sorted(r.matched_values), hinted=r.hint is not None) is None
    ]
    candidates.sort(key=lambda r: (-r.detector.rank, -(r.share or 0.0)))
    accepted: list[_Result] = []
    for r in candidates:
        if any(
            len(r.matched_values & a.matched_values) >= 0.5 * len(r.matched_values)
            for a in accepted
        ):
            continue
        accepted.append(r)

    findings: dict[str, Finding] = {}
    for r in accepted:
        f = _values_finding(r, name, n, min_share)
        if f.category not in findings or f.confidence > findings[f.category].confidence:
            findings[f.category] = f
    explained = ", ".join(CATEGORIES[c].label for c in findings) or None
    confirmed_hints = {r.hint for r in accepted if r.hint is not None}
    for r in results:
        cat = r.detector.category
        if r.hint is None or not r.detector.header_only or cat in findings:
            continue
        if r.hint in confirmed_hints:  # "ip" confirmed as IPv4 is not also an IPv6 hint
            continue
        f = _header_finding(r, name, n, explained, masked)
        if cat not in findings or f.confidence > findings[cat].confidence:
            findings[cat] = f
    return sorted(findings.values(), key=lambda f: (-f.confidence, f.category))


def detectors_for(category: str) -> tuple[Detector, ...]:
    return tuple(d for d in DETECTORS if d.category == category)


def validate_value(category: str, value: str | None) -> bool:
    """True if ``value`` is a valid instance of ``category`` (for the quality module).

    The value is judged as if the column were known to hold the category (``hinted``);
    null or blank values are never valid; categories without a value check (``none``)
    accept every non-blank value.
    """
    if category not in CATEGORIES:
        raise UsageError(f"unknown category '{category}'",
                         hint="known categories: " + ", ".join(sorted(CATEGORIES)))
    if value is None or not value.strip():
        return False
    dets = detectors_for(category)
    if not dets:
        return True
    return any(d.match(value, hinted=True) for d in dets)


def override_finding(category: str, *, note: str = "") -> Finding:
    """The finding an operator sets with ``reclassify --as CATEGORY``."""
    info = CATEGORIES.get(category)
    if info is None:
        raise UsageError(f"unknown category '{category}'",
                         hint="known categories: " + ", ".join(sorted(CATEGORIES)))
    reason = "set by the operator" + (f": {note}" if note else "")
    return Finding(category, info.label, info.pi_class, 1.0, 1.0, reason, "override")
