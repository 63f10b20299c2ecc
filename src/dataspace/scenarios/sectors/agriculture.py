"""现代农业 · produce traceability and risk-based residue sampling.

Parties: the market supervision bureau (市场监管局, consumer) holds the lots on sale at the
wholesale markets it inspects — lot, 追溯码 (the traceability code of the farm batch the lot
was split from), product, origin county — and its own rule score (each product's historical
over-limit rate plus its inspectors' notes); the agriculture bureau's traceability platform
(农业农村局, provider) holds the farm batches behind each 追溯码 — producer (统一社会信用代码),
harvest date, last pesticide application and its pre-harvest interval (安全间隔期) — and its
routine residue monitoring (例行监测) by product and county; the wholesale market (批发市场,
provider) holds its entry rapid tests (农残快检, enzyme inhibition).

Flow: each provider derives, next to its data, the 追溯码 it would flag — batches harvested
inside the pre-harvest interval; lots whose rapid test was positive. PSI (the bureau learns
which of its own lots are flagged, nothing else) on the 追溯码 with each; governed SQL gives the
monitoring over-limit rate per product and origin county (groups of at least k = 10 samples).
The bureau ranks its lots by a logistic model of those signals, fitted on the lab results it
already holds (the lots outside the evaluation split; the weights are learned, not chosen),
and samples the top k; the sampling plan is registered on its node
with its **provenance** (W3C PROV ``wasDerivedFrom``: its lots dataset, each PSI job and the
SQL job with their result hashes) in the ``dataset.added`` ledger entry — the lineage farm
batch → 追溯码 → market lot → sample is auditable from the ledgers.

Metric: over-limit hit rate of the top-k sampling list (k = 10% of the evaluation lots,
split off before any PSI; truth = the laboratory result, held by the evaluator): random vs the
bureau's rule vs PSI flags vs PSI flags + governed SQL prior.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.scenarios import ids
from dataspace.scenarios.base import Control, Generated, MetricResult, OfferSpec, Party, Scenario
from dataspace.scenarios.common import (
    ENTITIES,
    estimates,
    fit_logistic,
    ordered,
    overlap_mask,
    paired_steps,
    rng_for,
)
from dataspace.scenarios.stats import label_copy_flags

VERSION = "agri-trace/2"  # 2: the bureau holds lab results of the lots outside the evaluation
REGULATOR, AGRI, MARKET = "market-regulator", "agri-bureau", "wholesale-market"
PRODUCTS = {  # product: (risk on the logit scale, share of lots)
    "韭菜": (1.0, 0.14),
    "豇豆": (1.0, 0.14),
    "芹菜": (0.6, 0.14),
    "菠菜": (0.2, 0.14),
    "黄瓜": (-0.3, 0.16),
    "番茄": (-0.5, 0.16),
    "苹果": (-0.4, 0.12),
}
TOP_SHARE = 0.10


def logistic(x: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-x)), dtype=float)


class ResidueSampling(Scenario):
    name = "agriculture"
    sector = "agriculture"
    use_case = "produce traceability and risk-based residue sampling"
    capability = "PSI + governed SQL + provenance"
    metric_name = "over-limit hit rate of top-k sampling vs random"
    public_data = "scikit-learn load_wine (real assays split across parties)"

    def parties(self) -> list[Party]:
        return [
            Party(REGULATOR, "consumer", "市场监督管理局", ("market_lots", "lab_history")),
            Party(
                AGRI,
                "provider",
                "农业农村局追溯平台",
                ("farm_batches", "phi_flags", "routine_monitoring"),
            ),
            Party(MARKET, "provider", "农产品批发市场", ("rapid_tests", "rapid_positive")),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "lots": ENTITIES[size] * 2,
            "lots_per_batch": [1, 3],
            "farms_per_batch": 0.4,
            "products": {k: list(v) for k, v in PRODUCTS.items()},
            "counties": 10,
            "county_sd": 1.0,
            "farm_sd": 1.0,
            "phi": {"base": -1.6, "farm": 1.0},
            "over": {"base": -3.2, "phi": 2.0, "farm": 0.5, "shock_sd": 0.7},
            "rapid": {"sensitivity": 0.55, "false_positive": 0.08},
            "market_coverage": [0.62, 0.78],
            "monitoring_per_cell": [6, 40],
            "rule_noise_sd": 0.8,
            "eval_share": 0.5,
            "top_share": TOP_SHARE,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data == "public":
            from dataspace.scenarios import public

            return public.agriculture_generate(self, size, seed)
        if data != "synthetic":
            raise ValueError("data must be synthetic or public")
        self._public = False
        p = self.params(size)
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        prods = list(PRODUCTS)
        risk = np.array([PRODUCTS[k][0] for k in prods])
        counties = ids.counties(py, p["counties"])
        c_risk = rng.normal(0, p["county_sd"], size=len(counties))
        # Batches (farm, product, county) until there are enough lots.
        batches: list[dict[str, Any]] = []
        lots_of: list[int] = []
        while sum(lots_of) < p["lots"]:
            serial = len(batches)
            ci = int(rng.integers(len(counties)))
            farm_risk = float(rng.normal(0, p["farm_sd"]))
            pi = int(rng.choice(len(prods), p=[v[1] for v in PRODUCTS.values()]))
            phi_violated = bool(
                rng.random()
                < logistic(
                    np.array(p["phi"]["base"] + p["phi"]["farm"] * farm_risk + 0.5 * risk[pi])
                )
            )
            harvest = 20260501 + int(rng.integers(0, 28))
            interval = int(rng.choice([3, 5, 7, 10, 14]))
            gap = (
                int(rng.integers(0, interval))
                if phi_violated
                else interval + int(rng.integers(0, 20))
            )
            batches.append(
                {
                    "trace_code": f"{counties[ci]}{harvest}{serial:05d}",
                    "producer": ids.firm_code(py, counties[ci]),
                    "product": prods[pi],
                    "county": ci,
                    "farm_risk": farm_risk,
                    "phi": phi_violated,
                    "harvest": harvest,
                    "interval": interval,
                    "gap": gap,
                    "p": pi,
                }
            )
            lots_of.append(int(rng.integers(p["lots_per_batch"][0], p["lots_per_batch"][1] + 1)))
        op = p["over"]
        lots: dict[str, list[Any]] = {
            "lot_id": [],
            "trace_code": [],
            "product": [],
            "origin_county": [],
            "market": [],
            "rule_score": [],
        }
        over: list[bool] = []
        hist = {k: float(logistic(np.array(op["base"] + 0.6 + v[0]))) for k, v in PRODUCTS.items()}
        for b, n_lots in zip(batches, lots_of, strict=True):
            batch_logit = (
                op["base"]
                + op["phi"] * b["phi"]
                + op["farm"] * b["farm_risk"]
                + risk[b["p"]]
                + c_risk[b["county"]]
            )
            for _ in range(n_lots):
                lots["lot_id"].append(f"LOT{len(over):06d}")
                lots["trace_code"].append(b["trace_code"])
                lots["product"].append(b["product"])
                lots["origin_county"].append(counties[b["county"]])
                lots["market"].append(py.choice(["新发地", "江南", "寿光", "海吉星"]))
                score = np.log(hist[b["product"]]) + rng.normal(0, p["rule_noise_sd"])
                lots["rule_score"].append(round(float(score), 3))
                over.append(
                    bool(
                        rng.random()
                        < logistic(np.array(batch_logit + rng.normal(0, op["shock_sd"])))
                    )
                )
        n = len(over)
        truth = np.asarray(over)
        evaluation = rng.random(n) < p["eval_share"]  # split by lot before any PSI
        fb = pa.table(
            {
                "trace_code": [b["trace_code"] for b in batches],
                "producer_code": [b["producer"] for b in batches],
                "product": [b["product"] for b in batches],
                "county": [counties[b["county"]] for b in batches],
                "harvest_date": [str(b["harvest"]) for b in batches],
                "last_spray_days_before_harvest": [b["gap"] for b in batches],
                "phi_days": [b["interval"] for b in batches],
            }
        )
        phi = pa.table(
            {"trace_code": [b["trace_code"] for b in batches if b["gap"] < b["interval"]]}
        )
        mon: dict[str, list[Any]] = {"sample_id": [], "product": [], "county": [], "over_limit": []}
        lo, hi = p["monitoring_per_cell"]
        for i, prod in enumerate(prods):
            for c, county in enumerate(counties):
                rate = logistic(np.array(op["base"] + 0.45 * op["phi"] + risk[i] + c_risk[c]))
                for _ in range(int(rng.integers(lo, hi + 1))):
                    mon["sample_id"].append(f"JC{len(mon['sample_id']):07d}")
                    mon["product"].append(prod)
                    mon["county"].append(county)
                    mon["over_limit"].append(int(rng.random() < rate))
        tested = overlap_mask(rng, n, *p["market_coverage"])
        rp = p["rapid"]
        positive = tested & np.where(
            truth, rng.random(n) < rp["sensitivity"], rng.random(n) < rp["false_positive"]
        )
        rapid = pa.table(
            {
                "lot_ref": [f"M{i:06d}" for i in np.flatnonzero(tested)],
                "trace_code": [lots["trace_code"][i] for i in np.flatnonzero(tested)],
                "result": ["阳性" if positive[i] else "阴性" for i in np.flatnonzero(tested)],
            }
        )
        rapid_pos = pa.table(
            {"trace_code": sorted({lots["trace_code"][i] for i in np.flatnonzero(positive)})}
        )
        return Generated(
            tables={
                REGULATOR: [
                    ("market_lots", pa.table(lots)),
                    # the laboratory results it already holds: every lot outside the
                    # evaluation split (which only the evaluator can score)
                    ("lab_history", pa.table({
                        "lot_id": [lots["lot_id"][i] for i in np.flatnonzero(~evaluation)],
                        "over_limit": truth[~evaluation].astype(np.int64),
                    })),
                ],
                AGRI: [
                    ("farm_batches", fb),
                    ("phi_flags", phi),
                    ("routine_monitoring", pa.table(mon)),
                ],
                MARKET: [("rapid_tests", rapid), ("rapid_positive", rapid_pos)],
            },
            heldout={
                "over": truth,
                "eval": evaluation,
                "lot_ids": lots["lot_id"],
                "rule": np.asarray(lots["rule_score"]),
            },
            params=p,
            version=VERSION,
        )

    def offers(self) -> list[OfferSpec]:
        if getattr(self, "_public", False):
            from dataspace.scenarios import public

            return public.agriculture_offers()
        psi = {"purposes": "agri-supply-chain", "fields": "trace_code", "output": "pseudonymized"}
        return [
            OfferSpec(
                AGRI,
                "phi_flags",
                "psi-only",
                psi,
                REGULATOR,
                "agri-supply-chain",
                price="20 CNY",
                key="psi-phi",
            ),
            OfferSpec(
                MARKET,
                "rapid_positive",
                "psi-only",
                psi,
                REGULATOR,
                "agri-supply-chain",
                price="20 CNY",
                key="psi-rapid",
            ),
            OfferSpec(
                AGRI,
                "routine_monitoring",
                "aggregate-only",
                {
                    "purposes": "agri-supply-chain",
                    "min_group_size": 10,
                    "fields": "product,county,over_limit",
                },
                REGULATOR,
                "agri-supply-chain",
                price="10 CNY",
                key="sql",
            ),
        ]

    def flow(self, ctx: Any) -> dict[str, Any]:
        if ctx.generated.params.get("public"):
            from dataspace.scenarios import public

            return public.agriculture_flow(ctx)
        reg = ctx.api[REGULATOR]
        lots = ctx.own(REGULATOR, "market_lots")
        dataset = ctx.dataset(REGULATOR, "market_lots")
        flags: dict[str, list[int]] = {}
        jobs: list[dict[str, str]] = []
        for key, label in (("psi-phi", "pre-harvest interval"), ("psi-rapid", "rapid test")):
            ctx.step(f"PSI on 追溯码: {label}")
            view = reg.psi(
                agreements=[ctx.agreements[key]], dataset=dataset, key="trace_code:text", mode="me"
            )
            flags[key] = ctx.kept_positions(REGULATOR, view)
            jobs.append(
                {
                    "job": str(view["id"]),
                    "kind": "psi",
                    "agreement": ctx.agreements[key],
                    "result_sha256": str((view.get("result") or {}).get("rows_sha256", "")),
                }
            )
        ctx.step("governed SQL: monitoring over-limit rate per product and county")
        table, meta = reg.query(
            ctx.agreements["sql"],
            "SELECT product, county, AVG(over_limit) AS rate, COUNT(*) AS n "
            f"FROM {ctx.dataset(AGRI, 'routine_monitoring')} GROUP BY product, county",
        )
        jobs.append(
            {
                "job": str(meta.get("job_id", "")),
                "kind": "governed-query",
                "agreement": ctx.agreements["sql"],
                "result_sha256": str(meta.get("result_sha256", "")),
            }
        )
        prior = {(r["product"], r["county"]): float(r["rate"]) for r in table.to_pylist()}
        product_prior: dict[str, list[float]] = {}
        for (prod, _c), cell_rate in prior.items():
            product_prior.setdefault(prod, []).append(cell_rate)
        n = lots.num_rows
        phi = np.zeros(n)
        phi[flags["psi-phi"]] = 1
        rapid = np.zeros(n)
        rapid[flags["psi-rapid"]] = 1
        rule = np.asarray(lots.column("rule_score").to_pylist(), dtype=float)
        base = []
        for prod, county in zip(
            lots.column("product").to_pylist(),
            lots.column("origin_county").to_pylist(),
            strict=True,
        ):
            cell = prior.get((prod, county))  # suppressed cells: the product's mean
            rate = float(np.mean(product_prior.get(prod, [0.05]))) if cell is None else cell
            base.append(np.log(max(rate, 0.005) / (1 - min(rate, 0.99))))
        # each ranking's weights fitted on the bureau's own lab history (lots outside the
        # evaluation split), not chosen: the same logistic model for both variants
        ctx.step("fit the ranking on the bureau's lab history")
        history = ctx.own(REGULATOR, "lab_history")
        where = {lot: i for i, lot in enumerate(lots.column("lot_id").to_pylist())}
        known = np.asarray([where[lot] for lot in history.column("lot_id").to_pylist()])
        labels = np.asarray(history.column("over_limit").to_pylist(), dtype=float)

        def fitted(*signals: np.ndarray) -> np.ndarray:
            x = np.column_stack(signals)
            w = fit_logistic(x[known], labels)
            return np.asarray(w[0] + x @ w[1:])

        psi_score = fitted(phi, rapid, rule)
        fused = fitted(phi, rapid, np.asarray(base))
        ctx.step("register the sampling plan with its provenance")
        lot_ids = lots.column("lot_id").to_pylist()
        order = np.argsort(-fused, kind="mergesort")[: max(1, int(TOP_SHARE * n))]
        plan = pa.table(
            {
                "lot_id": [lot_ids[i] for i in order],
                "trace_code": [lots.column("trace_code")[int(i)].as_py() for i in order],
                "score": np.round(fused[order], 4),
            }
        )
        entry = self._register_plan(ctx, plan, dataset, jobs)
        return {
            "psi": psi_score.tolist(),
            "fused": fused.tolist(),
            "phi_matches": len(flags["psi-phi"]),
            "rapid_matches": len(flags["psi-rapid"]),
            "prior_cells": table.num_rows,
            "plan_rows": plan.num_rows,
            "plan_dataset": entry["name"],
            "provenance": entry["provenance"],
        }

    @staticmethod
    def _register_plan(
        ctx: Any, plan: pa.Table, source: str, jobs: list[dict[str, str]]
    ) -> dict[str, Any]:
        """`dataset add` on the bureau's own node; its description carries the PROV lineage,
        so the node's ``dataset.added`` ledger entry records what the plan was derived from."""
        prov = {"prov:wasDerivedFrom": [source, *[j["job"] for j in jobs]], "jobs": jobs}
        buf = io.BytesIO()
        pq.write_table(plan, buf)
        name = f"sampling_plan_s{ctx.seed}"
        body = {
            "name": name,
            "domain": "general",
            "title": "residue sampling plan",
            "description": "provenance "
            + json.dumps(prov, ensure_ascii=False, separators=(",", ":")),
        }
        ctx.api[REGULATOR].json(
            "POST",
            "/datasets",
            data=body,
            files={"file": (f"{name}.parquet", buf.getvalue(), "application/vnd.apache.parquet")},
        )
        return {"name": name, "provenance": json.dumps(prov, separators=(",", ":"))}

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        if runs[0][1].params.get("public"):
            from dataspace.scenarios import public

            return public.agriculture_metric(runs)
        scores: dict[str, list[float]] = {
            "random": [],
            "rule (product history)": [],
            "PSI (interval + rapid test)": [],
            "PSI + governed SQL": [],
        }
        truth: list[bool] = []
        strata: list[int] = []
        flags: list[str] = []
        for seed, gen, rel in runs:
            h = gen.heldout
            ev = np.flatnonzero(np.asarray(h["eval"]))
            rng = np.random.default_rng(seed)
            scores["random"] += rng.random(len(ev)).tolist()
            scores["rule (product history)"] += np.asarray(h["rule"])[ev].tolist()
            scores["PSI (interval + rapid test)"] += np.asarray(rel["psi"])[ev].tolist()
            scores["PSI + governed SQL"] += np.asarray(rel["fused"])[ev].tolist()
            truth += np.asarray(h["over"])[ev].tolist()
            strata += [seed] * len(ev)
            flags += label_copy_flags(
                {"rule_score": np.asarray(h["rule"], float)}, np.asarray(h["over"], float)
            )
        y = np.asarray(truth)
        arrays = {k: np.asarray(v) for k, v in scores.items()}
        st = np.asarray(strata)

        def hit_rate(name: str) -> Any:
            def stat(idx: np.ndarray) -> float:
                vals = []
                for s in np.unique(st[idx]):
                    sub = idx[st[idx] == s]
                    k = max(1, int(len(sub) * TOP_SHARE))
                    top = sub[np.argsort(-arrays[name][sub], kind="mergesort")[:k]]
                    vals.append(float(y[top].mean()))
                return float(np.mean(vals))

            return stat

        stats = {k: hit_rate(k) for k in scores}
        est = estimates(stats, len(y), strata, seed=runs[0][0])
        values = [e.value for e in est]
        random_, rule, psi, _ = scores
        steps = paired_steps(stats, [(random_, rule), (rule, psi)], len(y), strata,
                             seed=runs[0][0], lower_is_better=False)
        return MetricResult(
            metric="over-limit hit rate of the top 10% sampled (evaluation lots)",
            lower_is_better=False,
            estimates=est,
            ordering="random < rule < PSI ≤ PSI + governed SQL",
            ordering_holds=ordered(values[:3], False) and values[3] >= values[2],
            steps=steps,
            seeds=[r[0] for r in runs],
            extra={
                "base rate (over-limit share)": f"{y.mean():.3f}",
                "evaluation lots": str(len(y)),
                "sampling plan provenance": "dataset.added entry on the bureau's ledger",
            },
            controls=[
                Control(
                    "label-copy check on the bureau's rule score",
                    "not flagged (a product-level prior, not the lab result)",
                    "flagged" if flags else "not flagged",
                    not flags,
                )
            ],
        )
