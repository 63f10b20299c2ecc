"""What contract negotiations and transfer processes share as DSP processes: the ledger entry
for a refused message, addressing the peer, telling it of a termination, taking the provider's
ACK and waiting for the end.

Each side names itself with a :class:`ProcessKind` and keeps what differs (its other messages,
ledger actions and views); see :mod:`dataspace.services.neg_common` and
:mod:`dataspace.services.transfer_common`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dataspace.contracts import ProtocolError, build
from dataspace.contracts.messages import (
    ContractNegotiationTerminationMessage,
    TransferTerminationMessage,
)
from dataspace.contracts.negotiation import HasPids
from dataspace.contracts.roles import Role
from dataspace.errors import DataspaceError, NotFound
from dataspace.identity.membership import Member
from dataspace.ledger import log
from dataspace.ledger.entry_budget import EntryBudget, budget_for
from dataspace.services import peer_outbox
from dataspace.services.catalog import DSP_PATH, Transport
from dataspace.services.node import Node
from dataspace.store.models_contracts import ContractNegotiationRow, TransferProcessRow

PEER_ACTOR = "peer:{}"

Process = ContractNegotiationRow | TransferProcessRow
#: the membership hook, passed in by each side so a test's replacement of it there is seen
MemberLookup = Callable[[Node, str], Member]


@dataclass(frozen=True)
class ProcessKind:
    """Which kind of process a shared step works on."""

    name: str  # in log lines: "negotiation", "transfer"
    collection: str  # the DSP path segment: "negotiations", "transfers"
    logger: logging.Logger
    termination: type[ContractNegotiationTerminationMessage] | type[TransferTerminationMessage]


def log_refusal(
    node: Node, action: str, peer: str, what: str, pid: str | None, exc: DataspaceError,
    *, status: int | None = None,
) -> int:
    """Log a refused message (a denied attempt) as ``action``; the HTTP status to answer with,
    404 for :class:`NotFound` and 400 otherwise -- except when this node failed (a locked or
    unreachable store: 5xx): the message was not judged, so the answer is the error's own
    5xx, which the sender retries, and no refusal is logged."""
    if exc.http_status >= 500:
        return exc.http_status
    if status is None:
        status = 404 if isinstance(exc, NotFound) else 400
    budget = _budget(node, peer)
    suppressed = budget.admit(time.time())
    if suppressed is None:  # past this member's budget this minute: counted, not entered
        return status
    payload: dict[str, object] = {
        "peer": peer,
        "message": what,
        "pid": pid,
        "status": status,
        "code": exc.code,
        "reason": exc.message,
        "path": exc.details.get("path"),
    }
    if suppressed:
        payload["suppressed_before"] = suppressed
    try:
        with node.store.write() as session:
            log.append(session, actor=PEER_ACTOR.format(peer), action=action, payload=payload)
    except DataspaceError:
        budget.restore(suppressed + 1)  # this refusal and those it carried stay counted
        raise
    return status


def _budget(node: Node, peer: str) -> EntryBudget:
    """One member's refusal budget at one node (``peer_denied_log_per_minute`` a minute):
    a member cannot grow the ledger without bound by sending messages it knows are refused."""
    return budget_for(str(node.root), f"member:{peer}",
                      int(node.limits.peer_denied_log_per_minute))


#: A process id a peer chooses: it becomes a path segment of every message sent back to it.
_PID = re.compile(r"[A-Za-z0-9._~:-]{1,200}")


def is_pid(text: object) -> bool:
    """Whether ``text`` can be a process id: one path segment of letters, digits, ._~:-."""
    return isinstance(text, str) and bool(_PID.fullmatch(text)) and text not in (".", "..")


def check_new_process(member: Member, callback: str, consumer_pid: str) -> None:
    """What a consumer's first message names for later messages: its own process id (one
    path segment, so nothing sent back can be routed elsewhere) and a callback under its URL."""
    if not is_pid(consumer_pid):
        raise ProtocolError(
            f"consumerPid {consumer_pid[:100]!r} is not a process id",
            hint="1-200 letters, digits or . _ ~ : - (a urn:uuid: is fine)",
            path="$.consumerPid",
        )
    callback_path(member, callback)


def callback_path(member: Member, callback: str) -> str:
    """The path of ``callback`` under the member's base URL; refuses any other host, and any
    control character or space (a NUL would end the URL early in some clients)."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in callback):
        raise ProtocolError(
            f"callbackAddress {callback[:100]!r} holds a control character or a space",
            hint="send the URL percent-encoded",
            path="$.callbackAddress",
        )
    base = member.url.rstrip("/")
    if callback != base and not callback.startswith(base + "/"):
        raise ProtocolError(
            f"callbackAddress {callback!r} is not under the member URL {base!r}",
            hint="a node only calls peers back at their listed address",
            path="$.callbackAddress",
        )
    return callback[len(base) :].rstrip("/")


def peer_path(
    node: Node, kind: ProcessKind, row: Process, suffix: str, lookup: MemberLookup
) -> str:
    """Where to send a message about ``row`` to its peer: the consumer's callback address, or
    the provider's DSP endpoint."""
    if row.role == Role.PROVIDER.value:
        base = callback_path(lookup(node, row.peer), row.callback_address or "")
        return f"{base}/{kind.collection}/{row.consumer_pid}/{suffix}"
    return f"{DSP_PATH}/{kind.collection}/{row.provider_pid}/{suffix}"


def send_termination(
    node: Node,
    kind: ProcessKind,
    row: Process,
    *,
    code: str,
    reasons: list[str],
    transport: Transport | None,
    lookup: MemberLookup,
) -> None:
    """Send the peer the termination of ``row`` (already TERMINATED here) unless the peer never
    learnt of the process; three tries, then it is owed and sent again later
    (:mod:`.peer_outbox`). A peer no longer in the space is only logged."""
    if row.provider_pid is None or row.consumer_pid is None:
        return
    message = kind.termination(
        provider_pid=row.provider_pid,
        consumer_pid=row.consumer_pid,
        code=code,
        reason=tuple(reasons),
    )
    try:
        path = peer_path(node, kind, row, "termination", lookup)
    except DataspaceError as exc:
        kind.logger.warning("%s %s: termination not delivered: %s", kind.name, row.id, exc)
        return
    peer_outbox.send_or_owe(node, row.peer, path, build(message), transport,
                            about=f"{kind.name} {row.id} termination")


def take_provider_pid(row: Process, ack: HasPids, consumer_pid: str) -> None:
    """Record the provider's pid from its ACK to this node's initial request, unless already
    known; :class:`ProtocolError` if the ACK is for another process."""
    if ack.consumer_pid != consumer_pid:
        raise ProtocolError("the provider's ACK names another consumerPid", path="$.consumerPid")
    if row.provider_pid is None:
        row.provider_pid = ack.provider_pid


def wait_until_final(
    view: Callable[[], dict[str, Any]], final: tuple[str, ...], seconds: float, poll: float
) -> dict[str, Any]:
    """Poll ``view`` until its ``state`` is one of ``final`` or ``seconds`` pass; the last view."""
    end = time.monotonic() + seconds
    while True:
        current = view()
        if current["state"] in final or time.monotonic() >= end:
            return current
        time.sleep(poll)
