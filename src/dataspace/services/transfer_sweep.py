"""Ending what no one will finish: lapsed grants, interrupted deliveries, unanswered requests,
unconfirmed deliveries, partial downloads, orphaned files, due deletions.

* A provider's grant whose one-time token lapsed unpulled stays STARTED (or SUSPENDED) and
  keeps its extract on disk until someone ends it: it is terminated here
  (``transfer.terminated``, code ``grant_lapsed``) and the extract deleted. Its ``count`` slot
  was free already (a lapsed token frees it). The consumer is told (a TransferTermination-
  Message, best effort): one that never pulled (it restarted before it could) would otherwise
  wait on a STARTED transfer for ever.
* A provider's delivery cut off by the restart (pulled, never billed: the end of the stream
  was not seen) is terminated too (code ``delivery_interrupted``), unbilled — no stream
  outlives its server, and the consumer's pull failed with it; the consumer is told too.
* A consumer's transfer its provider has not started ``transfer_start_timeout_seconds`` after
  the request (the provider is gone, or lost it) is terminated (code ``start_timeout``) and the
  provider told: the request does not stay open for ever.
* A provider's transfer whose delivery was billed ``transfer_completion_grace_seconds`` ago
  and is still STARTED (the consumer's completion message was lost, or its node is gone) is
  completed by the provider (DSP lets either side complete) and the consumer told: the data
  has left and been paid for, so the process should not read as open for ever.
* A consumer's partial download (``received/.*.part``) belongs to a pull that the previous
  server did not finish: nothing refers to it, and it is deleted.
* A provider's extract or a consumer's received file no transfer refers to (the node
  stopped between writing and recording it) belongs to no grant and to no delete duty: it is
  deleted once ``ORPHAN_GRACE`` has passed since it was last written (another process may be
  writing one right now).
* A consumer's received file whose agreement's delete duty has fallen due is deleted
  (``transfer.deleted``, with its sha256: the evidence the duty was kept).
* A termination or completion a peer could not be told is sent again
  (:mod:`.peer_outbox`).

:func:`sweep` runs at server start, before it serves; interrupted deliveries and partial
downloads are swept only there, where no delivery or pull can be going on. The rest is swept
again every minute while the server runs (:func:`sweep_while_serving`, from
:mod:`transfer_backlog`'s thread).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.roles import Role
from dataspace.errors import Conflict
from dataspace.jsondoc import utc
from dataspace.ledger import log
from dataspace.services import peer_outbox
from dataspace.services.catalog import Transport
from dataspace.services.node import Node
from dataspace.services.transfer_common import (
    EXTRACT_DIR,
    RECEIVED_DIR,
    _discard,
    _terminate_local,
    tell_completed,
    tell_terminated,
)
from dataspace.services.transfer_provider import billed, billed_clause
from dataspace.store.models_contracts import TransferExtractRow, TransferProcessRow

logger = logging.getLogger("dataspace.transfers")

#: How long an extract no transfer refers to is left alone (it may be being written).
ORPHAN_GRACE = timedelta(minutes=15)


GRANTED = (tp.TransferState.STARTED.value, tp.TransferState.SUSPENDED.value)


def lapsed_grants(node: Node, now: datetime | None = None) -> list[str]:
    """Provider transfers granted (started, or suspended since), never pulled, whose token has
    lapsed. A REQUESTED one whose reservation lapsed is not a grant: its extract is still being
    written, or its server stopped (:func:`resume_requests`)."""
    now = now or datetime.now(UTC)
    with node.store.read() as session:
        rows = session.execute(
            select(TransferProcessRow.id, TransferExtractRow.token_expires_at)
            .join(TransferExtractRow, TransferExtractRow.id == TransferProcessRow.id)
            .where(
                TransferProcessRow.role == Role.PROVIDER.value,
                TransferProcessRow.state.in_(GRANTED),
                TransferExtractRow.pulled_at.is_(None),
                TransferExtractRow.token_expires_at.is_not(None),
            )
        ).all()
    return [pid for pid, until in rows if until is not None and utc(until) <= now]


def interrupted_deliveries(node: Node) -> list[str]:
    """Provider transfers whose pull began and whose delivery was never settled (any state:
    a consumer may have terminated mid-stream): settled here, unbilled, so their slots free."""
    with node.store.write() as session:
        rows = session.scalars(
            select(TransferExtractRow)
            .join(TransferProcessRow, TransferExtractRow.id == TransferProcessRow.id)
            .where(
                TransferProcessRow.role == Role.PROVIDER.value,
                TransferExtractRow.pulled_at.is_not(None),
                TransferExtractRow.settled_at.is_(None),
                ~billed_clause(),
            )
        ).all()
        now = datetime.now(UTC)
        for ext in rows:
            ext.settled_at = now
        ended = [(ext.id, ext.path) for ext in rows]
    for _, path in ended:  # the delivery is over: its copy goes (a terminated one kept it)
        _discard(path)
    return [pid for pid, _ in ended]


#: a transfer terminated here, with its code and reasons, for its peer to be told
Notice = tuple[TransferProcessRow, str, list[str]]


def tell_all(node: Node, notices: list[Notice], transport: Transport | None = None) -> None:
    """Send each peer its termination (best effort: three tries each, a failure logged)."""
    for row, code, reasons in notices:
        tell_terminated(node, row, code=code, reasons=reasons, transport=transport)


def _told(node: Node, notices: list[Notice], transport: Transport | None,
          defer: list[Notice] | None) -> list[str]:
    """Tell the peers now, or leave ``notices`` in ``defer`` for later; the pids."""
    if defer is None:
        tell_all(node, notices, transport)
    else:
        defer.extend(notices)
    return [row.id for row, _code, _reasons in notices]


def end_lapsed_grants(
    node: Node,
    now: datetime | None = None,
    transport: Transport | None = None,
    defer: list[Notice] | None = None,
) -> list[str]:
    """Terminate the lapsed grants (:func:`lapsed_grants`), deleting their extracts and
    telling each consumer (best effort; or leaving the notices in ``defer``); which. One whose
    pull was accepted meanwhile (its token checked just before it lapsed) is left: the pull is
    re-checked under the transfer's lock."""
    notices: list[Notice] = []
    reasons = ["the grant's token lapsed before the data was pulled"]
    for pid in lapsed_grants(node, now):
        with contextlib.suppress(Conflict):  # pulled after all: its delivery settles it
            row = _terminate_local(node, pid, code="grant_lapsed", actor=f"node:{node.name}",
                                   reasons=reasons, unless_pulled=True)
            if row is not None:
                notices.append((row, "grant_lapsed", reasons))
    return _told(node, notices, transport, defer)


def unanswered_requests(node: Node, now: datetime | None = None) -> list[str]:
    """Consumer transfers still REQUESTED ``transfer_start_timeout_seconds`` after they were
    made."""
    now = now or datetime.now(UTC)
    before = now - timedelta(seconds=float(node.limits["transfer_start_timeout_seconds"]))
    with node.store.read() as session:
        rows = session.execute(
            select(TransferProcessRow.id, TransferProcessRow.created_at).where(
                TransferProcessRow.role == Role.CONSUMER.value,
                TransferProcessRow.state == tp.TransferState.REQUESTED.value,
            )
        ).all()
    return [pid for pid, made in rows if utc(made) <= before]


def end_unanswered_requests(
    node: Node,
    now: datetime | None = None,
    transport: Transport | None = None,
    defer: list[Notice] | None = None,
) -> list[str]:
    """Terminate the unanswered requests (:func:`unanswered_requests`), telling each provider
    (best effort; or leaving the notices in ``defer``); which."""
    seconds = float(node.limits["transfer_start_timeout_seconds"])
    reasons = [f"the provider did not start the transfer within {seconds:g} s of the request"]
    notices: list[Notice] = []
    for pid in unanswered_requests(node, now):
        # one started since the read (a late START) is left alone: only_in
        row = _terminate_local(node, pid, code="start_timeout", actor=f"node:{node.name}",
                               reasons=reasons, only_in=(tp.TransferState.REQUESTED.value,))
        if row is not None:
            notices.append((row, "start_timeout", reasons))
    return _told(node, notices, transport, defer)


def unconfirmed_deliveries(node: Node, now: datetime | None = None) -> list[str]:
    """Provider transfers still STARTED whose delivery was billed (and so settled)
    ``transfer_completion_grace_seconds`` ago or more: sent in full (one cut off is ended when
    it is settled), and neither the consumer's completion nor its termination has arrived
    since."""
    now = now or datetime.now(UTC)
    grace = timedelta(seconds=float(node.limits["transfer_completion_grace_seconds"]))
    with node.store.read() as session:
        rows = session.execute(
            select(TransferProcessRow.id, TransferExtractRow.settled_at)
            .join(TransferExtractRow, TransferExtractRow.id == TransferProcessRow.id)
            .where(
                TransferProcessRow.role == Role.PROVIDER.value,
                TransferProcessRow.state == tp.TransferState.STARTED.value,
                TransferExtractRow.settled_at.is_not(None),
                billed_clause(),
            )
        ).all()
    return [pid for pid, settled in rows if settled is not None and utc(settled) + grace <= now]


def complete_unconfirmed(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> list[str]:
    """Complete the unconfirmed deliveries (:func:`unconfirmed_deliveries`) here, each with a
    ``transfer.completed`` entry giving the reason, and send each consumer a
    TransferCompletionMessage (best effort; a consumer that completed already answers 200, one
    still checking the data completes when it is done); which. One the consumer completed or
    terminated since the read is left as it is."""
    grace = float(node.limits["transfer_completion_grace_seconds"])
    reasons = [f"the delivery was billed and the consumer confirmed nothing within {grace:g} s; "
               "completed by the provider"]
    done = []
    for pid in unconfirmed_deliveries(node, now):
        try:
            row = _complete_delivered(node, pid, reasons)
        except Exception:  # the next round tries again; the others go on
            logger.exception("completing transfer %s", pid)
            continue
        if row is not None:
            done.append(pid)
            tell_completed(node, row, transport, attempts=3)
    return done


def _complete_delivered(node: Node, pid: str, reasons: list[str]) -> TransferProcessRow | None:
    """COMPLETED here with a ``transfer.completed`` entry, if still STARTED and billed (the
    consumer may have completed or terminated it since it was read)."""
    with node.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        if row.state != tp.TransferState.STARTED.value or not billed(session, pid):
            return None
        row = cs.advance_transfer(session, pid, tp.COMPLETION, sender=Role.PROVIDER, peer=None)
        ext = session.get(TransferExtractRow, pid)
        log.append(session, actor=f"node:{node.name}", action="transfer.completed", payload={
            "pid": pid, "role": Role.PROVIDER.value, "peer": row.peer,
            "agreement_id": row.agreement_id, "by": node.name,
            "sha256": ext.sha256 if ext else None, "rows": ext.rows if ext else None,
            "bytes": ext.bytes if ext else None, "reason": reasons,
        })
        session.expunge(row)
        return row


def sweep_while_serving(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> dict[str, list[str]]:
    """What is safe to do while the server runs, each round of
    :class:`~dataspace.services.transfer_backlog.SweepingThread`: end lapsed grants and
    unanswered requests, complete unconfirmed deliveries, delete orphaned files (past their
    grace) and received files whose delete duty fell due, and send the notices peers missed
    (:mod:`.peer_outbox`: any process's, negotiations' too). A step that fails is logged and the
    others still run (a due deletion must not wait on a peer's fault)."""

    def step(what: str, act: Callable[[], list[str]]) -> list[str]:
        try:
            return act()
        except Exception:  # the next round tries again
            logger.exception("sweeping transfers: %s", what)
            return []

    ended = (step("lapsed grants", lambda: end_lapsed_grants(node, now, transport))
             + step("unanswered requests", lambda: end_unanswered_requests(node, now, transport)))
    completed = step("unconfirmed deliveries", lambda: complete_unconfirmed(node, now, transport))
    removed = (step("orphaned files", lambda: orphan_files(node, now))
               + step("due deletions", lambda: delete_due(node, now)))
    told = step("owed notices", lambda: peer_outbox.deliver_owed(node, now, transport))
    return {"terminated": ended, "completed": completed, "removed": removed, "told": told}


def sweep(
    node: Node,
    now: datetime | None = None,
    transport: Transport | None = None,
    defer: list[Notice] | None = None,
) -> dict[str, list[str]]:
    """At server start: terminate lapsed grants, unanswered requests and deliveries the last
    server did not finish, telling their peers (or leaving the notices in ``defer``, for when
    the server serves), and delete partial downloads, orphaned and due files; what was ended
    or removed."""
    ended = (end_lapsed_grants(node, now, transport, defer)
             + end_unanswered_requests(node, now, transport, defer))
    cut = ["the node restarted while the extract was being sent; not billed"]
    notices: list[Notice] = []
    for pid in interrupted_deliveries(node):  # _terminate_local skips those already ended
        row = _terminate_local(node, pid, code="delivery_interrupted",
                               actor=f"node:{node.name}", reasons=cut)
        if row is not None:
            notices.append((row, "delivery_interrupted", cut))
    ended += _told(node, notices, transport, defer)
    removed = []
    folder = node.root / RECEIVED_DIR
    if folder.is_dir():
        for part in folder.glob(".*.part"):
            part.unlink(missing_ok=True)
            removed.append(part.name)
    removed += orphan_files(node, now)
    removed += delete_due(node, now)
    return {"terminated": ended, "removed": removed}


def delete_due(node: Node, now: datetime | None = None) -> list[str]:
    """Delete the received files whose delete duty has fallen due; their transfers' ids."""
    now = now or datetime.now(UTC)
    with node.store.write() as session:
        due = [
            ext for ext in session.scalars(
                select(TransferExtractRow)
                .join(TransferProcessRow, TransferExtractRow.id == TransferProcessRow.id)
                .where(
                    TransferProcessRow.role == Role.CONSUMER.value,
                    TransferExtractRow.delete_by.is_not(None),
                    TransferExtractRow.path.is_not(None),
                )
            ).all()
            if ext.delete_by is not None and utc(ext.delete_by) <= now
        ]
        for ext in due:
            assert ext.path is not None and ext.delete_by is not None
            Path(ext.path).unlink(missing_ok=True)
            log.append(session, actor=f"node:{node.name}", action="transfer.deleted", payload={
                "pid": ext.id, "sha256": ext.sha256, "file": Path(ext.path).name,
                "delete_by": utc(ext.delete_by).isoformat(), "deleted_at": now.isoformat(),
            })
            ext.path = None
        return [ext.id for ext in due]


def orphan_files(node: Node, now: datetime | None = None) -> list[str]:
    """Delete the extracts (provider) and received files (consumer) no transfer refers to,
    last written ``ORPHAN_GRACE`` ago or more: what a process stopped between writing one and
    recording it left (a received file nothing records would escape its delete duty)."""
    folders = [f for f in (node.root / EXTRACT_DIR, node.root / RECEIVED_DIR) if f.is_dir()]
    if not folders:
        return []
    with node.store.read() as session:
        paths = session.scalars(
            select(TransferExtractRow.path).where(TransferExtractRow.path.is_not(None))
        ).all()
    referred = {Path(p).name for p in paths if p}
    before = (now or datetime.now(UTC)).timestamp() - ORPHAN_GRACE.total_seconds()
    removed = []
    for folder in folders:
        for file in folder.glob("*.parquet"):
            with contextlib.suppress(FileNotFoundError):
                if file.name not in referred and file.stat().st_mtime <= before:
                    file.unlink()
                    removed.append(file.name)
    return removed
