"""``ledger verify``: recompute the whole tree from the stored entries and check everything.

The audit streams the entries and the stored subtree hashes side by side (``yield_per``), so a
log of millions of entries is checked in constant memory. The checks, numbered as in
docs/ledger.md:

1. every entry is canonical JSON whose RFC 9162 leaf hash equals the stored leaf hash
2. every entry's ``seq`` equals its index, and indices run 0 .. size-1 without gaps or extras
3. every payload's SHA-256 equals the entry's ``payload_sha256``
4. every stored subtree hash equals the hash recomputed from the entries
5. every checkpoint (stored, or handed in from outside) is a well-formed tlog-checkpoint
   signed by the node's key, and its root equals the recomputed root at its size
6. a node's entry 0 (``node.created``) names the key the log is checked with

All problems are collected; if there is any, :class:`LedgerTampered` is raised naming the first
index, with every problem in ``details["problems"]``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from dataspace.errors import DataspaceError, InputError, LedgerTampered, VerificationError
from dataspace.identity.note import NoteVerifier
from dataspace.ledger import log, merkle
from dataspace.ledger.checkpoint import open_checkpoint
from dataspace.store.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerNode

MAX_PROBLEMS = 1000
BATCH = 5000
_PLACEHOLDER = bytes(32)


@dataclass(frozen=True)
class Problem:
    index: int
    kind: str  # edited | deleted | inserted | reordered | payload edited | bad checkpoint
    reason: str
    size: int | None = None  # for checkpoint problems: the checkpoint's tree size

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"index": self.index, "kind": self.kind, "reason": self.reason}
        if self.size is not None:
            body["size"] = self.size
        return body


@dataclass(frozen=True)
class AuditReport:
    size: int
    root: bytes
    checkpoints_checked: int
    entries_checked: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "size": self.size,
            "root": base64.b64encode(self.root).decode("ascii"),
            "checkpoints_checked": self.checkpoints_checked,
            "entries_checked": self.entries_checked,
        }


@dataclass
class _Problems:
    items: list[Problem] = field(default_factory=list)
    count: int = 0
    vouched: list[int] = field(default_factory=list)  # sizes whose checkpoint root matched

    def add(self, problem: Problem) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(problem)


@dataclass
class _Wanted:
    """A checkpoint whose signature verified, waiting for the recomputed root at its size."""

    size: int
    root: bytes
    source: str


def audit(
    session: Session, verifier: NoteVerifier, *, checkpoints: Iterable[str] = ()
) -> AuditReport:
    """Check the stored log end to end; raise LedgerTampered listing every problem found.

    ``checkpoints`` are extra signed notes held outside the database (an auditor's or a
    witness's copy): they catch a rollback that also deleted the stored checkpoints.
    """
    with _undecodable_text_as_bytes(session):
        return _audit(session, verifier, checkpoints)


@contextlib.contextmanager
def _undecodable_text_as_bytes(session: Session) -> Iterator[None]:
    """SQLite stores whatever bytes an editor writes into a text column; its driver would
    fail the whole read on one that is not UTF-8. While auditing, such a value comes back
    as bytes — a value of the wrong type, reported at its row like any other edit."""
    if session.get_bind().dialect.name != "sqlite":
        yield  # PostgreSQL refuses invalid UTF-8 in text on the way in
        return
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    before = raw.text_factory

    def text(value: bytes) -> str | bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value

    raw.text_factory = text
    try:
        yield
    finally:
        raw.text_factory = before


def _audit(session: Session, verifier: NoteVerifier, checkpoints: Iterable[str]) -> AuditReport:
    problems = _Problems()
    head = _head(session, problems)
    wanted = _checkpoints(session, verifier, checkpoints, problems)
    by_size: dict[int, list[_Wanted]] = {}
    for w in wanted:
        if w.size > head:
            problems.add(
                Problem(
                    head,
                    "deleted",
                    f"{w.source} checkpoint was signed at size {w.size} but the log has only "
                    f"{head} entries: {_span(head, w.size - 1)} removed",
                    w.size,
                )
            )
        else:
            by_size.setdefault(w.size, []).append(w)

    tree = _Recompute(_stored_nodes(session, problems), problems)
    seq_mismatch: dict[int, int] = {}
    _compare_roots(tree, by_size, problems)
    checked = 0
    for idx, leaf, entry_json, payload_json in _stream_entries(session):
        if not _whole(idx) or idx < tree.size:
            # SQLite keeps whatever is written: a row re-keyed to 6.5 or -1 sorts among the
            # others; it is no position of the tree (its own is then reported missing)
            problems.add(
                Problem(
                    tree.size, "inserted", f"a row is keyed {idx!r}, which is no position "
                    f"in the log (a row was re-keyed or inserted)",
                )
            )
            continue
        if idx >= head:
            problems.add(Problem(idx, "inserted", f"row {idx} lies beyond the log's size {head}"))
            continue
        if idx > tree.size:
            problems.add(
                Problem(tree.size, "deleted", f"{_span(tree.size, idx - 1)} removed from the log")
            )
            while tree.size < idx:
                tree.push(_PLACEHOLDER, tainted=True)
                _compare_roots(tree, by_size, problems)
        if isinstance(leaf, bytes | memoryview) and isinstance(entry_json, str) and not (
            isinstance(payload_json, str)
        ):  # the payload lies outside the tree: only it is damaged, not the history
            problems.add(Problem(idx, "payload edited", f"the payload of entry {idx} holds "
                                 f"{type(payload_json).__name__}, not UTF-8 text"))
            payload_json = None
        if not isinstance(leaf, bytes | memoryview) or not isinstance(entry_json, str):
            kinds = ", ".join(type(v).__name__ for v in (leaf, entry_json, payload_json))
            problems.add(
                Problem(idx, "edited", f"row {idx} holds values of the wrong types ({kinds}; "
                        "bytes, text, text belong there; bytes for text: not UTF-8)")
            )
            tree.push(_PLACEHOLDER, tainted=True)
            _compare_roots(tree, by_size, problems)
            continue
        computed, tainted = _check_row(
            idx, bytes(leaf), entry_json, payload_json, problems, seq_mismatch
        )
        if idx == 0 and payload_json is not None:
            _check_creation_key(entry_json, payload_json, verifier, problems)
        tree.push(computed, tainted=tainted)
        _compare_roots(tree, by_size, problems)
        checked += 1
    if tree.size < head:
        problems.add(
            Problem(
                tree.size,
                "deleted",
                f"the head says {head} entries but rows end at {tree.size}: "
                f"{_span(tree.size, head - 1)} removed",
            )
        )
        while tree.size < head:
            tree.push(_PLACEHOLDER, tainted=True)
            _compare_roots(tree, by_size, problems)
    tree.finish()
    _classify_sequence(seq_mismatch, problems)

    if problems.count:
        items = sorted(problems.items, key=lambda p: (p.index, p.kind))
        first = items[0]
        trust_before = _trust_before(items, problems.vouched)
        if trust_before is None:  # payloads lie outside the tree: the history itself stands
            hint = ("the entries and their hashes verify; only the payloads named differ from "
                    "what was recorded: restore them from a backup")
        else:
            covered = (" (entries before it are covered by a checkpoint that still matches)"
                       if trust_before else "")
            hint = (f"do not trust entries from index {trust_before} on{covered}; compare with "
                    "a backup and with the checkpoints peers and auditors hold")
        raise LedgerTampered(
            f"the ledger does not verify: {problems.count} problem(s), the first at index "
            f"{first.index} ({first.kind}): {first.reason}",
            hint=hint,
            index=first.index,
            trust_before=trust_before,
            problems=[p.to_dict() for p in items],
            problem_count=problems.count,
        )
    return AuditReport(head, tree.root(), len(wanted), checked)


def _trust_before(problems: list[Problem], vouched: list[int]) -> int | None:
    """The first entry that may have changed: a problem's own index, or for a checkpoint whose
    root no longer matches, the size of the largest checkpoint below it that still does (the
    rewrite lies between the two). ``None`` when only payloads, outside the tree, differ."""
    starts = []
    for p in problems:
        if p.kind == "payload edited":
            continue
        if p.kind == "bad checkpoint" and p.size is not None:
            starts.append(max((v for v in vouched if v < p.size), default=0))
        else:
            starts.append(p.index)
    return min(starts, default=None)


def _whole(value: Any) -> bool:
    """An integer as the store returned it (SQLite may return a float or text instead)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _head(session: Session, problems: _Problems) -> int:
    """The log's size as its head row says; a head that is no size is itself a problem, and
    the audit then goes by the number of rows."""
    value = session.execute(select(LedgerHead.size).where(LedgerHead.id == log.HEAD_ID)).scalar()
    if value is None:
        return 0
    if _whole(value) and value >= 0:
        return int(value)
    rows = int(session.execute(select(func.count()).select_from(LedgerEntry)).scalar() or 0)
    problems.add(
        Problem(0, "edited", f"the log's head holds {value!r}, which is no size (the audit "
                f"goes by the {rows} rows)")
    )
    return rows


def _span(first: int, last: int) -> str:
    return f"entry {first} was" if first == last else f"entries {first}..{last} were"


def _check_row(
    idx: int,
    leaf: bytes,
    entry_json: str,
    payload_json: str | None,
    problems: _Problems,
    seq_mismatch: dict[int, int],
) -> tuple[bytes, bool]:
    """Checks 1-3 on one row (the payload's unless it is ``None``, already reported); returns
    its recomputed leaf hash and whether it is suspect."""
    bad = False
    entry: Any = None
    try:
        entry = json.loads(entry_json)
        canonical = isinstance(entry, dict) and log.canonical_json(entry) == entry_json
    except (ValueError, RecursionError, DataspaceError):
        canonical = False
    if not canonical:
        problems.add(Problem(idx, "edited", f"entry {idx} is not canonical JSON any more"))
        bad = True
    computed = log.entry_leaf_hash(entry_json)
    if computed != leaf:
        problems.add(
            Problem(idx, "edited", f"entry {idx} no longer hashes to its stored leaf hash")
        )
        bad = True
    if not isinstance(entry, dict):
        return computed, True
    seq = entry.get("seq")
    if seq != idx:
        if isinstance(seq, int) and not isinstance(seq, bool):
            seq_mismatch[idx] = seq
        else:
            problems.add(Problem(idx, "edited", f"entry {idx} has no valid seq"))
        bad = True
    if payload_json is not None and hashlib.sha256(
        payload_json.encode("utf-8")
    ).hexdigest() != entry.get("payload_sha256"):
        problems.add(
            Problem(idx, "payload edited", f"the payload of entry {idx} does not match its SHA-256")
        )
    return computed, bad


def _check_creation_key(
    entry_json: str, payload_json: str, verifier: NoteVerifier, problems: _Problems
) -> None:
    """Check 6: a node's entry 0 (``node.created``) records the key it was created with; the
    log is checked with that key or not at all. Swapping the key files and dropping the
    stored checkpoints would otherwise leave a log that verifies under the new key. (A log
    that does not start with ``node.created`` — one made by the ledger alone — has no such
    record; a damaged entry 0 is checks 1-3's to report.)"""
    try:
        entry, payload = json.loads(entry_json), json.loads(payload_json)
    except (ValueError, RecursionError):
        return
    if not isinstance(entry, dict) or entry.get("action") != "node.created":
        return
    recorded = payload.get("verifier_key") if isinstance(payload, dict) else None
    try:
        created = NoteVerifier.parse(recorded) if isinstance(recorded, str) else None
    except DataspaceError:
        created = None
    if created is None:
        problems.add(Problem(0, "payload edited",
                             "entry 0 (node.created) names no valid verifier key"))
        return
    if (created.name, created.public_bytes) != (verifier.name, verifier.public_bytes):
        problems.add(Problem(
            0, "key replaced",
            f"the log was created with key {_key_name(created)} (entry 0), but it is checked "
            f"with key {_key_name(verifier)}: the node's signing key was replaced, or the "
            "key given is another node's",
        ))


def _key_name(verifier: NoteVerifier) -> str:
    return f"{verifier.name}+{verifier.key_id.hex()}"


def _classify_sequence(seq_mismatch: dict[int, int], problems: _Problems) -> None:
    """Rows whose seq is not their index: a cycle is a reordering, a chain a shift."""
    on_cycle: set[int] = set()
    done: set[int] = set()
    for start in seq_mismatch:
        if start in done:
            continue
        path: dict[int, int] = {}
        x = start
        while x in seq_mismatch and x not in done and x not in path:
            path[x] = len(path)
            x = seq_mismatch[x]
        if x in path:
            on_cycle.update(list(path)[path[x] :])
        done.update(path)
    for idx, seq in seq_mismatch.items():
        if idx in on_cycle:
            kind, why = "reordered", f"row {idx} holds entry {seq}: rows were swapped"
        elif seq < idx:
            kind, why = "inserted", f"row {idx} holds entry {seq}: a row was inserted before it"
        else:
            kind, why = "deleted", f"row {idx} holds entry {seq}: a row was deleted before it"
        problems.add(Problem(idx, kind, why))


def _checkpoints(
    session: Session, verifier: NoteVerifier, external: Iterable[str], problems: _Problems
) -> list[_Wanted]:
    """Check 5, first half: signatures and the stored columns agree with the signed note."""
    out: list[_Wanted] = []
    rows = session.execute(
        select(LedgerCheckpoint.size, LedgerCheckpoint.root_hash, LedgerCheckpoint.note).order_by(
            LedgerCheckpoint.size
        )
    )
    sources: list[tuple[str, int | None, bytes | None, str]] = []
    for s, r, n in rows:
        if not _whole(s) or s < 0 or not isinstance(r, bytes | memoryview) or not isinstance(
            n, str
        ):
            at = max(int(s) - 1, 0) if _whole(s) else 0
            problems.add(
                Problem(at, "bad checkpoint", f"a stored checkpoint row (size {s!r}) holds "
                        "values of the wrong types")
            )
            continue
        sources.append(("stored", s, bytes(r), n))
    sources += [("external", None, None, n) for n in external]
    for source, size, stored_root, note in sources:
        label = f"{source} checkpoint" + (f" for size {size}" if size is not None else "")
        try:
            cp = open_checkpoint(note, [verifier]).checkpoint
        except VerificationError as exc:
            if size is None:  # the caller's file, not the log: say so, not "tampered at 0"
                raise InputError(
                    f"a checkpoint given to verify against does not open: {exc.message}",
                    hint="pass a checkpoint this node signed (its origin and key), e.g. one a "
                    "witness or a peer kept",
                ) from None
            problems.add(Problem(max(size - 1, 0), "bad checkpoint", f"{label}: {exc.message}",
                                 size))  # fmt: skip
            continue
        if size is not None and (cp.size != size or cp.root != stored_root):
            problems.add(
                Problem(
                    max(size - 1, 0),
                    "bad checkpoint",
                    f"{label}: the stored size or root differs from the signed note "
                    f"(size {cp.size})",
                    size,
                )
            )
            continue
        out.append(_Wanted(cp.size, cp.root, source))
    return out


def _compare_roots(
    tree: _Recompute, by_size: dict[int, list[_Wanted]], problems: _Problems
) -> None:
    """Check 5, second half: the recomputed root at each checkpoint's size."""
    for w in by_size.pop(tree.size, ()):
        if tree.root() == w.root:
            problems.vouched.append(w.size)
        else:
            problems.add(
                Problem(
                    max(w.size - 1, 0),
                    "bad checkpoint",
                    f"{w.source} checkpoint for size {w.size} is signed, but the entries now "
                    "hash to another root: history before it was rewritten",
                    w.size,
                )
            )


def _stream_entries(session: Session) -> Iterator[Any]:
    query = select(
        LedgerEntry.idx, LedgerEntry.leaf_hash, LedgerEntry.entry, LedgerEntry.payload
    ).order_by(LedgerEntry.idx)
    yield from session.execute(query.execution_options(yield_per=BATCH))


def _stored_nodes(session: Session, problems: _Problems) -> Iterator[tuple[int, int, bytes]]:
    """Stored subtree hashes in the order appends create them: by last leaf, then level; one
    keyed by no tree position (SQLite keeps a 0.5) is reported and left out, so the node
    it stands in for is reported missing."""
    closes: Any = literal_column("((ledger_nodes.idx + 1) << ledger_nodes.level)")
    query = (
        select(LedgerNode.level, LedgerNode.idx, LedgerNode.hash)
        .order_by(closes, LedgerNode.level)
        .execution_options(yield_per=BATCH)
    )
    for level, idx, h in session.execute(query):
        # the database sorts on a 64-bit (idx + 1) << level, which wraps for a row keyed far
        # beyond any tree: such a row is reported here, not merged (it would block the merge)
        if _whole(level) and _whole(idx) and 0 <= level < 63 and idx >= 0 and (
            (idx + 1) << level) < 2**63 and isinstance(h, bytes | memoryview):
            yield level, idx, bytes(h)
            continue
        at = idx << level if _whole(level) and _whole(idx) and 0 <= level < 64 and idx >= 0 else 0
        problems.add(
            Problem(at, "inserted", f"a stored subtree hash is keyed (level {level!r}, index "
                    f"{idx!r}) or holds {type(h).__name__}: it belongs to no subtree")
        )


class _Recompute:
    """The tree rebuilt from entry hashes, compared with stored subtree hashes (check 4)."""

    def __init__(self, stored: Iterator[tuple[int, int, bytes]], problems: _Problems) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes, bool]] = []  # (level, hash, tainted)
        self._stored = stored
        self._next: tuple[int, int, bytes] | None = next(stored, None)
        self._problems = problems

    def push(self, leaf: bytes, *, tainted: bool) -> None:
        level, cur, bad = 0, leaf, tainted
        while self._stack and self._stack[-1][0] == level:
            _, left, left_bad = self._stack.pop()
            cur, bad, level = merkle.node_hash(left, cur), bad or left_bad, level + 1
            bad = self._compare(level, self.size >> level, cur, bad)
        self._stack.append((level, cur, bad))
        self.size += 1

    def _compare(self, level: int, idx: int, computed: bytes, tainted: bool) -> bool:
        closes = (idx + 1) << level
        while self._next is not None and (
            (self._next[1] + 1) << self._next[0],
            self._next[0],
        ) < (closes, level):
            self._stray(self._next)
            self._next = next(self._stored, None)
        first, last = idx << level, closes - 1
        if self._next is None or self._next[:2] != (level, idx):
            if not tainted:
                self._problems.add(
                    Problem(
                        first,
                        "deleted",
                        f"the stored hash of entries {first}..{last} (level {level}) is missing",
                    )
                )
            return True
        stored = self._next[2]
        self._next = next(self._stored, None)
        if stored != computed:
            if not tainted:
                self._problems.add(
                    Problem(
                        first,
                        "edited",
                        f"entries {first}..{last} no longer hash to their stored subtree hash "
                        f"(level {level}), though each of its halves does: that stored hash "
                        "was edited, or entries beneath were rewritten together with their "
                        "leaf hashes" + ("" if level == 1 else " and lower subtree hashes"),
                    )
                )
            return True
        return tainted

    def _stray(self, node: tuple[int, int, bytes]) -> None:
        level, idx, _ = node
        self._problems.add(
            Problem(
                idx << level,
                "inserted",
                f"a stored subtree hash (level {level}, index {idx}) belongs to no subtree "
                "of the log",
            )
        )

    def finish(self) -> None:
        while self._next is not None:
            self._stray(self._next)
            self._next = next(self._stored, None)

    def root(self) -> bytes:
        if not self._stack:
            return merkle.EMPTY_ROOT
        return merkle.fold_right([h for _, h, _ in self._stack])
