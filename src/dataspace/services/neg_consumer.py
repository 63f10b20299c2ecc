"""Contract negotiation, the consumer side: request a contract under a peer's offer, wait for
it, and take the provider's signed agreement (countersign, then send the verification)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dataspace.contracts import (
    ContractAgreementVerificationMessage,
    ContractRequestMessage,
    ProtocolError,
    build,
    parse,
    sign_agreement,
    verify_agreement,
)
from dataspace.contracts import negotiation as cn
from dataspace.contracts import store as cs
from dataspace.contracts.messages import policy_from_wire
from dataspace.contracts.roles import Role
from dataspace.errors import Conflict, DataspaceError, UsageError
from dataspace.identity.membership import Member
from dataspace.ledger import log
from dataspace.policy import (
    Policy,
)
from dataspace.policy.vocabulary import PURPOSES
from dataspace.services import catalog
from dataspace.services.catalog import DSP_PATH, Transport, deliver
from dataspace.services.dsp_process import take_provider_pid, wait_until_final
from dataspace.services.neg_common import (
    FINAL,
    PEER_ACTOR,
    Reply,
    _already_signed,
    _finalized_facts,
    _guard,
    _log_agreed,
    _log_verified,
    _path_pid,
    _peer_path,
    _private_key,
    _send_or_fail,
    _signature_checked,
    _signature_of,
    _terminate_local,
    _with_signature,
    callback_address,
    logger,
    lookup_member,
    terminate,
)
from dataspace.services.neg_terms import with_purpose
from dataspace.services.neg_views import show_contract
from dataspace.services.node import Node
from dataspace.services.reasons import checked_reason
from dataspace.store.models_contracts import (
    ContractNegotiationRow,
)


def request_contract(
    node: Node,
    peer: str,
    *,
    offer_id: str,
    purpose: str,
    actor: str,
    transport: Transport | None = None,
) -> dict[str, Any]:
    """Ask ``peer`` for a contract under its offer ``offer_id`` for ``purpose``.

    Fetches the offer from the peer's catalog, records the negotiation (REQUESTED,
    ``negotiation.requested``), sends the ContractRequestMessage and returns the negotiation.
    A refusal by the provider terminates the negotiation locally with the provider's reason.
    """
    if purpose not in PURPOSES:
        raise UsageError(
            f"unknown purpose {purpose!r}",
            hint="see docs/policy.md for the purpose tree (e.g. credit-risk)",
        )
    if peer == node.name:  # its own catalog serves no one but others: "no such offer" misled
        raise UsageError(f"{node.name} cannot contract with itself",
                         hint="request from the member whose catalog lists the offer "
                              "(`dataspace catalog PEER`)")
    cat = catalog.fetch_catalog(node, peer, transport=transport)
    dataset_id, offer_doc = catalog.find_offer(cat, offer_id)
    offer = dataclasses.replace(policy_from_wire(offer_doc), target=dataset_id)
    requested = with_purpose(offer, purpose)
    consumer_pid = cs.new_pid()
    message = ContractRequestMessage(
        consumer_pid=consumer_pid, offer=requested, callback_address=callback_address(node)
    )
    doc = build(message)
    with node.store.write() as session:
        row = cs.create_negotiation(
            session,
            role=Role.CONSUMER,
            peer=peer,
            message_type=cn.REQUEST,
            sender=Role.CONSUMER,
            offer=requested,
            consumer_pid=consumer_pid,
        )
        row.offer_id, row.purpose = offer_id, purpose
        log.append(
            session,
            actor=actor,
            action="negotiation.requested",
            payload={
                "pid": consumer_pid,
                "role": "consumer",
                "peer": peer,
                "offer_id": offer_id,
                "dataset": dataset_id,
                "purpose": purpose,
            },
        )
    try:
        status, data = deliver(
            node, peer, "POST", f"{DSP_PATH}/negotiations/request", doc, transport
        )
    except DataspaceError as exc:
        _terminate_local(node, consumer_pid, code=exc.code, reasons=[exc.message], actor=actor)
        raise
    if status != 201 or not isinstance(data, Mapping):
        reasons = list(data.get("reason", [])) if isinstance(data, Mapping) else []
        code = str(data.get("code")) if isinstance(data, Mapping) else "refused"
        _terminate_local(
            node,
            consumer_pid,
            code=code,
            reasons=reasons or [f"the provider answered HTTP {status}"],
            actor=actor,
        )
        return show_contract(node, consumer_pid)
    ack = parse(data, "ContractNegotiation")
    with node.store.write() as session:
        row = cs.get_negotiation(session, consumer_pid, peer=None, lock=True)
        take_provider_pid(row, ack, consumer_pid)
    return show_contract(node, consumer_pid)


def catch_up(node: Node, pid: str, *, transport: Transport | None = None) -> bool:
    """Consumer: a negotiation VERIFIED here whose FINALIZED event never came (the provider
    could not deliver it, and does not retry): ask the provider (one signed GET); if it says
    FINALIZED, move here as the event would have -- both signatures checked again,
    ``negotiation.finalized`` logged. Best effort: True if it moved. The answer is not signed,
    but both signatures are already on the agreement; FINALIZED only records that the
    provider confirmed it, and the provider decides every use by its own state."""
    verified = cn.NegotiationState.VERIFIED.value
    with node.store.read() as session:
        row = cs.get_negotiation(session, pid, peer=None)
        if row.role != Role.CONSUMER.value or row.state != verified or not row.provider_pid:
            return False
        peer, path = row.peer, f"{DSP_PATH}/negotiations/{row.provider_pid}"
    try:
        status, data = deliver(node, peer, "GET", path, None, transport, attempts=1)
        ack = parse(data, "ContractNegotiation") if status == 200 else None
    except DataspaceError as exc:
        logger.info("negotiation %s: could not ask %s for its state: %s", pid, peer, exc)
        return False
    if ack is None or ack.state != cn.NegotiationState.FINALIZED.value or ack.consumer_pid != pid:
        return False
    member = lookup_member(node, peer)
    with node.store.write() as session:
        row = cs.get_negotiation(session, pid, peer=peer, lock=True)
        if row.state != verified:
            return False
        row = cs.advance_negotiation(
            session, pid, cn.FINALIZED_EVENT, sender=Role.PROVIDER, peer=peer
        )
        log.append(
            session,
            actor=f"node:{node.name}",
            action="negotiation.finalized",
            payload={
                "pid": pid,
                "role": Role.CONSUMER.value,
                "peer": peer,
                "offer_id": row.offer_id,
                "purpose": row.purpose,
                **_finalized_facts(session, node, row, member.public_key),
                "learnt_by": "asking the provider",
            },
        )
    return True


#: States in which a consumer may still withdraw its request: it has signed nothing yet.
WITHDRAWABLE = (
    cn.NegotiationState.REQUESTED.value,
    cn.NegotiationState.OFFERED.value,
    cn.NegotiationState.ACCEPTED.value,
)


def withdraw(
    node: Node, pid: str, *, reason: str, actor: str, transport: Transport | None = None
) -> dict[str, Any]:
    """Consumer user: withdraw a request before the provider agrees (`contract withdraw`); the
    provider receives the reason, and an agreement it signs later is refused. Once this node
    has countersigned (VERIFIED, FINALIZED) the contract stands: there is nothing to withdraw."""
    reason = checked_reason(reason, ending="withdrawing a request")
    with node.store.read() as session:
        row = cs.get_negotiation(session, pid, peer=None)
        if row.role != Role.CONSUMER.value:
            raise UsageError(
                f"negotiation {pid!r} is one this node answers as provider",
                hint="a provider refuses a request with `contract reject`",
            )
        if row.state not in WITHDRAWABLE:  # its state forbids it now: a conflict, not a typo
            raise Conflict(
                f"negotiation {pid!r} is {row.state}: only a request not yet agreed "
                "(REQUESTED, OFFERED, ACCEPTED) can be withdrawn",
                hint="an agreement both signed ends at its expiry; ask the provider",
            )
    terminate(node, pid, code="withdrawn", reasons=[reason], actor=actor, transport=transport,
              only_in=WITHDRAWABLE)  # fmt: skip
    view = show_contract(node, pid)
    if view["state"] != cn.NegotiationState.TERMINATED.value:
        raise Conflict(
            f"negotiation {pid!r} became {view['state']} before it could be withdrawn",
            hint="the provider agreed meanwhile; the contract stands",
        )
    return view


def wait(node: Node, pid: str, seconds: float, *, poll: float = 0.1) -> dict[str, Any]:
    """Wait until the negotiation is FINALIZED or TERMINATED (or ``seconds`` pass)."""
    return wait_until_final(lambda: show_contract(node, pid), FINAL, seconds, poll)


# --- consumer endpoints -------------------------------------------------------------------------


def handle_agreement(
    node: Node, peer: Member, pid: str, doc: Any, *, transport: Transport | None = None
) -> Reply:
    """POST {callback}/negotiations/{consumerPid}/agreement: check the agreement is what was
    asked for and the provider's signature verifies, countersign, then send the verification."""

    def run() -> Reply:
        msg = parse(doc, "ContractAgreementMessage")
        _path_pid(msg.consumer_pid, pid, "$.consumerPid")
        signature = _signature_of(doc)
        agreement: Policy = msg.agreement
        with node.store.write() as session:
            row = cs.get_negotiation(session, pid, peer=peer.name, lock=True, own=Role.CONSUMER)
            if msg.provider_pid == row.provider_pid and _already_signed(
                session, row, Role.PROVIDER, signature
            ):
                return Reply(200, None)  # a retried delivery: verified already
            cn.apply(row.state, cn.AGREEMENT, Role.PROVIDER)
            _check_agreement(node, row, agreement, peer)
            with _signature_checked(Role.PROVIDER):
                verify_agreement(agreement, signature, peer.public_key)
            own = sign_agreement(agreement, _private_key(node))
            row = cs.advance_negotiation(
                session,
                pid,
                cn.AGREEMENT,
                sender=Role.PROVIDER,
                peer=peer.name,
                provider_pid=msg.provider_pid,
                agreement=agreement,
            )
            ag = cs.record_agreement(
                session, pid, peer=peer.name, provider_signature=signature, consumer_signature=own
            )
            ag.offer_id, ag.purpose = row.offer_id, row.purpose
            _log_agreed(
                session,
                pid,
                row,
                ag,
                role=Role.CONSUMER,
                provider=peer.name,
                signature=signature,
                actor=PEER_ACTOR.format(peer.name),
            )
            # VERIFIED before sending, so the provider's FINALIZED cannot overtake us
            cs.advance_negotiation(
                session, pid, cn.VERIFICATION, sender=Role.CONSUMER, peer=peer.name
            )
            _log_verified(
                session,
                pid,
                ag.id,
                peer=peer.name,
                consumer=node.name,
                signature=own,
                actor=f"node:{node.name}",
            )
            message = ContractAgreementVerificationMessage(
                provider_pid=msg.provider_pid, consumer_pid=pid
            )
            path = _peer_path(node, row, "agreement/verification")
        body = _with_signature(message, own)
        return Reply(
            200,
            None,
            [
                lambda: _send_or_fail(
                    node, pid, peer.name, path, body, f"node:{node.name}", transport
                )
            ],
        )

    return _guard(node, peer.name, "ContractAgreementMessage", pid, run)


def _check_agreement(
    node: Node, row: ContractNegotiationRow, agreement: Policy, peer: Member
) -> None:
    requested = policy_from_wire(row.offer)
    problems = []
    if agreement.assignee != node.name:
        problems.append(f"assignee is {agreement.assignee!r}, not {node.name!r}")
    if agreement.assigner != peer.name:
        problems.append(f"assigner is {agreement.assigner!r}, not {peer.name!r}")
    if agreement.target != requested.target:
        problems.append(f"target is {agreement.target!r}, not {requested.target!r}")
    if (agreement.permissions, agreement.prohibitions, agreement.obligations) != (
        requested.permissions,
        requested.prohibitions,
        requested.obligations,
    ):
        problems.append("its rules differ from the requested offer")
    if problems:
        raise ProtocolError(
            "the agreement is not what was requested: " + "; ".join(problems), path="$.agreement"
        )
