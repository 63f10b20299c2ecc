"""Agreements for tests, made with the contracts store as a real negotiation would leave them.

Until offers and negotiation have their services, ``make_agreement`` publishes an ``OfferRow``
on the provider and walks one negotiation on each side through the DSP state machine
(REQUESTED → AGREED → VERIFIED → FINALIZED), records the agreement with both parties'
Ed25519 signatures and enters ``agreement.finalized`` in each ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dataspace.contracts import negotiation as cn
from dataspace.contracts import store as cstore
from dataspace.contracts.messages import policy_to_wire
from dataspace.contracts.signing import sign_agreement
from dataspace.identity import keys
from dataspace.ledger import log
from dataspace.policy import Policy, PolicyType
from dataspace.services.node import KEY_FILE, Node
from dataspace.store.models_contracts import OfferRow


def _sign(node: Node | None, doc: dict[str, Any]) -> str | None:
    if node is None:
        return None
    return sign_agreement(doc, keys.load_private_key(node.root / KEY_FILE))


def make_agreement(
    provider: Node,
    consumer_name: str,
    *,
    dataset_id: str,
    offer: Policy,
    purpose: str,
    dp: dict[str, Any] | None = None,
    price_terms: dict[str, Any] | None = None,
    consumer: Node | None = None,
    finalize: bool = True,
    signed_at: datetime | None = None,
) -> str:
    """Create the offer on ``provider`` and the agreement on both nodes; returns its id."""
    offer_id = offer.uid or f"urn:uuid:{uuid.uuid4()}"
    offer = replace(offer, uid=offer_id, type=PolicyType.OFFER, assigner=provider.name)
    agreement_id = f"urn:uuid:{uuid.uuid4()}"
    agreement = replace(
        offer,
        uid=agreement_id,
        type=PolicyType.AGREEMENT,
        assignee=consumer_name,
        target=dataset_id,
    )
    doc = policy_to_wire(agreement)
    at = signed_at or datetime.now(UTC)
    signatures = {
        "provider_signature": _sign(provider, doc),
        "consumer_signature": _sign(consumer, doc),
    }
    with provider.store.write() as session:
        session.add(
            OfferRow(
                id=offer_id,
                dataset_id=dataset_id,
                policy=policy_to_wire(offer),
                template=None,
                dp=dp,
                price_terms=price_terms,
                auto_approve=True,
                created_at=at,
            )
        )
        session.flush()
        _negotiate(session, "provider", consumer_name, offer, agreement, finalize)
    sides = [(provider, "provider", consumer_name)]
    if consumer is not None:
        with consumer.store.write() as session:
            _negotiate(session, "consumer", provider.name, offer, agreement, finalize)
        sides.append((consumer, "consumer", provider.name))
    for node, role, peer in sides:
        with node.store.write() as session:
            neg = _find(session, role, peer, agreement_id)
            row = cstore.record_agreement(session, neg, peer=peer, signed_at=at, **signatures)
            row.offer_id, row.purpose = offer_id, purpose
            log.append(
                session,
                actor="test:negotiation",
                action="agreement.finalized",
                payload={
                    "agreement_id": agreement_id,
                    "role": role,
                    "peer": peer,
                    "offer_id": offer_id,
                    "purpose": purpose,
                },
            )
    return agreement_id


_NEGOTIATIONS: dict[tuple[str, str, str], str] = {}


def _find(session: Any, role: str, peer: str, agreement_id: str) -> str:
    return _NEGOTIATIONS[(role, peer, agreement_id)]


def _negotiate(
    session: Any, role: str, peer: str, offer: Policy, agreement: Policy, finalize: bool
) -> None:
    C, P = "consumer", "provider"
    neg = cstore.create_negotiation(
        session, role=role, peer=peer, message_type=cn.REQUEST, sender=C, offer=offer
    )
    steps = [(cn.AGREEMENT, P), (cn.VERIFICATION, C)]
    if finalize:
        steps.append((cn.FINALIZED_EVENT, P))
    for message, sender in steps:
        cstore.advance_negotiation(
            session,
            neg.id,
            message,
            sender=sender,
            peer=peer,
            agreement=agreement if message == cn.AGREEMENT else None,
        )
    neg.offer_id = offer.uid
    _NEGOTIATIONS[(role, peer, str(agreement.uid))] = neg.id


def make_agreements(
    consumer: Node,
    providers: Mapping[str, Node],
    datasets: Mapping[str, str],
    offers: Mapping[str, Policy],
    *,
    purpose: str,
) -> dict[tuple[str, str], str]:
    """One agreement per provider and offer with ``consumer`` (on each provider's dataset in
    ``datasets``); returns {(provider, offer name): agreement id}."""
    out = {}
    for name, provider in providers.items():
        for kind, offer in offers.items():
            out[(name, kind)] = make_agreement(
                provider,
                consumer.name,
                consumer=consumer,
                dataset_id=datasets[name],
                purpose=purpose,
                offer=offer,
            )
    return out


def pseudonymized(policy: Policy) -> Policy:
    """The policy with its first permission's ``output`` constraint set to pseudonymized (what
    a vgbdt provider agrees to: SecureBoost's row-level leakage, named)."""
    rule = policy.permissions[0]
    constraints = tuple(
        replace(c, right="pseudonymized") if getattr(c, "left", None) == "output" else c
        for c in rule.constraints
    )
    return replace(policy, permissions=(replace(rule, constraints=constraints),))
