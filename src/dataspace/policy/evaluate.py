"""The evaluator: deny by default, fail closed, every reason.

``evaluate(policy, request)`` builds a tree of checks — ``AllOf`` (a rule's action and
constraints, ``and``), ``AnyOf`` (``or``), ``ExactlyOne`` (``xone``) over atomic
``ConstraintCheck``s — and runs it in three-valued logic: a check holds, does not hold, or
*cannot be evaluated* (unknown left operand, unsupported operator, missing fact, malformed
right operand). A permission grants only if it holds; a prohibition denies if it holds **or**
cannot be evaluated. An empty ``AllOf`` (or ``AnyOf``) does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from dataspace.policy.checks import (
    AllOf,
    AnyOf,
    Check,
    Context,
    DutyCheck,
    ExactlyOne,
    Obligation,
    PartyCheck,
    Reason,
    Status,
    UnsafeAllow,
    all_of,
    json_value,
    rule_check,
)
from dataspace.policy.errors import PolicyDenied
from dataspace.policy.model import AnyConstraint, Constraint, LogicalOp, Operator, Policy, Rule
from dataspace.policy.request import Price, Request
from dataspace.policy.values import Duration, Malformed, as_datetime, as_decimal, as_int, as_terms
from dataspace.policy.vocabulary import DEFAULT_VOCABULARY, OUTPUT_MODES, Vocabulary

__all__ = ["NEGOTIATION_DEFERRED", "AllOf", "AnyOf", "Check", "Decision", "Enforcement",
           "ExactlyOne", "Obligation", "Reason", "Status", "UnsafeAllow", "conjuncts",
           "evaluate"]


@dataclass(frozen=True)
class Enforcement:
    """What the compute layer must enforce for this job, from the granting permission.

    ``None`` means "no limit in the policy". Budgets: ``*_remaining`` is what is left
    *before* this job; ``jobs_remaining`` counts this job.
    """

    action: str
    granted_by: str
    allowed_fields: frozenset[str] | None = None
    prohibited_fields: frozenset[str] = frozenset()
    min_group_size: int | None = None
    max_peer_set: int | None = None
    max_output: str | None = None
    epsilon_budget: float | None = None
    epsilon_remaining: float | None = None
    delta_budget: float | None = None
    delta_remaining: float | None = None
    max_jobs: int | None = None
    jobs_remaining: int | None = None
    expires_at: datetime | None = None
    price: Price | None = None


@dataclass(frozen=True)
class Decision:
    """``allowed`` plus every reason; ``provisional`` if checks were deferred."""

    allowed: bool
    reasons: tuple[Reason, ...]
    obligations: tuple[Obligation, ...] = ()
    enforcement: Enforcement | None = None
    provisional: bool = False

    @property
    def failures(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if not r.held and not r.deferred)

    def require(self) -> Decision:
        """Return self if allowed, else raise :class:`PolicyDenied` carrying the decision."""
        if not self.allowed:
            raise PolicyDenied(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "provisional": self.provisional,
            "reasons": [r.to_dict() for r in self.reasons],
            "obligations": [
                {"rule": o.rule, "action": o.action,
                 "price": None if o.price is None else str(o.price)}
                for o in self.obligations
            ],
            "enforcement": None if self.enforcement is None else {
                k: json_value(getattr(self.enforcement, k))
                for k in self.enforcement.__dataclass_fields__
            },
        }


# --- evaluate -----------------------------------------------------------------------------------


def evaluate(
    policy: Policy,
    request: Request,
    *,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
    defer: Collection[str] = (),
) -> Decision:
    """Decide whether ``policy`` allows ``request``. Deny by default.

    Allowed iff the policy's assignee/target match, at least one permission holds (its action
    covers the requested action, all its constraints hold, its duties can be fulfilled), no
    prohibition holds or fails to evaluate, and every policy-level obligation can be fulfilled.

    ``defer`` names left operands whose *missing* facts are not yet known (at negotiation:
    ``NEGOTIATION_DEFERRED``); such constraints are deferred instead of failing closed and the
    decision is ``provisional`` — evaluate again at execution time without ``defer``.
    """
    ctx = Context(request, vocabulary, frozenset(defer))
    statuses: list[Status] = []
    for key in ("assignee", "target"):
        expected = getattr(policy, key)
        if expected is not None:
            statuses.append(PartyCheck(key, expected).run(ctx))
    parties = all_of(statuses) if statuses else Status.HELD

    granted: int | None = None
    for i, rule in enumerate(policy.permissions):
        name = f"permission[{i}]"
        ctx.rule, ctx.in_permission = name, True
        status = rule_check(rule, name).run(ctx)
        ok = status in (Status.HELD, Status.DEFERRED)
        ctx.add(name, Status.HELD if ok else Status.NOT_HELD,
                "grants the request" if ok else f"does not grant the request ({status.value})")
        if ok and granted is None:
            granted = i
    ctx.in_permission = False

    prohibited = False
    for i, rule in enumerate(policy.prohibitions):
        name = f"prohibition[{i}]"
        ctx.rule = name
        status = rule_check(rule, name).run(ctx)
        applies = status in (Status.HELD, Status.FAILED_CLOSED)
        prohibited = prohibited or applies
        ctx.add(name, Status.NOT_HELD if applies else Status.HELD,
                f"prohibits the request ({status.value})" if applies else "does not apply")

    ctx.rule = "obligation"
    duty_status = all_of([DutyCheck(f"obligation[{i}]", d).run(ctx)
                        for i, d in enumerate(policy.obligations)]) if policy.obligations \
        else Status.HELD

    ctx.rule = "policy"
    if granted is None:
        ctx.add("policy", Status.NOT_HELD,
                "no permission grants the request (deny by default)"
                if policy.permissions else "the policy has no permission (deny by default)")
    allowed = (granted is not None and not prohibited
               and parties in (Status.HELD, Status.DEFERRED)
               and duty_status is Status.HELD)
    provisional = any(r.deferred for r in ctx.reasons)
    if not allowed:
        return Decision(False, tuple(ctx.reasons), provisional=provisional)

    assert granted is not None
    grant = f"permission[{granted}]"
    obligations = tuple(ctx.duties.get("obligation", [])) + tuple(ctx.duties.get(grant, []))
    enforcement = _enforcement(policy, policy.permissions[granted], grant, request, obligations)
    ctx.add("policy", Status.HELD, f"allowed by {grant}")
    return Decision(True, tuple(ctx.reasons), obligations, enforcement, provisional)


#: Left operands whose facts exist only at execution time; defer them when negotiating.
NEGOTIATION_DEFERRED = frozenset({"fields", "output", "epsilon", "delta", "count", "region",
                                  "minGroupSize", "peerSetSize", "price", "dateTime",
                                  "elapsedTime"})


def conjuncts(constraints: Sequence[AnyConstraint]) -> Iterator[Constraint]:
    """Atomic constraints that must all hold (top level and inside ``and``)."""
    for c in constraints:
        if isinstance(c, Constraint):
            yield c
        elif c.op is LogicalOp.AND:
            yield from conjuncts(c.constraints)


def _enforcement(policy: Policy, rule: Rule, grant: str, request: Request,
                 obligations: Sequence[Obligation]) -> Enforcement:
    allowed: frozenset[str] | None = None
    prohibited: set[str] = set()
    k: int | None = None
    max_peer_set: int | None = None
    max_output: int | None = None
    budgets: dict[str, Decimal] = {}
    max_jobs: int | None = None
    expires: datetime | None = None

    def tighter(current: Any, new: Any, pick: Any) -> Any:
        return new if current is None else pick(current, new)

    for c in conjuncts(rule.constraints):
        op = c.operator
        try:
            if c.left == "fields" and op in (Operator.IS_PART_OF, Operator.EQ):
                terms = frozenset(as_terms(c.right))
                allowed = terms if allowed is None else allowed & terms
            elif c.left == "fields" and op is Operator.IS_NONE_OF:
                prohibited.update(as_terms(c.right))
            elif c.left == "minGroupSize":
                bound = as_int(c.right) + (1 if op is Operator.GT else 0)
                k = tighter(k, bound, max)
            elif c.left == "peerSetSize":
                bound = as_int(c.right) - (1 if op is Operator.LT else 0)
                max_peer_set = tighter(max_peer_set, bound, min)
            elif c.left == "output" and op in (Operator.LTEQ, Operator.EQ, Operator.LT):
                rank = OUTPUT_MODES.index(str(c.right)) - (1 if op is Operator.LT else 0)
                max_output = tighter(max_output, rank, min)
            elif c.left == "output" and op is Operator.IS_ANY_OF:
                rank = max(OUTPUT_MODES.index(t) for t in as_terms(c.right))
                max_output = tighter(max_output, rank, min)
            elif c.left in ("epsilon", "delta") and op in (Operator.LTEQ, Operator.LT):
                total = as_decimal(c.right)
                if op is Operator.LT:  # a budget is a total the spend may reach: the float
                    # just below (the budget travels as a float, and is stored as its repr)
                    total = Decimal(repr(math.nextafter(float(total), -math.inf)))
                budgets[c.left] = tighter(budgets.get(c.left), total, min)
            elif c.left == "count" and op in (Operator.LTEQ, Operator.LT):
                bound = as_int(c.right) - (1 if op is Operator.LT else 0)
                max_jobs = tighter(max_jobs, bound, min)
            elif c.left == "dateTime" and op in (Operator.LTEQ, Operator.LT):
                expires = tighter(expires, as_datetime(c.right), min)
            elif (c.left == "elapsedTime" and op in (Operator.LTEQ, Operator.LT)
                  and request.agreed_at is not None):
                expires = tighter(expires, Duration.parse(c.right).after(request.agreed_at), min)
        except (Malformed, ValueError):  # pragma: no cover - the constraint held already
            continue
    for prohibition in policy.prohibitions:
        for c in conjuncts(prohibition.constraints):
            if c.left == "fields" and c.operator in (Operator.IS_ANY_OF, Operator.EQ):
                prohibited.update(as_terms(c.right))

    def remaining(name: str) -> float | None:
        spent = getattr(request, f"{name}_spent")
        if name not in budgets or spent is None:
            return None
        return float(budgets[name] - as_decimal(spent))

    prices = [o.price for o in obligations if o.price is not None]
    return Enforcement(
        action=request.action,
        granted_by=grant,
        allowed_fields=None if allowed is None else allowed - prohibited,
        prohibited_fields=frozenset(prohibited),
        min_group_size=k,
        max_peer_set=max_peer_set,
        max_output=None if max_output is None else OUTPUT_MODES[max(max_output, 0)],
        epsilon_budget=float(budgets["epsilon"]) if "epsilon" in budgets else None,
        epsilon_remaining=remaining("epsilon"),
        delta_budget=float(budgets["delta"]) if "delta" in budgets else None,
        delta_remaining=remaining("delta"),
        max_jobs=max_jobs,
        jobs_remaining=None if max_jobs is None or request.jobs_run is None
        else max_jobs - request.jobs_run,
        expires_at=expires,
        price=prices[0] if prices else None,
    )
