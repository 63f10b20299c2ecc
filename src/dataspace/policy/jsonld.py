"""ODRL policies in JSON-LD compact form, as the Dataspace Protocol 2025-1 writes them.

``parse_policy`` accepts the DSP compact form (``"action": "use"``) and the ``odrl:``-prefixed
or full-IRI forms other connectors produce (``"odrl:action": {"@id": "odrl:use"}``), and
normalises every name to compact form. ``to_jsonld`` produces the DSP compact form, so
``parse_policy(to_jsonld(p)) == p``. Errors name the JSON path of the problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dataspace.policy.errors import PolicyError
from dataspace.policy.model import (
    AnyConstraint,
    Constraint,
    LogicalConstraint,
    LogicalOp,
    Operand,
    Operator,
    Policy,
    PolicyType,
    Rule,
)
from dataspace.policy.vocabulary import ALIASES, NS, ODRL, PREFIXES, TERMS

DSP_CONTEXT = "https://w3id.org/dspace/2025/1/context.jsonld"

_BY_IRI = {iri: name for name, iri in TERMS.items()}
_RULE_KEYS = {"action", "constraint", "duty", "@id", "uid", "@type"}
_PARTY_KEYS = ("assigner", "assignee", "target")
_CONSTRAINT_KEYS = {"leftOperand", "operator", "rightOperand", "unit", "dataType", "@id", "uid",
                    "@type"}
_UNSUPPORTED = {
    "inheritFrom": "policy inheritance is not supported; send the complete policy",
    "remedy": "remedies are not supported",
    "rightOperandReference": "right operand references are not supported; inline the value",
    "refinement": "action refinements are not supported; use constraints on the rule",
    "consequence": "consequences are not supported",
}


def expand(term: str) -> str:
    """``odrl:eq`` -> its full IRI; other strings unchanged."""
    prefix, sep, rest = term.partition(":")
    if sep and prefix in PREFIXES and not rest.startswith("//"):
        return PREFIXES[prefix] + rest
    return term


def compact(term: str) -> str:
    """Normalise a term to compact form: ``odrl:use``, ``http://www.w3.org/ns/odrl/2/use`` and
    ``use`` all give ``use``; ``ds:fields`` and our IRI give ``fields``. Unknown terms are kept
    as written (so that they fail closed when evaluated)."""
    if term in TERMS:
        return term
    full = expand(term)
    if full in _BY_IRI:
        return _BY_IRI[full]
    if full.startswith(NS) and full[len(NS):] in TERMS:
        return full[len(NS):]
    if full.startswith(ODRL):
        local = full[len(ODRL):]
        if local in ALIASES:
            return ALIASES[local]
        if local in _ODRL_LOCAL:
            return local
    if term in ALIASES:
        return ALIASES[term]
    return term


_ODRL_LOCAL = {op.value for op in Operator} | {op.value for op in LogicalOp} | {
    "Offer", "Agreement", "Set", "Policy", "permission", "prohibition", "obligation", "duty",
    "action", "constraint", "leftOperand", "operator", "rightOperand", "unit", "dataType",
    "assigner", "assignee", "target", "uid", "profile", "Constraint", "LogicalConstraint",
    "Permission", "Prohibition", "Duty", "conflict", "inheritFrom", "remedy", "refinement",
    "consequence", "rightOperandReference",
}


def _key(key: str) -> str:
    if key.startswith("@"):
        return key
    return compact(key)


def _members(obj: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Members with normalised keys; two spellings of one key are refused (one could hide the
    other's constraints)."""
    out: dict[str, Any] = {}
    for raw, value in obj.items():
        key = _key(raw)
        if key in out:
            raise PolicyError(f"member {key!r} appears twice (as {raw!r} too)",
                              path=_join(path, key))
        out[key] = value
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _one(value: Any, path: str) -> Any:
    if isinstance(value, list):
        if len(value) != 1:
            raise PolicyError(f"expected one value, got {len(value)}", path=path)
        return value[0]
    return value


def _many(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _ref(value: Any, path: str) -> str:
    """A string, ``{"@id": ...}`` or a one-element list of either."""
    value = _one(value, path)
    if isinstance(value, Mapping) and "@id" in value:
        value = value["@id"]
    if not isinstance(value, str) or not value:
        raise PolicyError(f"expected a non-empty string or {{'@id': ...}}, got {value!r}",
                          path=path)
    return value


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"expected a JSON object, got {type(value).__name__}", path=path)
    return value


def _reject_unsupported(members: Mapping[str, Any], path: str) -> None:
    for key, why in _UNSUPPORTED.items():
        if key in members:
            raise PolicyError(why, path=_join(path, key))


def parse_policy(doc: Mapping[str, Any] | Any) -> Policy:
    """Parse an ODRL policy (Offer, Agreement or Set) from JSON-LD.

    Raises :class:`PolicyError` naming the JSON path of the first problem.
    """
    members = _members(_object(doc, ""), "")
    _reject_unsupported(members, "")
    _check_context(members.get("@context"))
    conflict = members.get("conflict")
    if conflict is not None and compact(_ref(conflict, "conflict")) != "prohibit":
        raise PolicyError("only conflict 'prohibit' is supported (prohibitions win)",
                          path="conflict")
    ptype = _policy_type(members.get("@type"))
    uid = members.get("@id", members.get("uid"))
    parties: dict[str, str | None] = {}
    for key in _PARTY_KEYS:
        parties[key] = _ref(members[key], key) if key in members else None
    permissions = _rules(members.get("permission"), "permission", parties, duties=True)
    prohibitions = _rules(members.get("prohibition"), "prohibition", parties, duties=False)
    obligations = _rules(members.get("obligation"), "obligation", parties, duties=False)
    known = {"@context", "@type", "@id", "uid", "permission", "prohibition", "obligation",
             *_PARTY_KEYS}
    extras = tuple((k, v) for k, v in members.items() if k not in known)
    for key, _ in extras:
        if key not in _METADATA and not key.startswith(_METADATA_PREFIXES):
            raise PolicyError(
                f"unknown or unsupported member {key!r}", path=key,
                hint="refusing to ignore a term that may restrict use (a prohibition or "
                "obligation under another name); metadata goes under dct:")
    return Policy(
        uid=None if uid is None else _ref(uid, "@id"),
        type=ptype,
        assigner=parties["assigner"],
        assignee=parties["assignee"],
        target=parties["target"],
        permissions=permissions,
        prohibitions=prohibitions,
        obligations=obligations,
        extras=extras,
    )


#: Top-level members kept verbatim as metadata; anything else unknown is refused.
_METADATA = frozenset({"profile", "timestamp"})
_METADATA_PREFIXES = ("dct:", "dcterms:", "rdfs:", "skos:")
#: The contexts whose terms this module knows. A local definition (an object in @context) or
#: another remote context could rename ODRL terms — "forbid" for prohibition, "eq" for neq —
#: and a JSON-LD peer would read the policy otherwise than this node.
KNOWN_CONTEXTS = frozenset({DSP_CONTEXT, "http://www.w3.org/ns/odrl.jsonld"})


def _check_context(raw: Any) -> None:
    if raw is None:
        return
    for i, item in enumerate(_many(raw)):
        if not isinstance(item, str) or item not in KNOWN_CONTEXTS:
            shown = item if isinstance(item, str) else type(item).__name__
            raise PolicyError(
                f"@context {shown!r} is not one this node reads", path=f"@context[{i}]",
                hint=f"use {DSP_CONTEXT} (a policy may not define or redefine terms)")


def _policy_type(raw: Any) -> PolicyType:
    if raw is None:
        return PolicyType.SET
    name = compact(_ref(raw, "@type"))
    if name == "Policy":
        return PolicyType.SET
    try:
        return PolicyType(name)
    except ValueError:
        valid = ", ".join(t.value for t in PolicyType)
        raise PolicyError(f"unknown policy type {name!r} (valid: {valid})", path="@type") from None


def _rules(raw: Any, path: str, parties: Mapping[str, str | None], *, duties: bool
           ) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    return tuple(_rule(item, f"{path}[{i}]", parties, duties=duties)
                 for i, item in enumerate(_many(raw)))


def _rule(raw: Any, path: str, parties: Mapping[str, str | None], *, duties: bool) -> Rule:
    members = _members(_object(raw, path), path)
    _reject_unsupported(members, path)
    for key in _PARTY_KEYS:
        if key in members:
            value = _ref(members[key], _join(path, key))
            if value != parties.get(key):
                raise PolicyError(
                    f"a rule-level {key} different from the policy's is not supported",
                    path=_join(path, key), hint=f"set {key} on the policy instead")
    allowed = _RULE_KEYS | set(_PARTY_KEYS)
    for key in members:
        if key not in allowed or (key == "duty" and not duties):
            raise PolicyError(f"unknown or unsupported member {key!r}", path=_join(path, key),
                              hint="refusing to ignore a term that may restrict use")
    if "action" not in members:
        raise PolicyError("missing action", path=_join(path, "action"))
    action = compact(_ref(members["action"], _join(path, "action")))
    constraints = _constraints(members.get("constraint"), _join(path, "constraint"))
    rule_duties = _rules(members.get("duty"), _join(path, "duty"), parties, duties=False)
    return Rule(action=action, constraints=constraints, duties=rule_duties)


def _constraints(raw: Any, path: str) -> tuple[AnyConstraint, ...]:
    if raw is None:
        return ()
    return tuple(_constraint(item, f"{path}[{i}]") for i, item in enumerate(_many(raw)))


def _constraint(raw: Any, path: str) -> AnyConstraint:
    members = _members(_object(raw, path), path)
    _reject_unsupported(members, path)
    logical = [op for op in LogicalOp if op.value in members]
    if logical:
        if len(logical) > 1 or "leftOperand" in members:
            raise PolicyError("a constraint must be either atomic or one logical operator",
                              path=path)
        op = logical[0]
        for key in members:
            if key not in (op.value, "@id", "uid", "@type"):
                raise PolicyError(f"unknown member {key!r} beside {op.value!r}",
                                  path=_join(path, key),
                                  hint="a logical constraint holds its operator's list only")
        items = members[op.value]
        if isinstance(items, Mapping) and "@list" in items:
            items = items["@list"]
        sub = _join(path, op.value)
        return LogicalConstraint(
            op, tuple(_constraint(item, f"{sub}[{i}]") for i, item in enumerate(_many(items))))
    for key in members:
        if key not in _CONSTRAINT_KEYS:
            raise PolicyError(f"unknown member {key!r}", path=_join(path, key))
    for key in ("leftOperand", "operator", "rightOperand"):
        if key not in members:
            raise PolicyError(f"missing {key}", path=_join(path, key))
    left = compact(_ref(members["leftOperand"], _join(path, "leftOperand")))
    op_name = compact(_ref(members["operator"], _join(path, "operator")))
    try:
        operator = Operator(op_name)
    except ValueError:
        valid = ", ".join(o.value for o in Operator)
        raise PolicyError(f"unknown operator {op_name!r} (valid: {valid})",
                          path=_join(path, "operator")) from None
    right, data_type = _right(members["rightOperand"], _join(path, "rightOperand"), top=True)
    if "dataType" in members:
        data_type = _ref(members["dataType"], _join(path, "dataType"))
    unit = _ref(members["unit"], _join(path, "unit")) if "unit" in members else None
    return Constraint(left, operator, right, unit=unit, data_type=data_type)


def _right(raw: Any, path: str, *, top: bool = False) -> tuple[Operand, str | None]:
    if isinstance(raw, bool | int | str):
        return raw, None
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise PolicyError("numbers must be finite", path=path)
        return raw, None
    if isinstance(raw, list):
        return tuple(_right(item, f"{path}[{i}]")[0] for i, item in enumerate(raw)), None
    if isinstance(raw, Mapping):
        if "@value" in raw and set(raw) <= {"@value", "@type", "@language"}:
            value, _ = _right(raw["@value"], _join(path, "@value"))
            if isinstance(value, tuple):
                raise PolicyError("@value must be a scalar", path=_join(path, "@value"))
            dtype = raw.get("@type")
            return value, (_ref(dtype, _join(path, "@type")) if dtype and top else None)
        if set(raw) == {"@id"}:
            return _ref(raw, path), None
        for key in ("@list", "@set"):
            if set(raw) == {key}:
                return _right(_many(raw[key]), _join(path, key))
    raise PolicyError(f"unsupported right operand {raw!r}", path=path,
                      hint="use a string, number, boolean, list, {'@value'} or {'@id'}")


# --- producing ---------------------------------------------------------------------------------


def to_jsonld(policy: Policy, *, context: bool = True) -> dict[str, Any]:
    """The policy in DSP compact JSON-LD (with ``@context`` unless ``context=False``)."""
    doc: dict[str, Any] = {}
    if context:
        doc["@context"] = [DSP_CONTEXT]
    if policy.uid is not None:
        doc["@id"] = policy.uid
    doc["@type"] = policy.type.value
    for key in _PARTY_KEYS:
        value = getattr(policy, key)
        if value is not None:
            doc[key] = value
    for key, rules in (("permission", policy.permissions), ("prohibition", policy.prohibitions),
                       ("obligation", policy.obligations)):
        if rules:
            doc[key] = [rule_to_jsonld(rule) for rule in rules]
    for key, value in policy.extras:
        doc.setdefault(key, value)
    return doc


def rule_to_jsonld(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"action": rule.action}
    if rule.constraints:
        out["constraint"] = [constraint_to_jsonld(c) for c in rule.constraints]
    if rule.duties:
        out["duty"] = [rule_to_jsonld(d) for d in rule.duties]
    return out


def constraint_to_jsonld(constraint: AnyConstraint) -> dict[str, Any]:
    if isinstance(constraint, LogicalConstraint):
        return {constraint.op.value: [constraint_to_jsonld(c) for c in constraint.constraints]}
    right: Any = _plain(constraint.right)
    out: dict[str, Any] = {"leftOperand": constraint.left, "operator": constraint.operator.value}
    if constraint.data_type is not None and not isinstance(right, list):
        right = {"@value": right, "@type": constraint.data_type}
    elif constraint.data_type is not None:
        out["dataType"] = constraint.data_type
    out["rightOperand"] = right
    if constraint.unit is not None:
        out["unit"] = constraint.unit
    return out


def _plain(value: Operand) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
