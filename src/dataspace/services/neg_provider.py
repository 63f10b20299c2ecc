"""Contract negotiation, the provider side: take a consumer's request, agree (sign and send the
agreement) automatically or when a user approves, reject, and finalize once the consumer's
countersignature verifies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from dataspace.contracts import (
    ContractAgreementMessage,
    ContractNegotiationEventMessage,
    IllegalTransition,
    ProtocolError,
    build,
    parse,
    sign_agreement,
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
    PolicyType,
)
from dataspace.services import offers
from dataspace.services.catalog import DSP_PATH, Transport, deliver
from dataspace.services.dsp_process import check_new_process
from dataspace.services.neg_common import (
    PEER_ACTOR,
    OfferUnavailable,
    Reply,
    _ack,
    _agreement_facts,
    _agreement_row,
    _already_signed,
    _guard,
    _log_agreed,
    _log_verified,
    _now,
    _path_pid,
    _peer_path,
    _private_key,
    _send_or_fail,
    _signature_checked,
    _signature_of,
    _with_signature,
    logger,
    lookup_member,
    terminate,
)
from dataspace.services.neg_terms import provisional_decision, split_purpose
from dataspace.services.neg_views import show_contract
from dataspace.services.node import Node
from dataspace.services.reasons import checked_reason
from dataspace.store.models_contracts import (
    ContractNegotiationRow,
    OfferRow,
)

# --- provider: the initial request --------------------------------------------------------------


def handle_request(
    node: Node,
    peer: Member,
    doc: Any,
    *,
    transport: Transport | None = None,
    now: datetime | None = None,
) -> Reply:
    """POST /negotiations/request: a consumer's initial ContractRequestMessage."""
    return _guard(
        node,
        peer.name,
        "ContractRequestMessage",
        None,
        lambda: _request(node, peer, doc, transport, now or _now()),
    )


def _request(
    node: Node, peer: Member, doc: Any, transport: Transport | None, now: datetime
) -> Reply:
    msg = parse(doc, "ContractRequestMessage")
    if msg.provider_pid is not None:
        raise ProtocolError(
            "an initial ContractRequestMessage has no providerPid",
            hint=f"POST {DSP_PATH}/negotiations/{{providerPid}}/request instead",
            path="$.providerPid",
        )
    assert msg.callback_address is not None  # the schema: callbackAddress or providerPid
    check_new_process(peer, msg.callback_address, msg.consumer_pid)
    offer_id = msg.offer.uid
    with node.store.write() as session:
        log.serialize_writers(session)  # two copies of one request at once: one process
        existing = cs.find_negotiation(session, peer=peer.name, consumer_pid=msg.consumer_pid)
        if existing is not None:
            if policy_from_wire(existing.offer) != msg.offer:
                raise IllegalTransition(
                    f"negotiation {msg.consumer_pid!r} already exists", path="$.consumerPid"
                )
            return Reply(201, _ack(existing))  # a retried request: same answer
        row_offer = session.get(OfferRow, offer_id) if offer_id else None
        if row_offer is None or row_offer.withdrawn_at is not None:
            raise OfferUnavailable(
                f"offer {offer_id!r} is unknown or withdrawn",
                hint="request the catalog again",
                path="$.offer['@id']",
            )
        stored = offers.offer_policy(row_offer)
        if msg.offer.target != row_offer.dataset_id:
            raise OfferUnavailable(
                f"offer {offer_id!r} does not target {msg.offer.target!r}", path="$.offer.target"
            )
        purpose = split_purpose(msg.offer, stored)
        decision = provisional_decision(
            stored,
            consumer=peer.name,
            groups=peer.roles,
            purpose=purpose,
            target=row_offer.dataset_id,
            now=now,
        )
        row = cs.create_negotiation(
            session,
            role=Role.PROVIDER,
            peer=peer.name,
            message_type=cn.REQUEST,
            sender=Role.CONSUMER,
            offer=msg.offer,
            consumer_pid=msg.consumer_pid,
            callback_address=msg.callback_address,
            now=now,
        )
        row.offer_id, row.purpose = offer_id, purpose
        actor = PEER_ACTOR.format(peer.name)
        log.append(
            session,
            actor=actor,
            action="negotiation.requested",
            payload={
                "pid": row.id,
                "role": "provider",
                "peer": peer.name,
                "consumer_pid": msg.consumer_pid,
                "offer_id": offer_id,
                "dataset": row_offer.dataset_id,
                "purpose": purpose,
                "auto_approve": row_offer.auto_approve,
                "decision": offers.ledger_safe(decision.to_dict()),
            },
        )
        if not decision.allowed:
            log.append(
                session,
                actor=actor,
                action="negotiation.denied",
                payload={
                    "pid": row.id,
                    "peer": peer.name,
                    "offer_id": offer_id,
                    "purpose": purpose,
                    "reasons": [r.message for r in decision.failures] or ["no permission grants"],
                },
            )
        ack = _ack(row)
        pid, auto = row.id, row_offer.auto_approve
    reply = Reply(201, ack)
    if not decision.allowed:
        reasons = [r.message for r in decision.failures] or ["no permission grants the request"]
        reply.after.append(
            lambda: terminate(
                node,
                pid,
                code="policy_denied",
                reasons=reasons,
                actor=f"node:{node.name}",
                transport=transport,
            )
        )
    elif auto:
        reply.after.append(lambda: _agree_quietly(node, pid, transport))
    return reply


# --- provider: agree, finalize ------------------------------------------------------------------


def _agree_quietly(node: Node, pid: str, transport: Transport | None) -> None:
    try:
        agree(node, pid, actor=f"node:{node.name}", transport=transport)
    except DataspaceError as exc:  # logged in the ledger by agree/terminate
        logger.warning("negotiation %s: %s", pid, exc)


def build_agreement(node: Node, row: ContractNegotiationRow, now: datetime) -> Policy:
    """The ODRL Agreement for a requested offer: provider assigner, consumer assignee, the
    dataset as target, the offer's rules with the consumer's purpose."""
    requested = policy_from_wire(row.offer)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Policy(
        uid=cs.new_pid(),
        type=PolicyType.AGREEMENT,
        assigner=node.name,
        assignee=row.peer,
        target=requested.target,
        permissions=requested.permissions,
        prohibitions=requested.prohibitions,
        obligations=requested.obligations,
        extras=(("timestamp", stamp),),
    )


def _require_provider(row: Any, pid: str, *, hint: str) -> None:
    if row.role != Role.PROVIDER.value:
        raise UsageError(f"negotiation {pid!r} is one this node requested as consumer", hint=hint)


def agree(
    node: Node,
    pid: str,
    *,
    actor: str,
    transport: Transport | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Provider: sign the agreement for a REQUESTED negotiation and send it to the consumer.

    Re-checks that the offer is still published and the policy still allows the request;
    otherwise the negotiation is terminated with the reasons instead. The check, the signature
    and the move to AGREED are one transaction holding the offer's row: an offer withdrawn
    meanwhile is seen, not agreed under.
    """
    at = now or _now()
    with node.store.write() as session:
        row = cs.get_negotiation(session, pid, peer=None, lock=True)
        _require_provider(row, pid, hint="only the provider approves")
        cn.apply(row.state, cn.AGREEMENT, Role.PROVIDER)  # IllegalTransition unless REQUESTED
        problem = _still_agreeable(node, session, row, at)
        if problem is None:
            agreement = build_agreement(node, row, at)
            signature = sign_agreement(agreement, _private_key(node))
            row = cs.advance_negotiation(session, pid, cn.AGREEMENT, sender=Role.PROVIDER,
                                         peer=None, agreement=agreement, now=at)
            ag = cs.record_agreement(
                session, pid, peer=None, provider_signature=signature, signed_at=at
            )
            ag.offer_id, ag.purpose = row.offer_id, row.purpose
            _log_agreed(
                session,
                pid,
                row,
                ag,
                role=Role.PROVIDER,
                provider=node.name,
                signature=signature,
                actor=actor,
            )
            message = ContractAgreementMessage(
                provider_pid=pid, consumer_pid=row.consumer_pid or "", agreement=agreement
            )
            path = _peer_path(node, row, "agreement")
            peer = row.peer
    if problem is not None:
        terminate(
            node, pid, code="offer_unavailable", reasons=problem, actor=actor, transport=transport
        )
        return show_contract(node, pid)
    _send_or_fail(node, pid, peer, path, _with_signature(message, signature), actor, transport)
    return show_contract(node, pid)


def _still_agreeable(
    node: Node, session: Session, row: ContractNegotiationRow, now: datetime
) -> list[str] | None:
    # locked: a withdrawal waits for this agreement, or this agreement sees it
    offer = session.get(OfferRow, row.offer_id, with_for_update=True) if row.offer_id else None
    if offer is None or offer.withdrawn_at is not None:
        return [f"offer {row.offer_id!r} has been withdrawn"]
    try:
        member = lookup_member(node, row.peer)
        groups: tuple[str, ...] = member.roles
    except DataspaceError:
        return [f"{row.peer!r} is no longer a member of the space"]
    decision = provisional_decision(
        offers.offer_policy(offer),
        consumer=row.peer,
        groups=groups,
        purpose=row.purpose or "",
        target=offer.dataset_id,
        now=now,
    )
    if not decision.allowed:
        return [r.message for r in decision.failures] or ["no permission grants the request"]
    return None


def approve(
    node: Node, pid: str, *, actor: str, transport: Transport | None = None
) -> dict[str, Any]:
    """Provider user: agree to a negotiation waiting in REQUESTED (`contract approve`). The
    approval is entered in the ledger only once it can take effect (this node's to approve,
    still REQUESTED): a refused one is not an approval."""
    with node.store.write() as session:
        row = cs.get_negotiation(session, pid, peer=None)
        _require_provider(row, pid, hint="only the provider approves")
        _user_may(row, cn.AGREEMENT, "approved")  # only a request still REQUESTED
        log.append(
            session,
            actor=actor,
            action="negotiation.approved",
            payload={"pid": pid, "peer": row.peer, "offer_id": row.offer_id},
        )
    return agree(node, pid, actor=actor, transport=transport)


def _user_may(row: Any, message: str, done: str) -> None:
    """A user's action the negotiation's state no longer takes is a :class:`Conflict` (409):
    the request was right, the state moved on (a peer's message to the same effect stays the
    protocol's 400 ``illegal_transition``)."""
    try:
        cn.apply(row.state, message, Role.PROVIDER)
    except IllegalTransition:
        raise Conflict(f"negotiation {row.id} is {row.state}: it can no longer be {done}",
                       hint="`dataspace contract show ID` shows where it stands",
                       state=row.state) from None


def reject(
    node: Node, pid: str, *, reason: str, actor: str, transport: Transport | None = None
) -> dict[str, Any]:
    """Provider user: refuse a negotiation (`contract reject --reason`); one that has ended
    (FINALIZED, TERMINATED) cannot be rejected any more (Conflict, 409)."""
    reason = checked_reason(reason, ending="rejecting a request")
    with node.store.read() as session:
        row = cs.get_negotiation(session, pid, peer=None)
        _require_provider(row, pid, hint="a consumer withdraws a request: `contract withdraw`")
        _user_may(row, cn.TERMINATION, "rejected")
    terminate(node, pid, code="rejected", reasons=[reason], actor=actor, transport=transport)
    return show_contract(node, pid)


def _finalize(node: Node, pid: str, transport: Transport | None) -> None:
    actor = f"node:{node.name}"
    with node.store.write() as session:
        row = cs.advance_negotiation(
            session, pid, cn.FINALIZED_EVENT, sender=Role.PROVIDER, peer=None
        )
        ag = _agreement_row(session, row)
        log.append(
            session,
            actor=actor,
            action="negotiation.finalized",
            payload={
                **_agreement_facts(pid, row, ag, Role.PROVIDER),
                "provider_signature": ag.provider_signature,
                "consumer_signature": ag.consumer_signature,
            },
        )
        message = ContractNegotiationEventMessage(
            provider_pid=pid, consumer_pid=row.consumer_pid or "", event_type="FINALIZED"
        )
        path, peer = _peer_path(node, row, "events"), row.peer
    try:
        status, _ = deliver(node, peer, "POST", path, build(message), transport)
        if status >= 300:
            logger.warning("negotiation %s: %s refused FINALIZED (HTTP %s)", pid, peer, status)
    except DataspaceError as exc:
        # The agreement is signed by both; the consumer can read the state with GET.
        logger.warning("negotiation %s: FINALIZED not delivered: %s", pid, exc)


# --- provider endpoints after the request -------------------------------------------------------


def handle_verification(
    node: Node, peer: Member, pid: str, doc: Any, *, transport: Transport | None = None
) -> Reply:
    """POST /negotiations/{providerPid}/agreement/verification (carries the consumer's
    signature): verify it, store it, then send FINALIZED."""

    def run() -> Reply:
        msg = parse(doc, "ContractAgreementVerificationMessage")
        _path_pid(msg.provider_pid, pid, "$.providerPid")
        signature = _signature_of(doc)
        with node.store.write() as session:
            row = cs.get_negotiation(session, pid, peer=peer.name, lock=True, own=Role.PROVIDER)
            if msg.consumer_pid == row.consumer_pid and _already_signed(
                session, row, Role.CONSUMER, signature
            ):
                return Reply(200, None)  # a retried delivery: its FINALIZED is on its way
            row = cs.advance_negotiation(
                session,
                pid,
                cn.VERIFICATION,
                sender=Role.CONSUMER,
                peer=peer.name,
                own=Role.PROVIDER,
                consumer_pid=msg.consumer_pid,
                provider_pid=msg.provider_pid,
            )
            ag = _agreement_row(session, row)
            with _signature_checked(Role.CONSUMER):
                cs.add_signature(
                    session, ag.id, Role.CONSUMER, signature, peer.public_key, peer=peer.name
                )
            _log_verified(
                session,
                pid,
                ag.id,
                peer=peer.name,
                consumer=peer.name,
                signature=signature,
                actor=PEER_ACTOR.format(peer.name),
            )
        return Reply(200, None, [lambda: _finalize(node, pid, transport)])

    return _guard(node, peer.name, "ContractAgreementVerificationMessage", pid, run)
