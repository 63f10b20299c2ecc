"""What a node's start-up leaves for the server to finish once it serves, and the thread
that then sweeps transfers every minute.

At start, before the server accepts anything, :func:`take_backlog` runs the start-up
:func:`~dataspace.services.transfer_sweep.sweep` and notes what cannot be done yet. Once the
server serves, :class:`SweepingThread` works it off in this order, then runs
:func:`~dataspace.services.transfer_sweep.sweep_while_serving` every ``every`` seconds:

1. a consumer's transfer still STARTED with nothing received had its pull cut off by the
   restart, or never begun: it is pulled again (:func:`retry_pulls`) — first, because its
   token lapses minutes after its start. An unused, unexpired token brings the data now; a
   token the cut-off pull had spent (or one that lapsed, or a grant its provider ended
   meanwhile) is refused by the provider, and the transfer ends here with that reason, the
   provider told — either way it does not stay STARTED for ever;
2. a provider's transfer still REQUESTED was answered (201) by a server that stopped before
   it decided and started it: it is provided now (:func:`resume_requests`), so the
   consumer's pull finds the server up;
3. the peers of the transfers the start-up sweep terminated are told (best effort, three
   tries each): a peer that is down no longer holds up the node's start.

A notice is best effort like every termination message: if its peer is down, or this server
stops before it serves, it goes unsent, and the peer's own sweeps end its side (a consumer
whose grant lapsed unpulled finds the grant refused when its next start retries the pull; a
provider a consumer stopped waiting for resumes, and is refused by, the ended request).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select

from dataspace.contracts import transfer as tp
from dataspace.contracts.roles import Role
from dataspace.services.catalog import Transport
from dataspace.services.node import Node
from dataspace.services.transfer_common import logger
from dataspace.services.transfer_consumer import pull
from dataspace.services.transfer_provider import provide
from dataspace.services.transfer_sweep import Notice, sweep, sweep_while_serving, tell_all
from dataspace.store.models_contracts import TransferExtractRow, TransferProcessRow

T = TypeVar("T")

#: How long stopping waits for a round in flight (one transaction over the due files).
STOP_TIMEOUT = 30.0


@dataclass
class Backlog:
    """What the start-up found for the serving node to do, in this order: pull unfinished
    transfers again, provide stalled requests, tell peers of terminations."""

    notices: list[Notice] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    pulls: dict[str, Any] = field(default_factory=dict)  # pid: the data address started with

    def __bool__(self) -> bool:
        return bool(self.notices or self.requests or self.pulls)


def take_backlog(node: Node) -> tuple[Backlog, dict[str, list[str]]]:
    """At server start, before it accepts anything (a request or a start it then receives is
    its handler's): the start-up sweep, with its peers told later, and the stalled requests
    and unfinished pulls; the backlog and what the sweep ended or removed."""
    backlog = Backlog()
    swept = sweep(node, defer=backlog.notices)
    backlog.requests = stalled_requests(node)
    backlog.pulls = unfinished_pulls(node)
    return backlog, swept


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


def unfinished_pulls(node: Node) -> dict[str, Any]:
    """Consumer transfers STARTED with nothing received: at server start, their pull was cut
    off with the last server (the start-up sweep deleted its partial download) or never
    began; each with the data address it was started with."""
    with node.store.read() as session:
        rows = session.execute(
            select(TransferProcessRow.id, TransferProcessRow.data_address)
            .join(TransferExtractRow, TransferExtractRow.id == TransferProcessRow.id)
            .where(
                TransferProcessRow.role == Role.CONSUMER.value,
                TransferProcessRow.state == tp.TransferState.STARTED.value,
                TransferExtractRow.path.is_(None),
            ).order_by(TransferProcessRow.created_at)
        ).all()
    return {pid: address for pid, address in rows}


def retry_pulls(
    node: Node,
    pulls: Mapping[str, Any],
    transport: Transport | None = None,
    stopped: Callable[[], bool] | None = None,
) -> list[str]:
    """Pull each unfinished transfer (``pulls``, from :func:`unfinished_pulls` taken before the
    server accepted any message) as if its start had just arrived: received and completed, or
    ended with the provider's refusal, the provider told; which were tried. One that has left
    STARTED or holds another data address since is left alone: a start received meanwhile (a
    resumption) pulls by its own handler, and a second pull with its token would be refused
    and end the transfer under the first. Once ``stopped()`` the rest are left for the next
    start."""

    def again(pid: str) -> bool:
        with node.store.read() as session:
            row = session.get(TransferProcessRow, pid)
            if (row is None or row.state != tp.TransferState.STARTED.value
                    or row.data_address != pulls[pid]):
                return False
        pull(node, pid, transport=transport)
        return True

    return _each_until_stopped(list(pulls), again, "transfer pull", stopped)


def _each_until_stopped(
    items: list[T], act: Callable[[T], object], what: str,
    stopped: Callable[[], bool] | None,
) -> list[T]:
    """``act`` on each item in turn until ``stopped()``; the items it did not decline (return
    False) or fail on. A failure is logged and the others go on: the next start tries
    again."""
    done = []
    for n, item in enumerate(items):
        if stopped is not None and stopped():
            logger.warning("stopping: %d %s(s) left for the next start", len(items) - n, what)
            break
        try:
            if act(item) is False:
                continue
        except Exception:
            logger.exception("%s %s", what, item)
            continue
        done.append(item)
    return done


class SweepingThread:
    """Once ``serving()`` is true, works off the ``backlog``; then runs
    :func:`sweep_while_serving` every ``every`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        node: Node,
        every: float,
        serving: Callable[[], bool] | None = None,
        transport: Transport | None = None,
        backlog: Backlog | None = None,
    ) -> None:
        self.node, self.every, self._serving, self._transport = node, every, serving, transport
        self._backlog = backlog or Backlog()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="transfer-sweep", daemon=True)

    def _work_off(self) -> None:
        backlog = self._backlog
        if not backlog or self._serving is None:
            return
        # consumers pull from this server, and peers told of an ending answer to it
        while not self._serving():
            if self._stopped.wait(0.1):
                return
        # pulls first: a token lapses minutes after its start; requests wait an hour, and the
        # notices only save peers their own timeouts
        stopped = self._stopped.is_set
        pulled = retry_pulls(self.node, backlog.pulls, self._transport, stopped)
        if pulled:
            logger.warning("pulled %d transfer(s) again that the last server did not receive",
                           len(pulled))
        resumed = resume_requests(self.node, backlog.requests, self._transport, stopped)
        if resumed:
            logger.warning("resumed %d transfer request(s) the last server did not answer",
                           len(resumed))
        _each_until_stopped(backlog.notices, lambda notice: tell_all(
            self.node, [notice], self._transport), "termination notice", stopped)

    def _loop(self) -> None:
        try:
            self._work_off()
        except Exception:  # the sweeping below must run all the same
            logger.exception("finishing what the last server left")
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
    backlog: Backlog | None = None,
) -> SweepingThread:
    """Start :func:`sweep_while_serving` every ``every`` seconds while the server runs: a grant
    lapses, a delete duty falls due, a file is orphaned while it serves, not only before its
    next start. With ``serving`` (is the server accepting requests yet?), the ``backlog`` of
    the start-up (:func:`take_backlog`) is worked off first, once it is."""
    running = SweepingThread(node, every, serving, transport, backlog)
    running.start()
    return running
