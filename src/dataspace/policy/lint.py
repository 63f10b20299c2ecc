"""Static checks of a parsed policy: what this node would fail closed on, found up front.

``parse_policy`` accepts any well-formed ODRL (foreign left operands included, so that DSP
messages parse); ``lint_policy`` lists what the evaluator cannot evaluate, so that a provider
creating an offer learns about it before a consumer is denied.
"""

from __future__ import annotations

from collections.abc import Iterator

from dataspace.policy.checks import ENFORCED_LATER, check_duty_constraints, price_of
from dataspace.policy.constraints import FailClosed, check, malformed_reason
from dataspace.policy.errors import PolicyError
from dataspace.policy.evaluate import conjuncts
from dataspace.policy.model import AnyConstraint, Constraint, LogicalOp, Policy, Rule
from dataspace.policy.request import Request
from dataspace.policy.values import Malformed
from dataspace.policy.vocabulary import DEFAULT_VOCABULARY, DUTY_ACTIONS, LEFT_OPERANDS, Vocabulary


def lint_policy(policy: Policy, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> tuple[str, ...]:
    """Problems as ``"path: message"``; empty when every part can be evaluated."""
    problems: list[str] = []
    for key, rules in (("permission", policy.permissions), ("prohibition", policy.prohibitions)):
        for i, rule in enumerate(rules):
            problems.extend(_rule(rule, f"{key}[{i}]", vocabulary))
    for i, duty in enumerate(policy.obligations):
        problems.extend(_duty(duty, f"obligation[{i}]"))
    if not problems:  # each part evaluates: now whether the permissions can ever apply
        for i, rule in enumerate(policy.permissions):
            problems.extend(_never_applies(policy, rule, f"permission[{i}]", vocabulary))
    return tuple(problems)


def _never_applies(policy: Policy, rule: Rule, path: str, vocabulary: Vocabulary
                   ) -> Iterator[str]:
    """A permission no request can use: its constraints on a purpose or a region admit no
    term of the vocabulary together (isAnyOf [finance] with isNoneOf [finance]), or a
    prohibition without conditions forbids its action."""
    for left, tree in (("purpose", vocabulary.purposes), ("region", vocabulary.regions)):
        on = [c for c in conjuncts(rule.constraints) if c.left == left]
        if on and not any(_admits(rule.action, on, left, term, vocabulary) for term in tree):
            yield (f"{path}.constraint: no {tree.name} meets every constraint on {left} at "
                   "once: the permission can never be used")
    for j, ban in enumerate(policy.prohibitions):
        if not ban.constraints and (ban.action == rule.action or vocabulary.actions.is_part_of(
                rule.action, ban.action)):
            yield (f"prohibition[{j}] forbids {ban.action!r} without conditions: {path} "
                   f"({rule.action!r}) can never be used")


def _admits(action: str, on: list[Constraint], left: str, term: str,
            vocabulary: Vocabulary) -> bool:
    request = (Request(action=action, purpose=term) if left == "purpose"
               else Request(action=action, region=term))
    try:
        return all(check(c, request, vocabulary, enforce=True).held for c in on)
    except FailClosed:
        return False


def require_evaluable(policy: Policy, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> Policy:
    """Return the policy, or raise :class:`PolicyError` listing every lint problem."""
    problems = lint_policy(policy, vocabulary)
    if problems:
        raise PolicyError(
            f"this node cannot evaluate {len(problems)} part(s) of the policy: "
            + "; ".join(problems),
            hint="see docs/policy.md for the left operands, operators and actions it knows",
            problems=list(problems))
    return policy


def _rule(rule: Rule, path: str, vocabulary: Vocabulary) -> Iterator[str]:
    if rule.action not in vocabulary.actions:
        yield f"{path}.action: unknown action {rule.action!r}"
    for i, c in enumerate(rule.constraints):
        yield from _constraint(c, f"{path}.constraint[{i}]", vocabulary)
    for i, duty in enumerate(rule.duties):
        yield from _duty(duty, f"{path}.duty[{i}]")


def _duty(duty: Rule, path: str) -> Iterator[str]:
    if duty.action not in DUTY_ACTIONS:
        yield f"{path}.action: unknown duty {duty.action!r}"
        return
    try:
        if duty.action == "compensate":
            price_of(duty)
        check_duty_constraints(duty)
    except Malformed as exc:
        yield f"{path}: {exc}"


def _constraint(
    c: AnyConstraint, path: str, vocabulary: Vocabulary, in_choice: bool = False
) -> Iterator[str]:
    if not isinstance(c, Constraint):
        if c.op is LogicalOp.AND_SEQUENCE:
            yield f"{path}: andSequence is not evaluated"
        if not c.constraints:
            yield f"{path}: an empty {c.op.value} states no condition (fails closed)"
        choice = in_choice or c.op in (LogicalOp.OR, LogicalOp.XONE)
        for i, sub in enumerate(c.constraints):
            yield from _constraint(sub, f"{path}.{c.op.value}[{i}]", vocabulary, choice)
        return
    if in_choice and c.left in ENFORCED_LATER:
        yield f"{path}: {c.left} inside or/xone would not be enforced (fails closed)"
        return
    spec = LEFT_OPERANDS.get(c.left)
    if spec is None:
        yield f"{path}.leftOperand: unknown left operand {c.left!r}"
        return
    if c.operator not in spec.operators:
        yield f"{path}.operator: {c.operator.value!r} is not supported for {c.left!r}"
        return
    why = malformed_reason(c, vocabulary)
    if why:
        yield f"{path}.rightOperand: {why}"
