"""Contract negotiation, the terms: how the consumer's purpose rides on the requested offer
and whether the provider's policy can agree to it (execution facts deferred)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dataspace.contracts import (
    ProtocolError,
)
from dataspace.policy import (
    NEGOTIATION_DEFERRED,
    Constraint,
    Decision,
    Operator,
    Policy,
    Request,
    Rule,
    evaluate,
)
from dataspace.policy.vocabulary import ACTIONS, PURPOSES, REQUEST_ACTIONS
from dataspace.services.neg_common import OfferUnavailable


def _purpose_constraint(purpose: str) -> Constraint:
    return Constraint("purpose", Operator.EQ, purpose)


def with_purpose(offer: Policy, purpose: str) -> Policy:
    """The offer as the consumer requests it: ``purpose eq P`` added to every permission."""
    extra = _purpose_constraint(purpose)
    return dataclasses.replace(
        offer,
        permissions=tuple(
            dataclasses.replace(r, constraints=(*r.constraints, extra)) for r in offer.permissions
        ),
    )


def split_purpose(requested: Policy, stored: Policy) -> str:
    """The purpose a requested offer adds to the stored one; ProtocolError if it changes
    anything else (the consumer may only narrow the offer by a purpose)."""
    if not requested.permissions:
        raise ProtocolError("the requested offer has no permission", path="$.offer.permission")
    purposes: set[str] = set()
    stripped: list[Rule] = []
    for i, rule in enumerate(requested.permissions):
        last = rule.constraints[-1] if rule.constraints else None
        if not (
            isinstance(last, Constraint)
            and last.left == "purpose"
            and last.operator is Operator.EQ
            and isinstance(last.right, str)
        ):
            raise ProtocolError(
                "each permission of the requested offer must end with the consumer's purpose "
                "constraint (purpose eq P)",
                path=f"$.offer.permission[{i}].constraint",
            )
        purposes.add(last.right)
        stripped.append(dataclasses.replace(rule, constraints=rule.constraints[:-1]))
    if len(purposes) != 1:
        raise ProtocolError(
            "the requested offer states more than one purpose", path="$.offer.permission"
        )
    purpose = purposes.pop()
    if purpose not in PURPOSES:
        raise ProtocolError(
            f"unknown purpose {purpose!r}",
            path="$.offer.permission[0]",
            hint="see docs/policy.md for the purpose tree",
        )
    if requested.assigner is not None and requested.assigner != stored.assigner:
        raise OfferUnavailable(
            f"the requested offer names assigner {requested.assigner!r}, but the published "
            f"offer is {stored.assigner!r}'s",
            hint="request the offer exactly as the catalog lists it",
            path="$.offer.assigner",
        )
    base = dataclasses.replace(requested, permissions=tuple(stripped))
    if _terms(base) != _terms(stored):
        raise OfferUnavailable(
            "the requested offer differs from the published offer",
            hint="request the offer exactly as the catalog lists it",
            path="$.offer",
        )
    return purpose


def _terms(policy: Policy) -> tuple[Any, ...]:
    return (policy.uid, policy.target, policy.permissions, policy.prohibitions, policy.obligations)


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


def provisional_decision(
    policy: Policy,
    *,
    consumer: str,
    groups: Sequence[str],
    purpose: str,
    target: str,
    now: datetime,
) -> Decision:
    """Whether the offer can be agreed for this consumer and purpose (execution facts
    deferred). The first action the offer permits that is allowed wins."""
    first: Decision | None = None
    for action in _actions(policy):
        decision = evaluate(
            policy,
            Request(
                action=action,
                assignee=consumer,
                groups=frozenset(groups),
                purpose=purpose,
                target=target,
                now=now,
            ),
            defer=NEGOTIATION_DEFERRED,
        )
        if decision.allowed:
            return decision
        first = first or decision
    assert first is not None
    return first
