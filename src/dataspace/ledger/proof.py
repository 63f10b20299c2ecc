"""Offline proof bundles: JSON files anyone can check with nothing but the node's public key.

Inclusion (``dataspace-inclusion-proof/v1``)::

    {"format": "dataspace-inclusion-proof/v1",
     "checkpoint": "<signed checkpoint note>",
     "index": 7, "tree_size": 42,
     "entry": "<canonical entry JSON>", "payload": "<canonical payload JSON>",
     "proof": ["<base64 hash>", ...]}

Consistency (``dataspace-consistency-proof/v1``)::

    {"format": "dataspace-consistency-proof/v1",
     "old_size": 10, "old_root": "<base64>", "old_checkpoint": "<note>" | null,
     "checkpoint": "<signed checkpoint note of the newer tree>",
     "proof": ["<base64 hash>", ...]}

Export runs against the store; verification is pure and raises on every failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from dataspace.errors import (
    DataspaceError,
    InputError,
    LedgerTampered,
    NotFound,
    ProofError,
    SignatureError,
    UsageError,
)
from dataspace.identity.note import NoteVerifier, b64encode, strict_b64decode
from dataspace.ledger import log, merkle
from dataspace.ledger.checkpoint import Checkpoint, open_checkpoint, peek_checkpoint
from dataspace.ledger.cosignature import CosignatureVerifier, check_quorum

INCLUSION_FORMAT = "dataspace-inclusion-proof/v1"
CONSISTENCY_FORMAT = "dataspace-consistency-proof/v1"


# --- export -----------------------------------------------------------------------------------


def export_inclusion(session: Session, index: int, *, checkpoint_note: str) -> dict[str, Any]:
    """A bundle proving entry ``index`` is in the tree the checkpoint signs."""
    cp = peek_checkpoint(checkpoint_note)
    if not 0 <= index < cp.size:
        raise UsageError(
            f"entry {index} is not covered by the checkpoint (size {cp.size})",
            hint="sign a newer checkpoint first",
        )
    _check_matches_log(session, cp)
    row = log.get_entry(session, index)
    path = log.inclusion_proof(session, index, cp.size)
    _check_provable(row, path, cp)
    return {
        "format": INCLUSION_FORMAT,
        "checkpoint": checkpoint_note,
        "index": index,
        "tree_size": cp.size,
        "entry": row.entry_json,
        "payload": row.payload_json,
        "proof": [b64encode(h) for h in path],
    }


def export_consistency(
    session: Session, size1: int, size2: int | None = None, *, checkpoint_note: str
) -> dict[str, Any]:
    """A bundle proving the tree of ``size2`` extends the tree of ``size1``.

    ``checkpoint_note`` signs the newer tree; when ``size2`` names another size, the checkpoint
    stored for that size is used instead. A checkpoint stored at ``size1`` is included too.
    """
    new = peek_checkpoint(checkpoint_note)
    if size2 is not None and size2 != new.size:
        try:
            checkpoint_note = log.checkpoint_at(session, size2)
        except NotFound:
            raise UsageError(
                f"no signed checkpoint for tree size {size2}",
                hint="prove consistency up to the latest checkpoint instead",
            ) from None
        new = peek_checkpoint(checkpoint_note)
    if not 0 < size1 <= new.size:
        raise UsageError(
            f"no consistency proof from size {size1} to size {new.size}",
            hint="need 0 < size1 <= size2",
        )
    _check_matches_log(session, new)
    try:
        old_note: str | None = log.checkpoint_at(session, size1)
    except NotFound:
        old_note = None
    return {
        "format": CONSISTENCY_FORMAT,
        "old_size": size1,
        "old_root": b64encode(log.root(session, size1)),
        "old_checkpoint": old_note,
        "checkpoint": checkpoint_note,
        "proof": [b64encode(h) for h in log.consistency_proof(session, size1, new.size)],
    }


def _check_provable(row: log.LogRow, path: list[bytes], cp: Checkpoint) -> None:
    """The bundle about to leave proves what it says: a damaged entry or stored subtree hash
    must be a refusal here, not a bundle that fails at whoever checks it (and fails again
    when they ask for a fresh one)."""
    hint = "run `dataspace ledger verify`; restore the state database from a backup"
    if log.sha256_hex(row.payload_json) != row.entry.get("payload_sha256"):
        raise LedgerTampered(f"the payload of ledger entry {row.idx} does not match its hash: "
                             "no proof is issued for it", hint=hint, index=row.idx)
    try:
        merkle.verify_inclusion(log.entry_leaf_hash(row.entry_json), row.idx, cp.size, path,
                                cp.root)
    except ProofError:
        raise LedgerTampered(
            f"ledger entry {row.idx} as stored is not in the tree the checkpoint of size "
            f"{cp.size} signs (the entry or a stored subtree hash was changed): no proof is "
            "issued for it", hint=hint, index=row.idx,
        ) from None


def _check_matches_log(session: Session, cp: Checkpoint) -> None:
    if cp.size > log.size(session) or log.root(session, cp.size) != cp.root:
        raise ProofError(
            f"the checkpoint for size {cp.size} does not match this log",
            hint="pass a checkpoint this node signed; run `dataspace ledger verify`",
        )


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedEntry:
    index: int
    tree_size: int
    root: bytes
    origin: str
    signed_by: list[str]
    entry: dict[str, Any]
    payload: dict[str, Any] | None
    cosigned_by: dict[str, int] = field(default_factory=dict)  # witness -> cosignature time

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": "inclusion",
            "origin": self.origin,
            "index": self.index,
            "tree_size": self.tree_size,
            "root": b64encode(self.root),
            "signed_by": self.signed_by,
            "cosigned_by": self.cosigned_by,
            "entry": self.entry,
            "payload": self.payload,
        }

    def summary(self) -> str:
        return (
            f"entry {self.index} ({self.entry.get('action')}) is in {self.origin}'s log "
            f"of {self.tree_size} entries, checkpoint signed by {', '.join(self.signed_by)}"
            + _witnessed(self.cosigned_by)
            + ("; its payload was withheld and is not checked" if self.payload is None else "")
        )


def _witnessed(cosigned_by: Mapping[str, int]) -> str:
    if not cosigned_by:
        return ""
    return f", cosigned by witnesses {', '.join(sorted(cosigned_by))}"


@dataclass(frozen=True)
class VerifiedConsistency:
    old_size: int
    old_root: bytes
    old_signed: bool
    new: Checkpoint
    signed_by: list[str]
    old_held: bool = False  # the older checkpoint was the caller's own copy
    cosigned_by: dict[str, int] = field(default_factory=dict)  # witness -> cosignature time

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": "consistency",
            "origin": self.new.origin,
            "old_size": self.old_size,
            "old_root": b64encode(self.old_root),
            "old_signed": self.old_signed,
            "old_checkpoint": "held" if self.old_held else "bundle" if self.old_signed else None,
            "new_size": self.new.size,
            "new_root": b64encode(self.new.root),
            "signed_by": self.signed_by,
            "cosigned_by": self.cosigned_by,
        }

    def summary(self) -> str:
        claim = (
            f"{self.new.origin}'s log of {self.new.size} entries extends its log of "
            f"{self.old_size} entries without changing them"
        )
        claim += _witnessed(self.cosigned_by)
        if self.old_held:
            return f"{claim} (the older log as your checkpoint has it)"
        source = "the bundle's own signed checkpoint" if self.old_signed else "the bundle, unsigned"
        return (
            f"{claim} — the older log (root {b64encode(self.old_root)}) as {source} states "
            "it; check it against a checkpoint you hold with --old-checkpoint"
        )


def verify_bundle(
    bundle: Mapping[str, Any],
    verifier_key: str,
    *,
    old_checkpoint: str | None = None,
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int | None = None,
) -> VerifiedEntry | VerifiedConsistency:
    """Verify a bundle of either kind, chosen by its ``format``; ``old_checkpoint`` (a note
    the caller holds) is the older side of a consistency bundle. With ``witnesses``, the
    bundle's checkpoint must carry valid cosignatures by ``quorum`` of them (default: all)."""
    if not isinstance(bundle, Mapping):  # the file's shape, not a failed proof
        raise InputError("a proof bundle is a JSON object; this file holds "
                         f"{type(bundle).__name__}",
                         hint="pass a file written by `dataspace ledger prove`")
    fmt = bundle.get("format")
    result: VerifiedEntry | VerifiedConsistency
    if fmt == INCLUSION_FORMAT:
        if old_checkpoint is not None:
            raise UsageError(
                "an older checkpoint is checked against consistency proofs, and this is an "
                "inclusion proof",
                hint="drop --old-checkpoint, or pass a consistency proof bundle",
            )
        result = verify_inclusion_bundle(bundle, verifier_key)
    elif fmt == CONSISTENCY_FORMAT:
        result = verify_consistency_bundle(bundle, verifier_key, old_checkpoint=old_checkpoint)
    else:
        raise ProofError(
            f"unknown proof bundle format {fmt!r}",
            hint=f"expected {INCLUSION_FORMAT} or {CONSISTENCY_FORMAT}",
        )
    if not witnesses:
        return result
    try:
        cosigned = check_quorum(_str(bundle, "checkpoint"), witnesses, quorum)
    except SignatureError as exc:
        raise ProofError(f"witnesses: {exc.message}", hint=exc.hint) from None
    return dataclasses.replace(result, cosigned_by=dict(cosigned))


def verify_inclusion_bundle(bundle: Mapping[str, Any], verifier_key: str) -> VerifiedEntry:
    """Check an inclusion bundle offline; raises a VerificationError subclass on failure.

    1. the format is dataspace-inclusion-proof/v1
    2. the checkpoint note is signed by the key (signed-note), its body a tlog-checkpoint
    3. tree_size equals the checkpoint's size
    4. the entry is canonical JSON with seq equal to index; the payload, if present, hashes to
       the entry's payload_sha256
    5. the entry's leaf hash is included at index under the checkpoint's root (RFC 9162 §2.1.3.2)
    """
    _check_format(bundle, INCLUSION_FORMAT)
    signed = open_checkpoint(_str(bundle, "checkpoint"), [NoteVerifier.parse(verifier_key)])
    cp = signed.checkpoint
    index, tree_size = _int(bundle, "index"), _int(bundle, "tree_size")
    if tree_size != cp.size:
        raise ProofError(f"bundle says tree size {tree_size}, the checkpoint signs {cp.size}")
    entry_json = _str(bundle, "entry")
    entry = _canonical_object(entry_json, "entry")
    if entry.get("seq") != index:
        raise ProofError(f"the entry's seq {entry.get('seq')!r} is not the index {index}")
    payload: dict[str, Any] | None = None
    if bundle.get("payload") is not None:
        payload_json = _str(bundle, "payload")
        payload = _canonical_object(payload_json, "payload")
        digest = hashlib.sha256(payload_json.encode("utf-8")).hexdigest()
        if digest != entry.get("payload_sha256"):
            raise ProofError("the payload does not hash to the entry's payload_sha256")
    merkle.verify_inclusion(
        log.entry_leaf_hash(entry_json), index, cp.size, _hashes(bundle), cp.root
    )
    return VerifiedEntry(index, cp.size, cp.root, cp.origin, signed.verified_by, entry, payload)


def verify_consistency_bundle(
    bundle: Mapping[str, Any], verifier_key: str, *, old_checkpoint: str | None = None
) -> VerifiedConsistency:
    """Check a consistency bundle offline; raises on failure.

    1. the format is dataspace-consistency-proof/v1
    2. the newer checkpoint is signed by the key
    3. the older checkpoint (the caller's own copy if given, else the bundle's if present) is
       signed by the key, has the same origin, and names old_size and old_root
    4. the proof shows the newer tree extends the older one (RFC 9162 §2.1.4.2)
    """
    _check_format(bundle, CONSISTENCY_FORMAT)
    verifier = NoteVerifier.parse(verifier_key)
    signed = open_checkpoint(_str(bundle, "checkpoint"), [verifier])
    new = signed.checkpoint
    old_size = _int(bundle, "old_size")
    old_root = _b64(_str(bundle, "old_root"), "old_root")
    old_note = old_checkpoint if old_checkpoint is not None else bundle.get("old_checkpoint")
    if old_note is not None:
        if not isinstance(old_note, str):
            raise ProofError("old_checkpoint must be a signed note (a string)")
        old = open_checkpoint(old_note, [verifier]).checkpoint
        if old.origin != new.origin:
            raise ProofError(f"the checkpoints name different logs: {old.origin!r}, {new.origin!r}")
        if (old.size, old.root) != (old_size, old_root):
            held = "your" if old_checkpoint is not None else "the bundle's"
            raise ProofError(
                f"the bundle proves from size {old_size} (root {b64encode(old_root)}), but "
                f"{held} older checkpoint is of size {old.size} (root {b64encode(old.root)})",
                hint=f"ask the node for a consistency proof from size {old.size}",
            )
    merkle.verify_consistency(old_size, new.size, _hashes(bundle), old_root, new.root)
    return VerifiedConsistency(
        old_size, old_root, old_note is not None, new, signed.verified_by,
        old_held=old_checkpoint is not None,
    )


def _check_format(bundle: Mapping[str, Any], expected: str) -> None:
    if not isinstance(bundle, Mapping):
        raise ProofError("a proof bundle must be a JSON object")
    if bundle.get("format") != expected:
        raise ProofError(f"bundle format is {bundle.get('format')!r}, expected {expected!r}")


def _str(bundle: Mapping[str, Any], key: str) -> str:
    value = bundle.get(key)
    if not isinstance(value, str):
        raise ProofError(f"bundle field {key!r} is missing or not a string")
    return value


def _int(bundle: Mapping[str, Any], key: str) -> int:
    value = bundle.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"bundle field {key!r} is missing or not a non-negative integer")
    return value


def _b64(value: str, what: str) -> bytes:
    try:
        return strict_b64decode(value)
    except ValueError as exc:
        raise ProofError(f"bundle field {what}: {exc}") from None


def _hashes(bundle: Mapping[str, Any]) -> list[bytes]:
    items = bundle.get("proof")
    if not isinstance(items, list) or not all(isinstance(h, str) for h in items):
        raise ProofError("bundle field 'proof' must be a list of base64 hashes")
    return [_b64(h, f"proof[{i}]") for i, h in enumerate(items)]


def _canonical_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
        canonical = isinstance(value, dict) and log.canonical_json(value) == text
    except (ValueError, RecursionError, DataspaceError):
        canonical = False
    if not canonical:
        raise ProofError(f"the bundle's {what} is not a canonical JSON object")
    result: dict[str, Any] = value
    return result
