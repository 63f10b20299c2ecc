"""应急管理 · plants ordered to halt but still drawing power (电力助应急).

Parties: the emergency management bureau (应急管理局, consumer) holds its halt orders (one row
per plant and ordered week) and its own risk scores; the power grid (电网, provider) holds each
customer's weekly kWh. Flow: the grid derives, next to its data, the (plant, week) pairs in which
a customer drew ≥ 40% of its own pre-order baseline; PSI on the composite key
(统一社会信用代码, week) tells the bureau exactly which ordered weeks saw a draw — nothing about
plants it did not order, nothing about other weeks. Governed SQL gives the typical draw per
industry during the Spring Festival shutdown, so industries that draw power while idle
(cold storage, continuous processes) are not over-ranked. Metric: precision@k of the
inspection list (k = 20% of evaluation plants) against inspection truth held by the evaluator.
Placebo control: a second PSI of the same plants' weeks *before* their order (drawing power
then is normal); ranked by those matches alone, the list must not beat the base rate — the
95% CI of its lift reaches 0 (at size default +0.009 [−0.035, +0.059]; at size small the CI
is wide, about ±0.15). It fails when the placebo is fed the ordered weeks instead: +0.38
[+0.18, +0.50] at size small.
The fused ranking's rule is set by hand, not fitted: a plant's matched weeks count a quarter
when its industry's typical holiday draw is 35 % of baseline or more (with a half instead of
a quarter the fused precision is 0.721 instead of 0.755; PSI alone is 0.655).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios import ids
from dataspace.scenarios.base import Control, Generated, MetricResult, OfferSpec, Party, Scenario
from dataspace.scenarios.common import (
    ENTITIES,
    estimates,
    ordered,
    overlap_mask,
    paired_steps,
    rng_for,
)
from dataspace.scenarios.stats import label_copy_flags, where_zero

VERSION = "emergency-halt/2"
INDUSTRIES = {  # name: (share of plants, idle draw as a share of normal load)
    "化工": (0.25, 0.22),
    "冶金": (0.2, 0.3),
    "建材": (0.2, 0.12),
    "冷链仓储": (0.15, 0.55),
    "纺织": (0.2, 0.08),
}
WEEKS = 16
HOLIDAY = 6  # 1-based week of the Spring Festival shutdown
THRESHOLD = 0.4
PLACEBO = "placebo lift: PSI on pre-order weeks − base rate"
BUREAU, GRID = "emergency-bureau", "power-grid"


def week_label(w: int) -> str:
    return f"2026-W{w:02d}"


class EmergencyHalt(Scenario):
    name = "emergency"
    sector = "emergency"
    use_case = "plants ordered to halt but still drawing power (电力助应急)"
    capability = "PSI + governed SQL"
    metric_name = "precision@k of inspection lists vs rule or random"

    def parties(self) -> list[Party]:
        return [
            Party(BUREAU, "consumer", "应急管理局", ("halt_orders", "placebo_weeks")),
            Party(GRID, "provider", "国网供电公司", ("weekly_power", "draw_weeks")),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "plants": ENTITIES[size],
            "weeks": WEEKS,
            "holiday_week": HOLIDAY,
            "threshold": THRESHOLD,
            "industries": {k: list(v) for k, v in INDUSTRIES.items()},
            "ordered_share": 0.45,
            "grid_coverage": [0.62, 0.78],
            "defiance_sd": 1.0,
            "shock_sd": 0.8,
            "risk_noise_sd": 1.2,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ValueError("this scenario has synthetic data only")
        p = self.params(size)
        n = p["plants"]
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        areas = [py.choice(sorted(ids.COUNTIES)) for _ in range(n)]
        codes = ids.unique(ids.firm_code, n, py, areas)
        names_ind = list(INDUSTRIES)
        industry = rng.choice(len(names_ind), size=n, p=[v[0] for v in INDUSTRIES.values()])
        idle = np.array([INDUSTRIES[names_ind[i]][1] for i in industry])
        base = rng.lognormal(np.log(20000), 0.6, size=n)
        defiance = rng.normal(0, p["defiance_sd"], size=n)  # latent: willingness to keep going
        ordered_mask = rng.random(n) < p["ordered_share"]
        start = rng.integers(9, 13, size=n)  # first halted week (1-based)
        shock = rng.normal(0, p["shock_sd"], size=n)  # unobserved: orders, cash, the foreman
        operated = (defiance + shock) > 0.9  # truth an inspection finds
        # Weekly kWh: normal load with noise; holiday week at idle; halted weeks idle unless
        # the plant defied the order (then 60–100% of normal on most halted weeks).
        kwh = base[:, None] * rng.lognormal(0, 0.12, size=(n, WEEKS))
        kwh[:, HOLIDAY - 1] = base * idle * rng.lognormal(0, 0.2, size=n)
        for i in np.flatnonzero(ordered_mask):
            for w in range(start[i], WEEKS + 1):
                if operated[i] and rng.random() < 0.75:
                    kwh[i, w - 1] = base[i] * rng.uniform(0.6, 1.0)
                else:
                    kwh[i, w - 1] = base[i] * idle[i] * rng.lognormal(0, 0.25)
        served = overlap_mask(rng, n, *p["grid_coverage"])
        baseline = np.median(kwh[:, :5], axis=1)
        # The bureau's own risk score: past violations, a noisy view of defiance.
        risk = defiance + rng.normal(0, p["risk_noise_sd"], size=n)
        ordered_idx = np.flatnonzero(ordered_mask)
        heldout = rng.random(len(ordered_idx)) < 0.5  # evaluator's plants, split before PSI
        orders_rows: dict[str, list[Any]] = {"credit_code": [], "week": [], "industry": [],
                                             "county": [], "risk_score": []}
        # The placebo: the same plants' weeks *before* their order (from the first week the
        # grid reports draws for). Drawing power then is what a plant does: matches there
        # must not pick out the plants that later defied their order.
        placebo: dict[str, list[Any]] = {"credit_code": [], "week": []}
        for i in ordered_idx:
            for w in range(6, start[i]):
                placebo["credit_code"].append(codes[i])
                placebo["week"].append(week_label(w))
        for i in ordered_idx:
            for w in range(start[i], WEEKS + 1):
                orders_rows["credit_code"].append(codes[i])
                orders_rows["week"].append(week_label(w))
                orders_rows["industry"].append(names_ind[industry[i]])
                orders_rows["county"].append(areas[i])
                orders_rows["risk_score"].append(round(float(risk[i]), 3))
        power: dict[str, list[Any]] = {"account_no": [], "credit_code": [], "county": [],
                                       "industry": [], "week": [], "kwh": [], "ratio": []}
        draws: dict[str, list[Any]] = {"credit_code": [], "week": []}
        for i in np.flatnonzero(served):
            acct = f"31{py.randrange(10**10):010d}"
            for w in range(1, WEEKS + 1):
                ratio = float(kwh[i, w - 1] / baseline[i])
                power["account_no"].append(acct)
                power["credit_code"].append(codes[i])
                power["county"].append(areas[i])
                power["industry"].append(names_ind[industry[i]])
                power["week"].append(week_label(w))
                power["kwh"].append(round(float(kwh[i, w - 1]), 1))
                power["ratio"].append(round(ratio, 4))
                if w > 5 and ratio >= THRESHOLD:
                    draws["credit_code"].append(codes[i])
                    draws["week"].append(week_label(w))
        return Generated(
            tables={
                BUREAU: [("halt_orders", pa.table(orders_rows)),
                         ("placebo_weeks", pa.table(placebo))],
                GRID: [("weekly_power", pa.table(power)), ("draw_weeks", pa.table(draws))],
            },
            heldout={
                "codes": [codes[i] for i in ordered_idx],
                "operated": operated[ordered_idx],
                "eval": heldout,
                "risk": risk[ordered_idx],
                "served": served[ordered_idx],
            },
            params=p,
            version=VERSION,
            reclassify={GRID: [("weekly_power", "kwh", "none"), ("weekly_power", "ratio", "none")]},
        )

    def offers(self) -> list[OfferSpec]:
        return [
            OfferSpec(GRID, "draw_weeks", "psi-only",
                      {"purposes": "risk-monitoring", "fields": "credit_code,week",
                       "output": "pseudonymized"},
                      BUREAU, "risk-monitoring", price="20 CNY", key="psi"),
            OfferSpec(GRID, "weekly_power", "aggregate-only",
                      {"purposes": "risk-monitoring", "fields": "industry,week,ratio,account_no"},
                      BUREAU, "risk-monitoring", price="10 CNY", key="sql"),
        ]

    def flow(self, ctx: Any) -> dict[str, Any]:
        bureau = ctx.api[BUREAU]
        ctx.step("PSI on (统一社会信用代码, week) with the grid")
        view = bureau.psi(
            agreements=[ctx.agreements["psi"]], dataset=ctx.dataset(BUREAU, "halt_orders"),
            key="credit_code:uscc,week:text", mode="me",
        )
        positions = ctx.kept_positions(BUREAU, view)
        orders = ctx.own(BUREAU, "halt_orders")
        matched = [orders.column("credit_code")[i].as_py() for i in positions]
        ctx.step("placebo PSI: the same plants' weeks before their order")
        placebo_view = bureau.psi(
            agreements=[ctx.agreements["psi"]], dataset=ctx.dataset(BUREAU, "placebo_weeks"),
            key="credit_code:uscc,week:text", mode="me",
        )
        before = ctx.own(BUREAU, "placebo_weeks").column("credit_code")
        placebo: dict[str, int] = {}
        for i in ctx.kept_positions(BUREAU, placebo_view):
            placebo[before[i].as_py()] = placebo.get(before[i].as_py(), 0) + 1
        ctx.step("governed SQL: idle draw by industry (holiday week)")
        table, _meta = bureau.query(
            ctx.agreements["sql"],
            f"SELECT industry, AVG(ratio) AS idle_ratio, COUNT(*) AS n "
            f"FROM {ctx.dataset(GRID, 'weekly_power')} WHERE week = '{week_label(HOLIDAY)}' "
            f"GROUP BY industry",
        )
        idle = dict(zip(table.column("industry").to_pylist(),
                        table.column("idle_ratio").to_pylist(), strict=True))
        weeks: dict[str, int] = {}
        for code in matched:
            weeks[code] = weeks.get(code, 0) + 1
        industry = dict(zip(orders.column("credit_code").to_pylist(),
                            orders.column("industry").to_pylist(), strict=True))
        return {
            "matched_weeks": weeks,
            "placebo_weeks": placebo,
            "idle_ratio": idle,
            "industry": industry,
            "psi_matches": len(positions),
            "sql_rows": table.num_rows,
        }

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        scores: dict[str, list[float]] = {"random": [], "rule (risk score)": [],
                                          "PSI": [], "PSI + governed SQL": []}
        truth: list[bool] = []
        strata: list[int] = []
        flags: list[str] = []
        placebo: list[float] = []
        for seed, gen, rel in runs:
            h = gen.heldout
            ev = np.asarray(h["eval"])
            rng = np.random.default_rng(seed)
            for j in np.flatnonzero(ev):
                code = h["codes"][j]
                w = rel["matched_weeks"].get(code, 0)
                ind = rel["industry"][code]
                calm = 1.0 if float(rel["idle_ratio"].get(ind, 0.0)) < 0.35 else 0.25
                scores["random"].append(float(rng.random()))
                scores["rule (risk score)"].append(float(h["risk"][j]))
                scores["PSI"].append(w + 0.01 * float(h["risk"][j]))
                scores["PSI + governed SQL"].append(w * calm + 0.01 * float(h["risk"][j]))
                # no risk tie-break here: the placebo must stand on its matches alone
                placebo.append(float(rel["placebo_weeks"].get(code, 0)))
                truth.append(bool(h["operated"][j]))
                strata.append(seed)
            flags += label_copy_flags({"risk_score": np.asarray(h["risk"], float)},
                                      np.asarray(h["operated"], float))
        y = np.asarray(truth)
        arrays = {k: np.asarray(v) for k, v in scores.items()}
        arrays["placebo"] = np.asarray(placebo)
        st = np.asarray(strata)

        def precision_at_k(name: str, less_base_rate: bool = False) -> Any:
            def stat(idx: np.ndarray) -> float:
                vals = []
                for s in np.unique(st[idx]):
                    sub = idx[st[idx] == s]
                    k = max(1, len(sub) // 5)
                    top = sub[np.argsort(-arrays[name][sub], kind="mergesort")[:k]]
                    base = float(y[sub].mean()) if less_base_rate else 0.0
                    vals.append(float(y[top].mean()) - base)
                return float(np.mean(vals))
            return stat

        stats = {k: precision_at_k(k) for k in scores}
        est = estimates(stats, len(y), strata, seed=runs[0][0])
        values = [e.value for e in est]
        random_, rule, psi, _ = scores
        steps = paired_steps(stats, [(random_, rule), (rule, psi)], len(y), strata,
                             seed=runs[0][0], lower_is_better=False)
        [lift] = estimates({PLACEBO: precision_at_k("placebo", less_base_rate=True)}, len(y),
                           strata, seed=runs[0][0] + 17)
        est.append(lift)
        where = where_zero(lift.low, lift.high)
        return MetricResult(
            metric="precision@k (k = 20% of evaluation plants)",
            lower_is_better=False,
            estimates=est,
            ordering="random < rule < PSI ≤ PSI + governed SQL",
            ordering_holds=ordered(values[:3], False) and values[3] >= values[2],
            steps=steps,
            seeds=[r[0] for r in runs],
            extra={"base rate": f"{y.mean():.2f}", "evaluation plants": str(len(y))},
            controls=[Control("placebo PSI: the same plants' weeks before their order",
                              "no lift over the base rate: a plant drawing power before its "
                              "order says nothing of defying it; the 95% CI reaches 0 (wholly "
                              "above 0 would mean the matching leaks what it should not)",
                              f"{lift.value:+.3f} [{lift.low:+.3f}, {lift.high:+.3f}] ({where})",
                              lift.low <= 0.0),
                      Control("label-copy check on the bureau's risk score",
                              "not flagged (it is a noisy view, not the label)",
                              "flagged" if flags else "not flagged", not flags)],
        )
