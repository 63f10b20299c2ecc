"""JSON-LD: the DSP examples parse, odrl:/IRI forms normalise, errors name their path,
and to_jsonld round-trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.policy import (
    Constraint,
    LogicalConstraint,
    LogicalOp,
    Operator,
    Policy,
    PolicyError,
    PolicyType,
    Rule,
    parse_policy,
    to_jsonld,
)
from dataspace.policy.jsonld import DSP_CONTEXT

FIXTURES = Path(__file__).parent / "fixtures"


def _policies_in(name: str) -> list[dict[str, Any]]:
    doc = json.loads((FIXTURES / name).read_text())
    if "agreement" in doc:
        return [doc["agreement"]]
    if "offer" in doc:
        return [doc["offer"]]
    if "hasPolicy" in doc:
        return list(doc["hasPolicy"])
    return [p for ds in doc["dataset"] for p in ds["hasPolicy"]]


DSP_EXAMPLES = ["contract-agreement-message-full.json", "contract-agreement-message.json",
                "contract-offer-message.json", "contract-request-message.json",
                "contract-request-message_initial.json", "dataset.json", "catalog.json"]


@pytest.mark.parametrize("name", DSP_EXAMPLES)
def test_dsp_example_policies_parse_and_round_trip(name: str) -> None:
    for raw in _policies_in(name):
        policy = parse_policy(raw)
        assert policy.uid == raw["@id"]
        doc = to_jsonld(policy, context=False)
        assert doc == raw  # compact in, identical compact out
        assert parse_policy(doc) == policy


def test_dsp_agreement_details() -> None:
    (raw,) = _policies_in("contract-agreement-message-full.json")
    policy = parse_policy(raw)
    assert policy.type is PolicyType.AGREEMENT
    assert (policy.assigner, policy.assignee) == ("http://example.com/Provider",
                                                  "http://example.com/Consumer")
    assert len(policy.permissions) == 7
    assert policy.permissions[0].constraints[0] == Constraint(
        "dateTime", Operator.LTEQ, "2023-12-31T06:00Z")
    ops = [c.op for p in policy.permissions[1:] for c in p.constraints
           if isinstance(c, LogicalConstraint)]
    assert ops == [LogicalOp.AND, LogicalOp.OR, LogicalOp.AND_SEQUENCE, LogicalOp.XONE,
                   LogicalOp.OR]
    assert dict(policy.extras) == {"profile": "https://test.com/profile",
                                   "timestamp": "2023-01-01T01:00:00Z"}


def test_prefixed_and_iri_forms_normalise() -> None:
    odrl = "http://www.w3.org/ns/odrl/2/"
    expanded = {
        "@type": "odrl:Offer",
        "@id": "urn:offer:1",
        "odrl:permission": {
            "odrl:action": {"@id": "odrl:use"},
            "odrl:constraint": [
                {"odrl:leftOperand": {"@id": "odrl:purpose"},
                 "odrl:operator": {"@id": "odrl:isPartOf"},
                 "odrl:rightOperand": "finance"},
                {f"{odrl}leftOperand": {"@id": "https://w3id.org/dataspace/policy#fields"},
                 f"{odrl}operator": {"@id": f"{odrl}isAnyOf"},
                 f"{odrl}rightOperand": [{"@value": "a"}, {"@id": "b"}]},
                {"odrl:or": {"@list": [
                    {"leftOperand": "ds:epsilon", "operator": "lteq",
                     "rightOperand": {"@value": "1.5", "@type": "xsd:decimal"}},
                    {"leftOperand": "odrl:payAmount", "operator": "odrl:lteq",
                     "rightOperand": 10, "unit": "CNY"},
                ]}},
            ],
            "odrl:duty": {"odrl:action": "odrl:compensate"},
        },
    }
    compact = {
        "@context": [DSP_CONTEXT],
        "@type": "Offer",
        "@id": "urn:offer:1",
        "permission": [{
            "action": "use",
            "constraint": [
                {"leftOperand": "purpose", "operator": "isPartOf", "rightOperand": "finance"},
                {"leftOperand": "fields", "operator": "isAnyOf", "rightOperand": ["a", "b"]},
                {"or": [
                    {"leftOperand": "epsilon", "operator": "lteq",
                     "rightOperand": {"@value": "1.5", "@type": "xsd:decimal"}},
                    {"leftOperand": "price", "operator": "lteq", "rightOperand": 10,
                     "unit": "CNY"},
                ]},
            ],
            "duty": [{"action": "compensate"}],
        }],
    }
    assert parse_policy(expanded) == parse_policy(compact)
    assert to_jsonld(parse_policy(expanded)) == compact


def test_our_prefix_works_for_odrl_named_left_operands() -> None:
    doc = {"permission": [{"action": "ds:dp-query", "constraint": [
        {"leftOperand": "ds:purpose", "operator": "eq", "rightOperand": "finance"}]}]}
    rule = parse_policy(doc).permissions[0]
    assert rule.action == "dp-query"
    assert rule.constraints[0] == Constraint("purpose", Operator.EQ, "finance")


def test_missing_type_is_a_set_and_uid_is_accepted() -> None:
    policy = parse_policy({"uid": "urn:p", "permission": [{"action": "use"}]})
    assert policy.type is PolicyType.SET and policy.uid == "urn:p"


@pytest.mark.parametrize(("doc", "path", "message"), [
    ([], "", "expected a JSON object"),
    ({"@type": "Contract"}, "@type", "unknown policy type 'Contract'"),
    ({"permission": [{"constraint": []}]}, "permission[0].action", "missing action"),
    ({"permission": [{"action": 5}]}, "permission[0].action", "expected a non-empty string"),
    ({"permission": [{"action": "use", "constraint": [{}, {"leftOperand": "purpose",
      "operator": "like", "rightOperand": "x"}]}]}, "permission[0].constraint[0].leftOperand",
     "missing leftOperand"),
    ({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "finance"},
        {"leftOperand": "purpose", "operator": "like", "rightOperand": "x"}]}]},
     "permission[0].constraint[1].operator", "unknown operator 'like'"),
    ({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq"}]}]},
     "permission[0].constraint[0].rightOperand", "missing rightOperand"),
    ({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"x": 1}}]}]},
     "permission[0].constraint[0].rightOperand", "unsupported right operand"),
    ({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "count", "operator": "eq", "rightOperand": None}]}]},
     "permission[0].constraint[0].rightOperand", "unsupported right operand"),
    ({"permission": [{"action": "use", "constraint": [
        {"and": [], "or": []}]}]}, "permission[0].constraint[0]", "either atomic or one"),
    ({"permission": [{"action": "use", "constraint": [{"or": [
        {"leftOperand": "a", "operator": "eq", "rightOperand": "b", "colour": "red"}]}]}]},
     "permission[0].constraint[0].or[0].colour", "unknown member 'colour'"),
    ({"permission": [{"action": "use", "assignee": "someone-else"}]},
     "permission[0].assignee", "rule-level assignee"),
    ({"prohibition": [{"action": "use", "duty": [{"action": "compensate"}]}]},
     "prohibition[0].duty", "unknown or unsupported member 'duty'"),
    ({"prohibition": [{"action": "use", "remedy": [{"action": "delete"}]}]},
     "prohibition[0].remedy", "remedies are not supported"),
    ({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "finance"}],
      "odrl:constraint": []}]}, "permission[0].constraint", "appears twice"),
    ({"inheritFrom": "urn:other"}, "inheritFrom", "inheritance is not supported"),
    ({"conflict": "perm"}, "conflict", "only conflict 'prohibit'"),
    ({"permission": [{"action": [{"rdf:value": {"@id": "odrl:use"},
                                  "refinement": []}]}]},
     "permission[0].action", "expected a non-empty string"),
    # a prohibition or obligation under another name is refused, never dropped
    ({"@context": [DSP_CONTEXT, {"forbid": "http://www.w3.org/ns/odrl/2/prohibition"}],
      "permission": [{"action": "use"}], "forbid": [{"action": "use"}]},
     "@context[1]", "is not one this node reads"),
    ({"@context": ["https://example.org/my-context.jsonld"], "permission": [{"action": "use"}]},
     "@context[0]", "is not one this node reads"),
    ({"permission": [{"action": "use"}],
      "https://www.w3.org/ns/odrl/2/prohibition": [{"action": "use"}]},
     "https://www.w3.org/ns/odrl/2/prohibition", "unknown or unsupported member"),
    ({"permission": [{"action": "use"}], "o2:prohibition": [{"action": "use"}]},
     "o2:prohibition", "unknown or unsupported member"),
    ({"permission": [{"action": "use", "constraint": [
        {"and": [{"leftOperand": "purpose", "operator": "eq", "rightOperand": "finance"}],
         "constraint": [{"leftOperand": "purpose", "operator": "eq", "rightOperand": "x"}]}]}]},
     "permission[0].constraint[0].constraint", "unknown member 'constraint' beside 'and'"),
    ({"permission": [{"action": "use", "constraint": [
        {"or": [], "operator": "eq", "rightOperand": "x"}]}]},
     "permission[0].constraint[0].operator", "unknown member 'operator' beside 'or'"),
])
def test_parse_errors_name_the_json_path(doc: Any, path: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc)
    assert info.value.path == path
    assert message in str(info.value)
    if path:
        assert str(info.value).startswith(f"{path}: ")
    assert info.value.http_status == 422


def test_rule_level_target_equal_to_the_policy_is_accepted() -> None:
    policy = parse_policy({"target": "urn:ds", "permission": [{"action": "use",
                                                                "target": "urn:ds"}]})
    assert policy.target == "urn:ds"


def test_metadata_members_are_kept() -> None:
    policy = parse_policy({"@context": DSP_CONTEXT, "permission": [{"action": "use"}],
                           "profile": "urn:p", "timestamp": "2026-01-01T00:00:00Z",
                           "dct:title": "statistics"})
    assert dict(policy.extras) == {"profile": "urn:p", "timestamp": "2026-01-01T00:00:00Z",
                                   "dct:title": "statistics"}


def test_nan_right_operand_is_rejected() -> None:
    with pytest.raises(PolicyError, match="finite"):
        parse_policy({"permission": [{"action": "use", "constraint": [
            {"leftOperand": "epsilon", "operator": "lteq", "rightOperand": float("nan")}]}]})


# --- round trip ---------------------------------------------------------------------------------

_names = st.sampled_from(["purpose", "fields", "dateTime", "epsilon", "price", "partner",
                          "odrl:spatial", "https://example.org/x"])
_scalar = (st.text(max_size=8) | st.integers(-10**6, 10**6) | st.booleans()
           | st.floats(allow_nan=False, allow_infinity=False))
_right = _scalar | st.lists(_scalar | st.lists(_scalar, max_size=2).map(tuple),
                            max_size=3).map(tuple)
_atomic = st.builds(
    Constraint, _names, st.sampled_from(list(Operator)), _right,
    unit=st.none() | st.sampled_from(["CNY", "USD"]),
    data_type=st.none() | st.sampled_from(["xsd:decimal", "xsd:string"]),
)
_constraint = st.recursive(
    _atomic,
    lambda inner: st.builds(LogicalConstraint, st.sampled_from(list(LogicalOp)),
                            st.lists(inner, max_size=3).map(tuple)),
    max_leaves=6,
)
_actions = st.sampled_from(["use", "dp-query", "transfer", "odrl:distribute", "psi"])
_duty = st.builds(Rule, st.sampled_from(["compensate", "inform", "delete"]),
                  st.lists(_constraint, max_size=2).map(tuple))
_rule = st.builds(Rule, _actions, st.lists(_constraint, max_size=3).map(tuple))
_permission = st.builds(Rule, _actions, st.lists(_constraint, max_size=3).map(tuple),
                        st.lists(_duty, max_size=2).map(tuple))
_party = st.none() | st.text(min_size=1, max_size=12)
_policy = st.builds(
    Policy,
    uid=_party,
    type=st.sampled_from(list(PolicyType)),
    assigner=_party,
    assignee=_party,
    target=_party,
    permissions=st.lists(_permission, max_size=3).map(tuple),
    prohibitions=st.lists(_rule, max_size=2).map(tuple),
    obligations=st.lists(_duty, max_size=2).map(tuple),
)


@settings(max_examples=100, deadline=None)
@given(_policy)
def test_parse_of_to_jsonld_is_identity(policy: Policy) -> None:
    doc = to_jsonld(policy)
    assert parse_policy(doc) == policy
    assert parse_policy(json.loads(json.dumps(doc))) == policy
