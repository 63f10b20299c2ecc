"""Value-based column classification: what personal or organisation data a column holds.

Headers are hints; values decide. Every identifier detector validates what it finds
(check characters, birth dates, Luhn, issuer prefixes, number plans), so decoys with the
right shape are not flagged. See docs/classification.md.
"""

from dataspace.catalog.classify.base import Detector, Finding, HeaderVocab
from dataspace.catalog.classify.categories import (
    CATEGORIES,
    PI_CLASSES,
    CategoryInfo,
    category_info,
    is_identifier,
    is_personal,
    is_sensitive,
)
from dataspace.catalog.classify.engine import (
    DETECTORS,
    classify_column,
    override_finding,
    validate_value,
)

__all__ = [
    "CATEGORIES",
    "DETECTORS",
    "PI_CLASSES",
    "CategoryInfo",
    "Detector",
    "Finding",
    "HeaderVocab",
    "category_info",
    "classify_column",
    "is_identifier",
    "is_personal",
    "is_sensitive",
    "override_finding",
    "validate_value",
]
