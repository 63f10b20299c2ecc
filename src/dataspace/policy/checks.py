"""The checks an evaluation is made of, in three-valued logic.

A check *holds*, *does not hold*, *cannot be evaluated* (fails closed) or is *deferred*.
``AllOf`` (a rule; ``and``), ``AnyOf`` (``or``) and ``ExactlyOne`` (``xone``) combine them;
an empty ``AllOf`` or ``AnyOf`` does not hold. Anything that bypasses a check is ``Unsafe…``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from dataspace.policy.constraints import FailClosed, MissingFact, check
from dataspace.policy.model import AnyConstraint, Constraint, LogicalOp, Operator, Rule
from dataspace.policy.request import Price, Request
from dataspace.policy.values import Duration, Malformed, as_datetime, as_decimal
from dataspace.policy.vocabulary import DUTY_ACTIONS, Vocabulary


class Status(Enum):
    HELD = "held"
    NOT_HELD = "not held"
    FAILED_CLOSED = "cannot be evaluated"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class Reason:
    """One step of a decision: which rule, which constraint (path), which values."""

    rule: str
    path: str
    held: bool
    message: str
    left: str | None = None
    operator: str | None = None
    expected: object = None
    actual: object = None
    fail_closed: bool = False
    deferred: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "path": self.path,
            "held": self.held,
            "message": self.message,
            "left": self.left,
            "operator": self.operator,
            "expected": json_value(self.expected),
            "actual": json_value(self.actual),
            "fail_closed": self.fail_closed,
            "deferred": self.deferred,
        }


def json_value(value: object) -> Any:
    if isinstance(value, tuple | list | frozenset | set):
        items = [json_value(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal | Price):
        return str(value)
    return value


@dataclass(frozen=True)
class Obligation:
    """A duty that applies when the request is allowed (``compensate`` carries a price)."""

    rule: str
    action: str
    price: Price | None = None
    constraints: tuple[AnyConstraint, ...] = ()


# --- the tree ---------------------------------------------------------------------------------


@dataclass
class Context:
    request: Request
    vocabulary: Vocabulary
    defer: frozenset[str]
    reasons: list[Reason] = field(default_factory=list)
    rule: str = "policy"
    in_permission: bool = False
    duties: dict[str, list[Obligation]] = field(default_factory=dict)

    def add(self, path: str, status: Status, message: str, **values: Any) -> None:
        self.reasons.append(Reason(
            rule=self.rule, path=path, held=status is Status.HELD, message=f"{path}: {message}",
            fail_closed=status is Status.FAILED_CLOSED, deferred=status is Status.DEFERRED,
            **values))


class Check(ABC):
    """A node of the check tree; ``run`` appends its reasons and returns its status."""

    path: str

    @abstractmethod
    def run(self, ctx: Context) -> Status: ...


def all_of(statuses: Sequence[Status]) -> Status:
    if not statuses or Status.NOT_HELD in statuses:
        return Status.NOT_HELD
    if Status.FAILED_CLOSED in statuses:
        return Status.FAILED_CLOSED
    if Status.DEFERRED in statuses:
        return Status.DEFERRED
    return Status.HELD


def any_of(statuses: Sequence[Status]) -> Status:
    if Status.HELD in statuses:
        return Status.HELD
    if Status.FAILED_CLOSED in statuses:
        return Status.FAILED_CLOSED
    if Status.DEFERRED in statuses:
        return Status.DEFERRED
    return Status.NOT_HELD


@dataclass(frozen=True)
class AllOf(Check):
    """Holds when every child holds; an empty AllOf does not hold (deny by default)."""

    path: str
    children: tuple[Check, ...]
    summarise: bool = False

    def run(self, ctx: Context) -> Status:
        statuses = [child.run(ctx) for child in self.children]
        status = all_of(statuses)
        if not self.children:
            ctx.add(self.path, status, "empty AllOf denies")
        elif self.summarise:
            ctx.add(self.path, status, f"and: {statuses.count(Status.HELD)} of "
                    f"{len(statuses)} held")
        return status


@dataclass(frozen=True)
class AnyOf(Check):
    """Holds when at least one child holds; an empty AnyOf does not hold."""

    path: str
    children: tuple[Check, ...]

    def run(self, ctx: Context) -> Status:
        statuses = [child.run(ctx) for child in self.children]
        status = any_of(statuses)
        ctx.add(self.path, status, f"or: {statuses.count(Status.HELD)} of {len(statuses)} held")
        return status


@dataclass(frozen=True)
class ExactlyOne(Check):
    """ODRL ``xone``: exactly one child holds."""

    path: str
    children: tuple[Check, ...]

    def run(self, ctx: Context) -> Status:
        statuses = [child.run(ctx) for child in self.children]
        held = statuses.count(Status.HELD)
        unknown = len(statuses) - held - statuses.count(Status.NOT_HELD)
        if held >= 2:
            status = Status.NOT_HELD
        elif unknown:
            status = (Status.FAILED_CLOSED if Status.FAILED_CLOSED in statuses
                      else Status.DEFERRED)
        else:
            status = Status.HELD if held == 1 else Status.NOT_HELD
        ctx.add(self.path, status, f"xone: {held} of {len(statuses)} held (exactly one needed)")
        return status


@dataclass(frozen=True)
class FailsClosed(Check):
    """A construct this node does not evaluate (e.g. ``andSequence``)."""

    path: str
    why: str

    def run(self, ctx: Context) -> Status:
        ctx.add(self.path, Status.FAILED_CLOSED, f"{self.why}; fails closed")
        return Status.FAILED_CLOSED


@dataclass(frozen=True)
class UnsafeAllow(Check):
    """Always holds. For tests and demos only; never build it from a policy document."""

    path: str = "unsafe"

    def run(self, ctx: Context) -> Status:
        ctx.add(self.path, Status.HELD, "UnsafeAllow: holds unconditionally")
        return Status.HELD


@dataclass(frozen=True)
class ActionCovers(Check):
    """The rule's action covers the requested one (``use`` covers every action)."""

    path: str
    action: str

    def run(self, ctx: Context) -> Status:
        tree, asked = ctx.vocabulary.actions, ctx.request.action
        values = {"left": "action", "operator": "isPartOf", "expected": self.action,
                  "actual": asked}
        if asked not in tree:
            ctx.add(self.path, Status.FAILED_CLOSED, f"unknown requested action {asked!r}",
                    **values)
            return Status.FAILED_CLOSED
        if self.action not in tree:
            ctx.add(self.path, Status.FAILED_CLOSED,
                    f"unknown action {self.action!r}: this node cannot evaluate it", **values)
            return Status.FAILED_CLOSED
        if tree.is_part_of(asked, self.action):
            ctx.add(self.path, Status.HELD, f"{self.action!r} covers {asked!r}", **values)
            return Status.HELD
        ctx.add(self.path, Status.NOT_HELD, f"{self.action!r} does not cover {asked!r}",
                **values)
        return Status.NOT_HELD


@dataclass(frozen=True)
class ConstraintCheck(Check):
    """One atomic constraint, evaluated by its left operand's function."""

    path: str
    constraint: Constraint

    def run(self, ctx: Context) -> Status:
        c = self.constraint
        values: dict[str, Any] = {"left": c.left, "operator": c.operator.value,
                                  "expected": c.right}
        try:
            outcome = check(c, ctx.request, ctx.vocabulary, enforce=ctx.in_permission)
        except MissingFact as exc:
            status = Status.DEFERRED if c.left in ctx.defer else Status.FAILED_CLOSED
            what = "deferred to execution" if c.left in ctx.defer else "fails closed"
            ctx.add(self.path, status, f"{exc.message}; {what}", **values)
            return status
        except FailClosed as exc:
            ctx.add(self.path, Status.FAILED_CLOSED, f"{exc.message}; fails closed",
                    actual=exc.actual, **values)
            return Status.FAILED_CLOSED
        status = Status.HELD if outcome.held else Status.NOT_HELD
        note = f" ({outcome.note})" if outcome.note else ""
        ctx.add(self.path, status,
                f"{c.left} {c.operator.value} {json_value(c.right)!r}: actual "
                f"{json_value(outcome.actual)!r}{note} — "
                f"{'holds' if outcome.held else 'does not hold'}",
                actual=outcome.actual, **values)
        return status


@dataclass(frozen=True)
class DutyCheck(Check):
    """A duty this node can see fulfilled; ``compensate`` needs a price (``price eq`` + unit)."""

    path: str
    duty: Rule

    def run(self, ctx: Context) -> Status:
        duty = self.duty
        if duty.action not in DUTY_ACTIONS:
            ctx.add(self.path, Status.FAILED_CLOSED,
                    f"duty {duty.action!r} cannot be fulfilled by this node (known: "
                    f"{', '.join(sorted(DUTY_ACTIONS))}); fails closed")
            return Status.FAILED_CLOSED
        price = None
        try:
            if duty.action == "compensate":
                price = price_of(duty)
            check_duty_constraints(duty)
        except Malformed as exc:
            ctx.add(self.path, Status.FAILED_CLOSED, f"{duty.action}: {exc}; fails closed")
            return Status.FAILED_CLOSED
        ctx.duties.setdefault(ctx.rule, []).append(
            Obligation(self.path, duty.action, price, duty.constraints))
        ctx.add(self.path, Status.HELD,
                f"duty {duty.action}" + (f" {price}" if price else "") + " applies")
        return Status.HELD


#: The refinements of a duty this node can act on: a compensate's price, when a delete is due.
DUTY_CONSTRAINTS = {"compensate": frozenset({"price"}), "inform": frozenset(),
                    "delete": frozenset({"dateTime", "elapsedTime"})}


def check_duty_constraints(duty: Rule) -> None:
    """Every constraint of a duty is one this node can see to (else :class:`Malformed`): a
    duty whose refinement goes unread would be promised and not kept."""
    known = DUTY_CONSTRAINTS.get(duty.action, frozenset())
    for c in duty.constraints:
        if not isinstance(c, Constraint):
            raise Malformed(f"a duty's constraints must be atomic, not {c.op.value}")
        if c.left not in known:
            can = ", ".join(sorted(known)) or "none"
            raise Malformed(f"a {duty.action} duty cannot be refined by {c.left!r} (this node "
                            f"acts on: {can})")
        if c.left == "dateTime":
            as_datetime(c.right)
        elif c.left == "elapsedTime":
            Duration.parse(c.right)


def price_of(duty: Rule) -> Price:
    """The price of a ``compensate`` duty: one ``price eq AMOUNT`` constraint with a unit."""
    prices = [c for c in duty.constraints if isinstance(c, Constraint) and c.left == "price"]
    if len(prices) != 1:
        raise Malformed("needs exactly one 'price eq AMOUNT' constraint with a currency unit")
    c = prices[0]
    if c.operator is not Operator.EQ or not c.unit:
        raise Malformed("the price must be 'eq' with a currency in 'unit'")
    if isinstance(c.right, float):  # the JSON reader has already rounded it to binary
        raise Malformed(f"the price is a JSON number with a fraction (read in binary floating "
                        f"point as {c.right!r}); write it as a string, e.g. \"12.50\"")
    amount = as_decimal(c.right)
    if amount < 0:
        raise Malformed("the price must not be negative")
    return Price(amount, c.unit.upper())


#: Left operands that hold in a permission without a stated fact because the compute layer
#: enforces them — which it does only for the bounds every grant carries (top level, ``and``).
ENFORCED_LATER = frozenset({"minGroupSize", "peerSetSize"})


def constraint_check(c: AnyConstraint, path: str, *, in_choice: bool = False) -> Check:
    """The check of one constraint; ``in_choice``: under an ``or`` or ``xone``, where a bound
    the compute layer enforces would not be carried to it (so it fails closed there)."""
    if isinstance(c, Constraint):
        if in_choice and c.left in ENFORCED_LATER:
            return FailsClosed(path, f"{c.left} inside or/xone would not be enforced (the "
                               "compute layer applies only bounds every grant carries)")
        return ConstraintCheck(path, c)
    if not c.constraints:
        return FailsClosed(path, f"an empty {c.op.value} states no condition")
    sub = f"{path}.{c.op.value}"
    choice = in_choice or c.op in (LogicalOp.OR, LogicalOp.XONE)
    children = tuple(constraint_check(x, f"{sub}[{i}]", in_choice=choice)
                     for i, x in enumerate(c.constraints))
    if c.op is LogicalOp.AND:
        return AllOf(path, children, summarise=True)
    if c.op is LogicalOp.OR:
        return AnyOf(path, children)
    if c.op is LogicalOp.XONE:
        return ExactlyOne(path, children)
    return FailsClosed(path, "andSequence needs an order of events this node does not track")


def rule_check(rule: Rule, path: str) -> AllOf:
    """A rule holds when its action covers the request, every constraint holds and every duty
    can be fulfilled."""
    return AllOf(path, (
        ActionCovers(f"{path}.action", rule.action),
        *(constraint_check(c, f"{path}.constraint[{i}]") for i, c in enumerate(rule.constraints)),
        *(DutyCheck(f"{path}.duty[{i}]", d) for i, d in enumerate(rule.duties)),
    ))


@dataclass(frozen=True)
class PartyCheck(Check):
    """The policy's assignee / target match the request (agreements name both)."""

    path: str
    expected: str

    def run(self, ctx: Context) -> Status:
        request = ctx.request
        actual = request.identities if self.path == "assignee" else request.target
        values = {"left": self.path, "operator": "eq", "expected": self.expected,
                  "actual": tuple(sorted(actual)) if isinstance(actual, frozenset) else actual}
        if not actual:
            ctx.add(self.path, Status.FAILED_CLOSED,
                    f"the request does not state its {self.path}; fails closed", **values)
            return Status.FAILED_CLOSED
        ok = self.expected in actual if isinstance(actual, frozenset) else self.expected == actual
        status = Status.HELD if ok else Status.NOT_HELD
        ctx.add(self.path, status, f"policy {self.path} is {self.expected!r}", **values)
        return status
