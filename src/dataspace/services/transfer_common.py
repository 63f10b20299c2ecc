"""Transfer processes, the parts both sides share: the output modes and their wire format,
refusing and guarding messages, addressing the peer, the extract row, and terminating a
process.

See :mod:`dataspace.services.transfers` for the whole exchange.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from dataspace.contracts import ProtocolError, build
from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.messages import (
    TransferCompletionMessage,
    TransferProcess,
    TransferTerminationMessage,
)
from dataspace.contracts.roles import Role
from dataspace.errors import (
    Conflict,
    DataspaceError,
    NotFound,
    UsageError,
)
from dataspace.jsondoc import utc
from dataspace.ledger import log
from dataspace.services import peer_outbox
from dataspace.services.catalog import Transport, deliver_or_terminate
from dataspace.services.dsp_process import (
    ProcessKind,
    is_pid,
    log_refusal,
    peer_path,
    send_termination,
)
from dataspace.services.neg_common import Reply, lookup_member
from dataspace.services.node import Node
from dataspace.store.models_contracts import (
    TransferExtractRow,
    TransferProcessRow,
)

logger = logging.getLogger("dataspace.transfers")

MODES = ("raw", "pseudonymized")
FORMAT_PREFIX = "application/vnd.apache.parquet+http-pull;output="
HTTP_ENDPOINT = "https://w3id.org/idsa/v4.1/HTTP"
NS = "https://w3id.org/dataspace/transfer#"
PULL_PATH = "/peer/v1/transfers/{pid}/data"
EXTRACT_DIR, RECEIVED_DIR = "transfers", "received"
FINAL = (tp.TransferState.COMPLETED.value, tp.TransferState.TERMINATED.value)
TRANSFER = ProcessKind("transfer", "transfers", logger, TransferTerminationMessage)
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


def format_for(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"unknown transfer mode {mode!r}", hint="use raw or pseudonymized")
    return FORMAT_PREFIX + mode


def mode_of(fmt: str) -> str:
    mode = fmt[len(FORMAT_PREFIX) :] if fmt.startswith(FORMAT_PREFIX) else ""
    if mode not in MODES:
        raise ProtocolError(
            f"unsupported transfer format {fmt!r}",
            path="$.format",
            hint=f"use {FORMAT_PREFIX}raw or {FORMAT_PREFIX}pseudonymized",
        )
    return mode


def _now() -> datetime:
    return datetime.now(UTC)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Pids:
    provider_pid: str | None
    consumer_pid: str | None


def _ack(row: TransferProcessRow) -> dict[str, Any]:
    return build(
        TransferProcess(
            provider_pid=row.provider_pid or "",
            consumer_pid=row.consumer_pid or "",
            state=row.state,
        )
    )


def _refused(
    node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError, pids: _Pids | None
) -> Reply:
    status = log_refusal(node, "transfer.refused", peer, what, pid, exc)
    return Reply(status, tp.error_body(pids, exc))


def refuse(node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError) -> Reply:
    """Answer (and log) a message refused before a handler saw it, e.g. malformed JSON."""
    return _refused(node, peer, what, pid, exc, None)


def _guard(node: Node, peer: str, what: str, pid: str | None, fn: Callable[[], Reply],
           *, consumer_pid: Any = None) -> Reply:
    """``fn``'s reply, or its error as a TransferError; ``consumer_pid``: what a first message
    named (no process holds it yet), echoed so the consumer knows which request was refused."""
    try:
        return fn()
    except DataspaceError as exc:
        pids = None
        if is_pid(consumer_pid):
            pids = _Pids(None, consumer_pid)
        if pid is not None and not isinstance(exc, NotFound):
            try:
                with node.store.read() as session:
                    row = cs.get_transfer(session, pid, peer=peer)
                    pids = _Pids(row.provider_pid, row.consumer_pid)
            except DataspaceError:
                pids = None
        return _refused(node, peer, what, pid, exc, pids)


def _peer_path(node: Node, row: TransferProcessRow, suffix: str) -> str:
    """Where to send a message about ``row`` to its peer."""
    return peer_path(node, TRANSFER, row, suffix, lookup_member)


def _extract(session: Session, pid: str) -> TransferExtractRow:
    row = session.get(TransferExtractRow, pid, with_for_update=True)
    if row is None:
        raise NotFound(f"no transfer {pid!r}", hint="see `dataspace transfer list`")
    return row


def _discard(path: str | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)


def _discard_unless_streaming(ext: TransferExtractRow) -> None:
    """Delete a provider's extract on termination, unless a pull is reading it: a pull that
    has begun and not settled keeps its file, and :func:`settle_pull` (or the sweep after a
    restart) deletes it."""
    if ext.pulled_at is None or ext.settled_at is not None:
        _discard(ext.path)


# --- termination -------------------------------------------------------------------------------


def _terminate_local(
    node: Node,
    pid: str,
    *,
    code: str,
    reasons: list[str],
    actor: str,
    unless_pulled: bool = False,
    only_in: tuple[str, ...] | None = None,
) -> TransferProcessRow | None:
    """TERMINATED here (None if it had ended already, or is in none of the states ``only_in``
    names: a decision taken on an earlier read holds only if the state is still the one
    read). ``unless_pulled``: a provider transfer whose pull has begun is refused (Conflict)
    instead: its data has left."""
    with node.store.write() as session:
        return _terminate_in(session, node, pid, code=code, reasons=reasons, actor=actor,
                             unless_pulled=unless_pulled, only_in=only_in)


def _terminate_in(
    session: Session,
    node: Node,
    pid: str,
    *,
    code: str,
    reasons: list[str],
    actor: str,
    unless_pulled: bool = False,
    only_in: tuple[str, ...] | None = None,
) -> TransferProcessRow | None:
    """:func:`_terminate_local` inside the caller's write transaction."""
    row = cs.get_transfer(session, pid, peer=None, lock=True)
    if row.state in FINAL or (only_in is not None and row.state not in only_in):
        return None
    own = Role(row.role)
    ext = _extract(session, pid)
    if unless_pulled and own is Role.PROVIDER and ext.pulled_at is not None:
        raise Conflict(
            f"transfer {pid!r} has been pulled: its data left this node at "
            f"{utc(ext.pulled_at).isoformat(timespec='seconds')}",
            hint="a grant can be revoked until the consumer pulls; the agreement governs "
            "the copy it holds",
        )
    row = cs.advance_transfer(session, pid, tp.TERMINATION, sender=own, peer=None)
    ext.reason = ext.reason or reasons
    if own is Role.PROVIDER:
        _discard_unless_streaming(ext)
    log.append(
        session,
        actor=actor,
        action="transfer.terminated",
        payload={
            "pid": pid,
            "role": own.value,
            "peer": row.peer,
            "agreement_id": row.agreement_id,
            "by": node.name,
            "code": code,
            "reason": reasons,
        },
    )
    session.expunge(row)
    return row


def terminate(
    node: Node,
    pid: str,
    *,
    code: str,
    reasons: list[str],
    actor: str,
    transport: Transport | None = None,
    unless_pulled: bool = False,
    only_in: tuple[str, ...] | None = None,
) -> bool:
    """Terminate a transfer here and tell the peer (best effort); False if it had ended
    already (see :func:`_terminate_local` for ``unless_pulled`` and ``only_in``)."""
    row = _terminate_local(
        node, pid, code=code, reasons=reasons, actor=actor, unless_pulled=unless_pulled,
        only_in=only_in,
    )
    if row is None:
        return False
    tell_terminated(node, row, code=code, reasons=reasons, transport=transport)
    return True


def tell_completed(
    node: Node, row: TransferProcessRow, transport: Transport | None = None, *, attempts: int = 5
) -> None:
    """Send the peer the completion of ``row`` (COMPLETED here): a refusal is logged; a peer
    out of reach is owed it, and told later (:mod:`.peer_outbox`)."""
    if row.provider_pid is None or row.consumer_pid is None:
        return
    message = TransferCompletionMessage(provider_pid=row.provider_pid,
                                        consumer_pid=row.consumer_pid)
    try:
        path = _peer_path(node, row, "completion")
    except DataspaceError as exc:
        logger.warning("transfer %s: completion not delivered: %s", row.id, exc)
        return
    peer_outbox.send_or_owe(node, row.peer, path, build(message), transport,
                            about=f"transfer {row.id} completion", attempts=attempts)


def tell_terminated(
    node: Node,
    row: TransferProcessRow,
    *,
    code: str,
    reasons: list[str],
    transport: Transport | None = None,
) -> None:
    """Send the peer the termination of ``row`` (best effort)."""
    send_termination(
        node,
        TRANSFER,
        row,
        code=code,
        reasons=reasons,
        transport=transport,
        lookup=lookup_member,
    )


def _send_or_fail(
    node: Node,
    pid: str,
    peer: str,
    path: str,
    doc: dict[str, Any],
    actor: str,
    transport: Transport | None,
) -> None:
    deliver_or_terminate(
        node, pid, peer, path, doc, terminate=terminate, actor=actor, transport=transport
    )
