"""A node with a known set of metered jobs across periods, agreements and currencies.

Known answers for November 2026 (see test_statements.py):

agr-1 (bank-a, CNY; 10.00 per job + 0.05 per 1k rows + 1.00 per MB out, first job free)
    j1 2026-10-31T23:59:59Z completed   1,000 rows             free        -> 0
    j2 2026-11-01T00:00:00Z completed  12,345 rows, 500,000 B  10+0.61725+0.5 -> 11.11725
    j3 2026-11-15T12:00:00Z denied                                           -> 0
    j4 2026-11-30T23:59:59.999999Z     2,000 rows, 1 B         10+0.1+0.000001 -> 10.100001
    j5 2026-12-01T00:00:00Z completed                                        -> 10
agr-2 (insurer-b, CNY; 0.125 per job)
    k1 2026-11-10 completed -> 0.125 (the total rounds half-even to 0.12)
agr-3 (bank-a, USD; 1 per job)
    u1, u2 2026-11-20 completed, ε 0.1 and 0.2 -> 2 (ε total exactly 0.3)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dataspace.metering import PriceTerms, Usage, record_usage
from dataspace.services.node import Node

ACTOR = "test:metering"
TERMS_1 = PriceTerms.parse(
    {"per_job": "10.00 CNY", "per_1k_rows_scanned": "0.05", "per_mb_out": "1.00", "free_jobs": 1}
)
TERMS_2 = PriceTerms.parse({"per_job": "0.125", "currency": "CNY"})
TERMS_3 = PriceTerms.parse({"per_job": "1 USD"})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def usage(agreement: str, job: str, finished: str, **kw: Any) -> Usage:
    end = at(finished)
    base: dict[str, Any] = {
        "agreement_id": agreement,
        "job_id": job,
        "action": "dp-query",
        "consumer": "bank-a",
        "provider": "tax-bureau",
        "dataset": "tax_records",
        "started_at": end - timedelta(seconds=2),
        "finished_at": end,
    }
    base.update(kw)
    return Usage(**base)


JOBS: list[tuple[Usage, PriceTerms]] = [
    (usage("agr-1", "j1", "2026-10-31T23:59:59Z", rows_scanned=1000), TERMS_1),
    (
        usage(
            "agr-1",
            "j2",
            "2026-11-01T00:00:00Z",
            rows_scanned=12_345,
            result_rows=3,
            bytes_out=500_000,
            epsilon_spent=Decimal("0.5"),
            delta_spent="0.000001",
            cpu_seconds=1.5,
            wall_seconds="2",
        ),
        TERMS_1,
    ),
    (usage("agr-1", "j3", "2026-11-15T12:00:00Z", status="denied"), TERMS_1),
    (
        usage(
            "agr-1",
            "j4",
            "2026-11-30T23:59:59.999999Z",
            rows_scanned=2000,
            result_rows=1,
            bytes_out=1,
            epsilon_spent="0.25",
            cpu_seconds=Decimal("0.25"),
        ),
        TERMS_1,
    ),
    (usage("agr-1", "j5", "2026-12-01T00:00:00Z"), TERMS_1),
    (
        usage("agr-2", "k1", "2026-11-10T08:00:00Z", consumer="insurer-b", action="psi"),
        TERMS_2,
    ),
    (usage("agr-3", "u1", "2026-11-20T08:00:00Z", epsilon_spent="0.1"), TERMS_3),
    (usage("agr-3", "u2", "2026-11-20T09:00:00Z", epsilon_spent="0.2"), TERMS_3),
]


@pytest.fixture
def metered(node: Node) -> Node:
    """The ``node`` fixture with every job in :data:`JOBS` metered."""
    with node.store.write() as session:
        for u, terms in JOBS:
            record_usage(session, u, actor=ACTOR, terms=terms)
    return node
