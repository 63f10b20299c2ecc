"""Small builders shared by the policy tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dataspace.policy import Constraint, Decision, Operator, Policy, PolicyType, Request, Rule
from dataspace.policy.model import AnyConstraint

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def c(left: str, op: str, right: Any, unit: str | None = None) -> Constraint:
    return Constraint(left, Operator(op), right, unit=unit)


def permit(*constraints: AnyConstraint, action: str = "use", **kw: Any) -> Policy:
    return Policy(uid="urn:test", type=PolicyType.OFFER,
                  permissions=(Rule(action, tuple(constraints)),), **kw)


def req(action: str = "governed-query", **facts: Any) -> Request:
    return Request(action=action, **facts)


def reason_at(decision: Decision, path: str) -> Any:
    found = [r for r in decision.reasons if r.path == path]
    assert found, f"no reason at {path}: {[r.path for r in decision.reasons]}"
    return found[-1]
