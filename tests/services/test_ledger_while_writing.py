"""The ledger's faces while the node keeps appending: the audit and the usage reconciliation
see one state, proofs match the checkpoint they carry, and out-of-range pages are empty, not
errors (SQLite, and PostgreSQL when DATASPACE_TEST_DATABASE_URL is set — where each statement
of a plain read sees newer rows)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from dataspace.ledger import log
from dataspace.ledger.proof import verify_bundle
from dataspace.metering import Usage, record_usage
from dataspace.services import ledger, usage
from dataspace.services.node import Node


def _usage(job: str) -> Usage:
    now = datetime.now(UTC)
    return Usage(agreement_id="agr-1", job_id=job, action="governed-query", consumer="bank",
                 provider="tax-bureau", dataset="tax", started_at=now, finished_at=now)


@contextmanager
def _appending(node: Node) -> Iterator[list[int]]:
    """Another writer appends entries, one transaction each, until the block ends."""
    stop, written = threading.Event(), [0]

    def write() -> None:
        while not stop.is_set():
            with node.store.write() as session:
                log.append(session, actor="test", action="load.tick", payload={"n": written[0]})
            written[0] += 1

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield written
    finally:
        stop.set()
        thread.join(30)


def _seed(node: Node, entries: int) -> None:
    with node.store.write() as session:
        log.append_many(session, [log.NewEntry("test", "load.seed", {"i": i})
                                  for i in range(entries)])


def test_the_audit_of_a_growing_log_is_clean(node: Node) -> None:
    _seed(node, 5000)
    ledger.checkpoint(node)
    with _appending(node) as written:
        reports = [ledger.verify(node) for _ in range(3)]
    assert written[0] > 0
    assert all(r["size"] >= 5000 for r in reports)


def test_usage_reconciles_while_jobs_are_metered(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job metered after the reconciliation read the ledger and before it read the usage
    rows is not a difference (deterministic: the job is metered right between the reads)."""
    reconcile = importlib.import_module("dataspace.metering.reconcile")
    with node.store.write() as session:
        record_usage(session, _usage("seed"), actor="test")
    read_entries = reconcile._usage_entries

    def then_meter(session: object) -> object:
        found = read_entries(session)  # type: ignore[arg-type]
        with node.store.write() as other:
            record_usage(other, _usage(f"between-{len(found)}"), actor="test")
        return found

    monkeypatch.setattr(reconcile, "_usage_entries", then_meter)
    assert usage.reconcile(node)["records"] == 1  # the state as of its snapshot
    monkeypatch.undo()
    assert usage.reconcile(node)["records"] == 2


def test_proofs_served_while_the_log_grows_match_their_checkpoint(node: Node) -> None:
    _seed(node, 50)
    key = node.verifier_key()
    calls: list[Callable[[], dict[str, object]]] = [
        lambda: ledger.consistency_proof(node, 1),
        lambda: ledger.inclusion_proof(node, 3),
    ]
    with _appending(node) as written:
        bundles = [call() for _ in range(40) for call in calls]
    assert written[0] > 0
    for bundle in bundles:
        verify_bundle(bundle, key)


def test_a_page_past_the_end_is_empty(node: Node) -> None:
    _seed(node, 3)
    size = ledger.size(node)
    for start in (size, 2**63, 10**30):
        assert ledger.entries(node, start=start) == []
    assert len(ledger.entries(node, start=size - 1)) == 1
