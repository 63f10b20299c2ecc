"""The ODRL 2.2 information model, as the Dataspace Protocol 2025-1 uses it.

Immutable dataclasses; names are stored in compact form (``use``, ``purpose``, ``isPartOf``).
Parsing and producing JSON-LD lives in :mod:`dataspace.policy.jsonld`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

Scalar: TypeAlias = str | int | float | bool
#: A right operand: a JSON scalar or a (nested) tuple of them.
Operand: TypeAlias = Scalar | tuple["Operand", ...]


class PolicyType(StrEnum):
    OFFER = "Offer"
    AGREEMENT = "Agreement"
    SET = "Set"


class Operator(StrEnum):
    """ODRL 2.2 operators (plus DSP's ``term-lteq``). All parse; see ``EVALUATED``."""

    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTEQ = "gteq"
    LT = "lt"
    LTEQ = "lteq"
    IS_PART_OF = "isPartOf"
    IS_ANY_OF = "isAnyOf"
    IS_ALL_OF = "isAllOf"
    IS_NONE_OF = "isNoneOf"
    HAS_PART = "hasPart"
    IS_A = "isA"
    TERM_LTEQ = "term-lteq"


#: Operators this node evaluates; the others parse but fail closed.
EVALUATED: frozenset[Operator] = frozenset(
    {
        Operator.EQ,
        Operator.NEQ,
        Operator.GT,
        Operator.GTEQ,
        Operator.LT,
        Operator.LTEQ,
        Operator.IS_PART_OF,
        Operator.IS_ANY_OF,
        Operator.IS_ALL_OF,
        Operator.IS_NONE_OF,
    }
)


class LogicalOp(StrEnum):
    AND = "and"
    OR = "or"
    XONE = "xone"
    AND_SEQUENCE = "andSequence"


@dataclass(frozen=True)
class Constraint:
    """An atomic constraint: ``left operator right`` (``unit`` e.g. a currency)."""

    left: str
    operator: Operator
    right: Operand
    unit: str | None = None
    data_type: str | None = None


@dataclass(frozen=True)
class LogicalConstraint:
    """``and`` / ``or`` / ``xone`` (exactly one) / ``andSequence`` over constraints."""

    op: LogicalOp
    constraints: tuple[AnyConstraint, ...]


AnyConstraint: TypeAlias = Constraint | LogicalConstraint


@dataclass(frozen=True)
class Rule:
    """A permission, prohibition or duty: an action, its constraints and (permissions) duties."""

    action: str
    constraints: tuple[AnyConstraint, ...] = ()
    duties: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Policy:
    """An ODRL policy: Offer, Agreement or Set.

    ``extras`` keeps other top-level members verbatim (``profile``, ``timestamp``, ...) as
    ``(key, json)`` pairs so that they round-trip.
    """

    uid: str | None = None
    type: PolicyType = PolicyType.SET
    assigner: str | None = None
    assignee: str | None = None
    target: str | None = None
    permissions: tuple[Rule, ...] = ()
    prohibitions: tuple[Rule, ...] = ()
    obligations: tuple[Rule, ...] = ()
    extras: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
