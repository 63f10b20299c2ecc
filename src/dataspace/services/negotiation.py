"""Contract negotiation (DSP 2025-1) between two nodes: both sides, as service functions.

The router (``node/routers/dsp.py``) authenticates the peer and calls one ``handle_*``
function per DSP endpoint; each returns a :class:`Reply` (status, body) plus the follow-up
messages to send *after* the answer (FastAPI background tasks; tests call them directly).
Local users call :func:`request_contract`, :func:`approve`, :func:`reject`, :func:`list_contracts`
and :func:`show_contract`.

How purpose and signatures travel (see docs/contracts.md):

* **purpose** — the consumer requests the catalog offer with one extra constraint in every
  permission: ``{"leftOperand": "purpose", "operator": "eq", "rightOperand": P}``. The provider
  accepts the request only if removing that constraint gives back its stored offer exactly.
* **signatures** — the ContractAgreementMessage carries the provider's Ed25519 signature over
  the agreement, the ContractAgreementVerificationMessage the consumer's, both in the extension
  member :data:`SIGNATURE` (an absolute IRI, so the message stays valid compact JSON-LD).

Every state change and every refused message is a ledger entry, in the same transaction as the
change. A node moves its own state *before* it sends the message that causes it (so the
peer's answer can never overtake it); if the message cannot be delivered within the retry
budget, the negotiation is terminated locally and a termination message is attempted.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.contracts import (
    ContractAgreementMessage,
    ContractAgreementVerificationMessage,
    ContractNegotiation,
    ContractNegotiationEventMessage,
    ContractNegotiationTerminationMessage,
    ContractRequestMessage,
    IllegalTransition,
    ProtocolError,
    build,
    parse,
    sign_agreement,
    verify_agreement,
)
from dataspace.contracts import negotiation as cn
from dataspace.contracts import store as cs
from dataspace.contracts.messages import policy_from_wire, policy_to_wire
from dataspace.contracts.roles import Role
from dataspace.contracts.signing import canonical_agreement
from dataspace.errors import DataspaceError, NotFound, SignatureError, UsageError
from dataspace.identity.membership import Member, NotAMember
from dataspace.ledger import log
from dataspace.policy import (
    NEGOTIATION_DEFERRED,
    Constraint,
    Decision,
    Operator,
    Policy,
    PolicyType,
    Request,
    Rule,
    evaluate,
)
from dataspace.policy.vocabulary import ACTIONS, PURPOSES, REQUEST_ACTIONS
from dataspace.services import catalog, offers
from dataspace.services.catalog import DSP_PATH, Transport, deliver
from dataspace.services.node import Node
from dataspace.store.models_contracts import (
    ContractAgreementRow,
    ContractNegotiationRow,
    OfferRow,
)

logger = logging.getLogger("dataspace.negotiation")

EXT = "https://w3id.org/dataspace/contracts#"
#: extension member carrying the sender's base64 Ed25519 signature over the agreement
SIGNATURE = EXT + "signature"
FINAL = (cn.NegotiationState.FINALIZED.value, cn.NegotiationState.TERMINATED.value)
PEER_ACTOR = "peer:{}"


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


# --- hooks onto the space (replaced in tests) ---------------------------------------------------


def lookup_member(node: Node, name: str) -> Member:
    """The member ``name`` of this node's space (NotAMember if it is not on the list)."""
    from dataspace.services import space

    member = space.membership(node).by_name(name)
    if member is None:
        raise NotAMember(f"{name!r} is not a member of this node's space",
                         hint="check the name against the membership list")
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


def _purpose_constraint(purpose: str) -> Constraint:
    return Constraint("purpose", Operator.EQ, purpose)


def with_purpose(offer: Policy, purpose: str) -> Policy:
    """The offer as the consumer requests it: ``purpose eq P`` added to every permission."""
    extra = _purpose_constraint(purpose)
    return dataclasses.replace(offer, permissions=tuple(
        dataclasses.replace(r, constraints=(*r.constraints, extra)) for r in offer.permissions))


def split_purpose(requested: Policy, stored: Policy) -> str:
    """The purpose a requested offer adds to the stored one; ProtocolError if it changes
    anything else (the consumer may only narrow the offer by a purpose)."""
    if not requested.permissions:
        raise ProtocolError("the requested offer has no permission", path="$.offer.permission")
    purposes: set[str] = set()
    stripped: list[Rule] = []
    for i, rule in enumerate(requested.permissions):
        last = rule.constraints[-1] if rule.constraints else None
        if not (isinstance(last, Constraint) and last.left == "purpose"
                and last.operator is Operator.EQ and isinstance(last.right, str)):
            raise ProtocolError(
                "each permission of the requested offer must end with the consumer's purpose "
                "constraint (purpose eq P)", path=f"$.offer.permission[{i}].constraint")
        purposes.add(last.right)
        stripped.append(dataclasses.replace(rule, constraints=rule.constraints[:-1]))
    if len(purposes) != 1:
        raise ProtocolError("the requested offer states more than one purpose",
                            path="$.offer.permission")
    purpose = purposes.pop()
    if purpose not in PURPOSES:
        raise ProtocolError(f"unknown purpose {purpose!r}", path="$.offer.permission[0]",
                            hint="see docs/policy.md for the purpose tree")
    base = dataclasses.replace(requested, permissions=tuple(stripped))
    if _terms(base) != _terms(stored):
        raise OfferUnavailable("the requested offer differs from the published offer",
                               hint="request the offer exactly as the catalog lists it",
                               path="$.offer")
    return purpose


def _terms(policy: Policy) -> tuple[Any, ...]:
    return (policy.uid, policy.target, policy.permissions, policy.prohibitions,
            policy.obligations)


def _actions(policy: Policy) -> list[str]:
    found: list[str] = []
    for rule in policy.permissions:
        if rule.action in REQUEST_ACTIONS:
            cands = [rule.action]
        elif rule.action in ACTIONS:
            cands = sorted(a for a in REQUEST_ACTIONS if ACTIONS.is_part_of(a, rule.action))
        else:
            cands = []
        found.extend(a for a in cands if a not in found)
    return found or ["governed-query"]


def provisional_decision(policy: Policy, *, consumer: str, groups: Sequence[str], purpose: str,
                         target: str, now: datetime) -> Decision:
    """Whether the offer can be agreed for this consumer and purpose (execution facts
    deferred). The first action the offer permits that is allowed wins."""
    first: Decision | None = None
    for action in _actions(policy):
        decision = evaluate(policy, Request(action=action, assignee=consumer,
                                            groups=frozenset(groups), purpose=purpose,
                                            target=target, now=now),
                            defer=NEGOTIATION_DEFERRED)
        if decision.allowed:
            return decision
        first = first or decision
    assert first is not None
    return first


def _pid_of(row: ContractNegotiationRow) -> _Pids:
    return _Pids(row.provider_pid, row.consumer_pid)


def _error(status: int, exc: DataspaceError, pids: _Pids | None) -> Reply:
    body = cn.error_body(pids, exc)
    return Reply(status, body)


def _refused(node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError,
             pids: _Pids | None) -> Reply:
    """Log a refused message (a denied attempt) and answer it."""
    status = 404 if isinstance(exc, NotFound) else 400
    with node.store.write() as session:
        log.append(session, actor=PEER_ACTOR.format(peer), action="negotiation.refused",
                   payload={"peer": peer, "message": what, "pid": pid, "status": status,
                            "code": exc.code, "reason": exc.message,
                            "path": exc.details.get("path")})
    return _error(status, exc, pids)


def refuse(node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError) -> Reply:
    """Answer (and log) a message refused before it reached a handler, e.g. malformed JSON."""
    return _refused(node, peer, what, pid, exc, _Pids(None, None))


def _guard(node: Node, peer: str, what: str, pid: str | None,
           fn: Callable[[], Reply]) -> Reply:
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
        raise ProtocolError(f"the message must carry the sender's agreement signature in "
                            f"{SIGNATURE!r}", path=f"$['{SIGNATURE}']")
    return sig


def _with_signature(message: Any, signature: str) -> dict[str, Any]:
    doc = build(message)
    doc[SIGNATURE] = signature
    parse(doc, message.TYPE)  # still schema-valid
    return doc


def _callback_path(member: Member, callback: str) -> str:
    """The path of ``callback`` under the member's base URL; refuses any other host."""
    base = member.url.rstrip("/")
    if callback != base and not callback.startswith(base + "/"):
        raise ProtocolError(f"callbackAddress {callback!r} is not under the member URL {base!r}",
                            hint="a node only calls peers back at their listed address",
                            path="$.callbackAddress")
    return callback[len(base):].rstrip("/")


def _peer_path(node: Node, row: ContractNegotiationRow, suffix: str) -> str:
    """Where to send a message about ``row`` to its peer."""
    if row.role == Role.PROVIDER.value:
        base = _callback_path(lookup_member(node, row.peer), row.callback_address or "")
        return f"{base}/negotiations/{row.consumer_pid}/{suffix}"
    return f"{DSP_PATH}/negotiations/{row.provider_pid}/{suffix}"


def _ack(row: ContractNegotiationRow) -> dict[str, Any]:
    return build(ContractNegotiation(provider_pid=row.provider_pid or "",
                                     consumer_pid=row.consumer_pid or "", state=row.state))


# --- consumer: request --------------------------------------------------------------------------


def request_contract(node: Node, peer: str, *, offer_id: str, purpose: str, actor: str,
                     transport: Transport | None = None) -> dict[str, Any]:
    """Ask ``peer`` for a contract under its offer ``offer_id`` for ``purpose``.

    Fetches the offer from the peer's catalog, records the negotiation (REQUESTED,
    ``negotiation.requested``), sends the ContractRequestMessage and returns the negotiation.
    A refusal by the provider terminates the negotiation locally with the provider's reason.
    """
    if purpose not in PURPOSES:
        raise UsageError(f"unknown purpose {purpose!r}",
                         hint="see docs/policy.md for the purpose tree (e.g. credit-risk)")
    cat = catalog.fetch_catalog(node, peer, transport=transport)
    dataset_id, offer_doc = catalog.find_offer(cat, offer_id)
    offer = dataclasses.replace(policy_from_wire(offer_doc), target=dataset_id)
    requested = with_purpose(offer, purpose)
    consumer_pid = cs.new_pid()
    message = ContractRequestMessage(consumer_pid=consumer_pid, offer=requested,
                                     callback_address=callback_address(node))
    doc = build(message)
    with node.store.write() as session:
        row = cs.create_negotiation(session, role=Role.CONSUMER, peer=peer,
                                    message_type=cn.REQUEST, sender=Role.CONSUMER,
                                    offer=requested, consumer_pid=consumer_pid)
        row.offer_id, row.purpose = offer_id, purpose
        log.append(session, actor=actor, action="negotiation.requested", payload={
            "pid": consumer_pid, "role": "consumer", "peer": peer, "offer_id": offer_id,
            "dataset": dataset_id, "purpose": purpose})
    try:
        status, data = deliver(node, peer, "POST", f"{DSP_PATH}/negotiations/request", doc,
                               transport)
    except DataspaceError as exc:
        _terminate_local(node, consumer_pid, code=exc.code, reasons=[exc.message], actor=actor)
        raise
    if status != 201 or not isinstance(data, Mapping):
        reasons = list(data.get("reason", [])) if isinstance(data, Mapping) else []
        code = str(data.get("code")) if isinstance(data, Mapping) else "refused"
        _terminate_local(node, consumer_pid, code=code,
                         reasons=reasons or [f"the provider answered HTTP {status}"], actor=actor)
        return show_contract(node, consumer_pid)
    ack = parse(data, "ContractNegotiation")
    with node.store.write() as session:
        row = cs.get_negotiation(session, consumer_pid, peer=None, lock=True)
        if ack.consumer_pid != consumer_pid:
            raise ProtocolError("the provider's ACK names another consumerPid",
                                path="$.consumerPid")
        if row.provider_pid is None:
            row.provider_pid = ack.provider_pid
    return show_contract(node, consumer_pid)


def wait(node: Node, pid: str, seconds: float, *, poll: float = 0.1) -> dict[str, Any]:
    """Wait until the negotiation is FINALIZED or TERMINATED (or ``seconds`` pass)."""
    end = time.monotonic() + seconds
    while True:
        view = show_contract(node, pid)
        if view["state"] in FINAL or time.monotonic() >= end:
            return view
        time.sleep(poll)


# --- provider: the initial request --------------------------------------------------------------


def handle_request(node: Node, peer: Member, doc: Any, *,
                   transport: Transport | None = None, now: datetime | None = None) -> Reply:
    """POST /negotiations/request: a consumer's initial ContractRequestMessage."""
    return _guard(node, peer.name, "ContractRequestMessage", None,
                  lambda: _request(node, peer, doc, transport, now or _now()))


def _request(node: Node, peer: Member, doc: Any, transport: Transport | None,
             now: datetime) -> Reply:
    msg = parse(doc, "ContractRequestMessage")
    if msg.provider_pid is not None:
        raise ProtocolError("an initial ContractRequestMessage has no providerPid",
                            hint=f"POST {DSP_PATH}/negotiations/{{providerPid}}/request instead",
                            path="$.providerPid")
    assert msg.callback_address is not None  # the schema: callbackAddress or providerPid
    _callback_path(peer, msg.callback_address)
    offer_id = msg.offer.uid
    with node.store.write() as session:
        existing = cs.find_negotiation(session, peer=peer.name, consumer_pid=msg.consumer_pid)
        if existing is not None:
            if policy_from_wire(existing.offer) != msg.offer:
                raise IllegalTransition(f"negotiation {msg.consumer_pid!r} already exists",
                                        path="$.consumerPid")
            return Reply(201, _ack(existing))  # a retried request: same answer
        row_offer = session.get(OfferRow, offer_id) if offer_id else None
        if row_offer is None or row_offer.withdrawn_at is not None:
            raise OfferUnavailable(f"offer {offer_id!r} is unknown or withdrawn",
                                   hint="request the catalog again", path="$.offer['@id']")
        stored = offers.offer_policy(row_offer)
        if msg.offer.target != row_offer.dataset_id:
            raise OfferUnavailable(f"offer {offer_id!r} does not target {msg.offer.target!r}",
                                   path="$.offer.target")
        purpose = split_purpose(msg.offer, stored)
        decision = provisional_decision(stored, consumer=peer.name, groups=peer.roles,
                                        purpose=purpose, target=row_offer.dataset_id, now=now)
        row = cs.create_negotiation(session, role=Role.PROVIDER, peer=peer.name,
                                    message_type=cn.REQUEST, sender=Role.CONSUMER,
                                    offer=msg.offer, consumer_pid=msg.consumer_pid,
                                    callback_address=msg.callback_address, now=now)
        row.offer_id, row.purpose = offer_id, purpose
        actor = PEER_ACTOR.format(peer.name)
        log.append(session, actor=actor, action="negotiation.requested", payload={
            "pid": row.id, "role": "provider", "peer": peer.name,
            "consumer_pid": msg.consumer_pid, "offer_id": offer_id,
            "dataset": row_offer.dataset_id, "purpose": purpose,
            "auto_approve": row_offer.auto_approve,
            "decision": offers.ledger_safe(decision.to_dict())})
        if not decision.allowed:
            log.append(session, actor=actor, action="negotiation.denied", payload={
                "pid": row.id, "peer": peer.name, "offer_id": offer_id, "purpose": purpose,
                "reasons": [r.message for r in decision.failures] or ["no permission grants"]})
        ack = _ack(row)
        pid, auto = row.id, row_offer.auto_approve
    reply = Reply(201, ack)
    if not decision.allowed:
        reasons = [r.message for r in decision.failures] or ["no permission grants the request"]
        reply.after.append(lambda: terminate(node, pid, code="policy_denied", reasons=reasons,
                                             actor=f"node:{node.name}", transport=transport))
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
    return Policy(uid=cs.new_pid(), type=PolicyType.AGREEMENT, assigner=node.name,
                  assignee=row.peer, target=requested.target,
                  permissions=requested.permissions, prohibitions=requested.prohibitions,
                  obligations=requested.obligations, extras=(("timestamp", stamp),))


def agree(node: Node, pid: str, *, actor: str, transport: Transport | None = None,
          now: datetime | None = None) -> dict[str, Any]:
    """Provider: sign the agreement for a REQUESTED negotiation and send it to the consumer.

    Re-checks that the offer is still published and the policy still allows the request;
    otherwise the negotiation is terminated with the reasons instead.
    """
    at = now or _now()
    with node.store.write() as session:
        row = cs.get_negotiation(session, pid, peer=None, lock=True)
        if row.role != Role.PROVIDER.value:
            raise UsageError(f"negotiation {pid!r} is one this node requested as consumer",
                             hint="only the provider approves")
        cn.apply(row.state, cn.AGREEMENT, Role.PROVIDER)  # IllegalTransition unless REQUESTED
        problem = _still_agreeable(node, session, row, at)
    if problem is not None:
        terminate(node, pid, code="offer_unavailable", reasons=problem, actor=actor,
                  transport=transport)
        return show_contract(node, pid)
    agreement = build_agreement(node, row, at)
    signature = sign_agreement(agreement, _private_key(node))
    with node.store.write() as session:
        row = cs.advance_negotiation(session, pid, cn.AGREEMENT, sender=Role.PROVIDER,
                                     peer=None, agreement=agreement, now=at)
        ag = cs.record_agreement(session, pid, peer=None, provider_signature=signature,
                                 signed_at=at)
        ag.offer_id, ag.purpose = row.offer_id, row.purpose
        log.append(session, actor=actor, action="negotiation.agreed", payload={
            "pid": pid, "role": "provider", "peer": row.peer, "agreement_id": ag.id,
            "offer_id": row.offer_id, "purpose": row.purpose})
        log.append(session, actor=actor, action="agreement.signed", payload={
            "agreement_id": ag.id, "pid": pid, "signer": node.name, "role": "provider",
            "agreement_sha256": _digest(ag.policy), "signature": signature})
        message = ContractAgreementMessage(provider_pid=pid, consumer_pid=row.consumer_pid or "",
                                           agreement=agreement)
        path = _peer_path(node, row, "agreement")
        peer = row.peer
    _send_or_fail(node, pid, peer, path, _with_signature(message, signature), actor, transport)
    return show_contract(node, pid)


def _still_agreeable(node: Node, session: Session, row: ContractNegotiationRow,
                     now: datetime) -> list[str] | None:
    offer = session.get(OfferRow, row.offer_id) if row.offer_id else None
    if offer is None or offer.withdrawn_at is not None:
        return [f"offer {row.offer_id!r} has been withdrawn"]
    try:
        member = lookup_member(node, row.peer)
        groups: tuple[str, ...] = member.roles
    except DataspaceError:
        return [f"{row.peer!r} is no longer a member of the space"]
    decision = provisional_decision(offers.offer_policy(offer), consumer=row.peer,
                                    groups=groups, purpose=row.purpose or "",
                                    target=offer.dataset_id, now=now)
    if not decision.allowed:
        return [r.message for r in decision.failures] or ["no permission grants the request"]
    return None


def _send_or_fail(node: Node, pid: str, peer: str, path: str, doc: dict[str, Any], actor: str,
                  transport: Transport | None) -> None:
    try:
        status, data = deliver(node, peer, "POST", path, doc, transport)
    except DataspaceError as exc:
        terminate(node, pid, code=exc.code, reasons=[exc.message], actor=actor,
                  transport=transport)
        return
    if status >= 300:
        reasons = [str(r) for r in data.get("reason", [])] if isinstance(data, Mapping) else []
        terminate(node, pid, code="refused_by_peer",
                  reasons=[f"{peer} answered HTTP {status}", *reasons], actor=actor,
                  transport=transport)


def approve(node: Node, pid: str, *, actor: str, transport: Transport | None = None
            ) -> dict[str, Any]:
    """Provider user: agree to a negotiation waiting in REQUESTED (`contract approve`)."""
    with node.store.write() as session:
        row = cs.get_negotiation(session, pid, peer=None)
        log.append(session, actor=actor, action="negotiation.approved",
                   payload={"pid": pid, "peer": row.peer, "offer_id": row.offer_id})
    return agree(node, pid, actor=actor, transport=transport)


def reject(node: Node, pid: str, *, reason: str, actor: str,
           transport: Transport | None = None) -> dict[str, Any]:
    """Provider user: refuse a negotiation (`contract reject --reason`)."""
    with node.store.read() as session:
        row = cs.get_negotiation(session, pid, peer=None)
        if row.role != Role.PROVIDER.value:
            raise UsageError(f"negotiation {pid!r} is one this node requested as consumer",
                             hint="a consumer cancels with `contract terminate`")
    terminate(node, pid, code="rejected", reasons=[reason], actor=actor, transport=transport)
    return show_contract(node, pid)


def _finalize(node: Node, pid: str, transport: Transport | None) -> None:
    actor = f"node:{node.name}"
    with node.store.write() as session:
        row = cs.advance_negotiation(session, pid, cn.FINALIZED_EVENT, sender=Role.PROVIDER,
                                     peer=None)
        ag = _agreement_row(session, row)
        log.append(session, actor=actor, action="negotiation.finalized", payload={
            "pid": pid, "role": "provider", "peer": row.peer, "agreement_id": ag.id,
            "offer_id": row.offer_id, "purpose": row.purpose,
            "provider_signature": ag.provider_signature,
            "consumer_signature": ag.consumer_signature})
        message = ContractNegotiationEventMessage(provider_pid=pid,
                                                  consumer_pid=row.consumer_pid or "",
                                                  event_type="FINALIZED")
        path, peer = _peer_path(node, row, "events"), row.peer
    try:
        status, _ = deliver(node, peer, "POST", path, build(message), transport)
        if status >= 300:
            logger.warning("negotiation %s: %s refused FINALIZED (HTTP %s)", pid, peer, status)
    except DataspaceError as exc:
        # The agreement is signed by both; the consumer can read the state with GET.
        logger.warning("negotiation %s: FINALIZED not delivered: %s", pid, exc)


def _agreement_row(session: Session, row: ContractNegotiationRow) -> ContractAgreementRow:
    ag = session.scalars(select(ContractAgreementRow).where(
        ContractAgreementRow.negotiation_id == row.id)).first()
    if ag is None:
        raise ProtocolError(f"negotiation {row.id!r} has no agreement")
    return ag


# --- provider endpoints after the request -------------------------------------------------------


def handle_verification(node: Node, peer: Member, pid: str, doc: Any, *,
                        transport: Transport | None = None) -> Reply:
    """POST /negotiations/{providerPid}/agreement/verification (carries the consumer's
    signature): verify it, store it, then send FINALIZED."""
    def run() -> Reply:
        msg = parse(doc, "ContractAgreementVerificationMessage")
        _path_pid(msg.provider_pid, pid, "$.providerPid")
        signature = _signature_of(doc)
        with node.store.write() as session:
            row = cs.advance_negotiation(session, pid, cn.VERIFICATION, sender=Role.CONSUMER,
                                         peer=peer.name, consumer_pid=msg.consumer_pid,
                                         provider_pid=msg.provider_pid)
            ag = _agreement_row(session, row)
            try:
                cs.add_signature(session, ag.id, Role.CONSUMER, signature, peer.public_key,
                                 peer=peer.name)
            except SignatureError as exc:
                raise ProtocolError(f"the consumer's agreement signature: {exc.message}",
                                    path=f"$['{SIGNATURE}']") from None
            log.append(session, actor=PEER_ACTOR.format(peer.name),
                       action="agreement.countersigned", payload={
                           "agreement_id": ag.id, "pid": pid, "signer": peer.name,
                           "role": "consumer", "signature": signature})
            log.append(session, actor=PEER_ACTOR.format(peer.name),
                       action="negotiation.verified", payload={"pid": pid, "peer": peer.name,
                                                               "agreement_id": ag.id})
        return Reply(200, None, [lambda: _finalize(node, pid, transport)])

    return _guard(node, peer.name, "ContractAgreementVerificationMessage", pid, run)


def _path_pid(given: str | None, pid: str, path: str) -> None:
    if given != pid:
        raise ProtocolError(f"{path[2:]} {given!r} does not match the process in the URL",
                            path=path)


def handle_get(node: Node, peer: Member, pid: str) -> Reply:
    """GET /negotiations/{providerPid}: the ContractNegotiation (ACK) of one process."""
    def run() -> Reply:
        with node.store.read() as session:
            return Reply(200, _ack(cs.get_negotiation(session, pid, peer=peer.name)))

    return _guard(node, peer.name, "GET ContractNegotiation", pid, run)


def handle_message(node: Node, peer: Member, pid: str, doc: Any, expected: str, *,
                   own_role: Role | None = None) -> Reply:
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
                raise NotSupported(f"this node does not negotiate counter-{what}",
                                   hint="terminate and request another offer")
            row = cs.advance_negotiation(session, pid, kind, sender=sender, peer=peer.name,
                                         consumer_pid=msg.consumer_pid,
                                         provider_pid=msg.provider_pid)
            payload: dict[str, Any] = {"pid": pid, "role": own_role.value, "peer": peer.name,
                                       "offer_id": row.offer_id, "purpose": row.purpose}
            if kind == cn.TERMINATION:
                payload.update(by=peer.name, code=msg.code, reason=list(msg.reason or ()))
                action = "negotiation.terminated"
            elif kind == cn.FINALIZED_EVENT:
                ag = _agreement_row(session, row)
                cs.verify_signatures(ag, peer.public_key, _own_public(node))
                payload.update(agreement_id=ag.id, provider_signature=ag.provider_signature,
                               consumer_signature=ag.consumer_signature)
                action = "negotiation.finalized"
            else:
                action = "negotiation." + row.state.lower()
            log.append(session, actor=PEER_ACTOR.format(peer.name), action=action,
                       payload=payload)
        return Reply(200)

    return _guard(node, peer.name, expected, pid, run)


# --- consumer endpoints -------------------------------------------------------------------------


def handle_agreement(node: Node, peer: Member, pid: str, doc: Any, *,
                     transport: Transport | None = None) -> Reply:
    """POST {callback}/negotiations/{consumerPid}/agreement: check the agreement is what was
    asked for and the provider's signature verifies, countersign, then send the verification."""
    def run() -> Reply:
        msg = parse(doc, "ContractAgreementMessage")
        _path_pid(msg.consumer_pid, pid, "$.consumerPid")
        signature = _signature_of(doc)
        agreement: Policy = msg.agreement
        with node.store.write() as session:
            row = cs.get_negotiation(session, pid, peer=peer.name, lock=True)
            cn.apply(row.state, cn.AGREEMENT, Role.PROVIDER)
            _check_agreement(node, row, agreement, peer)
            try:
                verify_agreement(agreement, signature, peer.public_key)
            except SignatureError as exc:
                raise ProtocolError(f"the provider's agreement signature: {exc.message}",
                                    path=f"$['{SIGNATURE}']") from None
            own = sign_agreement(agreement, _private_key(node))
            row = cs.advance_negotiation(session, pid, cn.AGREEMENT, sender=Role.PROVIDER,
                                         peer=peer.name, provider_pid=msg.provider_pid,
                                         agreement=agreement)
            ag = cs.record_agreement(session, pid, peer=peer.name, provider_signature=signature,
                                     consumer_signature=own)
            ag.offer_id, ag.purpose = row.offer_id, row.purpose
            actor = PEER_ACTOR.format(peer.name)
            log.append(session, actor=actor, action="negotiation.agreed", payload={
                "pid": pid, "role": "consumer", "peer": peer.name, "agreement_id": ag.id,
                "offer_id": row.offer_id, "purpose": row.purpose})
            log.append(session, actor=actor, action="agreement.signed", payload={
                "agreement_id": ag.id, "pid": pid, "signer": peer.name, "role": "provider",
                "agreement_sha256": _digest(ag.policy), "signature": signature})
            log.append(session, actor=f"node:{node.name}", action="agreement.countersigned",
                       payload={"agreement_id": ag.id, "pid": pid, "signer": node.name,
                                "role": "consumer", "signature": own})
            # VERIFIED before sending, so the provider's FINALIZED cannot overtake us
            cs.advance_negotiation(session, pid, cn.VERIFICATION, sender=Role.CONSUMER,
                                   peer=peer.name)
            log.append(session, actor=f"node:{node.name}", action="negotiation.verified",
                       payload={"pid": pid, "peer": peer.name, "agreement_id": ag.id})
            message = ContractAgreementVerificationMessage(provider_pid=msg.provider_pid,
                                                           consumer_pid=pid)
            path = _peer_path(node, row, "agreement/verification")
        body = _with_signature(message, own)
        return Reply(200, None, [lambda: _send_or_fail(node, pid, peer.name, path, body,
                                                       f"node:{node.name}", transport)])

    return _guard(node, peer.name, "ContractAgreementMessage", pid, run)


def _check_agreement(node: Node, row: ContractNegotiationRow, agreement: Policy,
                     peer: Member) -> None:
    requested = policy_from_wire(row.offer)
    problems = []
    if agreement.assignee != node.name:
        problems.append(f"assignee is {agreement.assignee!r}, not {node.name!r}")
    if agreement.assigner != peer.name:
        problems.append(f"assigner is {agreement.assigner!r}, not {peer.name!r}")
    if agreement.target != requested.target:
        problems.append(f"target is {agreement.target!r}, not {requested.target!r}")
    if (agreement.permissions, agreement.prohibitions, agreement.obligations) != (
            requested.permissions, requested.prohibitions, requested.obligations):
        problems.append("its rules differ from the requested offer")
    if problems:
        raise ProtocolError("the agreement is not what was requested: " + "; ".join(problems),
                            path="$.agreement")


def handle_offer(node: Node, peer: Member, doc: Any, pid: str | None = None) -> Reply:
    """POST /negotiations/offers and {callback}/negotiations/{consumerPid}/offers: validated,
    then refused — this node does not take provider-initiated offers or counter-offers."""
    if pid is not None:
        return handle_message(node, peer, pid, doc, "ContractOfferMessage",
                              own_role=Role.CONSUMER)

    def run() -> Reply:
        parse(doc, "ContractOfferMessage")
        raise NotSupported("this node does not take provider-initiated offers",
                           hint="publish the offer in your catalog; the consumer requests it")

    return _guard(node, peer.name, "ContractOfferMessage", None, run)


# --- termination --------------------------------------------------------------------------------


def _terminate_local(node: Node, pid: str, *, code: str, reasons: list[str], actor: str
                     ) -> ContractNegotiationRow | None:
    with node.store.write() as session:
        row = cs.get_negotiation(session, pid, peer=None, lock=True)
        if row.state in FINAL:
            return None
        own = Role(row.role)
        row = cs.advance_negotiation(session, pid, cn.TERMINATION, sender=own, peer=None)
        log.append(session, actor=actor, action="negotiation.terminated", payload={
            "pid": pid, "role": own.value, "peer": row.peer, "by": node.name, "code": code,
            "reason": reasons, "offer_id": row.offer_id, "purpose": row.purpose})
        session.expunge(row)
        return row


def terminate(node: Node, pid: str, *, code: str, reasons: list[str], actor: str,
              transport: Transport | None = None) -> None:
    """Terminate a negotiation here and tell the peer (best effort)."""
    row = _terminate_local(node, pid, code=code, reasons=reasons, actor=actor)
    if row is None:
        return
    if row.provider_pid is None or row.consumer_pid is None:
        return  # the peer never learnt of it
    message = ContractNegotiationTerminationMessage(
        provider_pid=row.provider_pid, consumer_pid=row.consumer_pid, code=code,
        reason=tuple(reasons))
    try:
        path = _peer_path(node, row, "termination")
        status, _ = deliver(node, row.peer, "POST", path, build(message), transport, attempts=3)
        if status >= 300:
            logger.warning("negotiation %s: %s refused the termination (HTTP %s)",
                           pid, row.peer, status)
    except DataspaceError as exc:
        logger.warning("negotiation %s: termination not delivered: %s", pid, exc)


# --- reading ------------------------------------------------------------------------------------


def list_contracts(node: Node) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = cs.list_negotiations(session)
        return [_summary(session, r) for r in rows]


def _find(session: Session, ref: str) -> ContractNegotiationRow:
    row = session.get(ContractNegotiationRow, ref)
    if row is None:
        ag = session.get(ContractAgreementRow, ref)
        if ag is not None:
            row = session.get(ContractNegotiationRow, ag.negotiation_id)
    if row is None:
        row = session.scalars(select(ContractNegotiationRow).where(
            (ContractNegotiationRow.provider_pid == ref)
            | (ContractNegotiationRow.consumer_pid == ref))).first()
    if row is None:
        raise NotFound(f"no contract or negotiation {ref!r}", hint="see `dataspace contract list`")
    return row


def _summary(session: Session, row: ContractNegotiationRow) -> dict[str, Any]:
    ag = session.scalars(select(ContractAgreementRow).where(
        ContractAgreementRow.negotiation_id == row.id)).first()
    return {
        "id": row.id, "role": row.role, "peer": row.peer, "state": row.state,
        "offer_id": row.offer_id, "purpose": row.purpose,
        "agreement_id": ag.id if ag is not None else None,
        "provider_pid": row.provider_pid, "consumer_pid": row.consumer_pid,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def _signature_status(sig: str | None, agreement: dict[str, Any], key: bytes | None) -> str:
    if not sig:
        return "missing"
    if key is None:
        return "unverifiable (peer key unknown)"
    try:
        verify_agreement(agreement, sig, key)
    except SignatureError:
        return "INVALID"
    return "verified"


def show_contract(node: Node, ref: str) -> dict[str, Any]:
    """A negotiation (by either pid or agreement id) with its agreement and signature checks."""
    with node.store.read() as session:
        row = _find(session, ref)
        view = _summary(session, row)
        view["offer"] = row.offer
        view["callback_address"] = row.callback_address
        view["reason"] = _termination_reason(session, row)
        ag = session.scalars(select(ContractAgreementRow).where(
            ContractAgreementRow.negotiation_id == row.id)).first()
        if ag is None:
            view["agreement"] = None
            return view
        try:
            peer_key: bytes | None = lookup_member(node, row.peer).verifier.public_bytes
        except Exception:
            peer_key = None
        mine = _own_public(node)
        provider_key, consumer_key = (mine, peer_key) if row.role == "provider" \
            else (peer_key, mine)
        view["agreement"] = {
            "id": ag.id, "policy": ag.policy, "provider": ag.provider, "consumer": ag.consumer,
            "target": ag.target, "offer_id": ag.offer_id, "purpose": ag.purpose,
            "signed_at": ag.signed_at.isoformat() if ag.signed_at else None,
            "sha256": _digest(ag.policy),
            "signatures": {
                "provider": _signature_status(ag.provider_signature, ag.policy, provider_key),
                "consumer": _signature_status(ag.consumer_signature, ag.policy, consumer_key),
            },
            "provider_signature": ag.provider_signature,
            "consumer_signature": ag.consumer_signature,
        }
        return view


def _digest(policy: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(canonical_agreement(policy)).hexdigest()


def _termination_reason(session: Session, row: ContractNegotiationRow) -> list[str] | None:
    if row.state != cn.NegotiationState.TERMINATED.value:
        return None
    import json

    from dataspace.store.models import LedgerEntry

    for entry in session.scalars(select(LedgerEntry).order_by(LedgerEntry.idx.desc()).limit(500)):
        head = json.loads(entry.entry)
        if head.get("action") != "negotiation.terminated":
            continue
        payload = json.loads(entry.payload)
        if payload.get("pid") == row.id:
            return [f"{payload.get('code')}: {r}" for r in payload.get("reason") or []]
    return None


__all__ = [
    "SIGNATURE",
    "OfferUnavailable",
    "Reply",
    "agree",
    "approve",
    "build_agreement",
    "handle_agreement",
    "handle_get",
    "handle_message",
    "handle_offer",
    "handle_request",
    "handle_verification",
    "list_contracts",
    "policy_to_wire",
    "reject",
    "request_contract",
    "show_contract",
    "split_purpose",
    "terminate",
    "wait",
    "with_purpose",
]
