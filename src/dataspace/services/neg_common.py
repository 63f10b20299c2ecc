"""Contract negotiation, the parts both sides share: the reply, the errors, the hooks onto the
space, refusing and guarding messages, addressing the peer and terminating a negotiation.

See :mod:`dataspace.services.negotiation` for how the two sides talk.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.contracts import (
    ContractNegotiation,
    ContractNegotiationTerminationMessage,
    ProtocolError,
    build,
    parse,
)
from dataspace.contracts import negotiation as cn
from dataspace.contracts import store as cs
from dataspace.contracts.roles import Role
from dataspace.contracts.signing import canonical_agreement
from dataspace.errors import DataspaceError, SignatureError
from dataspace.identity.membership import Member, NotAMember
from dataspace.ledger import log
from dataspace.services.catalog import DSP_PATH, Transport, deliver_or_terminate
from dataspace.services.dsp_process import PEER_ACTOR as PEER_ACTOR
from dataspace.services.dsp_process import (
    ProcessKind,
    log_refusal,
    peer_path,
    send_termination,
)
from dataspace.services.node import Node
from dataspace.store.models_contracts import (
    ContractAgreementRow,
    ContractNegotiationRow,
)

logger = logging.getLogger("dataspace.negotiation")

EXT = "https://w3id.org/dataspace/contracts#"
#: extension member carrying the sender's base64 Ed25519 signature over the agreement
SIGNATURE = EXT + "signature"
FINAL = (cn.NegotiationState.FINALIZED.value, cn.NegotiationState.TERMINATED.value)
NEGOTIATION = ProcessKind(
    "negotiation", "negotiations", logger, ContractNegotiationTerminationMessage
)


class OfferUnavailable(ProtocolError):
    """The requested offer is unknown, withdrawn, or not the one this node published."""

    code = "offer_unavailable"


class NotSupported(ProtocolError):
    """A DSP message this node does not act on (provider-initiated offers, counter-offers)."""

    code = "not_supported"


@dataclass
class Reply:
    """An endpoint's answer and what to send once it is out."""

    status: int
    body: dict[str, Any] | None = None
    after: list[Callable[[], None]] = field(default_factory=list)

    def run_after(self) -> None:
        for task in self.after:
            task()


# --- hooks onto the space (replaced in tests: patch them here) ----------------------------------


def lookup_member(node: Node, name: str) -> Member:
    """The member ``name`` of this node's space (NotAMember if it is not on the list)."""
    from dataspace.services import space

    member = space.membership(node).by_name(name)
    if member is None:
        raise NotAMember(
            f"{name!r} is not a member of this node's space",
            hint="check the name against the membership list",
        )
    return member


def callback_address(node: Node) -> str:
    """Where peers send this node's consumer-side DSP messages."""
    from dataspace.services import space

    return space.self_member(node).url.rstrip("/") + DSP_PATH


# --- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pids:
    provider_pid: str | None
    consumer_pid: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def _private_key(node: Node) -> Any:
    from dataspace.identity import keys
    from dataspace.services.node import KEY_FILE

    return keys.load_private_key(node.root / KEY_FILE)


def _own_public(node: Node) -> bytes:
    return node.signer.public_bytes


def _pid_of(row: ContractNegotiationRow) -> _Pids:
    return _Pids(row.provider_pid, row.consumer_pid)


def _error(status: int, exc: DataspaceError, pids: _Pids | None) -> Reply:
    body = cn.error_body(pids, exc)
    return Reply(status, body)


def _refused(
    node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError, pids: _Pids | None
) -> Reply:
    """Log a refused message (a denied attempt) and answer it."""
    status = log_refusal(node, "negotiation.refused", peer, what, pid, exc)
    return _error(status, exc, pids)


def refuse(node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError) -> Reply:
    """Answer (and log) a message refused before it reached a handler, e.g. malformed JSON."""
    return _refused(node, peer, what, pid, exc, _Pids(None, None))


def _guard(node: Node, peer: str, what: str, pid: str | None, fn: Callable[[], Reply]) -> Reply:
    try:
        return fn()
    except DataspaceError as exc:
        pids = _Pids(None, None)
        if pid is not None:
            try:
                with node.store.read() as session:
                    pids = _pid_of(cs.get_negotiation(session, pid, peer=peer))
            except DataspaceError:
                pids = _Pids(None, None)
        return _refused(node, peer, what, pid, exc, pids)


def _signature_of(doc: Mapping[str, Any]) -> str:
    sig = doc.get(SIGNATURE)
    if not isinstance(sig, str) or not sig:
        raise ProtocolError(
            f"the message must carry the sender's agreement signature in {SIGNATURE!r}",
            path=f"$['{SIGNATURE}']",
        )
    return sig


def _with_signature(message: Any, signature: str) -> dict[str, Any]:
    doc = build(message)
    doc[SIGNATURE] = signature
    parse(doc, message.TYPE)  # still schema-valid
    return doc


def _peer_path(node: Node, row: ContractNegotiationRow, suffix: str) -> str:
    """Where to send a message about ``row`` to its peer."""
    return peer_path(node, NEGOTIATION, row, suffix, lookup_member)


def _ack(row: ContractNegotiationRow) -> dict[str, Any]:
    return build(
        ContractNegotiation(
            provider_pid=row.provider_pid or "",
            consumer_pid=row.consumer_pid or "",
            state=row.state,
        )
    )


def _path_pid(given: str | None, pid: str, path: str) -> None:
    if given != pid:
        raise ProtocolError(
            f"{path[2:]} {given!r} does not match the process in the URL", path=path
        )


def _agreement_row(session: Session, row: ContractNegotiationRow) -> ContractAgreementRow:
    ag = session.scalars(
        select(ContractAgreementRow).where(ContractAgreementRow.negotiation_id == row.id)
    ).first()
    if ag is None:
        raise ProtocolError(f"negotiation {row.id!r} has no agreement")
    return ag


def _finalized_facts(
    session: Session, node: Node, row: ContractNegotiationRow, peer_key: Ed25519PublicKey | bytes
) -> dict[str, Any]:
    """A negotiation's agreement with both signatures checked again (``peer_key``: the
    other side's), as its ``negotiation.finalized`` entry states them."""
    ag = _agreement_row(session, row)
    cs.verify_signatures(ag, peer_key, _own_public(node))
    return {
        "agreement_id": ag.id,
        "provider_signature": ag.provider_signature,
        "consumer_signature": ag.consumer_signature,
    }


#: States in which both signatures are on the agreement.
SIGNED = (cn.NegotiationState.VERIFIED.value, cn.NegotiationState.FINALIZED.value)


def _already_signed(
    session: Session, row: ContractNegotiationRow, signer: Role, signature: str
) -> bool:
    """Whether the agreement already carries ``signature`` as ``signer``'s: the message that
    brought it is being delivered again (delivery retries when an answer is lost), so it is
    answered 200 and changes nothing -- a 400 would make the sender end a signed contract."""
    if row.state not in SIGNED:
        return False
    ag = _agreement_row(session, row)
    held = ag.provider_signature if signer is Role.PROVIDER else ag.consumer_signature
    return held is not None and hmac.compare_digest(held, signature)


def _digest(policy: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(canonical_agreement(policy)).hexdigest()


def _agreement_facts(
    pid: str, row: ContractNegotiationRow, ag: ContractAgreementRow, role: Role
) -> dict[str, Any]:
    """The ledger payload naming a negotiation's agreement, as logged by ``role``
    (``negotiation.agreed``, ``negotiation.finalized``)."""
    return {
        "pid": pid,
        "role": role.value,
        "peer": row.peer,
        "agreement_id": ag.id,
        "offer_id": row.offer_id,
        "purpose": row.purpose,
    }


def _log_agreed(
    session: Session,
    pid: str,
    row: ContractNegotiationRow,
    ag: ContractAgreementRow,
    *,
    role: Role,
    provider: str,
    signature: str,
    actor: str,
) -> None:
    """Log, on ``role``'s side, that the negotiation is AGREED under the ``provider``'s
    signature."""
    log.append(
        session,
        actor=actor,
        action="negotiation.agreed",
        payload=_agreement_facts(pid, row, ag, role),
    )
    log.append(
        session,
        actor=actor,
        action="agreement.signed",
        payload={
            "agreement_id": ag.id,
            "pid": pid,
            "signer": provider,
            "role": Role.PROVIDER.value,
            "agreement_sha256": _digest(ag.policy),
            "signature": signature,
        },
    )


def _log_verified(
    session: Session,
    pid: str,
    agreement_id: str,
    *,
    peer: str,
    consumer: str,
    signature: str,
    actor: str,
) -> None:
    """Log, on either side, that the ``consumer`` countersigned and the negotiation is VERIFIED."""
    log.append(
        session,
        actor=actor,
        action="agreement.countersigned",
        payload={
            "agreement_id": agreement_id,
            "pid": pid,
            "signer": consumer,
            "role": Role.CONSUMER.value,
            "signature": signature,
        },
    )
    log.append(
        session,
        actor=actor,
        action="negotiation.verified",
        payload={"pid": pid, "peer": peer, "agreement_id": agreement_id},
    )


@contextmanager
def _signature_checked(signer: Role) -> Iterator[None]:
    """Refuse the message if ``signer``'s agreement signature does not verify in the block."""
    try:
        yield
    except SignatureError as exc:
        raise ProtocolError(
            f"the {signer.value}'s agreement signature: {exc.message}", path=f"$['{SIGNATURE}']"
        ) from None


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


def _terminate_local(
    node: Node,
    pid: str,
    *,
    code: str,
    reasons: list[str],
    actor: str,
    only_in: Collection[str] | None = None,
) -> ContractNegotiationRow | None:
    """Move to TERMINATED and log it, unless already ended (or, with ``only_in``, in
    another state by the time the lock is held); the row, or None if nothing changed."""
    with node.store.write() as session:
        row = cs.get_negotiation(session, pid, peer=None, lock=True)
        if row.state in FINAL or (only_in is not None and row.state not in only_in):
            return None
        own = Role(row.role)
        row = cs.advance_negotiation(session, pid, cn.TERMINATION, sender=own, peer=None)
        log.append(
            session,
            actor=actor,
            action="negotiation.terminated",
            payload={
                "pid": pid,
                "role": own.value,
                "peer": row.peer,
                "by": node.name,
                "code": code,
                "reason": reasons,
                "offer_id": row.offer_id,
                "purpose": row.purpose,
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
    only_in: Collection[str] | None = None,
) -> None:
    """Terminate a negotiation here and tell the peer (best effort)."""
    row = _terminate_local(node, pid, code=code, reasons=reasons, actor=actor, only_in=only_in)
    if row is not None:
        send_termination(
            node,
            NEGOTIATION,
            row,
            code=code,
            reasons=reasons,
            transport=transport,
            lookup=lookup_member,
        )
