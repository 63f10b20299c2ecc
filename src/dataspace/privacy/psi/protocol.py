"""Two-party DH-PSI (Meadows 1986; Huberman, Franklin & Hogg 1999) as byte messages.

A (initiator) and B (responder) hash identifiers to the group and blind them with secret
per-job scalars α and β. ``x`` below is a 32-byte point; sets are deduplicated and sent in
the sort order of their blinded values, which is independent of the row order::

    A → B  HELLO   {mode, group, key kinds, job digest, |A|}     session = 16 random bytes
    B → A  ACCEPT  {|B|}
    A → B  A_POINTS  H(a)^α                       chunks, seq 0..
    B → A  A_REPLY   (H(a)^α)^β                   same order as A_POINTS (mode size: sorted)
    B → A  B_POINTS  H(b)^β                       chunks
    A      computes (H(b)^β)^α, compares with A_REPLY
    A → B  MATCHES   indices into B_POINTS        modes both / align only

Each party is a state machine that refuses messages out of order, replayed, from another
session or truncated (:class:`PsiMessageRefused`) and points off the group
(:class:`InvalidPoint`). What each side ends with is in :class:`PsiResult`; docs/psi.md
states the threat model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataspace.privacy.psi.batch import Batch, Engine
from dataspace.privacy.psi.errors import PsiConfigError, PsiMessageRefused
from dataspace.privacy.psi.group import POINT_SIZE, as_rows, domain_prefix, group
from dataspace.privacy.psi.messages import Kind, Message, pack, pack_json, unpack
from dataspace.privacy.psi.normalize import KeySpec

__all__ = ["MODES", "Initiator", "PsiResult", "Responder", "run_chain", "run_local"]

MODES = ("me", "both", "size", "align")


def _order(rows: np.ndarray) -> np.ndarray:
    """The stable lexicographic (byte-wise) order of 32-byte rows, as indices.

    Sorts on the first 8 bytes as a big-endian integer; only runs that tie there (duplicates,
    or a 2^-64 coincidence) are sorted on all 32 bytes, then by position.
    """
    keys = np.ascontiguousarray(rows).view(">u8")
    head = keys[:, 0].astype(np.uint64)
    order = np.argsort(head, kind="stable")
    tie = head[order[1:]] == head[order[:-1]]
    if tie.any():
        run = np.zeros(len(order), dtype=bool)
        run[1:] |= tie
        run[:-1] |= tie
        pos = np.flatnonzero(run)
        sub = order[pos]
        k = keys[sub].astype(np.uint64)
        order[pos] = sub[np.lexsort((sub, k[:, 3], k[:, 2], k[:, 1], k[:, 0]))]
    return order


def _unique(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like ``np.unique(rows, axis=0, return_index=True, return_inverse=True)``, fast."""
    n = len(rows)
    order = _order(rows)
    keys = np.ascontiguousarray(rows).view(">u8")[order]
    new = np.ones(n, dtype=bool)
    if n:
        new[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    first = order[new]
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return rows[first], first, inverse


def _intersect(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) of the rows two duplicate-free sets share, in the rows' sort order."""
    both = np.concatenate([a, b])
    order = _order(both)
    keys = both.view(">u8")[order]
    eq = np.flatnonzero((keys[1:] == keys[:-1]).all(axis=1))
    left, right = order[eq], order[eq + 1]
    keep = (left < len(a)) & (right >= len(a))
    return left[keep], right[keep] - len(a)


#: The most identifiers a responder takes from one initiator: its replies are buffered until
#: the last chunk in size mode (32 bytes each), so the bound is also the memory bound.
MAX_PEER_SET = 100_000_000


@dataclass(frozen=True)
class PsiResult:
    """What one party holds at the end.

    ``rows``: positions in this party's own input — ascending, every row of a matched key
    (modes me/both), or one row per matched key in the common order both parties share
    (align); ``None`` where this party learns no positions. ``size``: number of distinct
    matched keys, ``None`` where unknown. ``peer_size``: distinct keys the peer contributed.
    """

    role: str
    mode: str
    size: int | None
    rows: np.ndarray | None
    peer_size: int
    own_size: int = field(default=0)


class _Party:
    role = ""

    def __init__(
        self,
        job_id: str,
        spec: KeySpec | str,
        *,
        group_name: str = "x25519",
        engine: Engine | None = None,
        chunk_points: int = 16_384,
    ) -> None:
        self.job_id = job_id
        self.spec = KeySpec.parse(spec) if isinstance(spec, str) else spec
        self.group_name = group(group_name).name
        self.engine = engine or Engine(0)
        self.chunk_points = chunk_points
        self._key = group(group_name).new_key()
        self._prefix = domain_prefix(job_id, self.spec.describe())
        self._points = np.zeros((0, POINT_SIZE), dtype=np.uint8)
        self._first = np.zeros(0, dtype=np.int64)  # first input row of each distinct point
        self._rows = np.zeros(0, dtype=np.int64)  # input row of each valid identifier
        self._inverse = np.zeros(0, dtype=np.int64)  # distinct point of each valid identifier
        self._loaded = False
        self._session = b""
        self._expect: dict[Kind, int] = {}
        self._done: set[Kind] = set()
        self._result: PsiResult | None = None

    def load(self, batches: Iterable[Batch], *, only_rows: np.ndarray | None = None) -> None:
        """Normalise, hash and blind this party's identifiers (``only_rows``: a subset)."""
        if self._loaded:
            raise PsiConfigError("this PSI party has already loaded its identifiers")
        points, rows = self.engine.hash_blind(
            self.group_name, self._key, self._prefix, self.spec, batches
        )
        if only_rows is not None:
            keep = np.isin(rows, only_rows)
            points, rows = points[keep], rows[keep]
        uniq, first, inverse = _unique(points)
        self._points = np.ascontiguousarray(uniq)
        self._first = rows[first]
        self._rows, self._inverse = rows, inverse
        self._loaded = True

    def _chunks(self, kind: Kind, points: np.ndarray) -> Iterator[bytes]:
        n = len(points)
        starts = range(0, n, self.chunk_points) if n else range(1)
        for seq, start in enumerate(starts):
            end = min(start + self.chunk_points, n)
            payload = points[start:end].tobytes()
            yield pack(kind, self._session, seq, payload, last=end >= n)

    def _accept(self, data: bytes, allowed: Sequence[Kind]) -> Message:
        msg = unpack(data)
        if msg.kind not in allowed:
            raise PsiMessageRefused(
                f"{self.role} did not expect {msg.kind.name} now",
                hint="messages arrived out of order; restart the job",
            )
        if self._session and msg.session != self._session:
            raise PsiMessageRefused(f"{msg.kind.name} belongs to another PSI session")
        if msg.kind in self._done:
            raise PsiMessageRefused(f"{msg.kind.name} stream already complete (replayed?)")
        want = self._expect.get(msg.kind, 0)
        if msg.seq != want:
            raise PsiMessageRefused(
                f"{msg.kind.name} chunk #{msg.seq} where #{want} was expected",
                hint="a chunk was replayed, lost or reordered; restart the job",
            )
        self._expect[msg.kind] = want + 1
        if msg.last:
            self._done.add(msg.kind)
        return msg

    def result(self) -> PsiResult:
        if self._result is None:
            raise PsiConfigError(f"the {self.role}'s PSI run has not finished")
        return self._result


class Initiator(_Party):
    """Party A: starts the run and learns the intersection (or its size)."""

    role = "initiator"

    def __init__(self, job_id: str, spec: KeySpec | str, *, mode: str = "me", **kw: object) -> None:
        if mode not in MODES:
            raise PsiConfigError(f"unknown PSI mode '{mode}'", hint="modes: " + ", ".join(MODES))
        super().__init__(job_id, spec, **kw)  # type: ignore[arg-type]
        self.mode = mode
        self._state = "new"
        self._reply = np.zeros((0, POINT_SIZE), dtype=np.uint8)
        self._theirs = np.zeros((0, POINT_SIZE), dtype=np.uint8)
        self._got_reply = 0
        self._got_theirs = 0
        self._sent = 0
        self._peer_n = 0
        self._blinding: list[tuple[int, Callable[[], bytes]]] = []

    def hello(self) -> bytes:
        if not self._loaded or self._state != "new":
            raise PsiConfigError("load identifiers once, then call hello() once")
        self._session = os.urandom(16)
        self._state = "hello"
        body = {
            "mode": self.mode,
            "group": self.group_name,
            "key": self.spec.describe(),
            "job": hashlib.sha256(self.job_id.encode()).hexdigest(),
            "n": len(self._points),
        }
        return pack_json(Kind.HELLO, self._session, body)

    def outgoing(self) -> Iterator[bytes]:
        """The A_POINTS stream, after ACCEPT."""
        if self._state != "accepted":
            raise PsiConfigError("send A_POINTS only after the responder's ACCEPT")
        self._state = "sending"
        for chunk in self._chunks(Kind.A_POINTS, self._points):
            self._sent += min(self.chunk_points, len(self._points) - self._sent)
            if self._sent == len(self._points):
                self._state = "sent"  # replies to the last chunk may finish the run
            yield chunk

    def receive(self, data: bytes) -> list[bytes]:
        """Take one message from B; returns the messages to send back (possibly none)."""
        if self._state == "hello":
            msg = self._accept(data, [Kind.ACCEPT])
            n = msg.json().get("n")
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_PEER_SET:
                # the size sets what is allocated here: bounded as the responder bounds HELLO
                raise PsiMessageRefused(
                    f"ACCEPT carries no valid set size (0 to {MAX_PEER_SET:,} identifiers)"
                )
            self._peer_n = n
            self._reply = np.zeros((len(self._points), POINT_SIZE), dtype=np.uint8)
            self._theirs = np.zeros((n, POINT_SIZE), dtype=np.uint8)
            self._state = "accepted"
            return []
        if self._state not in ("sending", "sent"):
            raise PsiMessageRefused(f"initiator in state '{self._state}' takes no messages")
        msg = self._accept(data, [Kind.A_REPLY, Kind.B_POINTS])
        if msg.kind is Kind.A_REPLY:
            self._got_reply = self._store(msg, self._reply, self._got_reply, msg.payload)
        else:  # blinded on the pool while the next chunks arrive; stored when all are in
            end = self._check_count(msg, self._got_theirs, len(self._theirs))
            job = self.engine.blind_async(self.group_name, self._key, msg.payload)
            self._blinding.append((self._got_theirs, job))
            self._got_theirs = end
        if {Kind.A_REPLY, Kind.B_POINTS} <= self._done and self._state == "sent":
            for at, job in self._blinding:
                blinded = as_rows(job())
                self._theirs[at : at + len(blinded)] = blinded
            self._blinding = []
            return self._finish()
        return []

    def _store(self, msg: Message, into: np.ndarray, at: int, payload: bytes) -> int:
        limit = self._sent if self.mode != "size" else len(into)
        end = self._check_count(msg, at, len(into), limit)
        into[at:end] = as_rows(payload)
        return end

    @staticmethod
    def _check_count(msg: Message, at: int, total: int, limit: int | None = None) -> int:
        end = at + msg.count
        if end > (total if limit is None else limit) or (msg.last and end != total):
            raise PsiMessageRefused(
                f"{msg.kind.name} carries {end} points in all; {total} expected",
                hint="the peer's stream is inconsistent; restart the job",
            )
        return end

    def _finish(self) -> list[bytes]:
        ia, ib = _intersect(self._reply, self._theirs)
        self._state = "done"
        own, peer = len(self._points), self._peer_n
        if self.mode == "size":
            self._result = PsiResult(self.role, self.mode, len(ia), None, peer, own)
            return []
        if self.mode == "align":
            rows = self._first[ia]  # ordered by the doubly-blinded value
        else:
            matched = np.zeros(own, dtype=bool)
            matched[ia] = True
            rows = self._rows[matched[self._inverse]]
        self._result = PsiResult(self.role, self.mode, len(ia), rows, peer, own)
        if self.mode == "me":
            return []
        order = ib if self.mode == "align" else np.sort(ib)
        return list(self._chunks_u64(order.astype("<u8")))

    def _chunks_u64(self, values: np.ndarray) -> Iterator[bytes]:
        n = len(values)
        starts = range(0, n, self.chunk_points) if n else range(1)
        for seq, start in enumerate(starts):
            end = min(start + self.chunk_points, n)
            yield pack(Kind.MATCHES, self._session, seq, values[start:end].tobytes(), last=end >= n)


class Responder(_Party):
    """Party B: answers a HELLO for an allowed mode."""

    role = "responder"

    def __init__(
        self, job_id: str, spec: KeySpec | str, *, allow: Sequence[str] = MODES,
        min_peer: int = 0, max_peer: int | None = None, **kw: object
    ) -> None:
        super().__init__(job_id, spec, **kw)  # type: ignore[arg-type]
        self.allow = tuple(allow)
        #: least distinct identifiers of A this side answers: a size over one identifier says
        #: whether B holds it (see docs/psi.md on what a cardinality reveals)
        self.min_peer = min_peer
        #: most identifiers of A this side answers (the agreement's peerSetSize): a set as
        #: large as a whole block of phone numbers would learn which of them B holds
        self.max_peer = MAX_PEER_SET if max_peer is None else max_peer
        self.mode = ""
        self._state = "new"
        self._peer_n = 0
        self._got = 0
        self._size_buf: list[Callable[[], bytes]] = []
        self._matches: list[np.ndarray] = []

    def receive(self, data: bytes) -> Iterator[bytes]:
        """Take one message from A; returns the replies (a lazy stream for the last chunk)."""
        if not self._loaded:
            raise PsiConfigError("the responder must load its identifiers before the HELLO")
        if self._state == "new":
            return iter([self._hello(self._accept(data, [Kind.HELLO]))])
        if self._state == "accepted":
            return self._points_in(self._accept(data, [Kind.A_POINTS]))
        if self._state == "matches":
            msg = self._accept(data, [Kind.MATCHES])
            self._matches.append(np.frombuffer(msg.payload, dtype="<u8"))
            if msg.last:
                self._finish_matches()
            return iter([])
        raise PsiMessageRefused(f"responder in state '{self._state}' takes no messages")

    def _hello(self, msg: Message) -> bytes:
        body = msg.json()
        mode, n = body.get("mode"), body.get("n")
        if mode not in self.allow:
            raise PsiMessageRefused(f"PSI mode '{mode}' is not allowed here", allowed=self.allow)
        if body.get("group") != self.group_name or body.get("key") != self.spec.describe():
            raise PsiMessageRefused(
                "the initiator's group or key kinds differ from ours",
                hint=f"both sides must use group {self.group_name}, key {self.spec.describe()}",
            )
        if body.get("job") != hashlib.sha256(self.job_id.encode()).hexdigest():
            raise PsiMessageRefused("HELLO is for another job")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_PEER_SET:
            raise PsiMessageRefused(
                f"HELLO carries no valid set size (0 to {MAX_PEER_SET:,} identifiers)"
            )
        if n < self.min_peer:
            raise PsiMessageRefused(
                f"the initiator's set holds {n} identifiers; this party answers sets of at "
                f"least {self.min_peer}",
                hint="a smaller set's count would tell which identifiers this party holds",
            )
        if n > self.max_peer:
            raise PsiMessageRefused(
                f"the initiator's set holds {n:,} identifiers; the agreement lets it bring at "
                f"most {self.max_peer:,}",
                hint="split the job or negotiate an agreement with a larger peerSetSize",
            )
        self.mode, self._peer_n, self._session = str(mode), n, msg.session
        self._state = "accepted"
        return pack_json(Kind.ACCEPT, self._session, {"n": len(self._points)})

    def _points_in(self, msg: Message) -> Iterator[bytes]:
        self._got += msg.count
        if self._got > self._peer_n or (msg.last and self._got != self._peer_n):
            raise PsiMessageRefused(
                f"A_POINTS carries {self._got} points; HELLO said {self._peer_n}"
            )
        job = self.engine.blind_async(self.group_name, self._key, msg.payload)
        out: list[Iterator[bytes]] = []
        if self.mode == "size":
            self._size_buf.append(job)
            if msg.last:  # sorting hides which reply belongs to which of A's points
                out.append(self._sorted_replies())
        else:
            out.append(self._reply(job, msg.seq, msg.last))
        if msg.last:
            out.append(self._chunks(Kind.B_POINTS, self._points))
            self._state = "matches" if self.mode in ("both", "align") else "done"
            if self._state == "done":
                self._result = PsiResult(self.role, self.mode, None, None, self._peer_n,
                                         len(self._points))  # fmt: skip
        return (m for part in out for m in part)

    def _reply(self, job: Callable[[], bytes], seq: int, last: bool) -> Iterator[bytes]:
        yield pack(Kind.A_REPLY, self._session, seq, job(), last=last)

    def _sorted_replies(self) -> Iterator[bytes]:
        rows = as_rows(b"".join(job() for job in self._size_buf))
        self._size_buf = []
        rows = rows[_order(rows)]
        words = rows.view(">u8")  # 4 words a point: a quarter of a byte-wise comparison
        if len(rows) > 1 and bool(np.all(words[1:] == words[:-1], axis=1).any()):
            # an honest A sends each key once: repeats would pass min_peer with fewer keys
            raise PsiMessageRefused("A_POINTS repeats a point; a size query counts distinct keys")
        yield from self._chunks(Kind.A_REPLY, rows)

    def _finish_matches(self) -> None:
        wire = np.concatenate(self._matches)  # unsigned: 2^64 - 1 is no index, never -1
        if len(wire) and (int(wire.max()) >= len(self._points)
                          or len(np.unique(wire)) != len(wire)):
            raise PsiMessageRefused("MATCHES holds indices outside B_POINTS or repeats")
        idx = wire.astype(np.int64)
        if self.mode == "align":
            rows = self._first[idx]
        else:
            matched = np.zeros(len(self._points), dtype=bool)
            matched[idx] = True
            rows = self._rows[matched[self._inverse]]
        self._state = "done"
        self._result = PsiResult(self.role, self.mode, len(idx), rows, self._peer_n,
                                 len(self._points))  # fmt: skip


def run_local(a: Initiator, b: Responder) -> tuple[PsiResult, PsiResult]:
    """Run both parties in this process, passing every message as bytes.

    Every A_POINTS chunk is handed to B before B's answers are read, so the pool blinds the
    chunks back to back (replies are still read, and sent, in order).
    """
    for reply in b.receive(a.hello()):
        a.receive(reply)
    for replies in [b.receive(chunk) for chunk in a.outgoing()]:
        for reply in replies:
            for back in a.receive(reply):
                for _ in b.receive(back):
                    pass
    return a.result(), b.result()


def run_chain(
    job_id: str,
    spec: KeySpec | str,
    sources: Sequence[Callable[[], Iterable[Batch]]],
    *,
    engine: Engine | None = None,
    group_name: str = "x25519",
) -> PsiResult:
    """Intersection of 3+ sets, learnt by the initiator (``sources[0]``) only.

    Runs mode ``me`` with each peer in turn, feeding only the rows matched so far into the
    next run (fresh keys per run). Leakage, beyond the final rows: the initiator learns each
    prefix intersection A∩P1, A∩P1∩P2, …; peer i learns the size of the prefix intersection
    before it (the number of points it receives) and nothing else.
    """
    if len(sources) < 2:
        raise PsiConfigError("a PSI needs at least two parties")
    rows: np.ndarray | None = None
    result: PsiResult | None = None
    kw: dict[str, Any] = {"engine": engine, "group_name": group_name}
    for i, source in enumerate(sources[1:], start=1):
        a = Initiator(f"{job_id}/{i}", spec, mode="me", **kw)
        a.load(sources[0](), only_rows=rows)
        b = Responder(f"{job_id}/{i}", spec, allow=("me",), **kw)
        b.load(source())
        result, _ = run_local(a, b)
        rows = result.rows
    assert result is not None
    return result
