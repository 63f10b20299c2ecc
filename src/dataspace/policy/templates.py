"""Offer templates for the common cases, as named builders of :class:`Policy` objects.

``from_template("dp-stats", purposes=["credit-risk"], epsilon=1.0)``; values may also be
strings (as a CLI passes them: ``"credit-risk,anti-fraud"``, ``"1.0"``, ``"100 CNY"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from dataspace.policy.errors import PolicyError
from dataspace.policy.model import Constraint, Operator, Policy, PolicyType, Rule
from dataspace.policy.request import Price
from dataspace.policy.vocabulary import OUTPUT_MODES, PURPOSES, REGIONS


@dataclass(frozen=True)
class Param:
    name: str
    # str | int | number (>= 0) | positive | probability ([0, 1)) | terms | datetime | price
    # | output | region
    kind: str
    help: str
    required: bool = False
    default: Any = None


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    params: tuple[Param, ...]
    build: Callable[[Mapping[str, Any]], Policy]

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


_COMMON = (
    Param("purposes", "terms", "purposes allowed (purpose tree; sub-purposes included)", True),
    Param("fields", "terms", "columns the consumer may read (default: all)"),
    Param("price", "price", "price per job, e.g. '100.00 CNY' (a compensate duty)"),
    Param("expires", "datetime", "last moment of use, ISO 8601 with offset"),
    Param("max_jobs", "int", "how many jobs the agreement allows"),
    Param("region", "region", "where results may go, e.g. CN or CN-31"),
    Param("assignee", "str", "the only participant (or group) that may use it"),
    Param("assigner", "str", "the provider's participant id"),
    Param("target", "str", "the dataset id"),
    Param("uid", "str", "the offer's @id"),
)


def _coerce(param: Param, value: Any) -> Any:
    kind, where = param.kind, f"parameter {param.name!r}"
    try:
        if kind == "terms":
            terms = [t.strip() for t in value.split(",")] if isinstance(value, str) else list(value)
            if not terms or not all(isinstance(t, str) and t for t in terms):
                raise ValueError("expected a non-empty list of names")
            return tuple(terms)
        if kind == "int":
            if isinstance(value, bool):  # JSON true is no count (Python's int(True) is 1)
                raise ValueError("expected a positive integer such as 10")
            try:
                number = int(value)
            except ValueError:  # int()'s own words: "invalid literal for int() with base 10"
                raise ValueError("expected a positive integer such as 10") from None
            if number < 1 or (isinstance(value, float) and value != number):
                raise ValueError("expected a positive integer")
            return number
        if kind in ("number", "positive", "probability"):
            dec = Decimal(str(value))
            if kind == "positive" and not (dec.is_finite() and dec > 0):
                raise ValueError("expected a positive number")
            if kind == "probability" and not (dec.is_finite() and 0 <= dec < 1):
                raise ValueError("expected a number from 0 up to (not including) 1")
            if not dec.is_finite() or dec < 0:
                raise ValueError("expected a non-negative number")
            return float(dec)
        if kind == "datetime":
            try:
                when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            except ValueError:
                raise ValueError("expected an ISO 8601 date-time with its UTC offset, e.g. "
                                 "2026-12-31T23:59:59+08:00") from None
            if when.utcoffset() is None:
                raise ValueError("needs a UTC offset, e.g. 2026-12-31T23:59:59+08:00")
            return when
        if kind == "price":
            return value if isinstance(value, Price) else Price.parse(str(value))
        if kind == "output":
            if value not in OUTPUT_MODES:
                raise ValueError(f"expected one of {', '.join(OUTPUT_MODES)}")
            return str(value)
        if kind == "region":
            if value not in REGIONS:
                raise ValueError("not a known region (e.g. CN, CN-31, HK, EU)")
            return str(value)
        if not isinstance(value, str) or not value:
            raise ValueError("expected a non-empty string")
        return value
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc.message}") from None
    except InvalidOperation:  # Decimal's own text is a list of classes
        raise PolicyError(f"{where}: {value!r} is not a number (e.g. 1.0)") from None
    except (ValueError, TypeError, OverflowError) as exc:  # int(1e400): infinity
        raise PolicyError(f"{where}: {value!r} is invalid: {exc}") from None


def _c(left: str, op: Operator, right: Any, unit: str | None = None) -> Constraint:
    return Constraint(left, op, right, unit=unit)


def _offer(p: Mapping[str, Any], action: str, specific: list[Constraint]) -> Policy:
    unknown = [t for t in p["purposes"] if t not in PURPOSES]
    if unknown:
        raise PolicyError(f"unknown purpose(s) {', '.join(unknown)}",
                          hint="see docs/policy.md for the purpose tree")
    constraints = [_c("purpose", Operator.IS_ANY_OF, p["purposes"]), *specific]
    if p.get("fields"):
        constraints.append(_c("fields", Operator.IS_PART_OF, p["fields"]))
    if p.get("expires"):
        constraints.append(_c("dateTime", Operator.LTEQ, p["expires"].isoformat()))
    if p.get("max_jobs"):
        constraints.append(_c("count", Operator.LTEQ, p["max_jobs"]))
    if p.get("region"):
        constraints.append(_c("region", Operator.IS_PART_OF, p["region"]))
    duties: tuple[Rule, ...] = ()
    if p.get("price"):
        price: Price = p["price"]
        duties = (Rule("compensate", (_c("price", Operator.EQ, price.plain_amount,
                                         price.currency),)),)
    return Policy(
        uid=p.get("uid"),
        type=PolicyType.OFFER,
        assigner=p.get("assigner"),
        assignee=p.get("assignee"),
        target=p.get("target"),
        permissions=(Rule(action, tuple(constraints), duties),),
    )


def _aggregate_only(p: Mapping[str, Any]) -> Policy:
    return _offer(p, "governed-query", [
        _c("output", Operator.EQ, "aggregate-only"),
        _c("minGroupSize", Operator.GTEQ, p["min_group_size"]),
    ])


def _dp_stats(p: Mapping[str, Any]) -> Policy:
    specific = [
        _c("output", Operator.EQ, "aggregate-only"),
        _c("epsilon", Operator.LTEQ, p["epsilon"]),
        _c("minGroupSize", Operator.GTEQ, p["min_group_size"]),
    ]
    if p.get("delta") is not None:
        specific.insert(2, _c("delta", Operator.LTEQ, p["delta"]))
    return _offer(p, "dp-query", specific)


def _psi_only(p: Mapping[str, Any]) -> Policy:
    specific = [_c("output", Operator.LTEQ, p["output"])]
    if p.get("max_peer_set") is not None:
        specific.append(_c("peerSetSize", Operator.LTEQ, p["max_peer_set"]))
    return _offer(p, "psi", specific)


def _federated_train(p: Mapping[str, Any]) -> Policy:
    specific = [_c("output", Operator.EQ, "aggregate-only")]
    if p.get("epsilon") is not None:
        specific.append(_c("epsilon", Operator.LTEQ, p["epsilon"]))
    return _offer(p, "federated-train", specific)


def _secure_aggregate(p: Mapping[str, Any]) -> Policy:
    specific = [_c("output", Operator.EQ, "aggregate-only")]
    if p.get("epsilon") is not None:
        specific.append(_c("epsilon", Operator.LTEQ, p["epsilon"]))
    if p.get("min_group_size") is not None:
        specific.append(_c("minGroupSize", Operator.GTEQ, p["min_group_size"]))
    return _offer(p, "secure-aggregate", specific)


def _raw_transfer(p: Mapping[str, Any]) -> Policy:
    return _offer(p, "transfer", [_c("output", Operator.LTEQ, p["output"])])


_K = Param("min_group_size", "int", "least contributors per released group", default=10)

TEMPLATES: Mapping[str, Template] = {
    t.name: t
    for t in (
        Template("aggregate-only", "governed SQL, aggregates only, groups of at least k",
                 (_K, *_COMMON), _aggregate_only),
        Template("dp-stats", "differentially private statistics within an ε (δ) budget",
                 (Param("epsilon", "positive", "total ε for the agreement", True),
                  Param("delta", "probability", "total δ for the agreement (default: pure ε-DP)"),
                  _K, *_COMMON), _dp_stats),
        Template("psi-only", "private set intersection only; no rows leave",
                 (Param("output", "output", "aggregate-only (the intersection's size only) or "
                        "pseudonymized (which keys match: modes me, both and align)",
                        default="aggregate-only"),
                  Param("max_peer_set", "int", "most identifiers the initiator may bring "
                        "(default: no bound)"),
                  *_COMMON), _psi_only),
        Template("federated-train", "federated training only; only model updates leave",
                 (Param("epsilon", "positive", "optional total ε for DP training"), *_COMMON),
                 _federated_train),
        Template("secure-aggregate", "secure aggregation only; only a masked sum leaves",
                 (Param("epsilon", "positive", "optional total ε for DP sums (each party "
                        "noises its own vector)"),
                  Param("min_group_size", "int", "least rows a party sums (default: no floor)"),
                  *_COMMON), _secure_aggregate),
        Template("raw-transfer", "rows leave through a DSP transfer until an expiry",
                 (Param("expires", "datetime", "last moment of use, ISO 8601 with offset",
                        True),
                  Param("output", "output", "raw or pseudonymized", default="raw"),
                  *(p for p in _COMMON if p.name != "expires")), _raw_transfer),
    )
}


def list_templates() -> tuple[Template, ...]:
    """Every template (``.name``, ``.description``, ``.params``)."""
    return tuple(TEMPLATES.values())


def from_template(name: str, **params: Any) -> Policy:
    """Build an Offer from a named template; unknown names or parameters raise PolicyError."""
    template = TEMPLATES.get(name)
    if template is None:
        raise PolicyError(f"unknown template {name!r}",
                          hint=f"valid templates: {', '.join(TEMPLATES)}")
    valid = ", ".join(p.name for p in template.params)
    values: dict[str, Any] = {}
    for key, value in params.items():
        param = template.param(key)
        if param is None:
            raise PolicyError(f"template {name!r} has no parameter {key!r}",
                              hint=f"valid parameters: {valid}")
        if value is not None:
            values[key] = _coerce(param, value)
    for param in template.params:
        if param.name not in values:
            if param.required:
                raise PolicyError(f"template {name!r} needs parameter {param.name!r}",
                                  hint=f"{param.name}: {param.help}")
            if param.default is not None:
                values[param.name] = _coerce(param, param.default)
    return template.build(values)
