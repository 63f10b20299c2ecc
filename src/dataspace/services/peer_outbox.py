"""Notices owed to peers: DSP messages that end a process there, which a peer missed.

When a process ends here, the peer is told: a negotiation's or transfer's termination, a
transfer's completion. If the peer cannot be reached (it is down, restarting, or the network
is), the notice is kept in ``owed_notices`` and sent again by the node's sweeping thread
(:mod:`.transfer_backlog`, every minute while the server runs): after 1, 2, 4 … minutes, at
most an hour apart, for a day. Any answer settles it — accepted, or refused (the peer ended
the process itself meanwhile, or never knew it); after a day it is given up, with a
``peer.notice_undelivered`` ledger entry, and the peer's own timeouts end its side.

A notice is kept once however often it is owed (its id is the hash of peer, path and body),
so a peer that was told twice is not told four times.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dataspace.errors import DataspaceError
from dataspace.jsondoc import utc
from dataspace.ledger import log
from dataspace.services.catalog import DeliveryFailed, Transport, deliver
from dataspace.services.node import Node
from dataspace.store.models_contracts import OwedNoticeRow

logger = logging.getLogger("dataspace.peers")

OWED_FOR = timedelta(days=1)  # how long a notice is sent again before it is given up
FIRST_RETRY = timedelta(minutes=1)
LONGEST_WAIT = timedelta(hours=1)
ROUND = 50  # notices sent per sweep round, oldest due first
UNDELIVERED_ACTION = "peer.notice_undelivered"


def notice_id(peer: str, path: str, body: Mapping[str, Any]) -> str:
    canonical = json.dumps([peer, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def owe(
    node: Node, peer: str, path: str, body: Mapping[str, Any], *, about: str, error: str,
    now: datetime | None = None,
) -> str:
    """Keep a notice ``peer`` could not be given, to be sent again; its id."""
    now = now or datetime.now(UTC)
    ident = notice_id(peer, path, body)
    with node.store.write() as session:
        if session.get(OwedNoticeRow, ident) is None:
            session.add(OwedNoticeRow(
                id=ident, peer=peer, path=path, body=dict(body), about=about[:300], attempts=1,
                next_at=now + FIRST_RETRY, created_at=now, last_error=error[:2000],
            ))
    logger.warning("%s: %s could not be told (%s); sent again from %s", about, peer, error,
                   (now + FIRST_RETRY).isoformat(timespec="seconds"))
    return ident


def send_or_owe(
    node: Node, peer: str, path: str, body: Mapping[str, Any], transport: Transport | None,
    *, about: str, attempts: int = 3,
) -> int | None:
    """Send a notice that ends a process at ``peer``; the peer's status, or None when it could
    not be reached and the notice is owed (:func:`owe`)."""
    try:
        status, _ = deliver(node, peer, "POST", path, body, transport, attempts=attempts)
    except DeliveryFailed as exc:
        owe(node, peer, path, body, about=about, error=exc.message)
        return None
    if status >= 300:
        logger.warning("%s: %s refused it (HTTP %s)", about, peer, status)
    return status


def owed(node: Node) -> list[dict[str, Any]]:
    """Every notice still owed, oldest first (for ``dataspace node status`` and tests)."""
    with node.store.read() as session:
        rows = session.scalars(select(OwedNoticeRow).order_by(OwedNoticeRow.created_at)).all()
        return [{"id": r.id, "peer": r.peer, "about": r.about, "attempts": r.attempts,
                 "next_at": r.next_at, "last_error": r.last_error} for r in rows]


def deliver_owed(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> list[str]:
    """Send the notices that are due (at most :data:`ROUND`); the ids settled — answered, or
    given up after :data:`OWED_FOR`."""
    now = now or datetime.now(UTC)
    with node.store.read() as session:
        due = session.scalars(
            select(OwedNoticeRow).where(OwedNoticeRow.next_at <= now)
            .order_by(OwedNoticeRow.next_at).limit(ROUND)
        ).all()
        notices = [(r.id, r.peer, r.path, dict(r.body), r.about, int(r.attempts),
                    utc(r.created_at)) for r in due]
    settled = []
    for ident, peer, path, body, about, attempts, created in notices:
        try:
            status, _ = deliver(node, peer, "POST", path, body, transport, attempts=1)
        except DataspaceError as exc:
            if now - created >= OWED_FOR:
                _give_up(node, ident, peer, about, attempts, exc.message)
                settled.append(ident)
            else:
                _later(node, ident, attempts, exc.message, now)
            continue
        if status >= 300:
            logger.info("%s: %s refused the notice sent again (HTTP %s)", about, peer, status)
        _settle(node, ident)
        settled.append(ident)
    return settled


def _later(node: Node, ident: str, attempts: int, error: str, now: datetime) -> None:
    wait = min(FIRST_RETRY * 2**attempts, LONGEST_WAIT)
    with node.store.write() as session:
        row = session.get(OwedNoticeRow, ident, with_for_update=True)
        if row is not None:
            row.attempts, row.next_at, row.last_error = attempts + 1, now + wait, error[:2000]


def _settle(node: Node, ident: str) -> None:
    with node.store.write() as session:
        row = session.get(OwedNoticeRow, ident, with_for_update=True)
        if row is not None:
            session.delete(row)


def _give_up(node: Node, ident: str, peer: str, about: str, attempts: int, error: str) -> None:
    with node.store.write() as session:
        row = session.get(OwedNoticeRow, ident, with_for_update=True)
        if row is None:
            return
        session.delete(row)
        log.append(session, actor=f"node:{node.name}", action=UNDELIVERED_ACTION, payload={
            "peer": peer, "about": about, "attempts": attempts + 1, "last_error": error[:500],
        })
    logger.warning("%s: gave up telling %s after %d attempts (%s)", about, peer, attempts + 1,
                   error)
