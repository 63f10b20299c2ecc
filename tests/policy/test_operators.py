"""Each operator × each left operand type, with known answers both ways."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from dataspace.policy import LEFT_OPERANDS, Operator, Price, evaluate

from .helpers import NOW, c, permit, reason_at, req

PARTY = {"assignee": "bank-a", "groups": {"banks", "members"}}
AGREED = datetime(2026, 1, 31, tzinfo=UTC)
ELAPSED = {"agreed_at": AGREED, "now": datetime(2026, 3, 1, tzinfo=UTC)}  # 29 days later
BUDGET_E = {"epsilon": 0.2, "epsilon_spent": 0.7}  # 0.9 in total, exactly
BUDGET_D = {"delta": 1e-6, "delta_spent": 1e-6}
PRICE = {"price": Price(Decimal("80"), "CNY")}

# (left operand, operator, right operand, facts, expected)
CASES: list[tuple[str, str, Any, dict[str, Any], bool]] = [
    # purpose: hierarchical term (credit-risk isPartOf finance)
    ("purpose", "eq", "credit-risk", {"purpose": "credit-risk"}, True),
    ("purpose", "eq", "finance", {"purpose": "credit-risk"}, False),
    ("purpose", "neq", "marketing", {"purpose": "credit-risk"}, True),
    ("purpose", "neq", "finance", {"purpose": "credit-risk"}, False),  # credit-risk is finance
    ("purpose", "neq", "credit-risk", {"purpose": "finance"}, False),  # finance includes it
    ("purpose", "neq", "credit-risk", {"purpose": "credit-risk"}, False),
    ("purpose", "isPartOf", "finance", {"purpose": "credit-risk"}, True),
    ("purpose", "isPartOf", "credit-risk", {"purpose": "credit-risk"}, True),
    ("purpose", "isPartOf", "health", {"purpose": "credit-risk"}, False),
    ("purpose", "isAnyOf", ("health", "finance"), {"purpose": "credit-risk"}, True),
    ("purpose", "isAnyOf", ("health", "marketing"), {"purpose": "credit-risk"}, False),
    ("purpose", "isAllOf", ("finance", "credit-risk"), {"purpose": "credit-risk"}, True),
    ("purpose", "isAllOf", ("finance", "health"), {"purpose": "credit-risk"}, False),
    ("purpose", "isNoneOf", ("marketing",), {"purpose": "credit-risk"}, True),
    ("purpose", "isNoneOf", ("finance",), {"purpose": "credit-risk"}, False),
    ("purpose", "isNoneOf", ("marketing",), {"purpose": "any-purpose"}, False),  # it includes it
    ("purpose", "isNoneOf", ("targeted-advertising",), {"purpose": "marketing"}, False),
    # region: hierarchical term (CN-31 isPartOf CN isPartOf WORLD)
    ("region", "eq", "CN-31", {"region": "CN-31"}, True),
    ("region", "eq", "CN", {"region": "CN-31"}, False),
    ("region", "neq", "HK", {"region": "CN-31"}, True),
    ("region", "neq", "CN", {"region": "CN-31"}, False),
    ("region", "neq", "CN-31", {"region": "CN-31"}, False),
    ("region", "isPartOf", "CN", {"region": "CN-31"}, True),
    ("region", "isPartOf", "CN", {"region": "HK"}, False),
    ("region", "isAnyOf", ("EU", "CN"), {"region": "CN-31"}, True),
    ("region", "isAnyOf", ("EU", "HK"), {"region": "CN-31"}, False),
    ("region", "isAllOf", ("CN", "WORLD"), {"region": "CN-31"}, True),
    ("region", "isAllOf", ("CN", "EU"), {"region": "CN-31"}, False),
    ("region", "isNoneOf", ("HK", "MO"), {"region": "CN-31"}, True),
    ("region", "isNoneOf", ("CN",), {"region": "CN-31"}, False),
    # action: hierarchical term (dp-query isPartOf query isPartOf use)
    ("action", "eq", "dp-query", {"action": "dp-query"}, True),
    ("action", "eq", "query", {"action": "dp-query"}, False),
    ("action", "neq", "psi", {"action": "dp-query"}, True),
    ("action", "neq", "dp-query", {"action": "dp-query"}, False),
    ("action", "isPartOf", "query", {"action": "dp-query"}, True),
    ("action", "isPartOf", "compute", {"action": "dp-query"}, False),
    ("action", "isAnyOf", ("compute", "query"), {"action": "dp-query"}, True),
    ("action", "isAnyOf", ("compute", "transfer"), {"action": "dp-query"}, False),
    ("action", "isAllOf", ("query", "use"), {"action": "dp-query"}, True),
    ("action", "isAllOf", ("query", "compute"), {"action": "dp-query"}, False),
    ("action", "isNoneOf", ("transfer",), {"action": "dp-query"}, True),
    ("action", "isNoneOf", ("query",), {"action": "dp-query"}, False),
    # assignee: the participant and its groups
    ("assignee", "eq", "bank-a", PARTY, True),
    ("assignee", "eq", "banks", PARTY, True),
    ("assignee", "eq", "bank-b", PARTY, False),
    ("assignee", "neq", "bank-b", PARTY, True),
    ("assignee", "neq", "banks", PARTY, False),
    ("assignee", "isPartOf", "banks", PARTY, True),
    ("assignee", "isPartOf", "insurers", PARTY, False),
    ("assignee", "isAnyOf", ("bank-b", "banks"), PARTY, True),
    ("assignee", "isAnyOf", ("bank-b", "insurers"), PARTY, False),
    ("assignee", "isAllOf", ("bank-a", "banks"), PARTY, True),
    ("assignee", "isAllOf", ("banks", "insurers"), PARTY, False),
    ("assignee", "isNoneOf", ("insurers",), PARTY, True),
    ("assignee", "isNoneOf", ("banks",), PARTY, False),
    # dateTime: instants, offsets respected (NOW = 2026-06-01T12:00Z)
    ("dateTime", "eq", "2026-06-01T20:00:00+08:00", {"now": NOW}, True),
    ("dateTime", "eq", "2026-06-01T12:00:01Z", {"now": NOW}, False),
    ("dateTime", "neq", "2026-06-01T12:00:01Z", {"now": NOW}, True),
    ("dateTime", "neq", "2026-06-01T12:00Z", {"now": NOW}, False),
    ("dateTime", "gt", "2026-01-01T00:00:00Z", {"now": NOW}, True),
    ("dateTime", "gt", "2027-01-01T00:00:00Z", {"now": NOW}, False),
    ("dateTime", "gteq", "2026-06-01T12:00:00Z", {"now": NOW}, True),
    ("dateTime", "gteq", "2026-06-01T12:00:00-01:00", {"now": NOW}, False),
    ("dateTime", "lt", "2026-12-31T23:59:59+08:00", {"now": NOW}, True),
    ("dateTime", "lt", "2026-06-01T12:00:00Z", {"now": NOW}, False),
    ("dateTime", "lteq", "2026-06-01T12:00:00Z", {"now": NOW}, True),
    ("dateTime", "lteq", "2026-06-01T19:59:59+08:00", {"now": NOW}, False),
    # elapsedTime: calendar-aware (Jan 31 + P1M = Feb 28; now = Mar 1)
    ("elapsedTime", "eq", "P1M1D", ELAPSED, True),
    ("elapsedTime", "eq", "P30D", ELAPSED, False),
    ("elapsedTime", "neq", "P30D", ELAPSED, True),
    ("elapsedTime", "neq", "P29D", ELAPSED, False),
    ("elapsedTime", "gt", "P28D", ELAPSED, True),
    ("elapsedTime", "gt", "PT696H", ELAPSED, False),
    ("elapsedTime", "gteq", "P4W1D", ELAPSED, True),
    ("elapsedTime", "gteq", "P2M", ELAPSED, False),
    ("elapsedTime", "lt", "P30D", ELAPSED, True),
    ("elapsedTime", "lt", "P29D", ELAPSED, False),
    ("elapsedTime", "lteq", "P1M1D", ELAPSED, True),
    ("elapsedTime", "lteq", "P1M", ELAPSED, False),
    # count: jobs including this one (4 ran, this is the 5th)
    ("count", "eq", 5, {"jobs_run": 4}, True),
    ("count", "eq", 4, {"jobs_run": 4}, False),
    ("count", "neq", 4, {"jobs_run": 4}, True),
    ("count", "neq", 5, {"jobs_run": 4}, False),
    ("count", "gt", 4, {"jobs_run": 4}, True),
    ("count", "gt", 5, {"jobs_run": 4}, False),
    ("count", "gteq", "5", {"jobs_run": 4}, True),
    ("count", "gteq", 6, {"jobs_run": 4}, False),
    ("count", "lt", 6, {"jobs_run": 4}, True),
    ("count", "lt", 5, {"jobs_run": 4}, False),
    ("count", "lteq", 5, {"jobs_run": 4}, True),
    ("count", "lteq", 4, {"jobs_run": 4}, False),
    # minGroupSize: lower bounds only, against the k the job states
    ("minGroupSize", "eq", 10, {"min_group_size": 10}, True),
    ("minGroupSize", "eq", 11, {"min_group_size": 10}, False),
    ("minGroupSize", "gt", 9, {"min_group_size": 10}, True),
    ("minGroupSize", "gt", 10, {"min_group_size": 10}, False),
    ("minGroupSize", "gteq", 10, {"min_group_size": 10}, True),
    ("minGroupSize", "gteq", 11, {"min_group_size": 10}, False),
    # peerSetSize: upper bounds only, against the set size the job states
    ("peerSetSize", "eq", 500, {"peer_set_size": 500}, True),
    ("peerSetSize", "eq", 499, {"peer_set_size": 500}, False),
    ("peerSetSize", "lt", 501, {"peer_set_size": 500}, True),
    ("peerSetSize", "lt", 500, {"peer_set_size": 500}, False),
    ("peerSetSize", "lteq", 500, {"peer_set_size": 500}, True),
    ("peerSetSize", "lteq", 499, {"peer_set_size": 500}, False),
    # epsilon / delta: spent + this job, exact decimal arithmetic (0.7 + 0.2 == 0.9)
    ("epsilon", "eq", 0.9, BUDGET_E, True),
    ("epsilon", "eq", 1, BUDGET_E, False),
    ("epsilon", "neq", 1, BUDGET_E, True),
    ("epsilon", "neq", "0.9", BUDGET_E, False),
    ("epsilon", "gt", 0.5, BUDGET_E, True),
    ("epsilon", "gt", 0.9, BUDGET_E, False),
    ("epsilon", "gteq", 0.9, BUDGET_E, True),
    ("epsilon", "gteq", 1.0, BUDGET_E, False),
    ("epsilon", "lt", 1, BUDGET_E, True),
    ("epsilon", "lt", 0.9, BUDGET_E, False),
    ("epsilon", "lteq", 0.9, BUDGET_E, True),
    ("epsilon", "lteq", 0.8, BUDGET_E, False),
    ("delta", "eq", 2e-6, BUDGET_D, True),
    ("delta", "eq", 1e-6, BUDGET_D, False),
    ("delta", "neq", 1e-6, BUDGET_D, True),
    ("delta", "neq", 2e-6, BUDGET_D, False),
    ("delta", "gt", 1e-6, BUDGET_D, True),
    ("delta", "gt", 2e-6, BUDGET_D, False),
    ("delta", "gteq", 2e-6, BUDGET_D, True),
    ("delta", "gteq", 3e-6, BUDGET_D, False),
    ("delta", "lt", 1e-5, BUDGET_D, True),
    ("delta", "lt", 2e-6, BUDGET_D, False),
    ("delta", "lteq", 2e-6, BUDGET_D, True),
    ("delta", "lteq", 1.5e-6, BUDGET_D, False),
    # fields: sets (isPartOf ⊆, isAnyOf intersects, isAllOf ⊇, isNoneOf disjoint)
    ("fields", "eq", ("b", "a"), {"fields": {"a", "b"}}, True),
    ("fields", "eq", ("a",), {"fields": {"a", "b"}}, False),
    ("fields", "neq", ("a",), {"fields": {"a", "b"}}, True),
    ("fields", "neq", ("a", "b"), {"fields": {"a", "b"}}, False),
    ("fields", "isPartOf", ("a", "b", "c"), {"fields": {"a", "b"}}, True),
    ("fields", "isPartOf", ("a", "c"), {"fields": {"a", "b"}}, False),
    ("fields", "isAnyOf", ("b", "x"), {"fields": {"a", "b"}}, True),
    ("fields", "isAnyOf", ("x", "y"), {"fields": {"a", "b"}}, False),
    ("fields", "isAllOf", ("a",), {"fields": {"a", "b"}}, True),
    ("fields", "isAllOf", ("a", "c"), {"fields": {"a", "b"}}, False),
    ("fields", "isNoneOf", ("x", "id_number"), {"fields": {"a", "b"}}, True),
    ("fields", "isNoneOf", ("a", "x"), {"fields": {"a", "b"}}, False),
    # output: ordered aggregate-only < pseudonymized < raw
    ("output", "eq", "pseudonymized", {"output": "pseudonymized"}, True),
    ("output", "eq", "raw", {"output": "pseudonymized"}, False),
    ("output", "neq", "raw", {"output": "pseudonymized"}, True),
    ("output", "neq", "pseudonymized", {"output": "pseudonymized"}, False),
    ("output", "lt", "raw", {"output": "pseudonymized"}, True),
    ("output", "lt", "pseudonymized", {"output": "pseudonymized"}, False),
    ("output", "lteq", "pseudonymized", {"output": "pseudonymized"}, True),
    ("output", "lteq", "aggregate-only", {"output": "pseudonymized"}, False),
    ("output", "gt", "aggregate-only", {"output": "pseudonymized"}, True),
    ("output", "gt", "raw", {"output": "pseudonymized"}, False),
    ("output", "gteq", "pseudonymized", {"output": "pseudonymized"}, True),
    ("output", "gteq", "raw", {"output": "pseudonymized"}, False),
    ("output", "isAnyOf", ("pseudonymized", "raw"), {"output": "pseudonymized"}, True),
    ("output", "isAnyOf", ("aggregate-only",), {"output": "pseudonymized"}, False),
    ("output", "isNoneOf", ("raw",), {"output": "pseudonymized"}, True),
    ("output", "isNoneOf", ("pseudonymized",), {"output": "pseudonymized"}, False),
    # price: money in the constraint's unit
    ("price", "eq", "80.00", PRICE, True),
    ("price", "eq", 100, PRICE, False),
    ("price", "neq", 100, PRICE, True),
    ("price", "neq", "80", PRICE, False),
    ("price", "gt", 50, PRICE, True),
    ("price", "gt", 80, PRICE, False),
    ("price", "gteq", 80, PRICE, True),
    ("price", "gteq", 81, PRICE, False),
    ("price", "lt", 100, PRICE, True),
    ("price", "lt", 80, PRICE, False),
    ("price", "lteq", 80, PRICE, True),
    ("price", "lteq", "79.99", PRICE, False),
]


def _id(case: tuple[str, str, Any, dict[str, Any], bool]) -> str:
    left, op, right, _, expected = case
    return f"{left}-{op}-{right}-{'true' if expected else 'false'}"


@pytest.mark.parametrize("case", CASES, ids=[_id(x) for x in CASES])
def test_operator_known_answer(case: tuple[str, str, Any, dict[str, Any], bool]) -> None:
    left, op, right, facts, expected = case
    facts = dict(facts)
    action = facts.pop("action", "governed-query")
    unit = "CNY" if left == "price" else None
    decision = evaluate(permit(c(left, op, right, unit)), req(action, **facts))
    assert decision.allowed is expected
    reason = reason_at(decision, "permission[0].constraint[0]")
    assert reason.held is expected
    assert not reason.fail_closed
    assert (reason.left, reason.operator, reason.expected) == (left, op, right)
    assert reason.actual is not None


def test_every_left_operand_and_supported_operator_has_both_answers() -> None:
    covered: dict[tuple[str, str], set[bool]] = {}
    for left, op, _, _, expected in CASES:
        covered.setdefault((left, op), set()).add(expected)
    for lo in LEFT_OPERANDS.values():
        for op in lo.operators:
            assert covered.get((lo.name, op.value)) == {True, False}, (lo.name, op.value)


UNSUPPORTED = [(lo.name, op) for lo in LEFT_OPERANDS.values() for op in Operator
               if op not in lo.operators]


@pytest.mark.parametrize(("left", "op"), UNSUPPORTED, ids=[f"{a}-{b.value}" for a, b in
                                                           UNSUPPORTED])
def test_unsupported_operator_fails_closed(left: str, op: Operator) -> None:
    facts = {"purpose": "finance", "region": "CN", "now": NOW, "agreed_at": NOW, "jobs_run": 0,
             "fields": {"a"}, "output": "raw", "min_group_size": 10, "peer_set_size": 5,
             **PARTY, **BUDGET_E,
             **BUDGET_D, **PRICE}
    decision = evaluate(permit(c(left, op.value, "x")), req(**facts))
    assert not decision.allowed
    reason = reason_at(decision, "permission[0].constraint[0]")
    assert reason.fail_closed and not reason.held
    assert "not supported" in reason.message or "is not" in reason.message


NEEDS_FACT = [name for name in LEFT_OPERANDS
              if name not in ("action", "minGroupSize", "peerSetSize")]


@pytest.mark.parametrize("left", NEEDS_FACT)
def test_missing_fact_fails_closed(left: str) -> None:
    op = next(iter(sorted(LEFT_OPERANDS[left].operators)))
    right = {"dateTime": "2026-01-01T00:00Z", "elapsedTime": "P1D"}.get(left, "1")
    decision = evaluate(permit(c(left, op.value, right, "CNY")), req())
    assert not decision.allowed
    reason = reason_at(decision, "permission[0].constraint[0]")
    assert reason.fail_closed
    assert "does not state" in reason.message and "fails closed" in reason.message


MALFORMED = [
    ("dateTime", "lteq", "tomorrow", {"now": NOW}),
    ("dateTime", "lteq", "2026-12-31", {"now": NOW}),
    ("dateTime", "lteq", "2026-12-31T00:00:00", {"now": NOW}),
    ("dateTime", "lteq", 20261231, {"now": NOW}),
    ("elapsedTime", "lteq", "30 days", ELAPSED),
    ("elapsedTime", "lteq", "P", ELAPSED),
    ("elapsedTime", "lteq", "PT", ELAPSED),
    ("count", "lteq", "five", {"jobs_run": 1}),
    ("count", "lteq", 1.5, {"jobs_run": 1}),
    ("count", "lteq", True, {"jobs_run": 1}),
    ("epsilon", "lteq", "abc", BUDGET_E),
    ("epsilon", "lteq", "NaN", BUDGET_E),
    ("epsilon", "lteq", ("1",), BUDGET_E),
    ("fields", "isPartOf", (), {"fields": {"a"}}),
    ("fields", "isPartOf", ("a", 1), {"fields": {"a"}}),
    ("purpose", "isPartOf", "not-a-purpose", {"purpose": "finance"}),
    ("purpose", "isAnyOf", ("finance", 2), {"purpose": "finance"}),
    ("purpose", "eq", ("finance",), {"purpose": "finance"}),
    ("region", "isPartOf", "ATLANTIS", {"region": "CN"}),
    ("output", "lteq", "everything", {"output": "raw"}),
    ("minGroupSize", "gteq", 0, {"min_group_size": 10}),
    ("minGroupSize", "gteq", "ten", {}),
    ("peerSetSize", "lteq", -1, {"peer_set_size": 0}),
    ("peerSetSize", "lteq", "a million", {}),
    ("peerSetSize", "lteq", 2.5, {}),
    ("price", "lteq", 100, PRICE),  # no currency unit
]


@pytest.mark.parametrize(("left", "op", "right", "facts"), MALFORMED,
                         ids=[f"{m[0]}-{m[2]!r}" for m in MALFORMED])
def test_malformed_right_operand_fails_closed(left: str, op: str, right: Any,
                                              facts: dict[str, Any]) -> None:
    decision = evaluate(permit(c(left, op, right)), req(**facts))
    assert not decision.allowed
    reason = reason_at(decision, "permission[0].constraint[0]")
    assert reason.fail_closed and not reason.held


@pytest.mark.parametrize(("fact", "value"), [("purpose", "astrology"), ("region", "ATLANTIS"),
                                              ("output", "everything")])
def test_unknown_fact_value_fails_closed(fact: str, value: str) -> None:
    right = {"purpose": "finance", "region": "CN", "output": "raw"}[fact]
    op = "lteq" if fact == "output" else "isPartOf"
    decision = evaluate(permit(c(fact, op, right)), req(**{fact: value}))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].constraint[0]").fail_closed


def test_price_in_another_currency_fails_closed() -> None:
    decision = evaluate(permit(c("price", "lteq", 100, "USD")), req(**PRICE))
    reason = reason_at(decision, "permission[0].constraint[0]")
    assert not decision.allowed and reason.fail_closed and "currency" in reason.message


def test_negative_budget_fact_fails_closed() -> None:
    decision = evaluate(permit(c("epsilon", "lteq", 1)), req(epsilon=-0.5, epsilon_spent=0))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].constraint[0]").fail_closed


@pytest.mark.parametrize("text", ["10 ßx", "10 ﬀx", "10 ＣＮＹ", "10 CN", "10 C1Y"])
def test_a_currency_is_three_ascii_letters_as_written(text: str) -> None:
    """Upper-casing first turned 'ßx' into 'SSX' and 'ﬀx' into 'FFX': codes nobody wrote."""
    from dataspace.policy import PolicyError

    with pytest.raises(PolicyError, match="not a three-letter code"):
        Price.parse(text)
    assert str(Price.parse(" 10 cny ")) == "10 CNY"
