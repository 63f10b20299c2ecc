"""Ledger operations for the faces: checkpoints, entries, proofs, full verification."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import inspect

from dataspace.errors import InputError, NotFound, StoreError, UsageError
from dataspace.identity.note import NoteVerifier
from dataspace.ledger import audit, log, proof
from dataspace.ledger.checkpoint import peek_checkpoint
from dataspace.services.node import Node
from dataspace.store.db import Store, sqlite_url
from dataspace.store.models import LedgerEntry


def size(node: Node) -> int:
    with node.store.read() as session:
        return log.size(session)


def checkpoint(node: Node) -> str:
    """The latest signed checkpoint, signing a new one first if the log has grown."""
    with node.store.write() as session:
        return log.sign_checkpoint(session, node.signer, node.origin)


def entries(node: Node, start: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    if start < 0 or limit < 1:
        raise UsageError("start must be ≥ 0 and limit ≥ 1")
    limit = min(limit, node.limits.api_max_page)
    with node.store.read() as session:
        if start >= log.size(session):  # also past what the database's integers hold
            return []
        return [e.to_dict() for e in log.entries(session, start=start, limit=limit)]


def latest_index(node: Node, action: str) -> int:
    """The index of the newest entry with ``action``."""
    with node.store.read() as session:
        found = log.latest_with_action(session, action)
    if found is None:
        raise NotFound(f"the ledger has no {action!r} entry", hint="see `dataspace ledger log`")
    return found


def _check_index(index: int, tree_size: int) -> None:
    if not 0 <= index < tree_size:
        raise NotFound(
            f"no ledger entry {index}: the log has {tree_size} entries",
            hint=f"use an index from 0 to {tree_size - 1}",
        )


def inclusion_proof(node: Node, index: int, size: int | None = None) -> dict[str, Any]:
    """An offline-verifiable bundle: signed checkpoint, entry, and its inclusion path."""
    note = checkpoint(node)
    # the size the checkpoint signs, not the log's size now: entries appended since must not
    # make the proof ask for a checkpoint that was never signed
    tree_size = peek_checkpoint(note).size
    with node.store.read() as session:
        _check_index(index, tree_size)
        if size is not None and size != tree_size:
            raise UsageError(
                f"proofs are issued against the latest checkpoint (size {tree_size}), not {size}",
                hint="omit size, or fetch a consistency proof between the two sizes",
            )
        return proof.export_inclusion(session, index, checkpoint_note=note)


def consistency_proof(node: Node, size1: int, size2: int | None = None) -> dict[str, Any]:
    note = checkpoint(node)
    tree_size = peek_checkpoint(note).size  # as for inclusion proofs
    with node.store.read() as session:
        size2 = tree_size if size2 is None else size2
        if not 0 < size1 <= size2 <= tree_size:
            raise UsageError(
                f"need 0 < from ({size1}) ≤ to ({size2}) ≤ log size ({tree_size})",
                hint="pick sizes of two checkpoints you hold",
            )
        return proof.export_consistency(session, size1, size2, checkpoint_note=note)


def verify(
    node: Node, held_checkpoints: Iterable[str] = (), verifier_key: str | None = None
) -> dict[str, Any]:
    """Recompute the whole tree from stored rows and check every checkpoint; raises on tampering.

    ``held_checkpoints`` are notes kept outside the node (by an auditor or a witness): they catch
    a rollback that also deleted the stored checkpoints. ``verifier_key``: the key the node
    published when it was created (an auditor's copy); without it, the node's own key file,
    which whoever runs the node can replace.
    """
    verifier = NoteVerifier.parse(verifier_key or node.verifier_key())
    with node.store.snapshot() as session:  # appends go on meanwhile: audit one state
        return audit.audit(session, verifier, checkpoints=list(held_checkpoints)).to_dict()


def verify_copy(
    database: str, verifier_key: str, held_checkpoints: Iterable[str] = (),
    schema: str | None = None,
) -> dict[str, Any]:
    """:func:`verify` on a node's state database alone — a SQLite file (an auditor's copy) or a
    PostgreSQL URL — with the key the node published: no node folder, no private key."""
    verifier = NoteVerifier.parse(verifier_key)
    if "://" in database:
        url = database
    else:
        path = Path(database).expanduser()
        if not path.is_file():  # SQLite would make an empty database there, which "verifies"
            raise InputError(f"{database}: no such file",
                             hint="pass a copy of the node's state.db, or a postgresql:// URL")
        url = sqlite_url(path.absolute())
    store = Store(url, schema)
    try:
        with _opened(database, url), store.snapshot() as session:
            if not inspect(session.connection()).has_table(LedgerEntry.__tablename__):
                raise InputError(f"{database} holds no dataspace ledger",
                                 hint="pass the node's state.db (or its database URL and "
                                 "--schema)")
            return audit.audit(session, verifier, checkpoints=list(held_checkpoints)).to_dict()
    finally:
        store.close()


@contextlib.contextmanager
def _opened(database: str, url: str) -> Iterator[None]:
    """A file that is no SQLite database is the caller's mistake, not a database fault."""
    try:
        yield
    except StoreError as exc:
        if not url.startswith("sqlite"):
            raise
        raise InputError(f"{database} is not a SQLite database ({exc.message})",
                         hint="pass a copy of the node's state.db") from None

