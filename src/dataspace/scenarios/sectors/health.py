"""医疗健康 · mutual recognition of test results between hospitals (检查检验结果互认).

Parties: hospital A (市第一人民医院, consumer) holds today's test orders — patient 身份证,
test — and its own results of the past months; hospitals B and C (providers) hold their
results and their laboratories' daily internal quality-control runs (室内质控). Each hospital
writes 身份证 its own way (B a lower-case check character x, C with spaces), so PSI normalises
them (kind ``id_card``).

Flow: each provider derives, next to its data, the (身份证, test) pairs with a result inside
the test's recognition window (血常规 7 days … 胸部CT 180 days). PSI on that composite key
with B and with C tells A which of its orders already have a recognisable result — nothing
about patients A did not order for. Governed SQL releases each provider's QC pass rate per
test (groups of at least k = 10 runs): results of a test whose lab failed QC (< 90%) are not
recognised. A DP query (ε = 1 per query, δ = 1e-6) releases each provider's result counts per
test for the health commission's dashboard, with its error. A patient has at most one result
per test, so up to eight rows: the offer declares m = 8 on the patient column, and the query
enforces it (the noise is eight times that of m = 1 — the price of counting patients who
weigh in several tests).

Metric: net cost saved per 100 orders (CNY): every avoided order whose result is truly
recognisable saves its price; every avoided order that was not (a QC-failed test) has to be
repeated later and costs its price. A alone (its own history) vs A + B vs A + B + C vs
A + B + C with the QC filter. Extras: avoidable repeats found, cost saved, the DP error at the
ε used, and a control: PSI without normalisation misses the differently written IDs. The
"truly recognisable" set follows the same rule the providers flag by (within the window, QC
passed), so finding all of them shows the protocol works end to end — a count of what
recognition saves, not a statistical prediction.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios import ids
from dataspace.scenarios.base import Control, Generated, MetricResult, OfferSpec, Party, Scenario
from dataspace.scenarios.common import estimates, ordered, overlap_mask, paired_steps, rng_for

VERSION = "health-recognition/1"
HOSP_A, HOSP_B, HOSP_C = "hospital-a", "hospital-b", "hospital-c"
PROVIDERS = (HOSP_B, HOSP_C)
TESTS = {  # code: (name, price CNY, recognition window in days)
    "CBC": ("血常规", 25, 7),
    "LFT": ("肝功能", 80, 30),
    "RFT": ("肾功能", 60, 30),
    "LIPID": ("血脂四项", 50, 30),
    "HBA1C": ("糖化血红蛋白", 70, 90),
    "TSH": ("甲状腺功能", 90, 90),
    "US_ABD": ("腹部彩超", 150, 90),
    "CT_CHEST": ("胸部CT", 300, 180),
}
QC_MIN = 0.9
EPSILON = 1.0
# Patients per size: at ε = 1 with m = 8 a test's count needs ~135 results to pass the
# release threshold, so the small size has more patients than the shared default (300).
PATIENTS = {"small": 1000, "default": 2000, "large": 20000}


def fmt_id(code: str, style: str) -> str:
    if style == "lower":
        return code[:-1] + code[-1].lower()
    if style == "spaced":
        return f"{code[:6]} {code[6:14]} {code[14:]}"
    return code


class TestRecognition(Scenario):
    name = "health"
    sector = "health"
    use_case = "mutual recognition of test results between hospitals (检查检验结果互认)"
    capability = "PSI + governed SQL + DP"
    metric_name = "avoidable repeat tests and cost saved (DP error at the ε used)"
    public_data = "scikit-learn load_diabetes (lab results split across hospitals)"

    def parties(self) -> list[Party]:
        return [
            Party(HOSP_A, "consumer", "市第一人民医院", ("orders", "own_results")),
            Party(HOSP_B, "provider", "市中心医院", ("results", "recognisable", "qc_runs")),
            Party(HOSP_C, "provider", "省人民医院", ("results", "recognisable", "qc_runs")),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "patients": PATIENTS[size],
            "tests": {k: list(v) for k, v in TESTS.items()},
            "coverage": [0.62, 0.78],
            "results_per_patient": [1, 5],
            "orders": [1, 4],
            "history_days": 200,
            "id_style": {HOSP_B: "lower", HOSP_C: "spaced"},
            "qc_runs": 30,
            "qc_fail": {HOSP_B: "LFT", HOSP_C: "TSH"},
            "qc_rate": [0.97, 0.78],
            "own_share": 0.25,
            "epsilon": EPSILON,
            "delta": 1e-6,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data == "public":
            from dataspace.scenarios import public

            return public.health_generate(self, size, seed)
        if data != "synthetic":
            raise ValueError("data must be synthetic or public")
        self._public = False
        p = self.params(size)
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        n = p["patients"]
        areas = [py.choice(sorted(ids.COUNTIES)) for _ in range(n)]
        pids = ids.unique(ids.person_id, n, py, areas)
        codes = list(TESTS)
        # Each patient's needs: chronic load makes repeat testing likely (a latent factor).
        load = rng.gamma(2.0, 1.0, size=n)
        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        recognisable_truth: set[tuple[int, str]] = set()
        exact_counts: dict[str, dict[str, int]] = {}
        for h in (HOSP_A, *PROVIDERS):
            visited = (
                (rng.random(n) < p["own_share"])
                if h == HOSP_A
                else overlap_mask(rng, n, *p["coverage"])
            )
            res: dict[str, list[Any]] = {
                "patient_id": [],
                "test_code": [],
                "days_ago": [],
                "value": [],
            }
            recog: dict[str, list[Any]] = {"patient_id": [], "test_code": []}
            style = p["id_style"].get(h, "plain")
            fail = p["qc_fail"].get(h)
            for i in map(int, np.flatnonzero(visited)):
                k = min(len(codes), 1 + rng.poisson(load[i]))
                for c in rng.choice(len(codes), size=k, replace=False):
                    code = codes[int(c)]
                    ago = int(rng.integers(0, p["history_days"]))
                    res["patient_id"].append(fmt_id(pids[i], style))
                    res["test_code"].append(code)
                    res["days_ago"].append(ago)
                    res["value"].append(round(float(rng.lognormal(3, 0.5)), 2))
                    if ago <= TESTS[code][2]:
                        recog["patient_id"].append(fmt_id(pids[i], style))
                        recog["test_code"].append(code)
                        if code != fail:
                            recognisable_truth.add((i, code))
            if h == HOSP_A:
                tables[h] = [("own_results", pa.table(res))]
                continue
            qc: dict[str, list[Any]] = {"run_id": [], "test_code": [], "passed": []}
            for code in codes:
                rate = p["qc_rate"][1] if code == fail else p["qc_rate"][0]
                for _ in range(p["qc_runs"]):
                    qc["run_id"].append(f"{h[-1].upper()}QC{len(qc['run_id']):05d}")
                    qc["test_code"].append(code)
                    qc["passed"].append(int(rng.random() < rate))
            exact_counts[h] = {c: res["test_code"].count(c) for c in codes}
            tables[h] = [
                ("results", pa.table(res)),
                ("recognisable", pa.table(recog)),
                ("qc_runs", pa.table(qc)),
            ]
        # Today's orders at A: tests the patient's load calls for.
        orders: dict[str, list[Any]] = {
            "order_id": [],
            "patient_id": [],
            "test_code": [],
            "price": [],
        }
        truth: list[bool] = []
        for i in range(n):
            for c in rng.choice(
                len(codes),
                size=int(rng.integers(p["orders"][0], p["orders"][1] + 1)),
                replace=False,
            ):
                code = codes[int(c)]
                orders["order_id"].append(f"A{len(truth):06d}")
                orders["patient_id"].append(pids[i])
                orders["test_code"].append(code)
                orders["price"].append(TESTS[code][1])
                truth.append((i, code) in recognisable_truth)
        tables[HOSP_A].insert(0, ("orders", pa.table(orders)))
        return Generated(
            tables=tables,
            heldout={"recognisable": truth, "exact_counts": exact_counts},
            params=p,
            version=VERSION,
        )

    def offers(self) -> list[OfferSpec]:
        if getattr(self, "_public", False):
            from dataspace.scenarios import public

            return public.health_offers()
        out = []
        for h in PROVIDERS:
            out += [
                OfferSpec(
                    h,
                    "recognisable",
                    "psi-only",
                    {
                        "purposes": "medical-quality",
                        "output": "pseudonymized",
                        "fields": "patient_id,test_code",
                    },
                    HOSP_A,
                    "medical-quality",
                    price="0.50 CNY",
                    key=f"psi:{h}",
                ),
                OfferSpec(
                    h,
                    "qc_runs",
                    "aggregate-only",
                    {
                        "purposes": "medical-quality",
                        "min_group_size": 10,
                        "fields": "test_code,passed",
                    },
                    HOSP_A,
                    "medical-quality",
                    price="5 CNY",
                    key=f"qc:{h}",
                ),
                OfferSpec(
                    h,
                    "results",
                    "dp-stats",
                    {
                        "purposes": "medical-quality",
                        "epsilon": 4.0,
                        "delta": 1e-5,
                        "min_group_size": 10,
                        "fields": "test_code,value",
                    },
                    HOSP_A,
                    "medical-quality",
                    price="5 CNY",
                    dp_bounds={"value": (0.0, 1000.0)},
                    dp_epsilon_per_query=EPSILON,
                    dp_delta=1e-6,
                    dp_max_contributions=len(TESTS),  # one result per test and patient
                    dp_contributor="patient_id",
                    key=f"dp:{h}",
                ),
            ]
        return out

    def flow(self, ctx: Any) -> dict[str, Any]:
        if ctx.generated.params.get("public"):
            from dataspace.scenarios import public

            return public.health_flow(ctx)
        a = ctx.api[HOSP_A]
        orders = ctx.dataset(HOSP_A, "orders")
        matched: dict[str, list[int]] = {}
        qc: dict[str, dict[str, float]] = {}
        dp: dict[str, dict[str, float]] = {}
        bounds: dict[str, float] = {}
        for h in PROVIDERS:
            ctx.step(f"PSI on (身份证, test) with {h}")
            view = a.psi(
                agreements=[ctx.agreements[f"psi:{h}"]],
                dataset=orders,
                key="patient_id:id_card,test_code:text",
                mode="me",
            )
            matched[h] = ctx.kept_positions(HOSP_A, view)
            ctx.step(f"governed SQL: QC pass rate per test at {h}")
            table, _ = a.query(
                ctx.agreements[f"qc:{h}"],
                "SELECT test_code, AVG(passed) AS pass_rate, COUNT(*) AS runs "
                f"FROM {ctx.dataset(h, 'qc_runs')} GROUP BY test_code",
            )
            qc[h] = {r["test_code"]: float(r["pass_rate"]) for r in table.to_pylist()}
            ctx.step(f"DP counts of results per test at {h} (ε = {EPSILON})")
            table, meta = a.query(
                ctx.agreements[f"dp:{h}"],
                "SELECT test_code, COUNT(*) AS n "
                f"FROM {ctx.dataset(h, 'results')} GROUP BY test_code",
            )
            dp[h] = {r["test_code"]: float(r["n"]) for r in table.to_pylist()}
            bounds[h] = float((meta.get("error_bounds") or {}).get("n") or 0.0)
        ctx.step("control: PSI with C without normalising 身份证")
        raw = a.psi(
            agreements=[ctx.agreements[f"psi:{HOSP_C}"]],
            dataset=orders,
            key="patient_id:raw,test_code:text",
            mode="me",
        )
        raw_matches = len(ctx.kept_positions(HOSP_A, raw))
        table = ctx.own(HOSP_A, "orders")
        own = ctx.own(HOSP_A, "own_results").to_pylist()
        own_recent = {
            (r["patient_id"], r["test_code"])
            for r in own
            if r["days_ago"] <= TESTS[r["test_code"]][2]
        }
        pid = table.column("patient_id").to_pylist()
        code = table.column("test_code").to_pylist()
        own_hit = [i for i in range(table.num_rows) if (pid[i], code[i]) in own_recent]
        qc_ok = {h: [i for i in matched[h] if qc[h].get(code[i], 0.0) >= QC_MIN] for h in PROVIDERS}
        return {
            "own": own_hit,
            "b": matched[HOSP_B],
            "c": matched[HOSP_C],
            "b_qc": qc_ok[HOSP_B],
            "c_qc": qc_ok[HOSP_C],
            "dp_counts": dp,
            "dp_bound": bounds,
            "raw_matches": raw_matches,
            "c_matches": len(matched[HOSP_C]),
            "orders": table.num_rows,
            "prices": table.column("price").to_pylist(),
        }

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        if runs[0][1].params.get("public"):
            from dataspace.scenarios import public

            return public.health_metric(runs)
        variants = {
            "A alone (own history)": ("own",),
            "A + B (PSI)": ("own", "b"),
            "A + B + C (PSI)": ("own", "b", "c"),
            "A + B + C (PSI + governed SQL QC)": ("own", "b_qc", "c_qc"),
        }
        gain: dict[str, list[float]] = {k: [] for k in variants}
        found: dict[str, int] = {k: 0 for k in variants}
        saved: dict[str, float] = {k: 0.0 for k in variants}
        strata: list[int] = []
        avoidable = 0
        dp_err: list[float] = []
        bound: list[float] = []
        raw_missed = True
        for seed, gen, rel in runs:
            truth = np.asarray(gen.heldout["recognisable"])
            price = np.asarray(rel["prices"], dtype=float)
            avoidable += int(truth.sum())
            for name, parts in variants.items():
                avoid = np.zeros(len(truth), dtype=bool)
                for part in parts:
                    avoid[np.asarray(rel[part], dtype=np.int64)] = True
                g = np.where(avoid & truth, price, 0.0) - np.where(avoid & ~truth, price, 0.0)
                gain[name] += g.tolist()
                found[name] += int((avoid & truth).sum())
                saved[name] += float(g.sum())
            strata += [seed] * len(truth)
            for h, exact in gen.heldout["exact_counts"].items():
                for code, n in exact.items():
                    if code in rel["dp_counts"][h] and n:
                        dp_err.append(abs(rel["dp_counts"][h][code] - n) / n)
                bound.append(rel["dp_bound"][h])
            raw_missed &= rel["raw_matches"] < rel["c_matches"]
        arrays = {k: np.asarray(v) for k, v in gain.items()}

        def per100(k: str) -> Any:
            return lambda idx: float(arrays[k][idx].mean() * 100)

        stats = {k: per100(k) for k in variants}
        est = estimates(stats, len(strata), strata, seed=runs[0][0])
        steps = paired_steps(stats, list(itertools.pairwise(variants)), len(strata), strata,
                             seed=runs[0][0], lower_is_better=False)
        extra = {f"avoidable repeats found, {k}": f"{found[k]} of {avoidable}" for k in variants}
        extra |= {f"net cost saved, {k}": f"{saved[k]:.0f} CNY" for k in variants}
        extra["DP counts per test at ε = 1 (median relative error)"] = (
            f"{np.median(dp_err):.4f}; 95% bound ±{np.median(bound):.1f} results"
        )
        return MetricResult(
            metric="net cost saved per 100 orders (CNY)",
            lower_is_better=False,
            estimates=est,
            ordering="A alone < A + B < A + B + C < A + B + C with QC filter",
            ordering_holds=ordered([e.value for e in est], False),
            steps=steps,
            seeds=[r[0] for r in runs],
            extra=extra,
            controls=[
                Control(
                    "PSI without 身份证 normalisation (kind raw) with C",
                    "misses C's spaced IDs: fewer matches than kind id_card",
                    "fewer matches" if raw_missed else "as many matches",
                    raw_missed,
                )
            ],
        )
