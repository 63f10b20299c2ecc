"""`ledger verify` against tampered stores, one fixture per attack."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from sqlalchemy import text

from dataspace.errors import InputError, LedgerTampered
from dataspace.identity.note import NoteSigner, NoteVerifier
from dataspace.ledger import audit, log, merkle
from dataspace.ledger.checkpoint import Checkpoint
from dataspace.store.db import Store

from .conftest import ORIGIN, Fill


@pytest.fixture
def ledger(store: Store, fill: Fill, signer: NoteSigner) -> Store:
    """20 entries with signed checkpoints at sizes 12 and 20."""
    fill(12)
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
    fill(8, start_at=12)
    with store.write() as session:
        log.sign_checkpoint(session, signer, ORIGIN)
    return store


def _sql(store: Store, sql: str, **params: Any) -> None:
    with store.write() as session:
        session.execute(text(sql), params)


def _row(store: Store, idx: int) -> dict[str, Any]:
    with store.read() as session:
        r = log.get_entry(session, idx)
    return {"idx": r.idx, "leaf": r.leaf_hash, "entry": r.entry_json, "payload": r.payload_json}


def _problems(store: Store, verifier: NoteVerifier, **kwargs: Any) -> list[dict[str, Any]]:
    with store.read() as session, pytest.raises(LedgerTampered) as caught:
        audit.audit(session, verifier, **kwargs)
    exc = caught.value
    problems: list[dict[str, Any]] = exc.details["problems"]
    assert f"index {problems[0]['index']}" in exc.message
    assert exc.details["index"] == problems[0]["index"]
    return problems


def _kinds(problems: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(p["index"], p["kind"]) for p in problems}


def _rewrite_entry(store: Store, idx: int, **changes: Any) -> str:
    entry = json.loads(_row(store, idx)["entry"])
    entry.update(changes)
    new = log.canonical_json(entry)
    _sql(store, "UPDATE ledger_entries SET entry = :e WHERE idx = :i", e=new, i=idx)
    return new


def test_untouched_log_verifies(ledger: Store, verifier: NoteVerifier) -> None:
    with ledger.read() as session:
        report = audit.audit(session, verifier)
        assert report.root == log.root(session)
    assert (report.size, report.checkpoints_checked, report.entries_checked) == (20, 2, 20)
    assert report.to_dict()["ok"] is True


def test_empty_log_verifies(store: Store, verifier: NoteVerifier) -> None:
    with store.read() as session:
        assert audit.audit(session, verifier).root == merkle.EMPTY_ROOT


def test_edited_entry(ledger: Store, verifier: NoteVerifier) -> None:
    _rewrite_entry(ledger, 5, actor="someone-else")
    problems = _problems(ledger, verifier)
    assert (5, "edited") in _kinds(problems)
    assert problems[0]["index"] == 5
    assert any(p["kind"] == "bad checkpoint" and p["size"] == 12 for p in problems)


def test_edited_entry_with_recomputed_leaf_hash(ledger: Store, verifier: NoteVerifier) -> None:
    new = _rewrite_entry(ledger, 5, actor="someone-else")
    _sql(
        ledger, "UPDATE ledger_entries SET leaf_hash = :h WHERE idx = 5", h=log.entry_leaf_hash(new)
    )
    problems = _problems(ledger, verifier)
    edited = [p for p in problems if p["kind"] == "edited"]
    assert len(edited) == 1  # only the lowest subtree that changed is reported
    assert edited[0]["index"] == 4 and "4..5" in edited[0]["reason"]
    assert {p["size"] for p in problems if p["kind"] == "bad checkpoint"} == {12, 20}


def test_edited_payload(ledger: Store, verifier: NoteVerifier) -> None:
    _sql(ledger, "UPDATE ledger_entries SET payload = :p WHERE idx = 7", p='{"name":"forged"}')
    problems = _problems(ledger, verifier)
    assert _kinds(problems) == {(7, "payload edited")}


def test_deleted_row(ledger: Store, verifier: NoteVerifier) -> None:
    _sql(ledger, "DELETE FROM ledger_entries WHERE idx = 9")
    problems = _problems(ledger, verifier)
    assert problems[0]["index"] == 9 and problems[0]["kind"] == "deleted"


def test_deleted_row_with_later_rows_renumbered(ledger: Store, verifier: NoteVerifier) -> None:
    rows = [_row(ledger, i) for i in range(10, 20)]
    _sql(ledger, "DELETE FROM ledger_entries WHERE idx >= 9")
    for r in rows:
        _sql(
            ledger,
            "INSERT INTO ledger_entries (idx, leaf_hash, entry, payload) VALUES (:i, :l, :e, :p)",
            i=r["idx"] - 1,
            l=r["leaf"],
            e=r["entry"],
            p=r["payload"],
        )
    _sql(ledger, "UPDATE ledger_head SET size = 19")
    problems = _problems(ledger, verifier)
    assert (9, "deleted") in _kinds(problems)
    assert any(p["kind"] == "deleted" and p.get("size") == 20 for p in problems)


def test_inserted_row(ledger: Store, verifier: NoteVerifier) -> None:
    """A forged entry slipped in at index 5, later rows shifted up, hashes recomputed."""
    rows = [_row(ledger, i) for i in range(5, 20)]
    _sql(ledger, "DELETE FROM ledger_entries WHERE idx >= 5")
    forged = _rewrite_entry_json(rows[0]["entry"], actor="forger")
    _sql(
        ledger,
        "INSERT INTO ledger_entries (idx, leaf_hash, entry, payload) VALUES (5, :l, :e, :p)",
        l=log.entry_leaf_hash(forged),
        e=forged,
        p=rows[0]["payload"],
    )
    for r in rows:
        _sql(
            ledger,
            "INSERT INTO ledger_entries (idx, leaf_hash, entry, payload) VALUES (:i, :l, :e, :p)",
            i=r["idx"] + 1,
            l=r["leaf"],
            e=r["entry"],
            p=r["payload"],
        )
    _sql(ledger, "UPDATE ledger_head SET size = 21")
    problems = _problems(ledger, verifier)
    inserted = sorted(p["index"] for p in problems if p["kind"] == "inserted")
    assert inserted[:3] == [6, 7, 8]
    assert any(p["kind"] == "bad checkpoint" for p in problems)


def _rewrite_entry_json(entry_json: str, **changes: Any) -> str:
    entry = json.loads(entry_json)
    entry.update(changes)
    return log.canonical_json(entry)


def test_row_appended_beyond_the_head(ledger: Store, verifier: NoteVerifier) -> None:
    r = _row(ledger, 3)
    _sql(
        ledger,
        "INSERT INTO ledger_entries (idx, leaf_hash, entry, payload) VALUES (20, :l, :e, :p)",
        l=r["leaf"],
        e=r["entry"],
        p=r["payload"],
    )
    assert _kinds(_problems(ledger, verifier)) == {(20, "inserted")}


def test_swapped_rows(ledger: Store, verifier: NoteVerifier) -> None:
    a, b = _row(ledger, 7), _row(ledger, 8)
    for src, dst in ((a, 8), (b, 7)):
        _sql(
            ledger,
            "UPDATE ledger_entries SET leaf_hash = :l, entry = :e, payload = :p WHERE idx = :i",
            l=src["leaf"],
            e=src["entry"],
            p=src["payload"],
            i=dst,
        )
    problems = _problems(ledger, verifier)
    assert {(7, "reordered"), (8, "reordered")} <= _kinds(problems)
    assert not [p for p in problems if p["kind"] == "edited"]


def test_truncated_tail_below_a_checkpoint(ledger: Store, verifier: NoteVerifier) -> None:
    _sql(ledger, "DELETE FROM ledger_entries WHERE idx >= 15")
    _sql(ledger, "DELETE FROM ledger_nodes WHERE ((idx + 1) << level) > 15")
    _sql(ledger, "UPDATE ledger_head SET size = 15")
    problems = _problems(ledger, verifier)
    assert problems == [
        {
            "index": 15,
            "kind": "deleted",
            "reason": "stored checkpoint was signed at size 20 but the log has only 15 entries: "
            "entries 15..19 were removed",
            "size": 20,
        }
    ]


def test_truncation_that_also_deletes_checkpoints_is_caught_by_a_held_checkpoint(
    ledger: Store, verifier: NoteVerifier
) -> None:
    with ledger.read() as session:
        held = log.latest_checkpoint(session)
    assert held is not None
    _sql(ledger, "DELETE FROM ledger_entries WHERE idx >= 15")
    _sql(ledger, "DELETE FROM ledger_nodes WHERE ((idx + 1) << level) > 15")
    _sql(ledger, "DELETE FROM ledger_checkpoints WHERE size > 15")
    _sql(ledger, "UPDATE ledger_head SET size = 15")
    with ledger.read() as session:
        audit.audit(session, verifier)  # the store alone looks fine ...
    problems = _problems(ledger, verifier, checkpoints=[held])  # ... a held checkpoint is not
    assert _kinds(problems) == {(15, "deleted")}


def test_forged_checkpoint(ledger: Store, verifier: NoteVerifier, signer: NoteSigner) -> None:
    with ledger.read() as session:
        note = log.checkpoint_at(session, 12)
    lines = note.split("\n")
    lines[2] = Checkpoint(ORIGIN, 12, merkle.leaf_hash(b"forged")).format().split("\n")[2]
    _sql(ledger, "UPDATE ledger_checkpoints SET note = :n WHERE size = 12", n="\n".join(lines))
    problems = _problems(ledger, verifier)
    assert len(problems) == 1
    assert problems[0]["kind"] == "bad checkpoint" and "does not verify" in problems[0]["reason"]


def _rewrite_consistently(store: Store, idx: int) -> merkle.MemoryTree:
    """Entry ``idx`` rewritten with its leaf and every subtree hash recomputed to match."""
    new = _rewrite_entry(store, idx, actor="rewritten")
    _sql(store, "UPDATE ledger_entries SET leaf_hash = :h WHERE idx = :i",
         h=log.entry_leaf_hash(new), i=idx)
    with store.read() as session:
        leaves = [r.leaf_hash for r in log.entries(session, limit=100)]
    tree = merkle.MemoryTree(leaves)
    _sql(store, "DELETE FROM ledger_nodes")
    for level, hashes in enumerate(tree.levels[1:], 1):
        for i, h in enumerate(hashes):
            _sql(store, "INSERT INTO ledger_nodes (level, idx, hash) VALUES (:l, :i, :h)",
                 l=level, i=i, h=h)
    return tree


def _tampered(store: Store, verifier: NoteVerifier) -> LedgerTampered:
    with store.read() as session, pytest.raises(LedgerTampered) as caught:
        audit.audit(session, verifier)
    return caught.value


def test_the_hint_names_where_a_consistent_rewrite_may_begin(
    ledger: Store, verifier: NoteVerifier
) -> None:
    """Only the checkpoint at 20 catches a consistent rewrite of entry 15; the one at 12 still
    matches, so entries 0..11 stand and the rewrite lies in 12..19 (the hint said "from 19")."""
    _rewrite_consistently(ledger, 15)
    exc = _tampered(ledger, verifier)
    assert {p["kind"] for p in exc.details["problems"]} == {"bad checkpoint"}
    assert exc.details["trust_before"] == 12
    assert "do not trust entries from index 12 on (entries before it are covered" in exc.hint


def test_the_hint_trusts_nothing_when_no_checkpoint_below_still_matches(
    ledger: Store, verifier: NoteVerifier
) -> None:
    _rewrite_consistently(ledger, 5)  # below both checkpoints
    exc = _tampered(ledger, verifier)
    assert exc.details["trust_before"] == 0 and "from index 0 on;" in exc.hint


def test_a_payload_edit_leaves_the_history_standing(ledger: Store, verifier: NoteVerifier) -> None:
    _sql(ledger, "UPDATE ledger_entries SET payload = :p WHERE idx = 7", p='{"name":"forged"}')
    exc = _tampered(ledger, verifier)
    assert exc.details["trust_before"] is None
    assert "only the payloads named differ" in exc.hint and "do not trust" not in exc.hint


def test_history_rewritten_and_resigned_with_another_key(
    ledger: Store, verifier: NoteVerifier, impostor: NoteSigner
) -> None:
    """Entry 3 rewritten consistently (leaf, nodes, roots), checkpoints re-signed with a new key."""
    tree = _rewrite_consistently(ledger, 3)
    for size in (12, 20):
        note = Checkpoint(ORIGIN, size, tree.root(size)).sign([impostor])
        _sql(
            ledger,
            "UPDATE ledger_checkpoints SET note = :n, root_hash = :r WHERE size = :s",
            n=note,
            r=tree.root(size),
            s=size,
        )
    problems = _problems(ledger, verifier)
    assert {p["kind"] for p in problems} == {"bad checkpoint"}
    assert all("not signed by any known key" in p["reason"] for p in problems)


def test_checkpoint_row_that_disagrees_with_its_note(ledger: Store, verifier: NoteVerifier) -> None:
    _sql(ledger, "UPDATE ledger_checkpoints SET root_hash = :r WHERE size = 20", r=bytes(32))
    problems = _problems(ledger, verifier)
    assert [(p["kind"], p["size"]) for p in problems] == [("bad checkpoint", 20)]


def test_edited_subtree_hash(ledger: Store, verifier: NoteVerifier) -> None:
    _sql(ledger, "UPDATE ledger_nodes SET hash = :h WHERE level = 2 AND idx = 1", h=bytes(32))
    problems = _problems(ledger, verifier)
    assert _kinds(problems) == {(4, "edited")}


def test_every_problem_is_collected(ledger: Store, verifier: NoteVerifier) -> None:
    _sql(ledger, "UPDATE ledger_entries SET payload = '{}' WHERE idx = 2")
    _rewrite_entry(ledger, 10, action="dataset.removed")
    _sql(ledger, "DELETE FROM ledger_entries WHERE idx = 16")
    kinds = _kinds(_problems(ledger, verifier))
    assert {(2, "payload edited"), (10, "edited"), (16, "deleted")} <= kinds


# SQLite keeps whatever value is written, whatever the column's type; PostgreSQL refuses it.
sqlite_only = pytest.mark.skipif(
    bool(os.environ.get("DATASPACE_TEST_DATABASE_URL")),
    reason="PostgreSQL enforces the column types these edits break",
)


@sqlite_only
@pytest.mark.parametrize("key", [6.5, -1])
def test_row_rekeyed_to_no_tree_position(ledger: Store, verifier: NoteVerifier, key: float) -> None:
    """A row moved to index 6.5 (or -1) still sorts among the others; it is reported, and
    entry 6 as missing, rather than read back as entry int(6.5)."""
    _sql(ledger, "UPDATE ledger_entries SET idx = :k WHERE idx = 6", k=key)
    problems = _problems(ledger, verifier)
    assert (0 if key < 0 else 6, "inserted") in _kinds(problems)
    assert (6, "deleted") in _kinds(problems)


@sqlite_only
def test_subtree_hash_rekeyed_to_no_tree_position(
    ledger: Store, verifier: NoteVerifier
) -> None:
    _sql(ledger, "UPDATE ledger_nodes SET idx = 0.5 WHERE level = 2 AND idx = 0")
    problems = _problems(ledger, verifier)
    assert {(0, "inserted"), (0, "deleted")} <= _kinds(problems)


@sqlite_only
@pytest.mark.parametrize(
    ("sql", "where"),
    [
        ("UPDATE ledger_entries SET entry = CAST(entry AS BLOB) WHERE idx = 3", (3, "edited")),
        ("UPDATE ledger_entries SET payload = CAST(payload AS BLOB) WHERE idx = 3",
         (3, "payload edited")),
        ("UPDATE ledger_entries SET leaf_hash = 'x' WHERE idx = 3", (3, "edited")),
        ("UPDATE ledger_head SET size = 'z'", (0, "edited")),
        ("UPDATE ledger_checkpoints SET note = CAST(note AS BLOB) WHERE size = 12",
         (11, "bad checkpoint")),
        # text that is not UTF-8 (SQLite keeps it; its driver cannot decode it)
        ("UPDATE ledger_entries SET payload = CAST(X'7BFF7D' AS TEXT) WHERE idx = 3",
         (3, "payload edited")),
        ("UPDATE ledger_entries SET entry = CAST(X'7BFF7D' AS TEXT) WHERE idx = 3",
         (3, "edited")),
        ("UPDATE ledger_checkpoints SET note = CAST(X'C328' AS TEXT) WHERE size = 12",
         (11, "bad checkpoint")),
    ],
    ids=["entry-as-blob", "payload-as-blob", "leaf-hash-as-text", "head-as-text",
         "checkpoint-note-as-blob", "payload-not-utf8", "entry-not-utf8",
         "checkpoint-note-not-utf8"],
)
def test_values_of_the_wrong_type_are_problems_not_crashes(
    ledger: Store, verifier: NoteVerifier, sql: str, where: tuple[int, str]
) -> None:
    _sql(ledger, sql)
    kinds = _kinds(_problems(ledger, verifier))
    assert where in kinds
    if where[1] == "payload edited":  # outside the tree: no history, no checkpoint is at fault
        assert kinds == {where}


@pytest.mark.parametrize(("level", "idx"), [(64, 0), (70, 5), (3, 2**62)])
def test_a_subtree_hash_keyed_far_beyond_any_tree_is_one_problem(
    ledger: Store, verifier: NoteVerifier, level: int, idx: int
) -> None:
    """The database sorts on a 64-bit (idx + 1) << level that wraps for such a key: the row
    is reported as inserted, and every real subtree hash still matches (no false 'missing')."""
    _sql(ledger, "INSERT INTO ledger_nodes(level, idx, hash) VALUES (:level, :idx, :hash)",
         level=level, idx=idx, hash=bytes(32))
    problems = _problems(ledger, verifier)
    assert [p["kind"] for p in problems] == ["inserted"], problems


def test_a_held_checkpoint_of_another_key_is_bad_input_not_tampering(
    ledger: Store, verifier: NoteVerifier, impostor: NoteSigner
) -> None:
    with ledger.read() as session:
        root = log.root(session, 12)
        foreign = Checkpoint(ORIGIN, 12, root).sign([impostor])
        with pytest.raises(InputError, match="a checkpoint given to verify against does not "
                           "open: note is not signed by any known key"):  # fmt: skip
            audit.audit(session, verifier, checkpoints=[foreign])
        audit.audit(session, verifier)  # the log itself is fine


def test_a_copy_is_audited_by_its_url_with_the_published_key_alone(
    ledger: Store, verifier: NoteVerifier
) -> None:
    """`ledger verify --db URL --key PUB`: the same audit, with no node around the store."""
    from dataspace.services import ledger as ledger_service

    key = verifier.verifier_key()
    report = ledger_service.verify_copy(ledger.url, key, schema=ledger.schema)
    assert (report["size"], report["checkpoints_checked"]) == (20, 2)
    _rewrite_entry(ledger, 5, actor="someone-else")
    with pytest.raises(LedgerTampered):
        ledger_service.verify_copy(ledger.url, key, schema=ledger.schema)

