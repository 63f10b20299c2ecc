"""The store-backed log: entry format, roots and proofs against the pure tree, transactions,
checkpoints, and concurrent appends."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dataspace.errors import Conflict, InputError, LedgerTampered, NotFound, UsageError
from dataspace.identity.note import NoteSigner, NoteVerifier
from dataspace.ledger import audit, log, merkle
from dataspace.ledger.checkpoint import open_checkpoint
from dataspace.store.db import Store

from .conftest import ORIGIN, T0, Fill


def test_entry_is_canonical_json_with_the_payload_hash(store: Store) -> None:
    with store.write() as session:
        first = log.append(
            session, actor="node:abc", action="node.created", payload={"b": 1, "a": "é"}, time=T0
        )
    payload_json = '{"a":"é","b":1}'
    digest = hashlib.sha256(payload_json.encode()).hexdigest()
    want = (
        '{"action":"node.created","actor":"node:abc","payload_sha256":"'
        + digest
        + '","seq":0,"time":"2025-06-01T08:00:00.000000Z","v":1}'
    )
    assert first.index == 0
    assert first.entry_json == want
    assert first.leaf_hash == merkle.leaf_hash(want.encode())
    with store.read() as session:
        row = log.get_entry(session, 0)
    assert row.payload_json == payload_json
    assert row.payload == {"a": "é", "b": 1}
    assert row.to_dict()["leaf_hash"] == first.leaf_hash.hex()


def test_time_is_stored_in_utc(store: Store) -> None:
    beijing = timezone(timedelta(hours=8))
    with store.write() as session:
        got = log.append(
            session,
            actor="a",
            action="x.y",
            payload={},
            time=datetime(2025, 1, 1, 8, tzinfo=beijing),
        )
    assert got.entry["time"] == "2025-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"payload": {"ratio": 0.5}}, "float"),
        ({"payload": {"n": 2**60}}, "2\\*\\*53"),
        ({"payload": {1: "x"}}, "not a string"),
        ({"payload": {"when": datetime(2025, 1, 1)}}, "datetime"),
        ({"payload": {"bad": "\ud800"}}, "Unicode"),
        ({"action": "Dataset Added"}, "dotted"),
        ({"actor": ""}, "actor"),
        ({"time": datetime(2025, 1, 1)}, "time zone"),
    ],
    ids=["float", "huge-int", "int-key", "datetime", "lone-surrogate", "action", "actor", "naive"],
)
def test_uncanonical_input_is_refused(store: Store, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"actor": "a", "action": "dataset.added", "payload": {}, **kwargs}
    with pytest.raises(InputError, match=match), store.write() as session:
        log.append(session, **args)
    with store.read() as session:
        assert log.size(session) == 0


def test_state_change_and_entry_roll_back_together(store: Store, fill: Fill) -> None:
    fill(3)
    with pytest.raises(RuntimeError), store.write() as session:
        log.append(session, actor="a", action="dataset.added", payload={"n": 1})
        raise RuntimeError("the state change failed after the append")
    with store.read() as session:
        assert log.size(session) == 3
        assert [r.idx for r in log.entries(session)] == [0, 1, 2]
    with store.write() as session:
        assert log.append(session, actor="a", action="x.y", payload={}).index == 3


def test_roots_and_proofs_match_the_pure_tree_at_every_size(store: Store, fill: Fill) -> None:
    fill(19)
    fill(14, start_at=19)  # a second batch continues the same tree
    with store.read() as session:
        leaves = [r.leaf_hash for r in log.entries(session, limit=1000)]
        assert len(leaves) == log.size(session) == 33
        tree = merkle.MemoryTree(leaves)
        assert log.root(session, 0) == merkle.EMPTY_ROOT
        for n in range(1, 34):
            root = log.root(session, n)
            assert root == merkle.root_of(leaves[:n])
            for i in range(n):
                path = log.inclusion_proof(session, i, n)
                assert path == merkle.inclusion_proof(i, n, tree.subtree)
                merkle.verify_inclusion(leaves[i], i, n, path, root)
            for m in range(1, n + 1):
                proof = log.consistency_proof(session, m, n)
                merkle.verify_consistency(m, n, proof, merkle.root_of(leaves[:m]), root)


def test_single_appends_build_the_same_tree_as_batches(store: Store, fill: Fill) -> None:
    for i in range(9):
        with store.write() as session:
            log.append(session, actor="a", action="x.y", payload={"i": i}, time=T0)
    with store.read() as session:
        leaves = [r.leaf_hash for r in log.entries(session)]
        assert log.root(session) == merkle.root_of(leaves)


def test_reading_beyond_the_log_is_refused(store: Store, fill: Fill) -> None:
    fill(4)
    with store.read() as session:
        with pytest.raises(UsageError):
            log.root(session, 5)
        with pytest.raises(UsageError):
            log.inclusion_proof(session, 4, 4)
        with pytest.raises(UsageError):
            log.consistency_proof(session, 0, 4)
        with pytest.raises(NotFound):
            log.get_entry(session, 4)
        assert [r.idx for r in log.entries(session, start=2, limit=1)] == [2]
        assert log.entries(session, start=9) == []


def test_checkpoint_signs_the_current_root_and_is_idempotent(
    store: Store, fill: Fill, signer: NoteSigner, verifier: NoteVerifier
) -> None:
    with store.read() as session:
        assert log.latest_checkpoint(session) is None
    fill(5)
    with store.write() as session:
        note = log.sign_checkpoint(session, signer, ORIGIN)
    with store.write() as session:
        assert log.sign_checkpoint(session, signer, ORIGIN) == note
    with store.read() as session:
        cp = open_checkpoint(note, [verifier]).checkpoint
        assert (cp.origin, cp.size, cp.root) == (ORIGIN, 5, log.root(session))
        assert log.latest_checkpoint(session) == note
    fill(1, start_at=5)
    with store.write() as session:
        newer = log.sign_checkpoint(session, signer, ORIGIN)
    with store.read() as session:
        assert log.latest_checkpoint(session) == newer != note
        assert log.checkpoint_at(session, 5) == note


def test_a_different_checkpoint_for_the_same_size_conflicts(
    store: Store, fill: Fill, signer: NoteSigner
) -> None:
    fill(2)
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
    with pytest.raises(Conflict), store.write() as session:
        log.sign_checkpoint(session, signer, "another.origin/log")


def test_two_writers_append_a_contiguous_auditable_log(
    store: Store, signer: NoteSigner, verifier: NoteVerifier
) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(200):
                with store.write() as session:
                    log.append(session, actor=name, action="token.issued", payload={"i": i})
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
    with store.read() as session:
        rows = log.entries(session, limit=1000)
        assert [r.idx for r in rows] == list(range(400))
        assert [r.entry["seq"] for r in rows] == list(range(400))
        for name in ("w0", "w1"):
            mine = [r.payload["i"] for r in rows if r.entry["actor"] == name]
            assert mine == list(range(200))
        report = audit.audit(session, verifier)
    assert (report.size, report.checkpoints_checked) == (400, 1)


def test_entries_round_trip_as_json(store: Store, fill: Fill) -> None:
    fill(2)
    with store.read() as session:
        page = [r.to_dict() for r in log.entries(session)]
    assert json.loads(json.dumps(page))[1]["entry"]["seq"] == 1


def _roll_back(store: Store, size: int) -> None:
    """What restoring an older backup of the entries (but not of the checkpoints) does."""
    from sqlalchemy import text

    with store.write() as session:
        session.execute(text("DELETE FROM ledger_entries WHERE idx >= :n"), {"n": size})
        session.execute(text("DELETE FROM ledger_nodes WHERE ((idx + 1) << level) > :n"),
                        {"n": size})  # fmt: skip
        session.execute(text("UPDATE ledger_head SET size = :n"), {"n": size})


def test_no_checkpoint_is_signed_that_moves_back_or_forks_a_signed_one(
    store: Store, fill: Fill, signer: NoteSigner
) -> None:
    fill(8)
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
    _roll_back(store, 4)
    with pytest.raises(LedgerTampered, match="has 4 entries but this node signed a checkpoint "
                       "at size 8: entries were removed"), store.write() as session:  # fmt: skip
        log.sign_checkpoint(session, signer, ORIGIN)
    fill(5, start_at=100)  # other entries where the removed ones were: a fork at size 9
    with pytest.raises(LedgerTampered, match="first 8 entries no longer hash to the root"), \
            store.write() as session:  # fmt: skip
        log.sign_checkpoint(session, signer, ORIGIN)
    with store.read() as session:  # nothing was signed: the latest is still the one at 8
        assert (log.latest_checkpoint(session) or "").startswith(f"{ORIGIN}\n8\n")


def test_a_history_rewritten_at_the_signed_size_is_tampering_not_a_conflict(
    store: Store, fill: Fill, signer: NoteSigner
) -> None:
    fill(8)
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
    _roll_back(store, 4)
    fill(4, start_at=100)  # as many entries as were signed, other ones
    with pytest.raises(LedgerTampered, match="8 entries no longer hash to the root this node "
                       "signed at size 8"), store.write() as session:  # fmt: skip
        log.sign_checkpoint(session, signer, ORIGIN)


def test_the_same_entries_restored_sign_again(store: Store, fill: Fill, signer: NoteSigner) -> None:
    fill(8)
    with store.write() as session:
        first = log.sign_checkpoint(session, signer, ORIGIN)
    _roll_back(store, 4)
    fill(5, start_at=4)  # the very entries again, and one more: the history is intact
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
        assert log.checkpoint_at(session, 8) == first


class _Undo(Exception):
    """Raised to roll a trial's transaction back."""


def _signed_root_after(store: Store, signer: NoteSigner, damage: str,
                       params: dict[str, int]) -> tuple[bytes | None, bytes]:
    """Damage the store, try to sign, roll everything back: the root signed (None when the
    node refused) and the root of the entries as they stood, rehashed from their text."""
    from sqlalchemy import text

    outcome: list[tuple[bytes | None, bytes]] = []
    with pytest.raises(_Undo), store.write() as session:
        session.execute(text(damage), params)
        texts = session.execute(text("SELECT entry FROM ledger_entries ORDER BY idx")).scalars()
        true_root = merkle.root_of([log.entry_leaf_hash(t) for t in texts])
        try:
            note = log.sign_checkpoint(session, signer, ORIGIN)
            signed = open_checkpoint(
                note, [NoteVerifier.parse(signer.verifier_key())]).checkpoint.root
        except LedgerTampered:
            signed = None
        outcome.append((signed, true_root))
        raise _Undo
    return outcome[0]


@pytest.mark.parametrize("signed_size", range(1, 9))
def test_a_checkpoint_past_a_signed_one_commits_to_the_entries_as_they_stand(
    store: Store, fill: Fill, signer: NoteSigner, signed_size: int
) -> None:
    """Every stored subtree hash over the entries appended since the last checkpoint, and
    every such entry, damaged in turn: the node refuses to sign, or signs the root its
    entries really have; it never signs a root no honest log of these entries has."""
    from sqlalchemy import text

    fill(signed_size)
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
    refused = 0
    for size in range(signed_size + 1, 12):
        fill(1, start_at=size - 1)
        with store.read() as session:
            nodes = session.execute(
                text("SELECT level, idx FROM ledger_nodes WHERE ((idx + 1) << level) > :s"),
                {"s": signed_size}).all()  # fmt: skip
        trials = [("UPDATE ledger_nodes SET hash = :zero WHERE level = :level AND idx = :idx",
                   {"level": level, "idx": idx}) for level, idx in nodes]
        trials += [("UPDATE ledger_entries SET entry = replace(entry, 'user:', 'usxr:') "
                    "WHERE idx = :idx", {"idx": idx}) for idx in range(signed_size, size)]
        for damage, params in trials:
            signed, true_root = _signed_root_after(store, signer, damage,
                                                   {**params, "zero": bytes(32)})
            assert signed is None or signed == true_root, (size, damage, params)
            refused += signed is None
        signed, true_root = _signed_root_after(store, signer, "SELECT 1", {})
        assert signed == true_root  # undamaged: signed, and right
    assert refused >= 11 - signed_size  # each edited entry at least


def test_a_lowered_head_refuses_appends_as_tampering(store: Store, fill: Fill) -> None:
    """A head edited down makes the next entry land on a stored one: that is an edited log,
    not a name already in use."""
    from sqlalchemy import text

    fill(5)
    with store.write() as session:
        session.execute(text("UPDATE ledger_head SET size = 2"))
    with pytest.raises(LedgerTampered, match="head says it holds 2 entries, but rows are "
                       "stored past that"), store.write() as session:  # fmt: skip
        log.append(session, actor="user:x", action="dataset.added", payload={})
    with store.read() as session:
        assert log.size(session) == 2 and len(log.entries(session, 0, 100)) == 5
