"""Replay protection for signed peer requests: each (keyid, nonce) is accepted once.

A signature is only accepted for a bounded window (``created`` … ``min(expires, created +
max_age)``, see :mod:`dataspace.identity.httpsig`), so a nonce needs remembering only until the
window closes. Afterwards the row is pruned, and a replay of the old request fails on its age
instead.

:class:`SqlReplayStore` keeps nonces in the node's store, table ``seen_nonces`` with primary
key (keyid, nonce). Remembering is one ``INSERT … ON CONFLICT DO NOTHING``: the database's
unique constraint decides which of two concurrent requests wins, on SQLite and on PostgreSQL
alike, and the loser is told it is a replay. :class:`MemoryReplayStore` does the same in one
process, for tests and tools.

Only remember a nonce *after* the signature verified, or anybody could burn nonces.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import CursorResult, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from dataspace.identity.httpsig import RequestSignatureError
from dataspace.store.db import Store
from dataspace.store.models_identity import SeenNonce


class ReplayedRequest(RequestSignatureError):
    """The (keyid, nonce) of a signed request was seen before inside its validity window."""

    code = "replayed_request"


class ReplayStore(Protocol):
    def remember(self, keyid: str, nonce: str, *, expires_at: int, now: datetime | int) -> None:
        """Keep the nonce until ``expires_at`` (Unix s); raise :class:`ReplayedRequest` if seen."""
        ...


def _epoch(now: datetime | int) -> int:
    return int(now.timestamp()) if isinstance(now, datetime) else int(now)


def _replayed(keyid: str, nonce: str) -> ReplayedRequest:
    return ReplayedRequest(
        f"replayed request: nonce {nonce!r} of key {keyid!r} already seen",
        hint="every signed request needs a fresh nonce; this one was captured and re-sent",
        keyid=keyid,
    )


class SqlReplayStore:
    """Nonces in the node's state database (SQLite or PostgreSQL).

    Expired rows are pruned at most every ``prune_interval`` seconds, in their own transaction;
    on PostgreSQL the prune skips rows other transactions hold (``FOR UPDATE SKIP LOCKED``), so
    concurrent prunes never deadlock.
    """

    def __init__(self, store: Store, *, prune_interval: int = 60) -> None:
        self.store = store
        self.prune_interval = prune_interval
        self._last_prune: int | None = None

    def remember(self, keyid: str, nonce: str, *, expires_at: int, now: datetime | int) -> None:
        current = _epoch(now)
        if expires_at < current:
            raise _replayed(keyid, nonce)  # nothing valid could carry it any more
        if self._last_prune is None or current - self._last_prune >= self.prune_interval:
            self.prune(current)
        dialect = sqlite if self.store.is_sqlite else postgresql
        insert = (
            dialect.insert(SeenNonce)
            .values(keyid=keyid, nonce=nonce, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["keyid", "nonce"])
            .returning(SeenNonce.nonce)
        )
        stale = delete(SeenNonce).where(
            SeenNonce.keyid == keyid, SeenNonce.nonce == nonce, SeenNonce.expires_at < current
        )
        with self.store.write() as session:
            session.execute(stale)  # the same nonce, from a window that has closed
            inserted = session.execute(insert).first() is not None  # None: the row was there
        if not inserted:
            raise _replayed(keyid, nonce)

    def prune(self, now: datetime | int) -> int:
        """Delete nonces whose window has closed; returns how many."""
        current = _epoch(now)
        expired = select(SeenNonce.keyid, SeenNonce.nonce).where(SeenNonce.expires_at < current)
        if not self.store.is_sqlite:
            expired = expired.with_for_update(skip_locked=True)
        stmt = delete(SeenNonce).where(tuple_(SeenNonce.keyid, SeenNonce.nonce).in_(expired))
        with self.store.write() as session:
            result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]
            removed = int(result.rowcount)
        self._last_prune = current
        return removed

    def count(self) -> int:
        with self.store.read() as session:
            return int(session.scalar(select(func.count()).select_from(SeenNonce)) or 0)


class MemoryReplayStore:
    """Nonces in a dict guarded by a lock: one process only."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def remember(self, keyid: str, nonce: str, *, expires_at: int, now: datetime | int) -> None:
        current = _epoch(now)
        with self._lock:
            self._seen = {k: v for k, v in self._seen.items() if v >= current}
            if expires_at < current or (keyid, nonce) in self._seen:
                raise _replayed(keyid, nonce)
            self._seen[(keyid, nonce)] = expires_at

    def prune(self, now: datetime | int) -> int:
        current = _epoch(now)
        with self._lock:
            before = len(self._seen)
            self._seen = {k: v for k, v in self._seen.items() if v >= current}
            return before - len(self._seen)

    def count(self) -> int:
        return len(self._seen)
