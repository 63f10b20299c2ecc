"""One evaluation function per left operand; anything else fails closed.

``check(constraint, request, vocabulary)`` returns an :class:`Outcome` or raises
:class:`FailClosed` — for an unknown left operand, an operator the left operand does not
support, a missing fact, or a malformed right operand.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from dataspace.policy.model import Constraint, Operator
from dataspace.policy.request import Request
from dataspace.policy.values import (
    Duration,
    Malformed,
    as_datetime,
    as_decimal,
    as_int,
    as_term,
    as_terms,
)
from dataspace.policy.vocabulary import LEFT_OPERANDS, OUTPUT_MODES, Hierarchy, Vocabulary


class FailClosed(Exception):
    """The constraint cannot be evaluated; it must not be taken as satisfied."""

    def __init__(self, message: str, actual: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.actual = actual


@dataclass(frozen=True)
class Outcome:
    held: bool
    actual: object
    note: str = ""


class _Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...
    def __le__(self, other: Any, /) -> bool: ...
    def __gt__(self, other: Any, /) -> bool: ...
    def __ge__(self, other: Any, /) -> bool: ...


def _order(op: Operator, actual: _Comparable, expected: _Comparable) -> bool:
    if op is Operator.EQ:
        return actual == expected
    if op is Operator.NEQ:
        return actual != expected
    if op is Operator.GT:
        return actual > expected
    if op is Operator.GTEQ:
        return actual >= expected
    if op is Operator.LT:
        return actual < expected
    if op is Operator.LTEQ:
        return actual <= expected
    raise FailClosed(f"operator {op.value!r} is not an ordering")  # pragma: no cover


class MissingFact(FailClosed):
    """The request does not state a fact the constraint needs."""


def _fact(value: object, name: str, left: str) -> Any:
    if value is None:
        raise MissingFact(f"the request does not state {name}, which {left!r} needs")
    return value


def _set_op(op: Operator, actual: Set[str], expected: tuple[str, ...]) -> bool:
    """Set semantics: isPartOf ⊆, isAnyOf intersects, isAllOf ⊇, isNoneOf disjoint."""
    right = set(expected)
    if op is Operator.EQ:
        return set(actual) == right
    if op is Operator.NEQ:
        return set(actual) != right
    if op is Operator.IS_PART_OF:
        return set(actual) <= right
    if op is Operator.IS_ANY_OF:
        return bool(set(actual) & right)
    if op is Operator.IS_ALL_OF:
        return right <= set(actual)
    if op is Operator.IS_NONE_OF:
        return not set(actual) & right
    raise FailClosed(f"operator {op.value!r} is not a set operator")  # pragma: no cover


def _term_op(op: Operator, tree: Hierarchy, actual: str, right: Any, *, grants: bool) -> bool:
    """Hierarchy-aware. In a permission (``grants``) a term matches an expected term it is
    part of, and an exclusion (neq, isNoneOf) holds only if the stated term does not overlap
    the excluded one either way: ``any-purpose`` includes ``marketing``, so it is not "none
    of marketing". In a prohibition a positive test applies to every term that overlaps the
    named one (a broader purpose includes the prohibited one)."""
    if actual not in tree:
        raise FailClosed(f"{actual!r} is not a known {tree.name}", actual)
    single = op in (Operator.EQ, Operator.NEQ, Operator.IS_PART_OF)
    expected = (as_term(right),) if single else as_terms(right)
    for term in expected:
        if term not in tree:
            raise FailClosed(f"right operand {term!r} is not a known {tree.name}", actual)
    within = [tree.is_part_of(actual, term) for term in expected]
    overlaps = [w or tree.is_part_of(t, actual) for w, t in zip(within, expected, strict=True)]
    if op is Operator.EQ:
        return actual == expected[0] if grants else overlaps[0]
    if op is Operator.NEQ:
        return not overlaps[0] if grants else actual != expected[0]
    if op in (Operator.IS_PART_OF, Operator.IS_ANY_OF):
        return any(within if grants else overlaps)
    if op is Operator.IS_ALL_OF:
        return all(within if grants else overlaps)
    return not any(overlaps if grants else within)  # isNoneOf


Checker = Callable[[Constraint, Request, Vocabulary, bool], Outcome]


def _purpose(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    actual = _fact(r.purpose, "a purpose", c.left)
    return Outcome(_term_op(c.operator, v.purposes, actual, c.right, grants=enforce), actual)


def _region(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    actual = _fact(r.region, "where results go (region)", c.left)
    return Outcome(_term_op(c.operator, v.regions, actual, c.right, grants=enforce), actual)


def _action(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    return Outcome(_term_op(c.operator, v.actions, r.action, c.right, grants=enforce), r.action)


def _assignee(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    _fact(r.assignee, "an assignee", c.left)
    ids = r.identities
    if c.operator is Operator.IS_PART_OF:
        held = as_term(c.right) in r.groups
    elif c.operator in (Operator.EQ, Operator.NEQ):
        held = (as_term(c.right) in ids) == (c.operator is Operator.EQ)
    else:
        held = _set_op(c.operator, ids, as_terms(c.right))
    return Outcome(held, tuple(sorted(ids)))


def _date_time(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    now: datetime = _fact(r.now, "the time (now)", c.left)
    bound = as_datetime(c.right)
    held = _order(c.operator, now, bound)
    # say what a refusal means: a lapsed agreement read "dateTime lteq ...: does not hold"
    meaning = {Operator.LT: "ended", Operator.LTEQ: "ended", Operator.GT: "begins",
               Operator.GTEQ: "begins"}.get(c.operator)
    note = f"use {meaning} at {bound.isoformat()}" if meaning and not held else ""
    return Outcome(held, now.isoformat(), note)


def _elapsed(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    now: datetime = _fact(r.now, "the time (now)", c.left)
    start: datetime = _fact(r.agreed_at, "when the agreement was signed", c.left)
    deadline = Duration.parse(c.right).after(start)
    # elapsed <op> duration  <=>  now <op> start + duration (calendar-aware)
    return Outcome(_order(c.operator, now, deadline), str(now - start),
                   f"start + {c.right} = {deadline.isoformat()}")


def _count(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    done: int = _fact(r.jobs_run, "how many jobs ran (jobs_run)", c.left)
    actual = done + 1
    return Outcome(_order(c.operator, actual, as_int(c.right)), actual,
                   "jobs including this one")


def _fields(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    actual: frozenset[str] = _fact(r.fields, "the fields it reads", c.left)
    return Outcome(_set_op(c.operator, actual, as_terms(c.right)), tuple(sorted(actual)))


def _min_group_size(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    k = as_int(c.right)
    if k < 1:
        raise Malformed(f"minGroupSize must be at least 1, got {k}")
    if r.min_group_size is None:
        if not enforce:
            raise MissingFact("the request does not state the group size it applies")
        return Outcome(True, None, "enforced by the compute layer")
    return Outcome(_order(c.operator, r.min_group_size, k), r.min_group_size)


def _peer_set_size(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    bound = as_int(c.right)
    if bound < 0:
        raise Malformed(f"peerSetSize must not be negative, got {bound}")
    if r.peer_set_size is None:
        if not enforce:
            raise MissingFact("the request does not state the initiator's set size")
        return Outcome(True, None, "enforced by the PSI protocol")
    return Outcome(_order(c.operator, r.peer_set_size, bound), r.peer_set_size)


def _budget(name: str) -> Checker:
    def check(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
        asked = _fact(getattr(r, name), f"the {name} it asks for", c.left)
        spent = _fact(getattr(r, f"{name}_spent"), f"the {name} already spent", c.left)
        total = as_decimal(asked) + as_decimal(spent)
        if as_decimal(asked) < 0 or as_decimal(spent) < 0:
            raise FailClosed(f"negative {name}", float(total))
        return Outcome(_order(c.operator, total, as_decimal(c.right)), float(total),
                       f"spent {spent} + this job {asked}")

    return check


def _mode(value: str) -> int:
    if value not in OUTPUT_MODES:
        raise Malformed(f"{value!r} is not an output mode ({', '.join(OUTPUT_MODES)})")
    return OUTPUT_MODES.index(value)


def _output(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    actual: str = _fact(r.output, "an output mode", c.left)
    rank = _mode(actual)
    if c.operator in (Operator.IS_ANY_OF, Operator.IS_NONE_OF):
        ranks = {_mode(term) for term in as_terms(c.right)}
        return Outcome((rank in ranks) == (c.operator is Operator.IS_ANY_OF), actual)
    return Outcome(_order(c.operator, rank, _mode(as_term(c.right))), actual)


def _price(c: Constraint, r: Request, v: Vocabulary, enforce: bool) -> Outcome:
    price = _fact(r.price, "a price", c.left)
    if c.unit is None:
        raise Malformed("a price constraint needs a currency in 'unit'")
    if c.unit.upper() != price.currency:
        raise FailClosed(f"currency {price.currency} is not the policy's {c.unit}", str(price))
    return Outcome(_order(c.operator, price.amount, as_decimal(c.right)), str(price))


CHECKERS: dict[str, Checker] = {
    "purpose": _purpose,
    "assignee": _assignee,
    "dateTime": _date_time,
    "elapsedTime": _elapsed,
    "count": _count,
    "action": _action,
    "fields": _fields,
    "minGroupSize": _min_group_size,
    "peerSetSize": _peer_set_size,
    "epsilon": _budget("epsilon"),
    "delta": _budget("delta"),
    "output": _output,
    "region": _region,
    "price": _price,
}
assert set(CHECKERS) == set(LEFT_OPERANDS), "every documented left operand has a checker"


def check(c: Constraint, request: Request, vocabulary: Vocabulary, *, enforce: bool = False
          ) -> Outcome:
    """Evaluate one atomic constraint. ``enforce``: constraints the compute layer enforces
    (minGroupSize, peerSetSize) hold when the request does not state the fact."""
    spec = LEFT_OPERANDS.get(c.left)
    checker = CHECKERS.get(c.left)
    if spec is None or checker is None:
        raise FailClosed(f"unknown left operand {c.left!r}: this node cannot evaluate it")
    if c.operator not in spec.operators:
        ops = ", ".join(sorted(o.value for o in spec.operators))
        raise FailClosed(f"operator {c.operator.value!r} is not supported for {c.left!r} "
                         f"(supported: {ops})")
    try:
        return checker(c, request, vocabulary, enforce)
    except Malformed as exc:
        raise FailClosed(f"malformed right operand for {c.left!r}: {exc}") from None


def malformed_reason(c: Constraint, vocabulary: Vocabulary) -> str | None:
    """A static check of the right operand (no request needed); ``None`` if it is well-formed
    or its left operand is unknown."""
    try:
        _static(c, vocabulary)
    except Malformed as exc:
        return str(exc)
    return None


def _static(c: Constraint, vocabulary: Vocabulary) -> None:
    single = c.operator in (Operator.EQ, Operator.NEQ, Operator.IS_PART_OF, Operator.GT,
                            Operator.GTEQ, Operator.LT, Operator.LTEQ)
    left = c.left
    if left == "dateTime":
        as_datetime(c.right)
    elif left == "elapsedTime":
        Duration.parse(c.right)
    elif left in ("count", "minGroupSize", "peerSetSize"):
        if as_int(c.right) < 1:
            raise Malformed(f"{left} is a whole number of at least 1, not {c.right!r}")
    elif left in ("epsilon", "delta", "price"):
        number = as_decimal(c.right)
        if left == "price" and c.unit is None:
            raise Malformed("a price needs a currency in 'unit'")
        if left == "epsilon" and number <= 0:
            raise Malformed(f"epsilon is positive, not {c.right!r}")
        if left == "delta" and not 0 <= number < 1:
            raise Malformed(f"delta lies in [0, 1), not {c.right!r}")
        if left == "price" and number < 0:
            raise Malformed(f"a price is not negative, not {c.right!r}")
    elif left == "output":
        for term in (as_term(c.right),) if single else as_terms(c.right):
            _mode(term)
    elif left in ("assignee", "fields"):
        if single and left != "fields":
            as_term(c.right)
        else:
            as_terms(c.right)
    elif left in ("purpose", "region", "action"):
        tree = {"purpose": vocabulary.purposes, "region": vocabulary.regions,
                "action": vocabulary.actions}[left]
        for term in (as_term(c.right),) if single else as_terms(c.right):
            if term not in tree:
                raise Malformed(f"{term!r} is not a known {tree.name}")

