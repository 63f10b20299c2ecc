"""Persistence of negotiations, agreements and transfer processes.

Every function takes a SQLAlchemy ``Session``; the caller owns the transaction (use
``node.store.write()``). State changes read the process row ``FOR UPDATE`` (PostgreSQL) — on
SQLite the write transaction's ``BEGIN IMMEDIATE`` serialises writers — so two concurrent
messages for one process cannot both move it: the second sees the first's state and gets
:class:`IllegalTransition`.

``peer`` is the name of the node a message came from. A process is only visible to its own
peer: an unknown pid and another peer's pid both raise the same :class:`NotFound` (HTTP 404),
so a node cannot probe for other peers' processes. ``peer=None`` means a local, already
authorised caller (CLI, API user) and skips that check.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.contracts import negotiation as cn
from dataspace.contracts import transfer as tp
from dataspace.contracts.errors import ProtocolError
from dataspace.contracts.messages import DataAddress, policy_from_wire, policy_to_wire
from dataspace.contracts.roles import Role
from dataspace.contracts.signing import verify_agreement
from dataspace.errors import NotFound
from dataspace.policy import Policy, PolicyType
from dataspace.store.models_contracts import (
    ContractAgreementRow,
    ContractNegotiationRow,
    TransferProcessRow,
)

Row = TypeVar("Row", ContractNegotiationRow, TransferProcessRow)


def new_pid() -> str:
    """A fresh process id (``urn:uuid:…``), as DSP recommends."""
    return f"urn:uuid:{uuid.uuid4()}"


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _policy_json(policy: Policy | Mapping[str, Any], path: str) -> dict[str, Any]:
    # normalise through the model so that what we store is what we send
    parsed = policy if isinstance(policy, Policy) else policy_from_wire(policy, path)
    return policy_to_wire(parsed)


def _load(session: Session, model: type[Row], what: str, pid: str, peer: str | None,
          *, lock: bool) -> Row:
    stmt = select(model).where(model.id == pid)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    row = session.execute(stmt).scalar_one_or_none()
    if row is None or (peer is not None and row.peer != peer):
        raise NotFound(f"no {what} {pid!r}", hint="check the process id", pid=pid)
    return row


def _match_pids(row: ContractNegotiationRow | TransferProcessRow, consumer_pid: str | None,
                provider_pid: str | None) -> None:
    for name, given in (("consumer_pid", consumer_pid), ("provider_pid", provider_pid)):
        if given is None:
            continue
        stored = getattr(row, name)
        if stored is None:
            setattr(row, name, given)
        elif stored != given:
            camel = "consumerPid" if name == "consumer_pid" else "providerPid"
            raise ProtocolError(f"{camel} {given!r} does not belong to process {row.id!r}",
                                path=f"$.{camel}")


# --- negotiations ------------------------------------------------------------------------------


def create_negotiation(
    session: Session,
    *,
    role: Role | str,
    peer: str,
    message_type: str,
    sender: Role | str,
    offer: Policy | Mapping[str, Any],
    consumer_pid: str | None = None,
    provider_pid: str | None = None,
    callback_address: str | None = None,
    now: datetime | None = None,
) -> ContractNegotiationRow:
    """Record a new negotiation started by ``message_type`` (an initial ContractRequestMessage
    from the consumer or ContractOfferMessage from the provider). ``role`` is this node's side;
    this node's own pid is generated unless given."""
    me = Role(role)
    state = cn.apply(None, message_type, sender)
    if me is Role.PROVIDER:
        provider_pid = provider_pid or new_pid()
        own = provider_pid
    else:
        consumer_pid = consumer_pid or new_pid()
        own = consumer_pid
    at = _now(now)
    row = ContractNegotiationRow(
        id=own, role=me.value, consumer_pid=consumer_pid, provider_pid=provider_pid, peer=peer,
        state=state.value, offer=_policy_json(offer, "$.offer"), agreement=None,
        callback_address=callback_address, created_at=at, updated_at=at,
    )
    session.add(row)
    session.flush()
    return row


def get_negotiation(session: Session, pid: str, *, peer: str | None,
                    lock: bool = False, own: Role | None = None) -> ContractNegotiationRow:
    """The negotiation whose pid on this node is ``pid``; :class:`NotFound` if unknown or
    another peer's, or — with ``own`` — if this node is not on that side of it: a message
    only one side receives must not move a process of the other side."""
    row = _load(session, ContractNegotiationRow, "contract negotiation", pid, peer, lock=lock)
    if own is not None and row.role != own.value:
        raise NotFound(f"no contract negotiation {pid!r}", hint="check the process id", pid=pid)
    return row


def find_negotiation(session: Session, *, peer: str, consumer_pid: str | None = None,
                     provider_pid: str | None = None) -> ContractNegotiationRow | None:
    """Look a negotiation up by the peer's pid (e.g. to answer a repeated initial request)."""
    stmt = select(ContractNegotiationRow).where(ContractNegotiationRow.peer == peer)
    if consumer_pid is not None:
        stmt = stmt.where(ContractNegotiationRow.consumer_pid == consumer_pid)
    if provider_pid is not None:
        stmt = stmt.where(ContractNegotiationRow.provider_pid == provider_pid)
    if consumer_pid is None and provider_pid is None:
        raise ProtocolError("give consumer_pid or provider_pid")
    return session.execute(stmt).scalars().first()


def list_negotiations(session: Session, *, state: str | None = None
                      ) -> list[ContractNegotiationRow]:
    stmt = select(ContractNegotiationRow).order_by(ContractNegotiationRow.created_at)
    if state is not None:
        stmt = stmt.where(ContractNegotiationRow.state == state)
    return list(session.execute(stmt).scalars())


def advance_negotiation(
    session: Session,
    pid: str,
    message_type: str,
    *,
    sender: Role | str,
    peer: str | None,
    consumer_pid: str | None = None,
    provider_pid: str | None = None,
    offer: Policy | Mapping[str, Any] | None = None,
    agreement: Policy | Mapping[str, Any] | None = None,
    now: datetime | None = None,
    own: Role | None = None,
) -> ContractNegotiationRow:
    """Apply one message to a negotiation under a row lock and return the updated row.

    ``message_type`` is :func:`dataspace.contracts.negotiation.message_type` of the message;
    pids in the message must match the process (a missing peer pid is filled in); ``own``, if
    given, is the side this node must be on (see :func:`get_negotiation`). Raises
    :class:`NotFound`, :class:`IllegalTransition` or :class:`ProtocolError`.
    """
    row = get_negotiation(session, pid, peer=peer, lock=True, own=own)
    new = cn.apply(row.state, message_type, sender)
    _match_pids(row, consumer_pid, provider_pid)
    if offer is not None:
        row.offer = _policy_json(offer, "$.offer")
    if agreement is not None:
        row.agreement = _agreement_json(agreement)
    if message_type == cn.AGREEMENT and row.agreement is None:
        raise ProtocolError("a ContractAgreementMessage must carry the agreement",
                            path="$.agreement")
    row.state = new.value
    row.updated_at = _now(now)
    session.flush()
    return row


# --- agreements --------------------------------------------------------------------------------


def _agreement_json(agreement: Policy | Mapping[str, Any]) -> dict[str, Any]:
    doc = _policy_json(agreement, "$.agreement")
    if doc.get("@type") != PolicyType.AGREEMENT.value:
        raise ProtocolError("the agreement must be an ODRL Agreement", path="$.agreement['@type']")
    for key in ("@id", "target", "assigner", "assignee"):
        if not doc.get(key):
            raise ProtocolError(f"the agreement needs {key!r}", path=f"$.agreement.{key}")
    return doc


def record_agreement(
    session: Session,
    negotiation_id: str,
    *,
    peer: str | None,
    provider_signature: str | None = None,
    consumer_signature: str | None = None,
    signed_at: datetime | None = None,
) -> ContractAgreementRow:
    """Store the agreement of an AGREED (or later) negotiation, with any signatures given.
    Signatures are stored as given: verify them with :func:`add_signature` or
    :func:`verify_signatures`."""
    neg = get_negotiation(session, negotiation_id, peer=peer, lock=True)
    if neg.agreement is None:
        raise ProtocolError(f"negotiation {negotiation_id!r} has no agreement yet",
                            hint=f"it is {neg.state}")
    doc = neg.agreement
    row = ContractAgreementRow(
        id=doc["@id"], negotiation_id=neg.id, provider=doc["assigner"], consumer=doc["assignee"],
        target=doc["target"], policy=doc, signed_at=_now(signed_at),
        provider_signature=provider_signature, consumer_signature=consumer_signature,
    )
    session.add(row)
    session.flush()
    return row


def get_agreement(session: Session, agreement_id: str, *, peer: str | None,
                  lock: bool = False) -> ContractAgreementRow:
    """An agreement by its ``@id``; :class:`NotFound` if unknown or not with ``peer``."""
    stmt = select(ContractAgreementRow).where(ContractAgreementRow.id == agreement_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    row = session.execute(stmt).scalar_one_or_none()
    if row is not None and peer is not None:
        neg = session.get(ContractNegotiationRow, row.negotiation_id)
        if neg is None or neg.peer != peer:
            row = None
    if row is None:
        raise NotFound(f"no agreement {agreement_id!r}", hint="check the agreement id")
    return row


def add_signature(session: Session, agreement_id: str, role: Role | str, signature: str,
                  key: Ed25519PublicKey | bytes, *, peer: str | None) -> ContractAgreementRow:
    """Verify ``role``'s signature over the stored agreement and keep it (SignatureError if it
    does not verify; nothing is stored then)."""
    row = get_agreement(session, agreement_id, peer=peer, lock=True)
    verify_agreement(row.policy, signature, key)
    if Role(role) is Role.PROVIDER:
        row.provider_signature = signature
    else:
        row.consumer_signature = signature
    session.flush()
    return row


def verify_signatures(row: ContractAgreementRow, provider_key: Ed25519PublicKey | bytes,
                      consumer_key: Ed25519PublicKey | bytes) -> None:
    """Raise :class:`SignatureError` unless both parties' signatures are present and verify."""
    from dataspace.errors import SignatureError

    for name, sig, key in (("provider", row.provider_signature, provider_key),
                           ("consumer", row.consumer_signature, consumer_key)):
        if not sig:
            raise SignatureError(f"agreement {row.id!r} lacks the {name}'s signature")
        verify_agreement(row.policy, sig, key)


# --- transfers ---------------------------------------------------------------------------------


def create_transfer(
    session: Session,
    *,
    role: Role | str,
    peer: str,
    agreement_id: str,
    format: str,
    consumer_pid: str | None = None,
    provider_pid: str | None = None,
    callback_address: str | None = None,
    data_address: DataAddress | Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> TransferProcessRow:
    """Record a transfer requested by the consumer (state REQUESTED). The agreement must exist,
    be with ``peer`` (else NotFound) and its negotiation FINALIZED (else ProtocolError)."""
    me = Role(role)
    state = tp.apply(None, tp.REQUEST, Role.CONSUMER)
    agreement = get_agreement(session, agreement_id, peer=peer)
    neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
    if neg is None or neg.state != cn.NegotiationState.FINALIZED:
        raise ProtocolError(f"agreement {agreement_id!r} is not finalized",
                            hint="finish the contract negotiation first", path="$.agreementId")
    if me is Role.PROVIDER:
        provider_pid = provider_pid or new_pid()
        own = provider_pid
    else:
        consumer_pid = consumer_pid or new_pid()
        own = consumer_pid
    at = _now(now)
    row = TransferProcessRow(
        id=own, role=me.value, consumer_pid=consumer_pid, provider_pid=provider_pid, peer=peer,
        agreement_id=agreement_id, state=state.value, format=format,
        data_address=_address_json(data_address), callback_address=callback_address,
        created_at=at, updated_at=at,
    )
    session.add(row)
    session.flush()
    return row


def _address_json(address: DataAddress | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if address is None:
        return None
    if isinstance(address, DataAddress):
        return address.to_json()
    return DataAddress.from_json(address, "$.dataAddress").to_json()  # type: ignore[no-any-return]


def get_transfer(session: Session, pid: str, *, peer: str | None,
                 lock: bool = False) -> TransferProcessRow:
    """The transfer whose pid on this node is ``pid``; NotFound if unknown or another peer's."""
    return _load(session, TransferProcessRow, "transfer process", pid, peer, lock=lock)


def advance_transfer(
    session: Session,
    pid: str,
    message_type: str,
    *,
    sender: Role | str,
    peer: str | None,
    consumer_pid: str | None = None,
    provider_pid: str | None = None,
    data_address: DataAddress | Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> TransferProcessRow:
    """Apply one message to a transfer under a row lock and return the updated row."""
    row = get_transfer(session, pid, peer=peer, lock=True)
    new = tp.apply(row.state, message_type, sender)
    _match_pids(row, consumer_pid, provider_pid)
    if data_address is not None:
        row.data_address = _address_json(data_address)
    row.state = new.value
    row.updated_at = _now(now)
    session.flush()
    return row
