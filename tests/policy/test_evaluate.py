"""Evaluation semantics: deny by default, prohibitions win, fail closed, logic, enforcement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dataspace.policy import (
    NEGOTIATION_DEFERRED,
    LogicalConstraint,
    LogicalOp,
    Policy,
    PolicyDenied,
    PolicyType,
    Price,
    Rule,
    evaluate,
)
from dataspace.policy.checks import AllOf, AnyOf, Context, Status, UnsafeAllow
from dataspace.policy.vocabulary import DEFAULT_VOCABULARY, Vocabulary

from .helpers import NOW, c, permit, reason_at, req

FINANCE = c("purpose", "isPartOf", "finance")


# --- deny by default ---------------------------------------------------------------------------


def test_empty_policy_is_denied() -> None:
    decision = evaluate(Policy(), req(purpose="finance"))
    assert not decision.allowed
    assert decision.enforcement is None
    assert "no permission" in decision.reasons[-1].message


def test_no_matching_permission_is_denied() -> None:
    decision = evaluate(permit(action="psi"), req("dp-query"))
    assert not decision.allowed
    assert not reason_at(decision, "permission[0].action").held


def test_empty_allof_denies() -> None:
    ctx = Context(req(), DEFAULT_VOCABULARY, frozenset())
    assert AllOf("x", ()).run(ctx) is Status.NOT_HELD
    assert AnyOf("y", ()).run(ctx) is Status.NOT_HELD
    assert ctx.reasons[0].message == "x: empty AllOf denies"


def test_empty_and_constraint_denies() -> None:
    decision = evaluate(permit(LogicalConstraint(LogicalOp.AND, ())), req())
    assert not decision.allowed


def test_unsafe_allow_is_named_and_holds() -> None:
    ctx = Context(req(), DEFAULT_VOCABULARY, frozenset())
    assert AllOf("x", (UnsafeAllow(),)).run(ctx) is Status.HELD


def test_permission_without_constraints_allows_covered_action() -> None:
    decision = evaluate(permit(), req("transfer"))
    assert decision.allowed
    assert decision.enforcement is not None
    assert decision.enforcement.granted_by == "permission[0]"


def test_unknown_requested_action_fails_closed() -> None:
    decision = evaluate(permit(), req("teleport"))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].action").fail_closed


def test_unknown_rule_action_fails_closed() -> None:
    decision = evaluate(permit(action="odrl:transfer"), req("transfer"))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].action").fail_closed


@pytest.mark.parametrize(("rule", "asked", "allowed"), [
    ("use", "psi", True), ("query", "dp-query", True), ("query", "governed-query", True),
    ("query", "psi", False), ("compute", "secure-aggregate", True), ("compute", "transfer", False),
    ("governed-query", "dp-query", False), ("transfer", "transfer", True),
])
def test_action_hierarchy(rule: str, asked: str, allowed: bool) -> None:
    assert evaluate(permit(action=rule), req(asked)).allowed is allowed


# --- prohibitions ---------------------------------------------------------------------------


def test_prohibition_overrides_permission() -> None:
    policy = Policy(permissions=(Rule("use"),),
                    prohibitions=(Rule("use", (c("purpose", "isPartOf", "marketing"),)),))
    assert evaluate(policy, req(purpose="finance")).allowed
    decision = evaluate(policy, req(purpose="targeted-advertising"))
    assert not decision.allowed
    assert reason_at(decision, "prohibition[0]").message.startswith("prohibition[0]: prohibits")


def test_prohibition_that_cannot_be_evaluated_denies() -> None:
    policy = Policy(permissions=(Rule("use"),),
                    prohibitions=(Rule("use", (c("purpose", "isPartOf", "marketing"),)),))
    decision = evaluate(policy, req())  # no purpose stated: the prohibition may apply
    assert not decision.allowed
    assert reason_at(decision, "prohibition[0].constraint[0]").fail_closed


def test_prohibition_with_unknown_left_operand_denies() -> None:
    policy = Policy(permissions=(Rule("use"),),
                    prohibitions=(Rule("use", (c("partner", "eq", "gold"),)),))
    assert not evaluate(policy, req()).allowed


def test_prohibition_false_conjunct_beats_unknown_one() -> None:
    policy = Policy(permissions=(Rule("use"),), prohibitions=(Rule("use", (
        c("purpose", "isPartOf", "marketing"), c("partner", "eq", "gold"))),))
    assert evaluate(policy, req(purpose="finance")).allowed


@pytest.mark.parametrize("stated", ["marketing", "any-purpose"])
def test_a_prohibition_stops_a_broader_purpose_that_includes_what_it_names(stated: str) -> None:
    policy = Policy(permissions=(Rule("use"),), prohibitions=(Rule("use", (
        c("purpose", "isAnyOf", ("targeted-advertising",)),)),))
    assert not evaluate(policy, req(purpose=stated)).allowed
    assert evaluate(policy, req(purpose="credit-risk")).allowed


def test_an_empty_logical_constraint_in_a_prohibition_denies() -> None:
    for op in (LogicalOp.AND, LogicalOp.OR, LogicalOp.XONE):
        policy = Policy(permissions=(Rule("use"),),
                        prohibitions=(Rule("use", (LogicalConstraint(op, ()),)),))
        decision = evaluate(policy, req(purpose="finance"))
        assert not decision.allowed, op
        assert reason_at(decision, "prohibition[0].constraint[0]").fail_closed


@pytest.mark.parametrize("op", [LogicalOp.OR, LogicalOp.XONE])
def test_a_min_group_size_under_or_or_xone_fails_closed(op: LogicalOp) -> None:
    """It would hold "because the compute layer enforces it", but only top-level and ``and``
    bounds reach the compute layer: under a choice it would grant without the bound."""
    policy = permit(LogicalConstraint(op, (c("minGroupSize", "gteq", 100),
                                           c("purpose", "isAnyOf", ("marketing",)))))
    decision = evaluate(policy, req(purpose="credit-risk"))
    assert not decision.allowed
    assert reason_at(decision, f"permission[0].constraint[0].{op.value}[0]").fail_closed
    nested = permit(LogicalConstraint(LogicalOp.OR, (LogicalConstraint(
        LogicalOp.AND, (c("minGroupSize", "gteq", 100),)), FINANCE)))
    assert not evaluate(nested, req(purpose="marketing")).allowed
    kept = evaluate(permit(LogicalConstraint(LogicalOp.AND, (c("minGroupSize", "gteq", 100),))),
                    req(purpose="credit-risk"))
    assert kept.allowed and kept.enforcement is not None
    assert kept.enforcement.min_group_size == 100


@pytest.mark.parametrize(
    ("duty", "ok"),
    [
        (Rule("inform"), True),
        (Rule("inform", (c("spatial", "eq", "x"),)), False),
        (Rule("delete", (c("elapsedTime", "lteq", "P30D"),)), True),
        (Rule("delete", (c("elapsedTime", "lteq", "garbage"),)), False),
        (Rule("compensate", (c("price", "eq", "5", "CNY"),)), True),
        (Rule("compensate", (c("price", "eq", "5", "CNY"), c("spatial", "eq", "x"))), False),
        (Rule("compensate", (c("price", "eq", 0.1, "CNY"),)), False),  # binary, not 0.1
        (Rule("compensate", (c("price", "eq", 5, "CNY"),)), True),  # an integer is exact
    ],
)
def test_a_duty_refined_by_what_this_node_cannot_see_to_fails_closed(duty: Rule, ok: bool) -> None:
    from dataspace.policy import lint_policy

    policy = Policy(permissions=(Rule("use", duties=(duty,)),))
    assert evaluate(policy, req(purpose="finance")).allowed is ok
    assert (lint_policy(policy) == ()) is ok


@pytest.mark.parametrize(
    "right", [10**40, "1e1000000", "1e999999999999", "1" * 200, "-1e31", "1e-31"]
)
def test_out_of_range_numbers_fail_closed_at_once(right: object) -> None:
    from dataspace.policy import lint_policy

    policy = permit(c("count", "lteq", right))
    decision = evaluate(policy, req(purpose="finance", jobs_run=0))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].constraint[0]").fail_closed
    assert lint_policy(policy)


@pytest.mark.parametrize("duration", ["P99999Y", "P999999999D"])
def test_durations_past_year_9999_fail_closed(duration: str) -> None:
    decision = evaluate(permit(c("elapsedTime", "lteq", duration)),
                        req(purpose="finance", agreed_at=NOW))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].constraint[0]").fail_closed


def test_prohibition_on_another_action_does_not_apply() -> None:
    policy = Policy(permissions=(Rule("use"),), prohibitions=(Rule("transfer"),))
    assert evaluate(policy, req("dp-query")).allowed
    assert not evaluate(policy, req("transfer")).allowed


def test_prohibited_fields_reach_enforcement() -> None:
    policy = Policy(permissions=(Rule("use", (c("fields", "isPartOf", ("a", "b", "id")),)),),
                    prohibitions=(Rule("use", (c("fields", "isAnyOf", ("id",)),)),))
    assert not evaluate(policy, req(fields={"a", "id"})).allowed
    decision = evaluate(policy, req(fields={"a"}))
    assert decision.enforcement is not None
    assert decision.enforcement.allowed_fields == {"a", "b"}
    assert decision.enforcement.prohibited_fields == {"id"}


# --- fail closed --------------------------------------------------------------------------------


def test_unknown_left_operand_fails_closed_with_reason() -> None:
    decision = evaluate(permit(c("partner", "eq", "gold")), req())
    assert not decision.allowed
    reason = reason_at(decision, "permission[0].constraint[0]")
    assert reason.fail_closed and "unknown left operand 'partner'" in reason.message


def test_operator_not_evaluated_fails_closed() -> None:
    decision = evaluate(permit(c("purpose", "hasPart", "credit-risk")), req(purpose="finance"))
    assert not decision.allowed


def test_and_sequence_fails_closed() -> None:
    seq = LogicalConstraint(LogicalOp.AND_SEQUENCE, (FINANCE,))
    decision = evaluate(permit(seq), req(purpose="finance"))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].constraint[0]").fail_closed


def test_other_permission_still_grants_when_one_fails_closed() -> None:
    policy = Policy(permissions=(Rule("use", (c("partner", "eq", "gold"),)), Rule("use")))
    decision = evaluate(policy, req())
    assert decision.allowed
    assert decision.enforcement is not None
    assert decision.enforcement.granted_by == "permission[1]"


def test_unknown_duty_fails_closed() -> None:
    policy = Policy(permissions=(Rule("use", duties=(Rule("attribute"),)),))
    decision = evaluate(policy, req())
    assert not decision.allowed
    assert reason_at(decision, "permission[0].duty[0]").fail_closed


def test_compensate_without_price_fails_closed() -> None:
    policy = Policy(permissions=(Rule("use", duties=(Rule("compensate"),)),))
    assert not evaluate(policy, req()).allowed


def test_policy_level_obligation_applies_and_unknown_one_denies() -> None:
    pay = Rule("compensate", (c("price", "eq", "12.50", "CNY"),))
    decision = evaluate(Policy(permissions=(Rule("use"),), obligations=(pay,)), req())
    assert decision.allowed
    assert [o.price for o in decision.obligations] == [Price(Decimal("12.50"), "CNY")]
    policy = Policy(permissions=(Rule("use"),), obligations=(Rule("odrl:watermark"),))
    assert not evaluate(policy, req()).allowed


# --- agreements: assignee and target --------------------------------------------------------


def test_agreement_for_another_assignee_is_denied() -> None:
    policy = Policy(type=PolicyType.AGREEMENT, assignee="bank-a", target="ds-1",
                    permissions=(Rule("use"),))
    assert evaluate(policy, req(assignee="bank-a", target="ds-1")).allowed
    assert not evaluate(policy, req(assignee="bank-b", target="ds-1")).allowed
    assert not evaluate(policy, req(assignee="bank-a", target="ds-2")).allowed
    decision = evaluate(policy, req(target="ds-1"))
    assert not decision.allowed and reason_at(decision, "assignee").fail_closed


def test_agreement_assignee_may_be_a_group() -> None:
    policy = Policy(assignee="banks", permissions=(Rule("use"),))
    assert evaluate(policy, req(assignee="bank-a", groups={"banks"})).allowed


# --- logical constraints ------------------------------------------------------------------------


def _logic(op: LogicalOp, n_true: int, n: int = 3) -> LogicalConstraint:
    parts = [c("purpose", "isPartOf", "finance" if i < n_true else "health") for i in range(n)]
    return LogicalConstraint(op, tuple(parts))


@pytest.mark.parametrize(("op", "n_true", "allowed"), [
    (LogicalOp.AND, 3, True), (LogicalOp.AND, 2, False), (LogicalOp.AND, 0, False),
    (LogicalOp.OR, 0, False), (LogicalOp.OR, 1, True), (LogicalOp.OR, 3, True),
    (LogicalOp.XONE, 0, False), (LogicalOp.XONE, 1, True), (LogicalOp.XONE, 2, False),
    (LogicalOp.XONE, 3, False),
])
def test_logical_constraints(op: LogicalOp, n_true: int, allowed: bool) -> None:
    decision = evaluate(permit(_logic(op, n_true)), req(purpose="credit-risk"))
    assert decision.allowed is allowed
    summary = reason_at(decision, "permission[0].constraint[0]")
    assert summary.held is allowed
    assert f"{n_true} of 3 held" in summary.message
    # every branch has its own reason
    for i in range(3):
        reason_at(decision, f"permission[0].constraint[0].{op.value}[{i}]")


def test_or_with_unknown_branch_holds_if_another_holds() -> None:
    either = LogicalConstraint(LogicalOp.OR, (c("partner", "eq", "gold"), FINANCE))
    assert evaluate(permit(either), req(purpose="finance")).allowed
    assert not evaluate(permit(either), req(purpose="health")).allowed


def test_xone_with_unknown_branch_fails_closed() -> None:
    one = LogicalConstraint(LogicalOp.XONE, (c("partner", "eq", "gold"), FINANCE))
    decision = evaluate(permit(one), req(purpose="finance"))
    assert not decision.allowed
    assert reason_at(decision, "permission[0].constraint[0]").fail_closed


def test_nested_logic() -> None:
    nested = LogicalConstraint(LogicalOp.OR, (
        LogicalConstraint(LogicalOp.AND, (FINANCE, c("region", "isPartOf", "CN"))),
        c("purpose", "eq", "official-statistics"),
    ))
    assert evaluate(permit(nested), req(purpose="credit-risk", region="CN-31")).allowed
    assert not evaluate(permit(nested), req(purpose="credit-risk", region="HK")).allowed
    assert evaluate(permit(nested), req(purpose="official-statistics", region="HK")).allowed


# --- purposes, time, counts ------------------------------------------------------------------


def test_credit_risk_is_allowed_under_finance_and_marketing_is_not() -> None:
    policy = permit(c("purpose", "isAnyOf", ("finance",)))
    assert evaluate(policy, req(purpose="credit-risk")).allowed
    assert evaluate(policy, req(purpose="finance")).allowed
    assert not evaluate(policy, req(purpose="marketing")).allowed
    assert not evaluate(policy, req(purpose="customer-profiling")).allowed


def test_time_window() -> None:
    window = permit(c("dateTime", "gteq", "2026-01-01T00:00:00+08:00"),
                    c("dateTime", "lt", "2027-01-01T00:00:00+08:00"))
    assert evaluate(window, req(now=NOW)).allowed
    assert not evaluate(window, req(now=datetime(2025, 12, 31, 15, 59, tzinfo=UTC))).allowed
    assert evaluate(window, req(now=datetime(2025, 12, 31, 16, 0, tzinfo=UTC))).allowed
    assert not evaluate(window, req(now=datetime(2026, 12, 31, 16, 0, tzinfo=UTC))).allowed
    decision = evaluate(window, req(now=NOW))
    assert decision.enforcement is not None
    assert decision.enforcement.expires_at == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    # a refusal says what the window means, not only that a comparison failed
    early, late = (evaluate(window, req(now=datetime(y, 12, 31, 16, 0, tzinfo=UTC)))
                   for y in (2024, 2026))
    [before] = [r.message for r in early.reasons if r.left == "dateTime" and not r.held]
    [after] = [r.message for r in late.reasons if r.left == "dateTime" and not r.held]
    assert "(use begins at 2026-01-01T00:00:00+08:00)" in before
    assert "(use ended at 2027-01-01T00:00:00+08:00)" in after


def test_expired_agreement_is_denied() -> None:
    policy = permit(c("elapsedTime", "lteq", "P30D"))
    signed = datetime(2026, 5, 1, tzinfo=UTC)
    assert evaluate(policy, req(agreed_at=signed, now=signed + timedelta(days=30))).allowed
    late = req(agreed_at=signed, now=signed + timedelta(days=30, seconds=1))
    assert not evaluate(policy, late).allowed
    decision = evaluate(policy, req(agreed_at=signed, now=signed))
    assert decision.enforcement is not None
    assert decision.enforcement.expires_at == signed + timedelta(days=30)


def test_exhausted_agreement_is_denied() -> None:
    policy = permit(c("count", "lteq", 3))
    assert evaluate(policy, req(jobs_run=2)).allowed
    assert not evaluate(policy, req(jobs_run=3)).allowed
    decision = evaluate(policy, req(jobs_run=0))
    assert decision.enforcement is not None
    assert (decision.enforcement.max_jobs, decision.enforcement.jobs_remaining) == (3, 3)


def test_overspent_budget_is_denied() -> None:
    policy = permit(c("epsilon", "lteq", 1.0), c("delta", "lteq", 1e-5))
    ok = req(epsilon=0.5, epsilon_spent=0.5, delta=0, delta_spent=1e-6)
    decision = evaluate(policy, ok)
    assert decision.allowed and decision.enforcement is not None
    assert decision.enforcement.epsilon_budget == 1.0
    assert decision.enforcement.epsilon_remaining == 0.5
    assert decision.enforcement.delta_remaining == pytest.approx(9e-6)
    assert not evaluate(policy, req(epsilon=0.51, epsilon_spent=0.5, delta=0,
                                    delta_spent=0)).allowed


# --- enforcement, obligations, reasons -----------------------------------------------------------


def test_enforcement_collects_the_tightest_parameters() -> None:
    policy = permit(
        c("fields", "isPartOf", ("a", "b", "c")),
        LogicalConstraint(LogicalOp.AND, (c("fields", "isPartOf", ("b", "c", "d")),
                                          c("minGroupSize", "gt", 19))),
        c("minGroupSize", "gteq", 10),
        c("fields", "isNoneOf", ("c",)),
        c("output", "lteq", "pseudonymized"),
        c("output", "isAnyOf", ("aggregate-only", "pseudonymized")),
        action="query",
    )
    decision = evaluate(policy, req("dp-query", fields={"b"}, output="aggregate-only"))
    e = decision.enforcement
    assert decision.allowed and e is not None
    assert e.allowed_fields == {"b"}
    assert e.prohibited_fields == {"c"}
    assert e.min_group_size == 20
    assert e.max_output == "pseudonymized"
    assert e.action == "dp-query"


def test_peer_set_size_is_enforced_later_as_its_tightest_bound() -> None:
    """Not a fact at admission (the initiator's set arrives later): it holds, and the PSI
    protocol gets the smallest bound of the grant's top-level and ``and`` constraints."""
    policy = permit(
        c("peerSetSize", "lteq", 100_000),
        LogicalConstraint(LogicalOp.AND, (c("peerSetSize", "lt", 5_000),)),
        c("peerSetSize", "eq", 20_000),
        action="psi",
    )
    decision = evaluate(policy, req("psi"))
    assert decision.allowed and decision.enforcement is not None
    assert decision.enforcement.max_peer_set == 4_999
    unbounded = evaluate(permit(FINANCE, action="psi"), req("psi", purpose="credit-risk"))
    assert unbounded.enforcement is not None and unbounded.enforcement.max_peer_set is None
    marketing = c("purpose", "isAnyOf", ("marketing",))
    choice = permit(LogicalConstraint(LogicalOp.OR, (c("peerSetSize", "lteq", 10), marketing)),
                    action="psi")
    refused = evaluate(choice, req("psi", purpose="credit-risk"))
    assert not refused.allowed
    assert reason_at(refused, "permission[0].constraint[0].or[0]").fail_closed


def test_min_group_size_stated_by_request_is_checked() -> None:
    policy = permit(c("minGroupSize", "gteq", 10))
    assert not evaluate(policy, req(min_group_size=5)).allowed
    assert evaluate(policy, req(min_group_size=10)).allowed


def test_every_reason_is_reported_not_just_the_first() -> None:
    policy = permit(FINANCE, c("region", "isPartOf", "CN"), c("output", "eq", "aggregate-only"))
    decision = evaluate(policy, req(purpose="marketing", region="US", output="raw"))
    failed = {r.path for r in decision.failures}
    assert {f"permission[0].constraint[{i}]" for i in range(3)} <= failed
    reason = reason_at(decision, "permission[0].constraint[1]")
    assert (reason.rule, reason.left, reason.operator, reason.expected, reason.actual) == (
        "permission[0]", "region", "isPartOf", "CN", "US")


def test_decision_to_dict_is_json_ready() -> None:
    import json

    pay = Rule("compensate", (c("price", "eq", "5", "CNY"),))
    policy = Policy(permissions=(Rule("use", (c("dateTime", "lteq", "2030-01-01T00:00Z"),),
                                      (pay,)),))
    body = evaluate(policy, req(now=NOW, fields={"b", "a"})).to_dict()
    text = json.dumps(body)
    assert '"allowed": true' in text and '"price": "5 CNY"' in text


def test_require_raises_policy_denied_with_reasons() -> None:
    decision = evaluate(permit(FINANCE), req(purpose="marketing"))
    with pytest.raises(PolicyDenied) as info:
        decision.require()
    assert info.value.http_status == 403
    assert info.value.details["reasons"]
    assert "marketing" in str(info.value)
    allowed = evaluate(permit(FINANCE), req(purpose="finance"))
    assert allowed.require() is allowed


def test_naive_request_datetime_is_rejected() -> None:
    from dataspace.policy import PolicyError

    with pytest.raises(PolicyError, match="timezone-aware"):
        req(now=datetime(2026, 1, 1))


# --- negotiation: deferred facts ----------------------------------------------------------------


def test_deferred_facts_give_a_provisional_decision() -> None:
    policy = permit(FINANCE, c("fields", "isPartOf", ("a",)), c("epsilon", "lteq", 1))
    at_negotiation = req(purpose="credit-risk")
    assert not evaluate(policy, at_negotiation).allowed
    decision = evaluate(policy, at_negotiation, defer=NEGOTIATION_DEFERRED)
    assert decision.allowed and decision.provisional
    assert reason_at(decision, "permission[0].constraint[1]").deferred
    assert not evaluate(policy, req(purpose="marketing"), defer=NEGOTIATION_DEFERRED).allowed


def test_extended_vocabulary() -> None:
    vocab = Vocabulary(purposes=DEFAULT_VOCABULARY.purposes.extended({"sme-lending": "finance"}))
    policy = permit(FINANCE)
    assert evaluate(policy, req(purpose="sme-lending"), vocabulary=vocab).allowed
    assert not evaluate(policy, req(purpose="sme-lending")).allowed
