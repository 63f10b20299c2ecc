"""Ending what no one will finish (at server start): lapsed grants, interrupted deliveries
and partial downloads.

* A provider's grant whose one-time token lapsed unpulled stays STARTED (or SUSPENDED) and
  keeps its extract on disk until someone ends it: :func:`sweep` terminates it here
  (``transfer.terminated``, code ``grant_lapsed``) and deletes the extract. Its ``count`` slot
  was free already (a lapsed token frees it). The consumer is told (a TransferTermination-
  Message, best effort): one that never pulled (it restarted before it could) would otherwise
  wait on a STARTED transfer for ever.
* A provider's delivery cut off by the restart (pulled, never billed: the end of the stream
  was not seen) is terminated too (code ``delivery_interrupted``), unbilled — no stream
  outlives its server, and the consumer's pull failed with it; the consumer is told too.
* A consumer's partial download (``received/.*.part``) belongs to a pull that the previous
  server did not finish: nothing refers to it, and it is deleted.
* A provider's extract or a consumer's received file no transfer refers to (the node
  stopped between writing and recording it) belongs to no grant and to no delete duty: it is
  deleted once ``ORPHAN_GRACE`` has passed since it was last written (another process may be
  writing one right now).
* A consumer's received file whose agreement's delete duty has fallen due is deleted
  (``transfer.deleted``, with its sha256: the evidence the duty was kept).

* A provider's transfer still REQUESTED at start was answered (201) by a server that stopped
  before it decided and started it: it is provided now (:func:`resume_requests`, once the new
  server is serving, so the consumer's pull finds it up).
* A consumer's transfer its provider has not started ``transfer_start_timeout_seconds`` after
  the request (the provider is gone, or lost it) is terminated (code ``start_timeout``) and the
  provider told: the request does not stay open for ever.
* A consumer's transfer still STARTED with nothing received at start had its pull cut off
  by the restart, or never begun: it is pulled again once the new server serves
  (:func:`retry_pulls`). An unused, unexpired token brings the data now; a token the cut-off
  pull had spent (or one that lapsed, or a grant its provider ended meanwhile) is refused by
  the provider, and the transfer ends here with that reason, the provider told — either way
  it does not stay STARTED for ever.
* A provider's transfer whose delivery was billed ``transfer_completion_grace_seconds`` ago
  and is still STARTED (the consumer's completion message was lost, or its node is gone) is
  completed by the provider (DSP lets either side complete) and the consumer told: the data
  has left and been paid for, so the process should not read as open for ever.

Lapsed grants, unanswered requests, unconfirmed deliveries, orphaned files and due deletions
are swept here and every
minute while the server runs (:func:`keep_sweeping`); interrupted deliveries and partial
downloads only here, where no delivery or pull can be going on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from dataspace.contracts import build
from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.messages import TransferCompletionMessage
from dataspace.contracts.roles import Role
from dataspace.errors import Conflict, DataspaceError
from dataspace.ledger import log
from dataspace.services.catalog import Transport, deliver
from dataspace.services.node import Node
from dataspace.services.transfer_common import (
    EXTRACT_DIR,
    RECEIVED_DIR,
    _aware,
    _discard,
    _peer_path,
    _terminate_local,
    tell_terminated,
    terminate,
)
from dataspace.services.transfer_consumer import pull
from dataspace.services.transfer_provider import billed, billed_clause, provide
from dataspace.store.models_contracts import TransferExtractRow, TransferProcessRow

logger = logging.getLogger("dataspace.transfers")

#: How long stopping waits for a round in flight (one transaction over the due files).
STOP_TIMEOUT = 30.0

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
    return [pid for pid, until in rows if until is not None and _aware(until) <= now]


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


def end_lapsed_grants(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> list[str]:
    """Terminate the lapsed grants (:func:`lapsed_grants`), deleting their extracts and
    telling each consumer (best effort); which. One whose pull was accepted meanwhile (its
    token checked just before it lapsed) is left: the pull is re-checked under the
    transfer's lock."""
    ended = []
    reasons = ["the grant's token lapsed before the data was pulled"]
    for pid in lapsed_grants(node, now):
        with contextlib.suppress(Conflict):  # pulled after all: its delivery settles it
            row = _terminate_local(node, pid, code="grant_lapsed", actor=f"node:{node.name}",
                                   reasons=reasons, unless_pulled=True)
            if row is not None:
                ended.append(pid)
                tell_terminated(node, row, code="grant_lapsed", reasons=reasons,
                                transport=transport)
    return ended


def stalled_requests(node: Node) -> list[str]:
    """Provider transfers still REQUESTED: at server start, their ``provide`` ran in a server
    that stopped before it started or refused them."""
    with node.store.read() as session:
        return list(session.scalars(
            select(TransferProcessRow.id).where(
                TransferProcessRow.role == Role.PROVIDER.value,
                TransferProcessRow.state == tp.TransferState.REQUESTED.value,
            ).order_by(TransferProcessRow.created_at)
        ).all())


def resume_requests(
    node: Node,
    pids: list[str],
    transport: Transport | None = None,
    stopped: Callable[[], bool] | None = None,
) -> list[str]:
    """Provide each stalled request (``pids``, from :func:`stalled_requests` taken before the
    server accepted any request: a request it receives is provided by its own handler) as if
    it had just arrived: decided under the agreement as it stands now, then started or
    refused, the consumer told either way; which were resumed. Call it once the server is
    serving; once ``stopped()`` the rest are left for the next start."""
    return _each_until_stopped(pids, lambda pid: provide(node, pid, transport=transport),
                               "transfer request", stopped)


def unfinished_pulls(node: Node) -> list[str]:
    """Consumer transfers STARTED with nothing received: at server start, their pull was cut
    off with the last server (:func:`sweep` deleted its partial download) or never began."""
    with node.store.read() as session:
        return list(session.scalars(
            select(TransferProcessRow.id)
            .join(TransferExtractRow, TransferExtractRow.id == TransferProcessRow.id)
            .where(
                TransferProcessRow.role == Role.CONSUMER.value,
                TransferProcessRow.state == tp.TransferState.STARTED.value,
                TransferExtractRow.path.is_(None),
            ).order_by(TransferProcessRow.created_at)
        ).all())


def retry_pulls(
    node: Node,
    pids: list[str],
    transport: Transport | None = None,
    stopped: Callable[[], bool] | None = None,
) -> list[str]:
    """Pull each unfinished transfer (``pids``, from :func:`unfinished_pulls` taken before the
    server accepted any message: a start it receives pulls by its own handler) as if its start
    had just arrived: received and completed, or ended with the provider's refusal, the
    provider told; which were tried. Once ``stopped()`` the rest are left for the next
    start."""
    return _each_until_stopped(pids, lambda pid: pull(node, pid, transport=transport),
                               "transfer pull", stopped)


def _each_until_stopped(
    pids: list[str], act: Callable[[str], object], what: str,
    stopped: Callable[[], bool] | None,
) -> list[str]:
    done = []
    for n, pid in enumerate(pids):
        if stopped is not None and stopped():
            logger.warning("stopping: %d %s(s) left for the next start", len(pids) - n, what)
            break
        try:
            act(pid)
        except Exception:  # the next start tries again; the others go on
            logger.exception("%s %s", what, pid)
            continue
        done.append(pid)
    return done


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
    return [pid for pid, made in rows if _aware(made) <= before]


def end_unanswered_requests(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> list[str]:
    """Terminate the unanswered requests (:func:`unanswered_requests`), telling each provider
    (best effort); which."""
    seconds = float(node.limits["transfer_start_timeout_seconds"])
    return [  # one started since the read (a late START) is left alone: only_in
        pid for pid in unanswered_requests(node, now)
        if terminate(node, pid, code="start_timeout", actor=f"node:{node.name}",
                     reasons=[f"the provider did not start the transfer within {seconds:g} s "
                              "of the request"], transport=transport,
                     only_in=(tp.TransferState.REQUESTED.value,))
    ]


def unconfirmed_deliveries(node: Node, now: datetime | None = None) -> list[str]:
    """Provider transfers still STARTED whose delivery was billed (and so settled)
    ``transfer_completion_grace_seconds`` ago or more: neither the consumer's completion nor
    its termination has arrived since."""
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
    return [pid for pid, settled in rows if settled is not None and _aware(settled) + grace <= now]


def complete_unconfirmed(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> list[str]:
    """Complete the unconfirmed deliveries (:func:`unconfirmed_deliveries`) here, each with a
    ``transfer.completed`` entry giving the reason, and send each consumer a
    TransferCompletionMessage (best effort; a consumer that completed already answers 200);
    which. One the consumer completed or terminated since the read is left as it is."""
    grace = float(node.limits["transfer_completion_grace_seconds"])
    reasons = [f"the delivery was billed and the consumer confirmed nothing within {grace:g} s; "
               "completed by the provider"]
    done = []
    for pid in unconfirmed_deliveries(node, now):
        with node.store.write() as session:
            row = cs.get_transfer(session, pid, peer=None, lock=True)
            if row.state != tp.TransferState.STARTED.value or not billed(session, pid):
                continue
            row = cs.advance_transfer(session, pid, tp.COMPLETION, sender=Role.PROVIDER,
                                      peer=None)
            ext = session.get(TransferExtractRow, pid)
            log.append(session, actor=f"node:{node.name}", action="transfer.completed", payload={
                "pid": pid, "role": Role.PROVIDER.value, "peer": row.peer,
                "agreement_id": row.agreement_id, "by": node.name,
                "sha256": ext.sha256 if ext else None, "rows": ext.rows if ext else None,
                "bytes": ext.bytes if ext else None, "reason": reasons,
            })
            session.expunge(row)
        done.append(pid)
        _tell_completed(node, row, transport)
    return done


def _tell_completed(node: Node, row: TransferProcessRow, transport: Transport | None) -> None:
    if row.consumer_pid is None:
        return
    message = TransferCompletionMessage(provider_pid=row.id, consumer_pid=row.consumer_pid)
    try:
        status, _ = deliver(node, row.peer, "POST", _peer_path(node, row, "completion"),
                            build(message), transport, attempts=3)
        if status >= 300:
            logger.warning("transfer %s: %s refused the completion (HTTP %s)",
                           row.id, row.peer, status)
    except DataspaceError as exc:
        logger.warning("transfer %s: completion not delivered: %s", row.id, exc)


def sweep_while_serving(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> dict[str, list[str]]:
    """What is safe to do while the server runs, each round of :class:`SweepingThread`: end
    lapsed grants and unanswered requests, complete unconfirmed deliveries, delete orphaned
    files (past their grace) and received files whose delete duty fell due."""
    ended = (end_lapsed_grants(node, now, transport)
             + end_unanswered_requests(node, now, transport))
    return {"terminated": ended, "completed": complete_unconfirmed(node, now, transport),
            "removed": orphan_files(node, now) + delete_due(node, now)}


def sweep(
    node: Node, now: datetime | None = None, transport: Transport | None = None
) -> dict[str, list[str]]:
    """At server start: terminate lapsed grants and deliveries the last server did not finish,
    and delete partial downloads; what was ended or removed."""
    ended = (end_lapsed_grants(node, now, transport)
             + end_unanswered_requests(node, now, transport))
    cut = ["the node restarted while the extract was being sent; not billed"]
    for pid in interrupted_deliveries(node):  # _terminate_local skips those already ended
        row = _terminate_local(node, pid, code="delivery_interrupted",
                               actor=f"node:{node.name}", reasons=cut)
        if row is not None:
            ended.append(pid)
            tell_terminated(node, row, code="delivery_interrupted", reasons=cut,
                            transport=transport)
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
            if ext.delete_by is not None and _aware(ext.delete_by) <= now
        ]
        for ext in due:
            assert ext.path is not None and ext.delete_by is not None
            Path(ext.path).unlink(missing_ok=True)
            log.append(session, actor=f"node:{node.name}", action="transfer.deleted", payload={
                "pid": ext.id, "sha256": ext.sha256, "file": Path(ext.path).name,
                "delete_by": _aware(ext.delete_by).isoformat(), "deleted_at": now.isoformat(),
            })
            ext.path = None
        return [ext.id for ext in due]


class SweepingThread:
    """Runs :func:`sweep_while_serving` every ``every`` seconds in a daemon thread until
    :meth:`stop`; first, once ``serving()`` is true, :func:`resume_requests` on ``resume``."""

    def __init__(
        self,
        node: Node,
        every: float,
        serving: Callable[[], bool] | None = None,
        transport: Transport | None = None,
        resume: list[str] | None = None,
        pulls: list[str] | None = None,
    ) -> None:
        self.node, self.every, self._serving, self._transport = node, every, serving, transport
        self._resume_pids = resume or []
        self._pull_pids = pulls or []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="transfer-sweep", daemon=True)

    def _resume(self) -> None:
        if not (self._resume_pids or self._pull_pids) or self._serving is None:
            return
        # the consumers pull from this server, and a provider told of a failed pull answers it
        while not self._serving():
            if self._stopped.wait(0.1):
                return
        resumed = resume_requests(
            self.node, self._resume_pids, self._transport, self._stopped.is_set
        )
        if resumed:
            logger.warning("resumed %d transfer request(s) the last server did not answer",
                           len(resumed))
        pulled = retry_pulls(self.node, self._pull_pids, self._transport, self._stopped.is_set)
        if pulled:
            logger.warning("pulled %d transfer(s) again that the last server did not receive",
                           len(pulled))

    def _loop(self) -> None:
        self._resume()
        while not self._stopped.wait(self.every):
            try:
                sweep_while_serving(self.node, transport=self._transport)
            except Exception:  # the next round tries again; the node keeps serving
                logger.exception("sweeping transfers (lapsed grants, orphaned and due files)")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the loop to end and wait for a round in flight: the caller closes the node's
        store next, and a round still running would open a connection to a closed store."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def keep_sweeping(
    node: Node,
    every: float = 60.0,
    serving: Callable[[], bool] | None = None,
    transport: Transport | None = None,
    resume: list[str] | None = None,
    pulls: list[str] | None = None,
) -> SweepingThread:
    """Start :func:`sweep_while_serving` every ``every`` seconds while the server runs: a grant
    lapses, a delete duty falls due, a file is orphaned while it serves, not only before its
    next start. With ``serving`` (is the server accepting requests yet?), the stalled
    requests ``resume`` names are resumed first, once it is, and the unfinished pulls
    ``pulls`` names are pulled again."""
    running = SweepingThread(node, every, serving, transport, resume, pulls)
    running.start()
    return running


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
