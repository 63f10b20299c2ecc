"""Contract negotiation, the messages either side answers the same way: GET of a process,
events, termination, and the offers and counter-requests this node refuses."""

from __future__ import annotations

from typing import Any

from dataspace.contracts import negotiation as cn
from dataspace.contracts import (
    parse,
)
from dataspace.contracts import store as cs
from dataspace.contracts.roles import Role
from dataspace.identity.membership import Member
from dataspace.ledger import log
from dataspace.services.neg_common import (
    PEER_ACTOR,
    NotSupported,
    Reply,
    _ack,
    _finalized_facts,
    _guard,
    _path_pid,
)
from dataspace.services.node import Node


def handle_get(node: Node, peer: Member, pid: str) -> Reply:
    """GET /negotiations/{providerPid}: the ContractNegotiation (ACK) of one process."""

    def run() -> Reply:
        with node.store.read() as session:
            return Reply(200, _ack(cs.get_negotiation(session, pid, peer=peer.name)))

    return _guard(node, peer.name, "GET ContractNegotiation", pid, run)


def handle_message(
    node: Node, peer: Member, pid: str, doc: Any, expected: str, *, own_role: Role | None = None
) -> Reply:
    """Any other negotiation message for process ``pid`` (events, termination, counter
    requests / offers): validate, move the state machine, log. ``own_role`` is this node's
    side (None: the process's — provider and consumer paths coincide for events and
    termination); the sender is the other one."""

    def run() -> Reply:
        msg = parse(doc, expected)
        nonlocal own_role
        if own_role is None:
            with node.store.read() as session:
                own_role = Role(cs.get_negotiation(session, pid, peer=peer.name).role)
        sender = own_role.peer
        mine = msg.provider_pid if own_role is Role.PROVIDER else msg.consumer_pid
        _path_pid(mine, pid, "$.providerPid" if own_role is Role.PROVIDER else "$.consumerPid")
        kind = cn.message_type(msg)
        with node.store.write() as session:
            row = cs.get_negotiation(session, pid, peer=peer.name, lock=True)
            if kind in (cn.OFFER, cn.REQUEST):
                cn.apply(row.state, kind, sender)  # illegal transitions first
                what = "offers" if kind == cn.OFFER else "requests"
                raise NotSupported(
                    f"this node does not negotiate counter-{what}",
                    hint="terminate and request another offer",
                )
            row = cs.advance_negotiation(
                session,
                pid,
                kind,
                sender=sender,
                peer=peer.name,
                consumer_pid=msg.consumer_pid,
                provider_pid=msg.provider_pid,
            )
            payload: dict[str, Any] = {
                "pid": pid,
                "role": own_role.value,
                "peer": peer.name,
                "offer_id": row.offer_id,
                "purpose": row.purpose,
            }
            if kind == cn.TERMINATION:
                payload.update(by=peer.name, code=msg.code, reason=list(msg.reason or ()))
                action = "negotiation.terminated"
            elif kind == cn.FINALIZED_EVENT:
                payload.update(_finalized_facts(session, node, row, peer.public_key))
                action = "negotiation.finalized"
            else:
                action = "negotiation." + row.state.lower()
            log.append(session, actor=PEER_ACTOR.format(peer.name), action=action, payload=payload)
        return Reply(200)

    return _guard(node, peer.name, expected, pid, run)


def handle_offer(node: Node, peer: Member, doc: Any, pid: str | None = None) -> Reply:
    """POST /negotiations/offers and {callback}/negotiations/{consumerPid}/offers: validated,
    then refused — this node does not take provider-initiated offers or counter-offers."""
    if pid is not None:
        return handle_message(node, peer, pid, doc, "ContractOfferMessage", own_role=Role.CONSUMER)

    def run() -> Reply:
        parse(doc, "ContractOfferMessage")
        raise NotSupported(
            "this node does not take provider-initiated offers",
            hint="publish the offer in your catalog; the consumer requests it",
        )

    return _guard(node, peer.name, "ContractOfferMessage", None, run)
