"""The governed DP query: check → clamp rewrite → reserve budget → locked worker → noise → release.

:func:`run_dp_query` is the one entry point. The exact aggregates never leave this function:
the released :class:`DpResult` holds only noisy values of groups whose noisy count passed the
release threshold, with ε/δ spent and left and a 95% error bound per aggregate column.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from dataspace.compute.bind import bind_problem
from dataspace.compute.errors import QueryRefused, QueryTimeout, ResultTooLarge
from dataspace.compute.sandbox import SandboxLimits, start_query
from dataspace.compute.sqlcheck import check_query
from dataspace.compute.sqltypes import SqlPolicy
from dataspace.privacy.budget import check_affordable, reserve
from dataspace.privacy.dp import DpSpec, Noise, build_noise, group_threshold, mechanism
from dataspace.privacy.rewrite import DpPlan, plan_dp
from dataspace.store.db import Store

__all__ = ["DpCost", "DpResult", "dp_cost", "run_dp_query"]

UNCAPPED = 2**62  # rows or bytes no result reaches: memory runs out first
_NOISE_CHUNK = 8192


@dataclass(frozen=True)
class DpResult:
    """A released DP result and its metadata (everything here may go to the consumer)."""

    table: pa.Table
    epsilon_spent: float
    epsilon_left: float
    delta_spent: float
    delta_left: float
    error_bounds: dict[str, float]
    mechanism: str
    threshold: float | None  # least noisy COUNT(*) of a released group (None: no GROUP BY)
    job_id: str
    rows_scanned: int
    cpu_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class DpCost:
    """How a query's (ε, δ) is split: one Noise per release, and δ for the group threshold."""

    epsilon: float
    delta: float
    noises: Mapping[str, Noise]  # release column -> its measurement
    threshold_delta: float


def dp_cost(plan: DpPlan, spec: DpSpec) -> DpCost:
    """Split the query's ε evenly over its releases (basic composition); δ as documented.

    laplace: noise is pure ε-DP; δ (if grouped) bounds the chance a group key is released
    that one person created. gaussian: half of δ for the threshold when grouped, the rest
    split evenly over the releases. Ungrouped laplace queries spend no δ.
    """
    mech = mechanism(spec.mechanism)
    n = len(plan.releases)
    eps_each = spec.epsilon / n
    threshold_delta = 0.0
    noise_delta = 0.0
    if plan.grouped:
        threshold_delta = spec.delta if not mech.uses_delta else spec.delta / 2
    if mech.uses_delta:
        noise_delta = (spec.delta - threshold_delta) / n
    noises = {
        r.column: build_noise(spec.mechanism, r.integer, r.sensitivity, eps_each, noise_delta)
        for r in plan.releases
    }
    return DpCost(spec.epsilon, delta_spent(spec, plan.grouped), noises, threshold_delta)


def delta_spent(spec: DpSpec, grouped: bool) -> float:
    """The δ a query spends: the offer's δ when it is grouped (the threshold's chance of
    releasing a key one person made) or its noise uses δ; none for ungrouped Laplace."""
    return spec.delta if (grouped or mechanism(spec.mechanism).uses_delta) else 0.0


def run_dp_query(
    store: Store,
    parquet_path: str | os.PathLike[str],
    table_name: str,
    sql: str,
    sql_policy: SqlPolicy,
    dp: DpSpec,
    agreement_id: str,
    job_id: str,
    limits: SandboxLimits | Mapping[str, Any] | None = None,
) -> DpResult:
    """Run ``sql`` under differential privacy and charge the agreement's budget."""
    if limits is None:
        limits = SandboxLimits()
    elif not isinstance(limits, SandboxLimits):
        limits = SandboxLimits.from_limits(limits)
    plan = _plan(sql, sql_policy, dp)
    cost = dp_cost(plan, dp)  # builds (or finds cached) measurements before spending
    threshold = None
    if plan.grouped:
        assert plan.group_count is not None
        if cost.threshold_delta <= 0:
            raise QueryRefused(
                "this offer's DP terms allow no GROUP BY: groups whose keys come from the data "
                "are released only with δ > 0, and the offer spends δ = 0 per query",
                hint="ask for overall figures (no GROUP BY), or ask the provider for an offer "
                     "with --dp-delta; no ε was spent",
            )
        threshold = group_threshold(
            dp.mechanism,
            cost.noises[plan.group_count],
            dp.max_contributions,
            cost.threshold_delta,
            sql_policy.min_group_size,
        )
    problem = bind_problem(plan.checked.sql, table_name, sql_policy.columns)
    if problem is not None:  # decided by the schema alone: refused before any ε is spent
        raise QueryRefused(f"the query does not fit the table's columns: {problem}",
                           hint="fix the query; no ε was spent")
    # The worker computes while the spend commits; its exact answer is read only after the
    # commit, so a refused or failed reservation releases nothing (the job is cancelled).
    check_affordable(store, agreement_id, cost.epsilon, cost.delta)  # no work if it cannot pay
    # The exact answer (a row per group, before noise and the threshold) is not capped in rows
    # or bytes: a cap it could reach would tell the consumer, for no ε, whether the number of
    # groups passed it -- one person's row can push it over. It has at most a row per row
    # scanned; the worker's memory limit stays (a resource side channel, docs/privacy.md).
    # The released table is capped below.
    uncapped = replace(limits, max_result_rows=UNCAPPED, max_result_bytes=UNCAPPED)
    # Noising happens here, outside the worker: it keeps to the query's time limit (a
    # timeout, like the engine's, is a resource side channel, not an exact bit of the data).
    deadline = time.monotonic() + limits.timeout_seconds + limits.kill_grace_seconds
    running = start_query(parquet_path, table_name, plan.checked, uncapped)
    try:
        reservation = reserve(store, agreement_id, cost.epsilon, cost.delta, job_id)
    except BaseException:
        running.cancel()
        raise
    exact = running.result()
    table, bounds = _release(plan, cost, exact.table, threshold, sql_policy.min_group_size,
                             deadline, limits.max_result_rows)
    if table.nbytes > limits.max_result_bytes:  # a function of the noisy output only
        raise ResultTooLarge(
            f"the released result has more than {limits.max_result_bytes} bytes",
            hint="group more coarsely or select fewer columns; the ε of this query is spent",
        )
    return DpResult(
        table=table,
        epsilon_spent=float(reservation.epsilon),
        epsilon_left=float(reservation.epsilon_left),
        delta_spent=float(reservation.delta),
        delta_left=float(reservation.delta_left),
        error_bounds=bounds,
        mechanism=dp.mechanism,
        threshold=threshold,
        job_id=job_id,
        rows_scanned=exact.rows_scanned,
        cpu_seconds=exact.cpu_seconds,
        wall_seconds=exact.wall_seconds,
    )


_PLANS: dict[tuple[str, str, str], DpPlan] = {}
_PLANS_MAX = 256
_PLANS_LOCK = threading.Lock()


def _plan(sql: str, sql_policy: SqlPolicy, dp: DpSpec) -> DpPlan:
    """Check and rewrite ``sql`` (a pure function of its inputs, so cached per query shape)."""
    key = (sql, repr(sql_policy), repr(dp))
    found = _PLANS.get(key)
    if found is None:
        # The minimum group size applies to noisy counts, never as an exact HAVING.
        checked = check_query(sql, dataclasses.replace(sql_policy, min_group_size=1))
        found = plan_dp(checked, dp, _contributor(sql_policy), sql_policy.columns)
        with _PLANS_LOCK:
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.pop(next(iter(_PLANS)))
            _PLANS[key] = found
    return found


def _contributor(sql_policy: SqlPolicy) -> str | None:
    """The contributor column as the table spells it (the policy matches names by case)."""
    wanted = sql_policy.contributor_column
    if wanted is None:
        return None
    return next(c for c in sql_policy.columns if c.lower() == wanted.lower())


def _noised(noise: Noise, values: list[Any], deadline: float) -> list[Any]:
    """OpenDP samples value by value: in chunks, so a vast exact answer meets the deadline."""
    out: list[Any] = []
    for start in range(0, len(values), _NOISE_CHUNK):
        if time.monotonic() > deadline:
            raise QueryTimeout(
                "the query ran out of time while its answer was noised; nothing was released",
                hint="group more coarsely; the ε of this query is spent",
            )
        out.extend(noise.apply(values[start : start + _NOISE_CHUNK]))
    return out


def _release(
    plan: DpPlan,
    cost: DpCost,
    exact: pa.Table,
    threshold: float | None,
    min_group_size: int,
    deadline: float,
    max_rows: int,
) -> tuple[pa.Table, dict[str, float]]:
    """The released table. Only the group counts are noised for every exact group (they
    decide which groups pass the threshold); the other aggregates are noised for the groups
    kept, which gives the same output distribution and bounds the work by the release."""

    def column(name: str, rows: list[int] | None) -> list[Any]:
        values = exact.column(name)
        if rows is not None:
            values = values.take(pa.array(rows, pa.int64()))
        return [v if v is not None else 0 for v in values.to_pylist()]

    n = exact.num_rows
    noisy: dict[str, list[Any]] = {}  # per released column, aligned with ``keep``
    if plan.grouped:
        assert plan.group_count is not None and threshold is not None
        counts = _noised(cost.noises[plan.group_count], column(plan.group_count, None), deadline)
        keep = [i for i, c in enumerate(counts) if c >= threshold]
        if len(keep) > max_rows:  # the release's cap: a function of the noisy counts only
            raise ResultTooLarge(
                f"the released result has more than {max_rows} rows",
                hint="group more coarsely; the ε of this query is spent",
            )
        noisy[plan.group_count] = [counts[i] for i in keep]
    else:
        keep = list(range(n))  # one global row: it exists whatever the data
    for release in plan.releases:
        if release.column not in noisy:
            noisy[release.column] = _noised(
                cost.noises[release.column], column(release.column, keep), deadline
            )
    if not plan.grouped:
        # k applies to the global row's noisy count, if it has one
        counts_out = [o for o in plan.outputs if o.kind == "count"]
        small = n and counts_out and noisy[counts_out[0].sources[0]][0] < min_group_size
        if min_group_size > 1 and small:
            keep = []
            noisy = {k: [] for k in noisy}
    columns: dict[str, pa.Array] = {}
    bounds: dict[str, float] = {}
    for out in plan.outputs:
        if out.kind == "key":
            columns[out.name] = exact.column(out.sources[0]).take(pa.array(keep, pa.int64()))
        elif out.kind == "count":
            columns[out.name] = pa.array(noisy[out.sources[0]], pa.int64())
            bounds[out.name] = cost.noises[out.sources[0]].error95
        elif out.kind == "sum":
            columns[out.name] = pa.array(noisy[out.sources[0]], pa.float64())
            bounds[out.name] = cost.noises[out.sources[0]].error95
        else:
            total, count = out.sources
            lo, hi = out.lower, out.upper
            values = [min(hi, max(lo, t / c)) if c > 0 else (lo + hi) / 2
                      for t, c in zip(noisy[total], noisy[count], strict=True)]
            columns[out.name] = pa.array(values, pa.float64())
            bounds[out.name] = _avg_bound(
                cost.noises[total], cost.noises[count], lo, hi, noisy[count]
            )
    return pa.table(columns), bounds


def _avg_bound(total: Noise, count: Noise, lower: float, upper: float, counts: list[Any]) -> float:
    """Approximate 95% bound of noisy_sum / noisy_count at the smallest released count.

    |S'/C' - S/C| <= (e_s + B·e_c) / (C' - e_c) when both noises are within their 95% bounds
    (about 90% jointly), B = max(|L|, |U|); never more than U - L, as the average is clamped.
    """
    width = upper - lower
    smallest = min(counts) if counts else 0
    denominator = smallest - count.error95
    if denominator <= 0:
        return width
    b = max(abs(lower), abs(upper))
    return min(width, (total.error95 + b * count.error95) / denominator)
