"""The governed DP query, end to end through the locked worker, with known data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dataspace.compute import QueryRefused, SqlPolicy
from dataspace.compute import sandbox as sb
from dataspace.privacy import (
    BudgetExhausted,
    DpSpec,
    dp_query,
    ensure_budget,
    get_budget,
    list_spends,
    run_dp_query,
)
from dataspace.store import Store

GROUPED = "SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM sales GROUP BY region"
EXACT_COUNTS = {"north": 251, "south": 250, "east": 250, "west": 250}


def _run(store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec, sql: str = GROUPED,
         job: str = "job"):  # type: ignore[no-untyped-def]  # fmt: skip
    return run_dp_query(store, sales, "sales", sql, policy, spec, "ag", job)


def test_result_states_spend_budget_left_and_error_bounds(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec
) -> None:
    ensure_budget(store, "ag", 3, 1e-5)
    result = _run(store, sales, policy, spec)
    assert (result.epsilon_spent, result.epsilon_left) == (1.0, 2.0)
    assert result.delta_spent == pytest.approx(1e-6) and result.delta_left == pytest.approx(9e-6)
    assert set(result.error_bounds) == {"n", "total"}
    assert result.mechanism == "laplace" and result.rows_scanned == 1003
    assert result.table.column_names == ["region", "n", "total"]
    second = _run(store, sales, policy, spec, job="job-2")
    assert second.epsilon_left == 1.0
    assert get_budget(store, "ag").epsilon_spent == 2


def test_noise_is_added_and_small_groups_are_not_released(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec
) -> None:
    ensure_budget(store, "ag", 10, 1e-4)
    differs = False
    for i in range(3):
        rows = {
            r["region"]: r for r in _run(store, sales, policy, spec, job=str(i)).table.to_pylist()
        }
        assert set(rows) == set(EXACT_COUNTS)  # 'isle' (2 rows) is below the threshold
        for region, exact in EXACT_COUNTS.items():
            assert abs(rows[region]["n"] - exact) < 60  # b = 2: 60 is 30 b
            differs = differs or rows[region]["n"] != exact
    assert differs


def test_an_outlier_cannot_move_the_sum_beyond_the_clamp(
    store: Store, sales: Path, policy: SqlPolicy
) -> None:
    ensure_budget(store, "ag", 100, 1e-4)
    spec = DpSpec(epsilon=50, delta=1e-6, bounds={"amount": (0, 100)})
    result = _run(store, sales, policy, spec)
    north = next(r for r in result.table.to_pylist() if r["region"] == "north")
    clamped_exact = sum(i % 100 for i in range(0, 1000, 4)) + 100  # the 1e12 row counts as 100
    assert abs(north["total"] - clamped_exact) < 10 * result.error_bounds["total"]
    assert north["total"] < 1e6


def test_exhausted_budget_refuses_before_running(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_budget(store, "ag", 1.5, 1e-5)
    _run(store, sales, policy, spec)
    started: list[str] = []
    original = dp_query.start_query
    monkeypatch.setattr(
        dp_query, "start_query", lambda *a, **k: started.append("job") or original(*a, **k)
    )
    with pytest.raises(BudgetExhausted):
        _run(store, sales, policy, spec, job="again")
    assert started == [], "no worker runs for a query the budget cannot pay"
    assert get_budget(store, "ag").epsilon_left == pytest.approx(0.5)


def test_a_reservation_lost_to_a_concurrent_query_cancels_the_running_job(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pre-check passes, then another query spends the budget before this one commits.
    ensure_budget(store, "ag", 1.5, 1e-5)
    original_reserve = dp_query.reserve

    def spent_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        original_reserve(store, "ag", 1.0, 1e-6, "the-other-query")
        return original_reserve(*args, **kwargs)

    cancelled: list[bool] = []
    collected: list[bool] = []
    original_cancel = sb.RunningQuery.cancel
    original_result = sb.RunningQuery.result
    monkeypatch.setattr(dp_query, "reserve", spent_meanwhile)
    monkeypatch.setattr(
        sb.RunningQuery, "cancel", lambda self: cancelled.append(True) or original_cancel(self)
    )
    monkeypatch.setattr(
        sb.RunningQuery, "result", lambda self: collected.append(True) or original_result(self)
    )
    with pytest.raises(BudgetExhausted):
        _run(store, sales, policy, spec)
    assert cancelled == [True] and collected == []
    budget = get_budget(store, "ag")
    assert budget.epsilon_spent == 1  # the other query's spend only
    assert [s.job_id for s in list_spends(store, "ag")] == ["the-other-query"]


def test_unbounded_aggregates_are_refused_and_cost_nothing(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec
) -> None:
    ensure_budget(store, "ag", 1, 1e-5)
    policy = dataclasses.replace(policy, sensitive_columns=frozenset())
    with pytest.raises(QueryRefused, match="not supported under differential privacy"):
        _run(store, sales, policy, spec, "SELECT region, MAX(amount) FROM sales GROUP BY region")
    with pytest.raises(QueryRefused, match="no clamping bounds"):
        _run(store, sales, policy, DpSpec(epsilon=1, delta=1e-6), GROUPED)
    assert get_budget(store, "ag").epsilon_spent == 0


def test_ungrouped_laplace_query_spends_no_delta_and_avg_is_clamped(
    store: Store, sales: Path, policy: SqlPolicy
) -> None:
    ensure_budget(store, "ag", 10, 0)
    spec = DpSpec(epsilon=5, bounds={"age": (0, 120)})
    result = _run(store, sales, policy, spec, "SELECT AVG(age) AS a, COUNT(*) AS n FROM sales")
    row = result.table.to_pylist()[0]
    assert result.delta_spent == 0 and result.threshold is None
    assert 0 <= row["a"] <= 120 and abs(row["a"] - 44.5) < 1
    assert result.error_bounds["a"] < 1


def test_gaussian_mechanism_end_to_end(store: Store, sales: Path, policy: SqlPolicy) -> None:
    ensure_budget(store, "ag", 1, 1e-5)
    spec = DpSpec(epsilon=1, delta=1e-6, bounds={"amount": (0, 100)}, mechanism="gaussian")
    result = _run(store, sales, policy, spec)
    assert result.mechanism == "gaussian" and result.delta_spent == pytest.approx(1e-6)
    assert {r["region"] for r in result.table.to_pylist()} <= set(EXACT_COUNTS)


def test_grouped_query_without_delta_is_refused_before_spending(
    store: Store, sales: Path, policy: SqlPolicy
) -> None:
    ensure_budget(store, "ag", 1, 0)
    from dataspace.compute.errors import QueryRefused

    with pytest.raises(QueryRefused, match="allow no GROUP BY"):
        _run(store, sales, policy, DpSpec(epsilon=1, bounds={"amount": (0, 100)}))
    assert get_budget(store, "ag").epsilon_spent == 0


@pytest.mark.parametrize(
    "where",
    [
        "1 // (amount - {n}) >= 0",
        "CAST(CASE WHEN amount = {n} THEN 'boom' ELSE '1' END AS INTEGER) = 1",
        "(2 - least(abs(amount - {n}), 1)) * 9223372036854775807 > 0",
    ],
)
def test_whether_a_dp_query_fails_does_not_depend_on_one_row(
    where: str, store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec
) -> None:
    """The outlier's amount is 1e12: without TRY these fail exactly when n hits it."""
    ensure_budget(store, "ag", 10, 1e-4)
    outcomes = []
    for n in ("999999999999", "1000000000000"):
        sql = f"SELECT region, COUNT(*) AS n FROM sales WHERE {where.format(n=n)} GROUP BY region"
        outcomes.append(_run(store, sales, policy, spec, sql, job=n).table.column_names)
    assert outcomes[0] == outcomes[1] == ["region", "n"]


def test_conditional_counts_stay_allowed_under_dp(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec
) -> None:
    """DP bounds one person's influence on a conditional count; no k-style refusal applies."""
    ensure_budget(store, "ag", 10, 1e-4)
    sql = (
        "SELECT region, COUNT(*) FILTER (WHERE age > 40) AS old, "
        "COUNT(CASE WHEN amount > 50 THEN 1 END) AS big FROM sales GROUP BY region"
    )
    rows = _run(store, sales, policy, spec, sql).table.to_pylist()
    assert {r["region"] for r in rows} <= set(EXACT_COUNTS)


def test_released_groups_come_in_key_order_whatever_the_row_order(
    store: Store, policy: SqlPolicy, spec: DpSpec, tmp_path: Path
) -> None:
    """Neighbouring files — one person's row added at the top — must not release their groups
    in a different order: the engine's order follows where each group's first row lies."""
    import duckdb

    base = ("SELECT 'c' || i AS customer, CASE WHEN i < 500 THEN 'south' ELSE 'north' END "
            "AS region, 1.0::DOUBLE AS amount, 30 AS age FROM range(1000) t(i)")
    d1, d2 = tmp_path / "d1.parquet", tmp_path / "d2.parquet"
    duckdb.sql(f"COPY ({base}) TO '{d1}' (FORMAT parquet)")
    duckdb.sql(f"COPY (SELECT 'cX' AS customer, 'north' AS region, 1.0::DOUBLE AS amount, "
               f"30 AS age UNION ALL ({base})) TO '{d2}' (FORMAT parquet)")
    ensure_budget(store, "ag", 100, 1e-3)
    sql = "SELECT region, COUNT(*) AS n FROM sales GROUP BY region"
    orders = [run_dp_query(store, path, "sales", sql, policy, spec, "ag", f"j{i}")
              .table.column("region").to_pylist() for i, path in enumerate((d1, d2, d1, d2))]
    assert orders == [["north", "south"]] * 4
    desc = run_dp_query(store, d2, "sales", sql + " ORDER BY region DESC", policy, spec, "ag",
                        "j-desc")
    assert desc.table.column("region").to_pylist() == ["south", "north"]  # the consumer's order


@pytest.mark.parametrize("cap", [{"max_result_rows": 100}, {"max_result_bytes": 2_000}])
def test_the_exact_number_of_groups_is_no_error_oracle(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec, cap: dict[str, int]
) -> None:
    """1,003 customers, one row each: the exact answer has 1,003 groups, past the cap. Were it
    refused, one person's row could tip a query over the cap and the refusal would say so
    exactly, for no ε. The groups are below the threshold: nothing is released, ε is spent."""
    ensure_budget(store, "ag", 5, 1e-4)
    limits = dataclasses.replace(sb.SandboxLimits(), **cap)
    result = run_dp_query(store, sales, "sales",
                          "SELECT customer, COUNT(*) AS n FROM sales GROUP BY customer",
                          dataclasses.replace(policy, identifier_columns=frozenset()), spec,
                          "ag", "job", limits)
    assert result.table.num_rows == 0 and result.epsilon_spent == 1.0


def test_the_released_table_is_capped(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec
) -> None:
    ensure_budget(store, "ag", 5, 1e-4)
    limits = dataclasses.replace(sb.SandboxLimits(), max_result_rows=3)  # four regions pass
    with pytest.raises(sb.ResultTooLarge, match="released result has more than 3 rows"):
        run_dp_query(store, sales, "sales", GROUPED, policy, spec, "ag", "job", limits)
    assert get_budget(store, "ag").epsilon_spent == 1  # the release happened, then the cap


def test_noising_keeps_to_the_query_time_limit(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact answer is uncapped, so noising it (in this process, OpenDP value by value)
    keeps to the query's time limit: past it, a timeout, and ε stays spent."""
    import time as real_time
    from types import SimpleNamespace

    clock = iter([0.0])
    fake = SimpleNamespace(monotonic=lambda: next(clock, 1e9), perf_counter=real_time.perf_counter)
    monkeypatch.setattr(dp_query, "time", fake)
    ensure_budget(store, "ag", 5, 1e-4)
    with pytest.raises(sb.QueryTimeout, match="while its answer was noised"):
        _run(store, sales, policy, spec)
    assert get_budget(store, "ag").epsilon_spent == 1


def test_the_released_bytes_are_capped(
    store: Store, sales: Path, policy: SqlPolicy, spec: DpSpec
) -> None:
    ensure_budget(store, "ag", 5, 1e-4)
    limits = dataclasses.replace(sb.SandboxLimits(), max_result_bytes=40)
    with pytest.raises(sb.ResultTooLarge, match="more than 40 bytes"):
        run_dp_query(store, sales, "sales", GROUPED, policy, spec, "ag", "job", limits)
