"""Sample datasets shipped with dataspace, for the demo and the tests.

``generate.py`` writes them deterministically; the generated files are committed.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
SAMPLES = ("sme_loans.csv", "tax_records.csv", "patients.jsonl", "grid_power.parquet")


def sample_path(name: str) -> Path:
    """The path of one shipped sample file, e.g. ``sample_path("sme_loans.csv")``."""
    if name not in SAMPLES:
        raise KeyError(f"no sample named {name!r}; samples: {', '.join(SAMPLES)}")
    return SAMPLES_DIR / name
