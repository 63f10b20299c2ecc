"""Budgets: exact arithmetic, refusal, persistence across restarts, no overspend under races."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest

from dataspace.errors import Conflict, NotFound, UsageError
from dataspace.ledger import log
from dataspace.privacy import BudgetExhausted, ensure_budget, get_budget, list_spends, reserve
from dataspace.services.node import Node
from dataspace.store import Store


def spent_entries(store: Store) -> list[dict[str, object]]:
    with store.read() as session:
        rows = log.entries(session, 0, 10_000)
    out = []
    for row in rows:
        data = row.to_dict()
        if data["entry"]["action"] == "dp.spent":
            out.append(data["payload"])
    return out


def test_ten_spends_of_a_tenth_exhaust_one_exactly(store: Store) -> None:
    ensure_budget(store, "ag-1", 1.0, 0)
    for i in range(10):
        r = reserve(store, "ag-1", 0.1, 0, f"job-{i}")
    assert r.epsilon_left == Decimal("0")
    with pytest.raises(BudgetExhausted, match="has ε=0"):
        reserve(store, "ag-1", 0.1, 0, "job-10")
    assert len(list_spends(store, "ag-1")) == 10


def test_exhausted_budget_refuses_and_charges_nothing(store: Store) -> None:
    ensure_budget(store, "ag-2", 1.0, 1e-6)
    reserve(store, "ag-2", 0.7, 1e-7, "a")
    with pytest.raises(BudgetExhausted) as info:
        reserve(store, "ag-2", 0.5, 0, "b")
    assert info.value.http_status == 403
    assert info.value.details["epsilon_left"] == "0.3"
    with pytest.raises(BudgetExhausted):
        reserve(store, "ag-2", 0.1, 1e-6, "c")  # delta would exceed
    budget = get_budget(store, "ag-2")
    assert budget.epsilon_spent == Decimal("0.7") and budget.delta_left == Decimal("9E-7")
    assert [s.job_id for s in list_spends(store, "ag-2")] == ["a"]


def test_budget_survives_a_restart(make_node: Callable[..., tuple[Node, str]]) -> None:
    node, _ = make_node("provider")
    ensure_budget(node.store, "ag-3", 2, 0)
    reserve(node.store, "ag-3", 1.5, 0, "job")
    url, schema = node.store.url, node.store.schema
    node.store.close()
    reopened = Store(url, schema)
    try:
        assert get_budget(reopened, "ag-3").epsilon_left == Decimal("0.5")
        with pytest.raises(BudgetExhausted):
            reserve(reopened, "ag-3", 1, 0, "again")
    finally:
        reopened.close()


def test_concurrent_queries_cannot_overspend(store: Store) -> None:
    allowed, racers = 5, 12
    ensure_budget(store, "ag-race", Decimal("0.5"), 0)
    barrier = threading.Barrier(racers)
    won: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def race(i: int) -> None:
        barrier.wait()
        try:
            reserve(store, "ag-race", 0.1, 0, f"job-{i}")
            won.append(f"job-{i}")
        except BudgetExhausted:
            refused.append(f"job-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(won) == allowed and len(refused) == racers - allowed
    assert get_budget(store, "ag-race").epsilon_left == Decimal("0")
    assert sorted(s.job_id for s in list_spends(store, "ag-race")) == sorted(won)
    assert sorted(str(e["job_id"]) for e in spent_entries(store)) == sorted(won)


def test_ensure_budget_is_idempotent_but_totals_are_fixed(store: Store) -> None:
    ensure_budget(store, "ag-4", 1, 1e-6)
    assert ensure_budget(store, "ag-4", "1", "0.000001").epsilon_total == Decimal("1")
    with pytest.raises(Conflict, match="already has a DP budget"):
        ensure_budget(store, "ag-4", 2, 1e-6)


def test_missing_budget_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no DP budget"):
        reserve(store, "nope", 0.1, 0, "job")


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "x", True, "1e-120"])
def test_bad_amounts_are_refused(store: Store, bad: object) -> None:
    with pytest.raises(UsageError):
        ensure_budget(store, "ag-bad", bad, 0)  # type: ignore[arg-type]


def test_a_spend_too_fine_to_meter_is_refused_before_any_work(store: Store) -> None:
    ensure_budget(store, "ag-fine", 1, 0)
    with pytest.raises(UsageError, match="more than 40 characters written out"):
        reserve(store, "ag-fine", Decimal("1E-120"), 0, "job")
    reserve(store, "ag-fine", Decimal("1E-30"), 0, "job")  # the finest a usage row holds


def test_every_spend_has_its_ledger_entry(store: Store) -> None:
    ensure_budget(store, "ag-log", 1, "0.00001")
    reserve(store, "ag-log", "0.4", "0.000001", "job-a", actor="peer:bank")
    reserve(store, "ag-log", "0.6", 0, "job-b")
    with pytest.raises(BudgetExhausted):
        reserve(store, "ag-log", "0.1", 0, "job-c")  # refused: no spend, no entry
    spends = list_spends(store, "ag-log")
    entries = spent_entries(store)
    assert [(e["spend_id"], e["job_id"], e["epsilon"], e["delta"]) for e in entries] == [
        (s.id, s.job_id, str(s.epsilon), str(s.delta)) for s in spends
    ]
    assert {e["agreement_id"] for e in entries} == {"ag-log"}
    assert [e["epsilon_left"] for e in entries] == ["0.6", "0.0"]


def test_a_strict_budget_in_the_policy_stays_strictly_below_its_bound(store: Store) -> None:
    """``epsilon lt 1``: two concurrent admissions of 0.5 each pass the evaluator (each sees
    nothing spent); the budget it hands on must still stop them reaching 1 together."""
    from dataspace.policy import Constraint, Operator, Policy, Request, Rule, evaluate

    def budget_of(op: Operator) -> float:
        policy = Policy(permissions=(Rule("use", (Constraint("epsilon", op, 1),)),))
        decision = evaluate(policy, Request(action="dp-query", epsilon=0.5, epsilon_spent=0))
        assert decision.allowed and decision.enforcement is not None
        assert decision.enforcement.epsilon_budget is not None
        return decision.enforcement.epsilon_budget

    assert budget_of(Operator.LTEQ) == 1.0
    strict = budget_of(Operator.LT)
    assert strict < 1.0
    ensure_budget(store, "ag-lt", str(strict), 0)
    reserve(store, "ag-lt", "0.5", "0", "job-1")
    with pytest.raises(BudgetExhausted):
        reserve(store, "ag-lt", "0.5", "0", "job-2")


def test_a_refund_gives_a_jobs_spend_back_once_and_spends_still_sum_to_the_budget(
    store: Store,
) -> None:
    from dataspace.privacy import refund_in

    ensure_budget(store, "ag-back", 1, "0.00001")
    reserve(store, "ag-back", "0.4", "0.000001", "job-a")
    reserve(store, "ag-back", "0.5", 0, "job-b")
    with store.write() as session:
        assert refund_in(session, "ag-back", "job-a", "aborted by the bank") == (
            Decimal("0.4"), Decimal("0.000001"))
    with store.write() as session:  # given back already; a job that spent nothing; no budget
        assert refund_in(session, "ag-back", "job-a", "again") is None
        assert refund_in(session, "ag-back", "job-z", "never spent") is None
        assert refund_in(session, "ag-none", "job-a", "no budget") is None
    budget = get_budget(store, "ag-back")
    assert (budget.epsilon_spent, budget.delta_spent) == (Decimal("0.5"), 0)
    spends = list_spends(store, "ag-back")
    assert sum(s.epsilon for s in spends) == budget.epsilon_spent
    assert [s.epsilon for s in spends if s.job_id == "job-a"] == [Decimal("0.4"),
                                                                   Decimal("-0.4")]
    reserve(store, "ag-back", "0.5", 0, "job-c")  # the refunded 0.4 is there to spend
    with store.read() as session:
        [entry] = [r.to_dict()["payload"] for r in log.entries(session, 0, 100)
                   if r.to_dict()["entry"]["action"] == "dp.refunded"]
    assert (entry["job_id"], entry["reason"], Decimal(entry["epsilon_left"])) == (
        "job-a", "aborted by the bank", Decimal("0.5"))


def test_a_refund_in_a_transaction_that_fails_gives_nothing_back(store: Store) -> None:
    from dataspace.privacy import refund_in

    ensure_budget(store, "ag-undo", 1, 0)
    reserve(store, "ag-undo", "0.4", 0, "job-a")
    with pytest.raises(RuntimeError), store.write() as session:
        refund_in(session, "ag-undo", "job-a", "aborted")
        raise RuntimeError("the job's end failed to commit")
    assert get_budget(store, "ag-undo").epsilon_spent == Decimal("0.4")
    assert len(list_spends(store, "ag-undo")) == 1
