"""Static checks find what the evaluator would fail closed on."""

from __future__ import annotations

import pytest

from dataspace.policy import LogicalConstraint, LogicalOp, Policy, PolicyError, Rule
from dataspace.policy.lint import require_evaluable

from .helpers import c, permit


def test_clean_policy_has_no_problems() -> None:
    policy = permit(c("purpose", "isPartOf", "finance"), c("dateTime", "lt", "2030-01-01T00:00Z"))
    assert require_evaluable(policy) is policy


@pytest.mark.parametrize(("policy", "problem"), [
    (permit(c("partner", "eq", "gold")),
     "permission[0].constraint[0].leftOperand: unknown left operand 'partner'"),
    (permit(c("purpose", "gt", "finance")),
     "permission[0].constraint[0].operator: 'gt' is not supported for 'purpose'"),
    (permit(c("dateTime", "lt", "2030-01-01")),
     "permission[0].constraint[0].rightOperand: '2030-01-01' needs a time and a UTC offset"),
    (permit(c("purpose", "isAnyOf", ("finance", "astrology"))),
     "permission[0].constraint[0].rightOperand: 'astrology' is not a known purpose"),
    (permit(c("output", "lteq", "all")), "'all' is not an output mode"),
    (permit(c("price", "lteq", 5)), "a price needs a currency"),
    (permit(c("count", "lteq", "x")), "'x' is not a number"),
    (permit(c("elapsedTime", "lteq", "1 day")), "not an ISO 8601 duration"),
    (permit(c("fields", "isPartOf", ())), "non-empty list"),
    (permit(action="odrl:distribute"), "permission[0].action: unknown action"),
    (permit(LogicalConstraint(LogicalOp.AND_SEQUENCE, ())), "andSequence is not evaluated"),
    (permit(LogicalConstraint(LogicalOp.OR, ())), "an empty or states no condition"),
    (Policy(permissions=(Rule("use", duties=(Rule("compensate"),)),)),
     "permission[0].duty[0]: needs exactly one 'price eq AMOUNT'"),
    (Policy(obligations=(Rule("watermark"),)), "obligation[0].action: unknown duty"),
    (Policy(prohibitions=(Rule("use", (c("region", "eq", "MARS"),)),)),
     "prohibition[0].constraint[0].rightOperand: 'MARS' is not a known region"),
    (permit(c("minGroupSize", "gteq", -5)), "at least 1, not -5"),
    (permit(c("count", "lteq", 0)), "at least 1, not 0"),
    (permit(c("epsilon", "lteq", 0)), "epsilon is positive"),
    (permit(c("delta", "lteq", 1.5)), "delta lies in [0, 1)"),
    (permit(c("price", "lteq", -1, unit="CNY")), "a price is not negative"),
    (permit(c("purpose", "isAnyOf", ("finance",)), c("purpose", "isNoneOf", ("finance",))),
     "permission[0].constraint: no purpose meets every constraint on purpose at once"),
    (permit(LogicalConstraint(LogicalOp.AND, (c("region", "eq", "CN"),
                                              c("region", "neq", "CN")))),
     "no region meets every constraint on region"),
    (Policy(permissions=(Rule("use", (c("purpose", "isPartOf", "finance"),)),),
            prohibitions=(Rule("use"),)),
     "prohibition[0] forbids 'use' without conditions: permission[0] ('use') can never be used"),
])
def test_lint_names_the_problem(policy: Policy, problem: str) -> None:
    from dataspace.policy import lint_policy

    problems = lint_policy(policy)
    assert any(problem in p for p in problems), problems
    with pytest.raises(PolicyError, match="cannot evaluate"):
        require_evaluable(policy)


@pytest.mark.parametrize("policy", [
    permit(c("purpose", "isAnyOf", ("finance",)), c("purpose", "isNoneOf", ("marketing",))),
    permit(c("purpose", "isPartOf", "finance"), c("purpose", "neq", "credit-risk")),
    Policy(permissions=(Rule("use"),), prohibitions=(Rule("use", (c("region", "eq", "EU"),)),)),
    permit(c("count", "lteq", 1), c("minGroupSize", "gteq", 1)),
])
def test_satisfiable_combinations_pass(policy: Policy) -> None:
    assert require_evaluable(policy) is policy
