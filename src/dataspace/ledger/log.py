"""The node's append-only log, kept in the state database.

Every function takes a SQLAlchemy :class:`Session` and leaves the transaction to the caller,
so a state change and the ledger entry recording it commit together or not at all::

    with store.write() as session:
        session.add(dataset_row)
        log.append(session, actor="node:abc", action="dataset.added", payload={"id": ...})

Appends lock the single ``ledger_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers), so indices are contiguous on every backend.
Each append stores the entry's canonical JSON, its RFC 9162 leaf hash, the canonical payload,
and the hash of every complete subtree the new leaf closes (``ledger_nodes``, levels >= 1; the
level-0 hashes are the entries' leaf hashes). Roots and proofs then read O(log n) rows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataspace.errors import (
    Conflict,
    DataspaceError,
    InputError,
    LedgerTampered,
    NotFound,
    ProofError,
    UsageError,
)
from dataspace.identity.note import NoteSigner
from dataspace.ledger import merkle
from dataspace.ledger.checkpoint import Checkpoint, peek_checkpoint
from dataspace.store.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerNode

HEAD_ID = 1
ENTRY_VERSION = 1
MAX_SAFE_INT = 2**53 - 1  # integers every JSON reader (JavaScript included) reads exactly
_PAGE_ENTRIES = 10_000  # entry texts read per query when a checkpoint is checked
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")


# --- canonical JSON ---------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8; strings, safe integers, booleans, null, lists, objects.

    Floats are refused: their decimal spelling is not canonical across languages.
    """
    _check_canonical(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_canonical(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise InputError(
                f"ledger payload value at {path} is outside ±(2**53-1)",
                hint="store large numbers as decimal strings",
            )
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"ledger payload string at {path} is not valid Unicode") from None
        return
    if isinstance(value, float):
        raise InputError(
            f"ledger payload value at {path} is a float ({value!r}); floats are not canonical",
            hint="record it as an integer in a stated unit, or as a decimal string",
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"ledger payload key {key!r} at {path} is not a string")
            _check_canonical(key, path)
            _check_canonical(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_canonical(item, f"{path}[{i}]")
        return
    raise InputError(
        f"ledger payload value at {path} has type {type(value).__name__}",
        hint="use strings, integers, booleans, null, lists and objects",
    )


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z and microseconds, e.g. 2025-06-01T08:30:00.000000Z."""
    if moment.tzinfo is None:
        raise InputError("ledger entry time has no time zone", hint="pass an aware datetime (UTC)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_leaf_hash(entry_json: str) -> bytes:
    return merkle.leaf_hash(entry_json.encode("utf-8"))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- appending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEntry:
    actor: str
    action: str
    payload: Mapping[str, Any]
    time: datetime | None = None


@dataclass(frozen=True)
class Appended:
    index: int
    leaf_hash: bytes
    entry: dict[str, Any]
    entry_json: str


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    payload: Mapping[str, Any],
    time: datetime | None = None,
) -> Appended:
    """Append one entry inside the caller's transaction."""
    return append_many(session, [NewEntry(actor, action, payload, time)])[0]


def append_many(session: Session, items: Iterable[NewEntry]) -> list[Appended]:
    """Append entries in order inside the caller's transaction (one head lock for all)."""
    prepared = [_prepare(item) for item in items]
    if not prepared:
        return []
    start = _lock_head(session)
    frontier = _frontier(session, start)
    entry_rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    out: list[Appended] = []
    for offset, (head, payload_json) in enumerate(prepared):
        index = start + offset
        entry = {"v": ENTRY_VERSION, "seq": index, **head}
        entry_json = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        leaf = entry_leaf_hash(entry_json)
        entry_rows.append(
            {"idx": index, "leaf_hash": leaf, "entry": entry_json, "payload": payload_json}
        )
        level, cur = 0, leaf
        while level in frontier:
            cur = merkle.node_hash(frontier.pop(level), cur)
            level += 1
            node_rows.append({"level": level, "idx": index >> level, "hash": cur})
        frontier[level] = cur
        out.append(Appended(index, leaf, entry, entry_json))
    try:
        session.execute(insert(LedgerEntry), entry_rows)
        if node_rows:
            session.execute(insert(LedgerNode), node_rows)
    except IntegrityError:  # rows at positions the head says are free: the head was edited
        raise LedgerTampered(
            f"the ledger's head says it holds {start} entries, but rows are stored past that: "
            "the log was edited; nothing was changed",
            hint="run `dataspace ledger verify`; restore the state database from a backup",
            index=start,
        ) from None
    session.execute(
        update(LedgerHead).where(LedgerHead.id == HEAD_ID).values(size=start + len(prepared))
    )
    return out


def _prepare(item: NewEntry) -> tuple[dict[str, Any], str]:
    for what, value in (("actor", item.actor), ("action", item.action)):
        if not isinstance(value, str) or not value or len(value) > 300:
            raise InputError(f"ledger entry {what} must be a non-empty string of at most 300 chars")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise InputError(f"ledger entry {what} {value!r} contains a control character")
    if not _ACTION_RE.match(item.action):
        raise InputError(
            f"ledger action {item.action!r} is not a dotted lower-case name",
            hint="use names like 'dataset.added' or 'token.revoked'",
        )
    if not isinstance(item.payload, Mapping):
        raise InputError("ledger payload must be a JSON object (a mapping)")
    _check_canonical(item.actor, "actor")
    payload_json = canonical_json(item.payload)
    head = {
        "time": format_time(item.time or datetime.now(UTC)),
        "actor": item.actor,
        "action": item.action,
        "payload_sha256": sha256_hex(payload_json),
    }
    return head, payload_json


def serialize_writers(session: Session) -> None:
    """Take the ledger's write lock at the start of a write transaction that reads before it
    logs: until it commits, no other logging write can, and its reads see every one committed
    before — so a check-then-create (is there a process for this pid yet?) cannot run twice
    side by side. PostgreSQL needs this; SQLite's BEGIN IMMEDIATE already queues writers."""
    _lock_head(session)


def _lock_head(session: Session) -> int:
    """Lock the head row (creating it at size 0) and return the log's size."""
    query = select(LedgerHead.size).where(LedgerHead.id == HEAD_ID).with_for_update()
    size = session.execute(query).scalar_one_or_none()
    if size is None:
        dialect = session.get_bind().dialect.name
        ins: Any
        if dialect == "postgresql":
            ins = postgresql.insert(LedgerHead).on_conflict_do_nothing()
        elif dialect == "sqlite":
            ins = sqlite.insert(LedgerHead).on_conflict_do_nothing()
        else:
            ins = insert(LedgerHead)
        session.execute(ins.values(id=HEAD_ID, size=0))
        size = session.execute(query).scalar_one()
    return int(size)


def _frontier(session: Session, size: int) -> dict[int, bytes]:
    """Hashes of the complete subtrees on the tree's right edge, by level."""
    subtrees = merkle.root_subtrees(size)
    hashes = _fetch(session, subtrees)
    return {level: hashes[(level, idx)] for level, idx in subtrees}


# --- reading ----------------------------------------------------------------------------------


def size(session: Session) -> int:
    value = session.execute(select(LedgerHead.size).where(LedgerHead.id == HEAD_ID)).scalar()
    return int(value or 0)


def _check_size(session: Session, tree_size: int | None) -> int:
    current = size(session)
    if tree_size is None:
        return current
    if not 0 <= tree_size <= current:
        raise UsageError(
            f"tree size {tree_size} is beyond the log's size {current}",
            hint=f"pick a size between 0 and {current}",
        )
    return tree_size


def _fetch(session: Session, subtrees: Sequence[merkle.Subtree]) -> dict[merkle.Subtree, bytes]:
    """Fetch complete-subtree hashes in at most two queries."""
    out: dict[merkle.Subtree, bytes] = {}
    leaves = [idx for level, idx in subtrees if level == 0]
    nodes = [(level, idx) for level, idx in subtrees if level > 0]
    if leaves:
        rows = session.execute(
            select(LedgerEntry.idx, LedgerEntry.leaf_hash).where(LedgerEntry.idx.in_(leaves))
        )
        out.update(((0, int(i)), bytes(h)) for i, h in rows)
    if nodes:
        # One (level = ? AND idx IN (...)) term per level: both SQLite and PostgreSQL answer
        # each from the primary key. A row-value IN (level, idx) makes SQLite scan the table.
        by_level: dict[int, list[int]] = {}
        for level, idx in nodes:
            by_level.setdefault(level, []).append(idx)
        terms = [
            and_(LedgerNode.level == level, LedgerNode.idx.in_(idxs))
            for level, idxs in by_level.items()
        ]
        node_rows = session.execute(
            select(LedgerNode.level, LedgerNode.idx, LedgerNode.hash).where(or_(*terms))
        )
        out.update(((int(lv), int(i)), bytes(h)) for lv, i, h in node_rows)
    missing = [s for s in subtrees if s not in out]
    if missing:
        level, idx = missing[0]
        raise LedgerTampered(
            f"the stored hash of subtree level {level} index {idx} is missing",
            hint="run `dataspace ledger verify` to find what was removed",
            index=idx << level,
        )
    return out


def _provider(session: Session, subtrees: Sequence[merkle.Subtree]) -> merkle.SubtreeProvider:
    hashes = _fetch(session, subtrees)

    def provide(level: int, idx: int) -> bytes:
        return hashes[(level, idx)]

    return provide


def root(session: Session, size: int | None = None) -> bytes:
    """The RFC 9162 root of the first ``size`` entries (default: all)."""
    n = _check_size(session, size)
    return merkle.root(n, _provider(session, merkle.root_subtrees(n)))


def inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    n = _check_size(session, size)
    if not 0 <= index < n:
        raise UsageError(f"entry {index} is not in a tree of size {n}")
    return merkle.inclusion_proof(index, n, _provider(session, merkle.inclusion_subtrees(index, n)))


def consistency_proof(session: Session, size1: int, size2: int) -> list[bytes]:
    n = _check_size(session, size2)
    if not 0 < size1 <= n:
        raise UsageError(
            f"no consistency proof from size {size1} to {n}", hint="need 0 < size1 <= size2"
        )
    subtrees = merkle.consistency_subtrees(size1, n)
    return merkle.consistency_proof(size1, n, _provider(session, subtrees))


@dataclass(frozen=True)
class LogRow:
    idx: int
    entry: dict[str, Any]
    payload: dict[str, Any]
    leaf_hash: bytes
    entry_json: str
    payload_json: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the API and ``--json``: index, entry, payload, leaf hash (hex)."""
        return {
            "index": self.idx,
            "entry": self.entry,
            "payload": self.payload,
            "leaf_hash": self.leaf_hash.hex(),
        }


def _row(idx: int, leaf: bytes, entry_json: str, payload_json: str) -> LogRow:
    try:
        entry, payload = json.loads(entry_json), json.loads(payload_json)
    except (ValueError, RecursionError):  # this node wrote JSON: someone edited the row
        raise LedgerTampered(
            f"ledger entry {idx} is not the JSON this node wrote: the stored log was edited",
            hint="run `dataspace ledger verify` for the whole log; restore the state database "
            "from a backup",
            index=int(idx),
        ) from None
    return LogRow(int(idx), entry, payload, bytes(leaf), entry_json, payload_json)


def _rows_query() -> Any:
    return select(LedgerEntry.idx, LedgerEntry.leaf_hash, LedgerEntry.entry, LedgerEntry.payload)


def entries(session: Session, start: int = 0, limit: int = 100) -> list[LogRow]:
    """Entries from index ``start`` on, at most ``limit`` of them, oldest first."""
    if start < 0 or limit < 0:
        raise UsageError("start and limit must not be negative")
    total = size(session)  # read first: entries appended meanwhile only add rows
    query = _rows_query().where(LedgerEntry.idx >= start).order_by(LedgerEntry.idx).limit(limit)
    rows = [_row(r.idx, r.leaf_hash, r.entry, r.payload) for r in session.execute(query)]
    for expected, row in enumerate(rows, start):
        if row.idx != expected:  # a page that skipped a row would read as a whole log
            _missing(expected, total)
    if len(rows) < limit and start + len(rows) < total:
        _missing(start + len(rows), total)
    return rows


def _missing(index: int, total: int) -> NoReturn:
    raise LedgerTampered(
        f"ledger entry {index} is missing from the state database, which says the log has "
        f"{total} entries: the stored log was edited",
        hint="run `dataspace ledger verify` for the whole log; restore the state database "
        "from a backup",
        index=index,
    )


def latest_with_action(session: Session, action: str) -> int | None:
    """Index of the newest entry whose action is ``action``, or None."""
    needle = '"action":' + json.dumps(action, ensure_ascii=False)
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    query = (
        select(LedgerEntry.idx, LedgerEntry.entry)
        .where(LedgerEntry.entry.like(f"%{escaped}%", escape="\\"))
        .order_by(LedgerEntry.idx.desc())
    )
    for idx, entry in session.execute(query):
        if json.loads(entry).get("action") == action:  # the text match is only a filter
            return int(idx)
    return None


def get_entry(session: Session, index: int) -> LogRow:
    found = session.execute(_rows_query().where(LedgerEntry.idx == index)).first()
    if found is None:
        total = size(session)
        if 0 <= index < total:
            _missing(index, total)
        raise NotFound(f"ledger entry {index} does not exist", hint=f"the log has {total} entries")
    return _row(found.idx, found.leaf_hash, found.entry, found.payload)


# --- checkpoints ------------------------------------------------------------------------------


def sign_checkpoint(session: Session, signer: NoteSigner, origin: str) -> str:
    """Sign a checkpoint of the current size and store it; returns the signed note.

    Idempotent: Ed25519 is deterministic, so signing an unchanged log again yields the note
    already stored (with the witnesses' cosignature lines it gathered since, which follow the
    node's own). A different note stored for the same size is a conflict.
    """
    n = _lock_head(session)
    tree_root = merkle.root(n, _provider(session, merkle.root_subtrees(n)))
    _require_extends_signed(session, n, tree_root)
    note = Checkpoint(origin, n, tree_root).sign([signer])
    existing = session.execute(
        select(LedgerCheckpoint.note).where(LedgerCheckpoint.size == n)
    ).scalar_one_or_none()
    if existing is not None:
        if _signed_root(existing) not in (None, tree_root):
            raise LedgerTampered(
                f"the log's {n} entries no longer hash to the root this node signed at size "
                f"{n}: its history was rewritten; no checkpoint is signed",
                hint="run `dataspace ledger verify` to find what changed; restore the log "
                "from a backup",
            )
        if not existing.startswith(note):
            raise Conflict(
                f"a different checkpoint is already stored for tree size {n}",
                hint="check the origin and key; run `dataspace ledger verify` if unsure",
            )
        return str(existing)
    session.execute(
        insert(LedgerCheckpoint).values(
            size=n, root_hash=tree_root, note=note, created_at=datetime.now(UTC)
        )
    )
    return note


def _signed_root(note: str) -> bytes | None:
    """The root a stored note signs (None if it does not parse: a conflict, not a rewrite)."""
    try:
        return peek_checkpoint(note).root
    except DataspaceError:
        return None


def _require_extends_signed(session: Session, n: int, tree_root: bytes) -> None:
    """A log never signs a checkpoint inconsistent with one it signed (C2SP tlog-checkpoint):
    after entries were removed, or removed and others appended, the head must not move back
    or fork. Checked against the largest stored checkpoint: the stored subtree hashes must
    still give its root (O(log n)), and ``tree_root`` must extend it by a consistency proof
    whose new half is recomputed from the entries appended since (a damaged stored hash or
    an edited new entry would otherwise be signed: an equivocation under the node's key).
    The audit finds which entries changed."""
    found = session.execute(
        select(LedgerCheckpoint.size, LedgerCheckpoint.root_hash)
        .order_by(LedgerCheckpoint.size.desc())
        .limit(1)
    ).first()
    if found is None or int(found.size) == n:
        return  # the same size: sign_checkpoint compares the notes
    signed = int(found.size)
    hint = "run `dataspace ledger verify` to find what changed; restore the log from a backup"
    if signed > n:
        raise LedgerTampered(
            f"the log has {n} entries but this node signed a checkpoint at size {signed}: "
            f"entries were removed; no new checkpoint is signed",
            hint=hint,
            index=n,
        )
    signed_root = bytes(found.root_hash)
    if merkle.root(signed, _provider(session, merkle.root_subtrees(signed))) != signed_root:
        raise LedgerTampered(
            f"the log's first {signed} entries no longer hash to the root this node signed "
            f"at size {signed}: its history was rewritten; no new checkpoint is signed",
            hint=hint,
        )
    try:
        merkle.verify_consistency(signed, n, _extension_proof(session, signed, n), signed_root,
                                  tree_root)
    except ProofError:
        raise LedgerTampered(
            f"the stored tree of size {n} does not extend the checkpoint this node signed at "
            f"size {signed} by entries {signed}..{n - 1} as they stand: an entry appended "
            "since, or a stored subtree hash, was changed; no new checkpoint is signed",
            hint=hint,
            index=signed,
        ) from None


def _extension_proof(session: Session, signed: int, n: int) -> list[bytes]:
    """The consistency proof from ``signed`` to ``n``: its ranges left of ``signed`` from the
    stored hashes (the signed root vouches for those), its ranges right of it recomputed from
    the entries themselves (RFC 9162 puts no range of such a proof across ``signed``)."""
    ranges = merkle.consistency_ranges(signed, n)
    old = [r for r in ranges if r[1] <= signed]
    provide = _provider(session, merkle.subtrees_of(old))
    leaves: list[bytes] = []
    for start in range(signed, n, _PAGE_ENTRIES):  # bounded pages of entry texts
        rows = session.execute(
            select(LedgerEntry.entry).where(LedgerEntry.idx >= start,
                                            LedgerEntry.idx < min(n, start + _PAGE_ENTRIES))
            .order_by(LedgerEntry.idx))  # fmt: skip
        leaves.extend(entry_leaf_hash(str(text)) for (text,) in rows)
    if len(leaves) != n - signed:
        raise LedgerTampered(f"entries {signed}..{n - 1} are not all stored",
                             hint="run `dataspace ledger verify` to find what was removed",
                             index=signed)
    return [merkle.range_hash(start, end, provide) if end <= signed
            else merkle.root_of(leaves[start - signed:end - signed])
            for start, end in ranges]


def latest_checkpoint(session: Session) -> str | None:
    query = select(LedgerCheckpoint.note).order_by(LedgerCheckpoint.size.desc()).limit(1)
    note = session.execute(query).scalar_one_or_none()
    return None if note is None else str(note)


def checkpoint_at(session: Session, tree_size: int) -> str:
    query = select(LedgerCheckpoint.note).where(LedgerCheckpoint.size == tree_size)
    note = session.execute(query).scalar_one_or_none()
    if note is None:
        raise NotFound(f"no checkpoint was signed at tree size {tree_size}")
    return str(note)
