"""Reading a node's ledger in tests."""

from __future__ import annotations

from typing import Any

from dataspace.ledger import log
from dataspace.services.node import Node


def payloads(node: Node, action: str, job_id: str | None = None) -> list[dict[str, Any]]:
    """The payloads of the node's ledger entries of ``action`` (of job ``job_id`` if given)."""
    with node.store.read() as session:
        rows = [r.to_dict() for r in log.entries(session, 0, 100_000)]
    out = [r["payload"] for r in rows if r["entry"]["action"] == action]
    return [p for p in out if job_id is None or p.get("job_id") == job_id]
