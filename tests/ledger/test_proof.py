"""Offline proof bundles: round trips through JSON, and every tampering rejected."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from dataspace.errors import ProofError, SignatureError, UsageError, VerificationError
from dataspace.identity.note import NoteSigner
from dataspace.ledger import log, merkle, proof
from dataspace.ledger.checkpoint import Checkpoint
from dataspace.store.db import Store

from .conftest import ORIGIN, Fill


@pytest.fixture
def notes(store: Store, fill: Fill, signer: NoteSigner) -> dict[int, str]:
    """Checkpoints at sizes 6 and 13."""
    out = {}
    for count, start in ((6, 0), (7, 6)):
        fill(count, start_at=start)
        with store.write() as session:
            out[start + count] = log.sign_checkpoint(session, signer, ORIGIN)
    return out


def _inclusion(store: Store, index: int, note: str) -> dict[str, Any]:
    with store.read() as session:
        bundle = proof.export_inclusion(session, index, checkpoint_note=note)
    return dict(json.loads(json.dumps(bundle)))  # what a file round trip gives


def test_inclusion_bundle_verifies_offline(
    store: Store, notes: dict[int, str], signer: NoteSigner
) -> None:
    for index in range(13):
        bundle = _inclusion(store, index, notes[13])
        got = proof.verify_inclusion_bundle(bundle, signer.verifier_key())
        assert (got.index, got.tree_size, got.origin) == (index, 13, ORIGIN)
        assert got.entry["seq"] == index and got.payload == {
            "name": f"ds{index}",
            "rows": index * 10,
        }
        assert proof.verify_bundle(bundle, signer.verifier_key()) == got
    assert "entry 12 (dataset.added)" in got.summary()
    assert got.to_dict()["verified"] == "inclusion"


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda b: b.__setitem__(key, value)


def _flip_proof(b: dict[str, Any]) -> None:
    raw = bytearray(merkle.HASH_SIZE)
    b["proof"][1] = Checkpoint("o", 1, bytes(raw)).format().split("\n")[2]


def _edit_entry(b: dict[str, Any]) -> None:
    entry = json.loads(b["entry"])
    entry["actor"] = "someone-else"
    b["entry"] = log.canonical_json(entry)


def _edit_payload(b: dict[str, Any]) -> None:
    b["payload"] = '{"name":"forged","rows":0}'


def _edit_checkpoint_root(b: dict[str, Any]) -> None:
    lines = b["checkpoint"].split("\n")
    lines[2] = Checkpoint("o", 1, merkle.leaf_hash(b"x")).format().split("\n")[2]
    b["checkpoint"] = "\n".join(lines)


TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "edited-entry": _edit_entry,
    "edited-payload": _edit_payload,
    "uncanonical-entry": lambda b: b.__setitem__("entry", b["entry"].replace(",", ", ", 1)),
    "other-index": _set("index", 4),
    "index-beyond-tree": _set("index", 13),
    "other-tree-size": _set("tree_size", 12),
    "flipped-proof-hash": _flip_proof,
    "dropped-proof-hash": lambda b: b["proof"].pop(),
    "extra-proof-hash": lambda b: b["proof"].append(b["proof"][0]),
    "bad-base64": lambda b: b["proof"].__setitem__(0, "not base64!"),
    "edited-checkpoint": _edit_checkpoint_root,
    "unsigned-checkpoint": lambda b: b.__setitem__("checkpoint", b["checkpoint"].split("\n\n")[0]),
    "wrong-format": _set("format", "dataspace-inclusion-proof/v0"),
    "missing-entry": lambda b: b.pop("entry"),
    "boolean-index": _set("index", True),
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS), ids=list(TAMPERINGS))
def test_tampered_inclusion_bundle_is_rejected(
    store: Store, notes: dict[int, str], signer: NoteSigner, tamper: str
) -> None:
    bundle = _inclusion(store, 5, notes[13])
    bad = copy.deepcopy(bundle)
    TAMPERINGS[tamper](bad)
    with pytest.raises(VerificationError):
        proof.verify_inclusion_bundle(bad, signer.verifier_key())


def test_inclusion_bundle_under_another_key_is_rejected(
    store: Store, notes: dict[int, str], impostor: NoteSigner
) -> None:
    bundle = _inclusion(store, 5, notes[13])
    with pytest.raises(SignatureError):
        proof.verify_inclusion_bundle(bundle, impostor.verifier_key())


def test_bundle_resigned_by_another_key_is_rejected(
    store: Store, notes: dict[int, str], signer: NoteSigner, impostor: NoteSigner
) -> None:
    bundle = _inclusion(store, 5, notes[13])
    body = bundle["checkpoint"].split("\n\n")[0] + "\n"
    bundle["checkpoint"] = Checkpoint.parse(body).sign([impostor])
    with pytest.raises(SignatureError):
        proof.verify_inclusion_bundle(bundle, signer.verifier_key())


def test_export_refuses_a_checkpoint_of_another_log(
    store: Store, notes: dict[int, str], signer: NoteSigner
) -> None:
    foreign = Checkpoint(ORIGIN, 13, merkle.leaf_hash(b"other")).sign([signer])
    with store.read() as session, pytest.raises(ProofError):
        proof.export_inclusion(session, 1, checkpoint_note=foreign)
    with store.read() as session, pytest.raises(UsageError):
        proof.export_inclusion(session, 6, checkpoint_note=notes[6])


@pytest.mark.parametrize(("damage", "why"), [
    ("UPDATE ledger_entries SET entry = replace(entry, 'user:', 'usxr:') WHERE idx = 3",
     "is not in the tree"),
    ("UPDATE ledger_entries SET payload = replace(payload, 'ds3', 'dsX') WHERE idx = 3",
     "payload of ledger entry 3 does not match"),
    ("UPDATE ledger_nodes SET hash = :zero WHERE level = 1 AND idx = 0",  # on 3's path
     "is not in the tree"),
])
def test_no_bundle_is_issued_for_a_damaged_entry(
    store: Store, notes: dict[int, str], signer: NoteSigner, damage: str, why: str
) -> None:
    """A bundle that fails where it is checked, and again when a fresh one is fetched, helps
    nobody: export checks what it hands out and names the damaged entry instead."""
    from sqlalchemy import text

    from dataspace.errors import LedgerTampered

    with store.write() as session:
        session.execute(text(damage), {"zero": bytes(32)})
    with store.read() as session, pytest.raises(LedgerTampered, match=why) as err:
        proof.export_inclusion(session, 3, checkpoint_note=notes[13])
    assert err.value.details["index"] == 3
    ok = _inclusion(store, 9, notes[13])  # an entry the damage does not touch still proves
    assert proof.verify_inclusion_bundle(ok, signer.verifier_key()).index == 9


def _consistency(store: Store, size1: int, note: str, size2: int | None = None) -> dict[str, Any]:
    with store.read() as session:
        bundle = proof.export_consistency(session, size1, size2, checkpoint_note=note)
    return dict(json.loads(json.dumps(bundle)))


def test_consistency_bundle_between_two_checkpoints(
    store: Store, notes: dict[int, str], signer: NoteSigner
) -> None:
    bundle = _consistency(store, 6, notes[13])
    assert bundle["old_checkpoint"] == notes[6]
    got = proof.verify_consistency_bundle(bundle, signer.verifier_key())
    assert (got.old_size, got.new.size, got.old_signed) == (6, 13, True)
    assert proof.verify_bundle(bundle, signer.verifier_key()) == got
    held = proof.verify_consistency_bundle(
        {**bundle, "old_checkpoint": None}, signer.verifier_key(), old_checkpoint=notes[6]
    )
    assert held.old_signed
    assert "extends" in got.summary()


def test_consistency_from_any_size_and_to_an_older_checkpoint(
    store: Store, notes: dict[int, str], signer: NoteSigner
) -> None:
    for size1 in range(1, 14):
        bundle = _consistency(store, size1, notes[13])
        assert (bundle["old_checkpoint"] is not None) == (size1 in notes)
        proof.verify_consistency_bundle(bundle, signer.verifier_key())
    bundle = _consistency(store, 3, notes[13], size2=6)
    assert proof.verify_consistency_bundle(bundle, signer.verifier_key()).new.size == 6
    with pytest.raises(UsageError):
        _consistency(store, 3, notes[13], size2=7)  # no checkpoint was signed at 7


def test_fork_is_caught_by_consistency(
    store: Store, notes: dict[int, str], signer: NoteSigner
) -> None:
    """Another tree with the same key, signed at 13, does not extend the real checkpoint at 6."""
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(13)]
    tree = merkle.MemoryTree(leaves)
    forked = Checkpoint(ORIGIN, 13, tree.root()).sign([signer])
    bundle = _consistency(store, 6, notes[13])
    bundle["checkpoint"] = forked
    with pytest.raises(ProofError):
        proof.verify_consistency_bundle(bundle, signer.verifier_key())
    bundle["proof"] = [
        Checkpoint("o", 1, h).format().split("\n")[2]
        for h in merkle.consistency_proof(6, 13, tree.subtree)
    ]
    with pytest.raises(ProofError):  # a valid proof of the fork does not match the held root
        proof.verify_consistency_bundle(bundle, signer.verifier_key())


CONSISTENCY_TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "other-old-size": _set("old_size", 5),
    "other-old-root": lambda b: b.__setitem__(
        "old_root", Checkpoint("o", 1, merkle.leaf_hash(b"x")).format().split("\n")[2]
    ),
    "dropped-proof-hash": lambda b: b["proof"].pop(),
    "flipped-proof-hash": _flip_proof,
    "edited-checkpoint": _edit_checkpoint_root,
    "old-checkpoint-unsigned": lambda b: b.__setitem__(
        "old_checkpoint", b["old_checkpoint"].split("\n\n")[0]
    ),
    "wrong-format": _set("format", proof.INCLUSION_FORMAT),
}


@pytest.mark.parametrize("tamper", list(CONSISTENCY_TAMPERINGS), ids=list(CONSISTENCY_TAMPERINGS))
def test_tampered_consistency_bundle_is_rejected(
    store: Store, notes: dict[int, str], signer: NoteSigner, tamper: str
) -> None:
    bad = _consistency(store, 6, notes[13])
    CONSISTENCY_TAMPERINGS[tamper](bad)
    with pytest.raises(VerificationError):
        proof.verify_consistency_bundle(bad, signer.verifier_key())


def test_unknown_bundle_format_is_rejected(signer: NoteSigner) -> None:
    with pytest.raises(ProofError, match="unknown proof bundle format"):
        proof.verify_bundle({"format": "something/v9"}, signer.verifier_key())
