"""The protocol cores' byte messages, carried between real nodes for federated training.

The cores (:mod:`dataspace.federated.vlr`, :mod:`~dataspace.federated.sgb_share`) talk through
:class:`~dataspace.federated.mpc.net.Network` mailboxes. Here a :class:`NodeNetwork` stands in
for that network at one node: a message this node sends to another node travels as a signed
multi-party step (``POST /peer/v1/mp/step``, header ``"protocol": "federated-train"``); a
message this node waits for is taken from what arrived. The wire bytes are the cores' own
(:mod:`dataspace.federated.mpc.wire`), unchanged.

Delivery, per job (:class:`Mailbox`):

* to a **participant** (a node serving the API): pushed — buffered, and sent as one ``push``
  step per recipient whenever this node is about to wait for a message (steps carry a
  per-sender sequence number: a resent push is accepted once);
* to the **initiator** (which may be a CLI process with no server): kept in the sender's
  outbox; the initiator fetches it with a ``pull`` step (a long poll of up to a second);
* while the initiator waits it asks every participant for its ``status`` once a second, so a
  participant that died, or failed because a peer did, ends the job within seconds.

Vertical LR runs *replicated*: every node executes the same, data-independent schedule of the
core; the parts of other parties run on placeholders (zeros of the public shapes) and their
outputs are discarded — only the messages addressed to this node are real, and only this
node's own messages leave it. ``replicate=False`` (GBDT) runs one party's code only.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt

from dataspace.errors import DataspaceError, NotFound
from dataspace.federated import vlr
from dataspace.federated.errors import MalformedMessage
from dataspace.federated.mpc.net import Network
from dataspace.federated.mpc.wire import decode
from dataspace.services.mp_wire import (
    FRAME_MEDIA_TYPE,
    STEP_PATH,
    MultipartyFailed,
    answer_cap,
    pack_frame,
    post_capped,
    unpack_frame,
)
from dataspace.services.node import Node
from dataspace.services.peers import peer_client

PROTOCOL = "federated-train"
PULL_WAIT = 1.0  # seconds a pull waits for a message before answering empty
PING_EVERY = 1.0


class Run(Protocol):
    """What :func:`mailbox_step` needs of a node's session of a training or prediction job."""

    initiator: str
    mailbox: Mailbox
    error: DataspaceError | None
    last_seen: float


def mailbox_step(
    s: Run,
    name: str,
    caller: str,
    header: dict[str, Any],
    blobs: list[bytes],
    *,
    what: str,
    senders: Collection[str],
    status: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[bytes]] | None:
    """The transport steps every job shares, as (reply header, blobs): ``push`` from one of
    ``senders``; ``pull`` and ``status`` from the initiator only. Any other step must also
    come from the initiator; then None: the caller handles it."""
    job_id = s.mailbox.job_id
    if caller == s.initiator:
        s.last_seen = time.monotonic()
    if name == "push":
        if caller not in senders:
            raise NotFound(f"no {what} job {job_id} with {caller}")
        s.mailbox.accept_push(
            caller, int(header.get("seq", 0)), [str(r) for r in header.get("runs") or []], blobs
        )
        return {"job_id": job_id, "state": "running"}, []
    if caller != s.initiator:
        raise NotFound(f"no {what} job {job_id} with {caller}")
    if name == "pull":
        items = s.mailbox.serve_pull(int(header.get("after", 0)))
        return {"job_id": job_id, "runs": [r for r, _ in items]}, [d for _, d in items]
    if name == "status":
        if s.error is not None:
            raise s.error
        return {"job_id": job_id, "state": "running", **(status or {})}, []
    return None


class Mailbox:
    """One node's end of one job's message transport (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        job_id: str,
        me: str,
        initiator: str,
        peers: list[str],
        *,
        timeout: float = 30.0,
        alive: Callable[[], None] | None = None,
    ) -> None:
        self.node, self.job_id, self.me, self.initiator = node, job_id, me, initiator
        self.peers = [p for p in peers if p != me]
        self.timeout = timeout
        self.alive = alive
        self.cond = threading.Condition()
        self.inbox: dict[tuple[str, str], deque[bytes]] = defaultdict(deque)
        self.outbox: list[tuple[str, bytes]] = []
        self.received: dict[str, int] = defaultdict(int)
        self.sent: dict[str, int] = defaultdict(int)
        self.buffer: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.pulled: dict[str, int] = defaultdict(int)
        self.error: DataspaceError | None = None
        self.bytes_out = 0
        self.bytes_in = 0
        self.buffered = 0  # bytes received and not yet taken
        self.max_buffered = int(node.limits["mp_max_buffered_mb"]) * 1024 * 1024
        self.requests = 0
        self._last_ping = time.monotonic()
        self._last_check = time.monotonic()
        self._clients: dict[str, httpx.Client] = {}

    # -- failure ---------------------------------------------------------------------------
    def fail(self, error: DataspaceError) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            self.cond.notify_all()

    def _admit(self, sender: str, size: int) -> None:
        """Count ``size`` more bytes waiting to be taken (under ``cond``); past the node's
        ``mp_max_buffered_mb`` the job fails here instead of the node running out of memory."""
        if self.buffered + size > self.max_buffered:
            error = MultipartyFailed(
                f"messages from {sender} waiting at {self.me} for job {self.job_id} would pass "
                f"{self.max_buffered // (1024 * 1024)} MiB",
                hint="a peer sends far ahead of the protocol; raise mp_max_buffered_mb only "
                "for a job known to need it",
                node=sender,
            )
            if self.error is None:
                self.error = error
            self.cond.notify_all()
            raise error
        self.buffered += size

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    # -- sending ---------------------------------------------------------------------------
    def post(self, run: str, recipient: str, data: bytes) -> None:
        self.bytes_out += len(data)
        if recipient == self.initiator and self.me != self.initiator:
            with self.cond:
                self.outbox.append((run, data))
                self.cond.notify_all()
        else:
            self.buffer[recipient].append((run, data))

    def flush(self) -> None:
        for recipient in list(self.buffer):
            items = self.buffer[recipient]
            if not items:
                continue
            header = {
                "protocol": PROTOCOL,
                "job_id": self.job_id,
                "name": "push",
                "seq": self.sent[recipient],
                "runs": [run for run, _ in items],
            }
            self._call(recipient, header, [data for _, data in items])
            self.sent[recipient] += len(items)
            self.buffer[recipient] = []

    def _call(
        self, peer: str, header: dict[str, object], blobs: list[bytes]
    ) -> tuple[dict[str, object], list[bytes]]:
        self.requests += 1
        body = pack_frame(header, blobs)
        last: Exception | None = None
        for attempt in range(3):  # steps are idempotent: a lost connection is retried as is
            client = self._clients.get(peer)
            if client is None:
                client = self._clients[peer] = peer_client(self.node, peer, timeout=self.timeout)
            try:
                answer = post_capped(client, peer, STEP_PATH, body,
                                     content_type=FRAME_MEDIA_TYPE, cap=answer_cap(self.node))
            except httpx.TransportError as exc:
                last = exc
                self._clients.pop(peer, None)
                client.close()
                time.sleep(0.2 * (attempt + 1))
                continue
            return unpack_frame(answer)
        raise MultipartyFailed(
            f"{peer} did not answer ({type(last).__name__}: {last})",
            hint=f"check that {peer} is up, then `dataspace job retry`",
            node=peer,
            cause="unreachable",
        )

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # -- receiving -------------------------------------------------------------------------
    def accept_push(self, sender: str, seq: int, runs: list[str], blobs: list[bytes]) -> None:
        with self.cond:
            skip = self.received[sender] - seq
            if skip < 0:
                raise MultipartyFailed(f"messages from {sender} were lost (gap before {seq})")
            fresh = list(zip(runs, blobs, strict=True))[skip:]
            self._admit(sender, sum(len(blob) for _run, blob in fresh))
            for run, blob in fresh:
                self.inbox[(run, sender)].append(blob)
                self.bytes_in += len(blob)
            self.received[sender] = max(self.received[sender], seq + len(blobs))
            self.cond.notify_all()

    def serve_pull(self, after: int, wait: float = PULL_WAIT) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + wait
        with self.cond:
            while len(self.outbox) <= after and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            self._raise()
            return self.outbox[after:]

    def take(self, run: str, sender: str) -> bytes:
        """The next message of ``run`` from ``sender``: waits, pulls, and watches the job."""
        self.flush()
        while True:
            with self.cond:
                self._raise()  # a failed job takes nothing more, even what had arrived
                box = self.inbox[(run, sender)]
                if box:
                    data = box.popleft()
                    self.buffered -= len(data)
                    return data
                if self.me != self.initiator:
                    self.cond.wait(0.25)
            if self.me == self.initiator:
                self._pull(sender)
                self._ping(skip=sender)
            self._check()

    def _pull(self, sender: str) -> None:
        header = {
            "protocol": PROTOCOL,
            "job_id": self.job_id,
            "name": "pull",
            "after": self.pulled[sender],
        }
        out, blobs = self._call(sender, header, [])
        runs = [str(r) for r in (out.get("runs") or [])]  # type: ignore[attr-defined]
        with self.cond:
            self._admit(sender, sum(len(blob) for blob in blobs))
            for run, blob in zip(runs, blobs, strict=True):
                self.inbox[(run, sender)].append(blob)
                self.bytes_in += len(blob)
            self.pulled[sender] += len(blobs)

    def _ping(self, skip: str) -> None:
        if time.monotonic() - self._last_ping < PING_EVERY:
            return
        self._last_ping = time.monotonic()
        for peer in self.peers:
            if peer != skip:
                self._call(
                    peer, {"protocol": PROTOCOL, "job_id": self.job_id, "name": "status"}, []
                )

    def _check(self) -> None:
        if self.alive is not None and time.monotonic() - self._last_check > 0.5:
            self._last_check = time.monotonic()
            try:
                self.alive()
            except DataspaceError as exc:
                self.fail(exc)
        self._raise()


class NodeNetwork(Network):
    """A :class:`Network` whose links to other nodes go through a :class:`Mailbox`."""

    def __init__(self, mailbox: Mailbox, run: str, *, replicate: bool) -> None:
        super().__init__()
        self.mailbox, self.run, self.me, self.replicate = mailbox, run, mailbox.me, replicate

    def _send(self, sender: str, recipient: str, make: Callable[[int], bytes]) -> int:
        if sender != self.me:
            if recipient == self.me or not self.replicate:
                return 0  # a placeholder's message to this node: the real one comes by wire
            return super()._send(sender, recipient, make)
        size = super()._send(sender, recipient, make)
        if recipient != self.me:
            box = self._boxes[(sender, recipient)]
            data = box[-1] if self.replicate else box.pop()
            self.mailbox.post(self.run, recipient, data)
        return size

    def recv(self, recipient: str, sender: str, tag: str) -> npt.NDArray[np.generic]:
        if recipient != self.me or sender == self.me:
            return super().recv(recipient, sender, tag)
        msg = decode(self.mailbox.take(self.run, sender))
        if msg.recipient != recipient or msg.sender != sender or msg.tag != tag:
            raise MalformedMessage(
                f"{recipient} expected {tag!r} from {sender}, got {msg.tag!r} "
                f"from {msg.sender} to {msg.recipient}"
            )
        return msg.array


# The vertical LR core builds its own Network; inside `using(net)` (this thread only) it gets
# the node's. Outside, the core behaves exactly as before.
_LOCAL = threading.local()
_ORIGINAL = Network


def _network() -> Network:
    net = getattr(_LOCAL, "net", None)
    return net if net is not None else _ORIGINAL()


vlr.Network = _network  # type: ignore[attr-defined,assignment]


@contextmanager
def using(net: Network) -> Iterator[Network]:
    _LOCAL.net = net
    try:
        yield net
    finally:
        _LOCAL.net = None
