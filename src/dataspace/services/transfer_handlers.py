"""Transfer processes, the messages either side answers: GET of a process and
start / completion / suspension / termination for an existing one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dataspace.contracts import ProtocolError, parse
from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.roles import Role
from dataspace.identity.membership import Member
from dataspace.jsondoc import utc
from dataspace.ledger import log
from dataspace.policy.values import Malformed, as_datetime
from dataspace.services.catalog import Transport
from dataspace.services.neg_common import PEER_ACTOR, Reply
from dataspace.services.node import Node
from dataspace.services.transfer_common import (
    NS,
    _ack,
    _discard,
    _discard_unless_streaming,
    _extract,
    _guard,
)
from dataspace.services.transfer_consumer import pull
from dataspace.services.transfer_provider import bill_delivery

# --- messages for an existing process (both sides) ---------------------------------------------


def handle_get(node: Node, peer: Member, pid: str) -> Reply:
    """GET /dsp/transfers/{pid}: the TransferProcess (ACK)."""

    def run() -> Reply:
        with node.store.read() as session:
            return Reply(200, _ack(cs.get_transfer(session, pid, peer=peer.name)))

    return _guard(node, peer.name, "GET TransferProcess", pid, run)


def _repeated(row: Any, expected: str, own: Role, address: Any) -> bool:
    """Whether the process is already where this message from its peer leads — the sender
    retried after a lost answer (delivery retries on errors) — and, for a consumer's start, to
    the same data address: answered 200 and changes nothing, instead of a 400 that would end
    the transfer."""
    if expected == tp.START and own is Role.CONSUMER:
        # the pull may have finished before the repeat arrives (COMPLETED); a START in
        # SUSPENDED is a resume, not a repeat
        return bool(row.state in _STARTED_OR_DONE and address is not None
                    and row.data_address == address.to_json())
    return tp.repeats(row.state, expected, own.peer)


_STARTED_OR_DONE = (tp.TransferState.STARTED.value, tp.TransferState.COMPLETED.value)


def handle_message(
    node: Node,
    peer: Member,
    pid: str,
    doc: Any,
    expected: str,
    *,
    transport: Transport | None = None,
) -> Reply:
    """POST /dsp/transfers/{pid}/start|completion|suspension|termination, provider and
    consumer alike (the callback path is this node's ``/dsp``): validate, move, log."""

    def run() -> Reply:
        msg = parse(doc, expected)
        with node.store.write() as session:
            row = cs.get_transfer(session, pid, peer=peer.name, lock=True)
            own = Role(row.role)
            mine = msg.provider_pid if own is Role.PROVIDER else msg.consumer_pid
            if mine != pid:
                where = "$.providerPid" if own is Role.PROVIDER else "$.consumerPid"
                raise ProtocolError(
                    f"{where[2:]} {mine!r} does not match the process in the URL", path=where
                )
            address = getattr(msg, "data_address", None)
            if expected == tp.START and own is Role.CONSUMER and address is None:
                raise ProtocolError(
                    "a TransferStartMessage for a pull must carry the dataAddress",
                    path="$.dataAddress",
                )
            if _repeated(row, expected, own, address):  # a retried delivery: already done
                return Reply(200, _ack(row))
            if (expected == tp.START and own is Role.PROVIDER  # the consumer resumes
                    and row.state == tp.TransferState.SUSPENDED.value):
                _check_resumable(_extract(session, pid))
            if (expected == tp.COMPLETION and own is Role.CONSUMER
                    and row.state == tp.TransferState.STARTED.value
                    and _extract(session, pid).path is None):
                # a provider done serving, while this node's pull still hashes and writes: it
                # completes the pull itself once the data is checked and kept (completing now
                # would make it throw the checked file away)
                return Reply(200, _ack(row))
            row = cs.advance_transfer(
                session,
                pid,
                expected,
                sender=own.peer,
                peer=peer.name,
                consumer_pid=msg.consumer_pid,
                provider_pid=msg.provider_pid,
                data_address=address,
            )
            ext = _extract(session, pid)
            payload: dict[str, Any] = {
                "pid": pid,
                "role": own.value,
                "peer": peer.name,
                "agreement_id": row.agreement_id,
                "by": peer.name,
            }
            after: list[Callable[[], None]] = []
            if expected == tp.START:
                action = "transfer.started"
                if own is Role.CONSUMER:
                    assert address is not None
                    props = {p.name: p.value for p in address.endpoint_properties or ()}
                    stated = props.get(NS + "mode")
                    if stated is not None and stated != ext.mode:  # e.g. raw for pseudonymized
                        raise ProtocolError(
                            f"the provider states mode {stated!r}, but this node asked for "
                            f"{ext.mode!r}: nothing is pulled", path="$.dataAddress")
                    ext.sha256 = props.get(NS + "sha256")
                    try:
                        ext.rows = int(props.get(NS + "rows", "0"))
                        size = props.get(NS + "bytes")
                        ext.bytes = int(size) if size is not None else None
                    except ValueError:
                        raise ProtocolError("the data address's rows and bytes must be whole "
                                            "numbers", path="$.dataAddress") from None
                    ext.delete_by = _delete_by(props.get(NS + "deleteBy"))
                    payload.update(sha256=ext.sha256, rows=ext.rows, mode=ext.mode,
                                   delete_by=props.get(NS + "deleteBy"))
                    after.append(lambda: pull(node, pid, transport=transport))
            elif expected == tp.COMPLETION:
                action = "transfer.completed"
                payload.update(sha256=ext.sha256, rows=ext.rows, bytes=ext.bytes)
                if own is Role.PROVIDER:
                    # the consumer has the extract, verified: bill it now if the end of the
                    # delivery has not been seen here yet (settle_pull then finds it billed)
                    bill_delivery(node, session, row)
                    _discard(ext.path)
            elif expected == tp.TERMINATION:
                action = "transfer.terminated"
                payload.update(code=msg.code, reason=list(msg.reason or ()))
                ext.reason = [str(r) for r in msg.reason or ()] or ext.reason
                if own is Role.PROVIDER:
                    _discard_unless_streaming(ext)
            else:
                action = "transfer.suspended"
                payload.update(code=msg.code, reason=list(msg.reason or ()))
            log.append(session, actor=PEER_ACTOR.format(peer.name), action=action, payload=payload)
        return Reply(200, None, after)

    return _guard(node, peer.name, expected, pid, run)


def _check_resumable(ext: Any) -> None:
    """A suspended grant resumes only while its pull can still run: not begun (a token is
    used once), token unexpired. Otherwise STARTED would wait for a pull that cannot come."""
    if ext.pulled_at is not None:
        raise ProtocolError("this transfer's data was pulled already and its token is used: "
                            "it cannot resume; request a new transfer", path="$")
    if ext.token_expires_at is None or utc(ext.token_expires_at) <= datetime.now(UTC):
        raise ProtocolError("the grant's token lapsed while the transfer was suspended: it "
                            "cannot resume; request a new transfer", path="$")


def _delete_by(stated: str | None) -> datetime | None:
    """The delete duty's deadline a start message states (with its offset), if any."""
    if stated is None:
        return None
    try:
        due = as_datetime(stated)  # the policy's own reading of a dateTime
    except Malformed as exc:
        raise ProtocolError(f"deleteBy: {exc}", path="$.dataAddress") from None
    return due.astimezone(UTC)  # stored as UTC: SQLite keeps no offset
