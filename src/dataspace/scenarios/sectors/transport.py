"""交通运输 · multimodal one-waybill (多式联运一单制) and ETA, by PSI + governed SQL + vertical FL.

Sea–rail–road containers travel under one multimodal waybill (多式联运一单制: one number for
the whole trip, YD…). The railway (铁路货运) issues it and holds the label: the actual
door-to-door transit hours of each delivered waybill; its own features are the waybill's
timetable hours (图定运到时限 plus the standard drayage allowance), the line-load index of the
route in the week before departure and the cargo weight. The port (港口) holds, for the
containers it handled, its berth occupancy and yard queue in the 72 h before the box reached
the quay, and the vessel's delay; the trucking platform (公路运输) holds the drayage leg's
distance, the road-congestion index and the dispatch wait of the 7 days before pickup. All
three know a shipment by the one-waybill number; the port and the trucking platform each know
60–80% of the railway's waybills (and boxes of their own that never went by rail). A cargo
insurer (货运保险) holds the insured value, premium rate and prior claims of 60–80% of the
waybills; in this generator its columns are drawn independently of everything else: it is the
irrelevant party of the negative control.

Evaluator split, by waybill and before any PSI: the evaluator (an independent role outside
every node) holds out the waybills whose HMAC-SHA256 under its own key (derived from the run's
seed, so a run is reproducible) falls below 30%. The railway registers two files: ``waybills``
(the other delivered waybills, with the transit hours) and ``en_route`` (the held-out
waybills' features, **without** the transit hours — as if still travelling). The held-out
transit hours stay with the evaluator: no node ever holds them, and the held-out waybills never
enter the training PSI or any training job — they are aligned only afterwards, to be
predicted, in a PSI of their own.

Flow, per seed, all through the nodes' APIs: a leakage check refuses any railway column that
copies the label; the railway aligns ``waybills`` with each provider by ECDH-PSI on the waybill
number (``mode=align``: only row positions stay at each node, no identifier or row leaves); it
asks the port one governed SQL query (``aggregate-only``, groups of at least 10): the mean
berth occupancy and yard queue per terminal — aggregates it joins at home to its waybills'
destination terminal; it trains one vertical **linear regression** on rail + port + trucking
(``POST /api/v1/train``, ``model = vlinreg``: squared loss on additive secret shares, Beaver
triples from the space operator as dealer; every coalition is also trained for each provider's
exact Shapley value on the job's validation split) and one on rail + port, each over the
training waybills its parties share, both with the same schedule and seed (epochs, batch,
step, no early stopping, no search), and one on rail + insurer (the control). Each provider
checks its own ``federated-train`` agreement (purpose, the columns it is asked for, output
``aggregate-only``) before any message. The rail-only baseline and rail + the port's terminal
aggregates are fitted at home on the fused job's fitting rows with the same family and
schedule (the job's own plaintext linear regression); rail only once more on the control
job's rows. Then the railway aligns ``en_route`` with each provider and predicts it with each
model (``POST /api/v1/predict``: each provider computes its share at home, only the total is
opened, to the railway), and hands its held-out ETAs, by waybill, to the evaluator. Only
protocol messages (secret shares), the SQL aggregates and the final model parts leave a node.

Metric (computed by the evaluator on the held-out waybills only, joined by waybill number):
ETA mean absolute error (hours) for railway only → railway + port terminal aggregates (SQL) →
railway + port (VFL) → railway + port + trucking (VFL) on one population — the held-out
waybills both federated models predicted (those the port and the trucking platform both know,
about 0.3 × 0.7 × 0.7 ≈ 15% of the waybills) —, the mean over seeds; 95% CIs from a bootstrap
of held-out waybills within each seed, the same resamples for every row (so the MAE reductions
over rail only are paired). Reported with it: the share of ETAs within ±6 h, the share of late
arrivals (more than 12 h over the timetable) whose ETA was within ±12 h, RMSE and R² on the
held-out waybills, the timetable's own error, and each provider's exact Shapley value of the
MAE reduction on the job's validation split. Negative control: rail + insurer against rail
only on the held-out waybills the control model predicted, both fitted on the control job's
rows; the 95% CI of its MAE reduction must reach 0 (a CI wholly above 0 would mean leakage, a
broken alignment or a mixed-up model).

Data: a structural latent-factor generator. Each waybill has six latent factors (rail-line
congestion, berth congestion — partly a per-terminal effect —, vessel schedule slip, road
congestion, truck dispatch delay, weather and inspection holds); each party sees its own noisy,
transformed view of some of them, from windows before the label; the transit time depends on
the route lengths, the latents and a shock no party observes, so no single column copies it.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios.base import (
    STEP_REPS,
    Estimate,
    Generated,
    MetricResult,
    OfferSpec,
    Party,
    Scenario,
    ScenarioError,
)
from dataspace.scenarios.common import ordered, overlap_mask, rng_for, step_name
from dataspace.scenarios.sectors.vertical import (
    Group,
    Runs,
    evaluator_tables,
    flow_record,
    held_out_estimate,
    held_out_flow,
    held_out_groups,
    home_lr,
    irrelevant_party_control,
    irrelevant_table,
    kept_out_control,
    vertical_offers,
)
from dataspace.scenarios.stats import bootstrap_ci

RAIL, PORT, TRUCKING, INSURER = "rail", "port", "trucking", "insurer"
PROVIDERS = (PORT, TRUCKING)
PURPOSE = "logistics"
KEY = "entity_id:text"  # entity_id holds the one-waybill number (多式联运运单号)
LABEL = "transit_hours"
ENTITIES = {"small": 1500, "default": 5000, "large": 20000}
SEEDS = {"small": 2, "default": 3, "large": 5}
PARAMS = {"epochs": 12, "batch_size": 64, "learning_rate": 0.1, "lr_decay": 0.05, "l2": 1e-3}
HOLDOUT = 0.3  # the evaluator's held-out share of waybills (by waybill, before PSI)
VALIDATION = 0.2  # the training job's own split of the training rows (Shapley values only)
TOLERANCE = 6.0  # hours: an ETA "on time" within ±6 h
LATE = 12.0  # hours over the timetable that make an arrival late
LATE_TOLERANCE = 12.0
# Destination terminals by number (码头编号): the railway's waybill and the port's yard both
# carry the number; the names are for the reader.
TERMINALS = {
    1: "东疆集装箱码头", 2: "北疆一期", 3: "北疆二期", 4: "南疆码头", 5: "大港码头", 6: "临港码头"
}
STATIONS = ["TJN", "XAN", "ZZF", "CQX", "CDW", "LZJ", "URQ", "HGH"]
FEATURES = {
    RAIL: ["timetable_hours", "line_load_idx", "cargo_tons"],
    PORT: ["berth_occupancy_72h", "yard_queue_teu", "vessel_delay_h"],
    TRUCKING: ["dray_km", "road_congestion_idx", "dispatch_wait_h"],
    INSURER: ["insured_value_wan", "premium_rate", "prior_claims"],
}
SQL_FIELDS = ["terminal", "berth_occupancy_72h", "yard_queue_teu"]
ALONE, SQL, PORTED = "rail only", "rail + port terminal aggregates (SQL)", "rail + port (VFL)"
FUSED = "rail + port + trucking (VFL)"
VARIANTS = (ALONE, SQL, PORTED, FUSED)
MODELS = {FUSED: (PORT, TRUCKING), PORTED: (PORT,)}  # the federated variants
CONTROL = "rail + insurer (VFL)"  # the negative control: an irrelevant party
CONTROL_REDUCTION = f"control MAE reduction: {ALONE} − {CONTROL}"
SPLIT = "evaluator: HMAC-SHA256(key, waybill number) < holdout, before any PSI"


def evaluator_key(seed: int) -> bytes:
    """The evaluator's split key (derived from the seed, so a run is reproducible)."""
    return f"transport evaluator split key/{seed}".encode()


def mae(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - y)))


def luhn_digit(body: str) -> str:
    """The Luhn check digit over the digits of ``body`` (letters count as their value − 55)."""
    digits = "".join(str(ord(c) - 55) if c.isalpha() else c for c in body)
    total = 0
    for i, d in enumerate(reversed(digits)):
        v = int(d) * (2 if i % 2 == 0 else 1)
        total += v - 9 if v > 9 else v
    return str((10 - total % 10) % 10)


def waybill_number(rng: random.Random, day: int) -> str:
    """YD + YYMMDD + departure station code + 6-digit serial + Luhn check digit."""
    month, dom = 3 + day // 28, 1 + day % 28
    body = f"YD24{month:02d}{dom:02d}{rng.choice(STATIONS)}{rng.randrange(10**6):06d}"
    return body + luhn_digit(body)


class MultimodalEta(Scenario):
    name = "transport"
    sector = "transport"
    use_case = "multimodal one-waybill (多式联运一单制) and ETA"
    capability = "PSI + governed SQL + VFL"
    metric_name = "ETA error (MAE, hours), rail-only vs fused"
    needs_training = True  # the training service runs vlinreg; the runner adds a dealer
    seeds = SEEDS
    label = LABEL

    def parties(self) -> list[Party]:
        return [
            Party(RAIL, "consumer", "铁路货运 (label party)", ("waybills", "en_route")),
            Party(PORT, "provider", "港口", ("berths",)),
            Party(TRUCKING, "provider", "公路运输", ("trucks",)),
            Party(INSURER, "provider", "货运保险 (negative control: irrelevant)", ("policies",)),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "entities": ENTITIES[size],
            "latents": [
                "rail_congestion",
                "berth_congestion",
                "vessel_slip",
                "road_congestion",
                "dispatch_delay",
                "weather_inspection",
            ],
            "label_weights_hours": [5.0, 8.0, 5.0, 5.0, 5.0, 4.0],
            "terminal_share": 0.8,  # of the berth latent that is the terminal's own effect
            "shock_sd_hours": 5.0,
            "overlap": [0.62, 0.78],
            "extra_share": 0.2,  # provider boxes that never went by rail
            "noise": {RAIL: 0.5, PORT: 0.45, TRUCKING: 0.45},
            "model": "vlinreg",
            "vlinreg": PARAMS,
            "holdout": HOLDOUT,
            "split": SPLIT,
            "validation": VALIDATION,
            "tolerance_hours": TOLERANCE,
            "late_hours": LATE,
            "irrelevant": {"party": INSURER, "columns": FEATURES[INSURER]},
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ScenarioError("transport runs on synthetic data only (--data synthetic)")
        p = self.params(size)
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        n = p["entities"]
        extra = round(n * p["extra_share"])
        total = n + 2 * extra  # the railway's waybills, then the port's and the trucks' own
        keys: list[str] = []
        seen: set[str] = set()
        while len(keys) < total:
            k = waybill_number(py, py.randrange(28))
            if k not in seen:
                seen.add(k)
                keys.append(k)
        z = rng.normal(size=(total, 6))
        terminal = rng.integers(1, len(TERMINALS) + 1, size=total)
        effect = rng.normal(size=len(TERMINALS) + 1)
        s = p["terminal_share"]
        z[:, 1] = s * effect[terminal] + np.sqrt(1 - s * s) * z[:, 1]
        rail_km = rng.uniform(400, 2600, size=total)
        dray_km = rng.uniform(15, 250, size=total)
        timetable = 18.0 + rail_km / 38.0 + 6.0  # 图定运到时限 + standard drayage allowance
        shock = rng.normal(0, p["shock_sd_hours"], size=total)
        hours = 18.0 + rail_km / 38.0 + dray_km / 28.0 + z @ p["label_weights_hours"] + shock
        hours = np.maximum(hours, 12.0)
        nr, npo, nt = (p["noise"][k] for k in (RAIL, PORT, TRUCKING))

        def eps(sd: float, k: int) -> np.ndarray:
            return np.asarray(rng.normal(0, sd, size=k), dtype=float)

        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        r = np.arange(n)  # the railway: every waybill it issued (and delivered), split by the
        # evaluator before any PSI: the held-out waybills' transit hours go to the evaluator only
        rail = pa.table(
            {
                "entity_id": [keys[i] for i in r],
                "timetable_hours": np.round(timetable[r], 1),
                "line_load_idx": np.round(
                    1.0 + 0.3 * (z[r, 0] + 0.3 * z[r, 5] + eps(nr, n)), 3
                ),  # 线路负荷指数, week before departure
                "cargo_tons": np.round(rng.uniform(8, 30, size=n), 1),  # no signal
                "dest_terminal": terminal[r],  # 码头编号
                LABEL: np.round(hours[r], 1),
            }
        )
        train, en_route, heldout = evaluator_tables(
            rail, LABEL, HOLDOUT, evaluator_key(seed), SPLIT
        )
        tables[RAIL] = [("waybills", train), ("en_route", en_route)]  # en_route: no label
        # the port: 60–80% of the railway's boxes, and boxes of its own (sea–road)
        po = np.r_[np.flatnonzero(overlap_mask(rng, n, *p["overlap"])), np.arange(n, n + extra)]
        tables[PORT] = [
            (
                "berths",
                pa.table(
                    {
                        "entity_id": [keys[i] for i in po],
                        "terminal": terminal[po],
                        "berth_occupancy_72h": np.round(
                            np.clip(0.6 + 0.12 * (z[po, 1] + eps(npo, po.size)), 0.05, 0.99), 3
                        ),
                        "yard_queue_teu": np.round(
                            np.exp(5.0 + 0.3 * (z[po, 1] + 0.5 * z[po, 5] + eps(npo, po.size)))
                        ),
                        "vessel_delay_h": np.round(
                            np.maximum(0.0, 8.0 + 5.0 * (z[po, 2] + eps(npo, po.size))), 1
                        ),
                    }
                ),
            )
        ]
        # the trucking platform: 60–80% of the railway's boxes, and road-only boxes
        tr = np.r_[
            np.flatnonzero(overlap_mask(rng, n, *p["overlap"])), np.arange(n + extra, total)
        ]
        tables[TRUCKING] = [
            (
                "trucks",
                pa.table(
                    {
                        "entity_id": [keys[i] for i in tr],
                        "dray_km": np.round(dray_km[tr], 1),
                        "road_congestion_idx": np.round(
                            1.5 + 0.5 * (z[tr, 3] + eps(nt, tr.size)), 3
                        ),
                        "dispatch_wait_h": np.round(
                            np.maximum(
                                0.0, 5.0 + 3.0 * (z[tr, 4] + 0.4 * z[tr, 5] + eps(nt, tr.size))
                            ),
                            1,
                        ),
                    }
                ),
            )
        ]
        # cargo insurer: 60–80% of the railway's waybills, independent of everything (the
        # transit time included): the irrelevant party
        tables[INSURER] = [
            (
                "policies",
                irrelevant_table(
                    self.name, seed, INSURER, keys[:n], p["overlap"],
                    lambda noise, k: {
                        "insured_value_wan": np.round(noise.lognormal(3.5, 0.6, k), 1),
                        "premium_rate": np.round(noise.uniform(0.0005, 0.003, k), 5),
                        "prior_claims": noise.poisson(0.3, size=k),
                    },
                ),
            )
        ]
        return Generated(
            tables=tables,
            params=p,
            version="transport/3",
            heldout=heldout,
        )

    def offers(self) -> list[OfferSpec]:
        out = vertical_offers(
            RAIL,
            ((PORT, "berths"), (TRUCKING, "trucks"), (INSURER, "policies")),
            PURPOSE,
            FEATURES,
        )
        out.append(
            OfferSpec(
                PORT,
                "berths",
                "aggregate-only",
                {"purposes": [PURPOSE], "fields": SQL_FIELDS},
                RAIL,
                PURPOSE,
                price="10 CNY",
                key="sql:port",
            )
        )
        return out

    def flow(self, ctx: Any) -> dict[str, Any]:
        ctx.step("governed SQL: berth occupancy and yard queue per terminal (port)")
        table, _ = ctx.api[RAIL].query(
            ctx.agreements["sql:port"],
            "SELECT terminal, AVG(berth_occupancy_72h) AS occupancy, "
            "AVG(yard_queue_teu) AS queue, COUNT(*) AS n "
            f"FROM {ctx.dataset(PORT, 'berths')} GROUP BY terminal",
        )
        terminals = {
            int(t): (float(o), float(q))
            for t, o, q in zip(
                table.column("terminal").to_pylist(),
                table.column("occupancy").to_pylist(),
                table.column("queue").to_pylist(),
                strict=True,
            )
        }
        out = held_out_flow(
            ctx,
            party=RAIL,
            train_dataset="waybills",
            score_dataset="en_route",
            key=KEY,
            label=LABEL,
            features=FEATURES,
            models=MODELS,
            alone=ALONE,
            family="vlinreg",
            params=PARAMS,
            validation=VALIDATION,
            baseline=("mae_label_party_only", mae),
            psi_step="PSI (training waybills) on the one-waybill number with {provider}",
            score_step="PSI (held-out waybills) on the one-waybill number with {provider}",
            control=(CONTROL, (INSURER,)),
        )
        fused = out["jobs"][FUSED]
        own, held = ctx.own(RAIL, "waybills"), ctx.own(RAIL, "en_route")
        rows = out["positions"]
        # rail + the port's terminal aggregates: fitted at home on the fused job's fitting rows
        # with the job's family and schedule, applied to the held-out waybills.
        home = home_lr(
            _with_aggregates(own, fused["fit"], terminals),
            own.column(LABEL).to_numpy().astype(float)[fused["fit"]],
            PARAMS,
            ctx.seed,
            RAIL,
            family="vlinreg",
        )
        scores = dict(out["scores"])
        scores[SQL] = home(_with_aggregates(held, rows, terminals)).tolist()
        return {
            **flow_record(out, RAIL, PORTED, "port"),
            "sql_groups": len(terminals),
            "scores": scores,
            "timetable": held.column("timetable_hours").to_numpy()[rows],
        }

    def metric(self, runs: Runs) -> MetricResult:
        groups, leaks = held_out_groups(runs, RAIL)
        if leaks:
            raise ScenarioError(f"{len(leaks)} predicted waybills are not the held-out ones")

        def est(variant: str, base: str | None = None, name: str = "", reps: int = 300
                ) -> Estimate:
            value, low, high, n = held_out_estimate(groups, mae, variant, base, reps=reps)
            return Estimate(name or variant, value, low, high, n)

        ests = [est(v) for v in VARIANTS]
        holds = ordered([e.value for e in ests], lower_is_better=True)
        # each link of the chain: the worse variant's MAE minus the better one's (paired)
        steps = [est(a, b, step_name(a, b), STEP_REPS) for a, b in itertools.pairwise(VARIANTS)]
        # MAE reductions over rail only (paired): rail only's MAE minus the variant's
        ests += [est(ALONE, v, f"MAE reduction: {ALONE} − {v}") for v in (SQL, PORTED, FUSED)]
        reduction, irrelevant = irrelevant_party_control(
            runs,
            RAIL,
            mae,
            control=CONTROL,
            alone=ALONE,
            name=CONTROL_REDUCTION,
            lower_is_better=True,
        )
        ests.append(reduction)
        y = np.concatenate([g[0] for g in groups])
        timetable = np.concatenate([r["timetable"] for _, _, r in runs])
        strata = [i for i, g in enumerate(groups) for _ in range(g[0].size)]
        preds = {v: np.concatenate([g[1][v] for g in groups]) for v in VARIANTS}
        err = {v: np.abs(p - y) for v, p in preds.items()}
        seed = runs[0][0]
        late = (y - timetable) > LATE

        def share(mask: np.ndarray, ok: np.ndarray) -> str:
            def stat(idx: np.ndarray) -> float:
                m = mask[idx]
                return float(ok[idx][m].mean()) if m.any() else float("nan")

            lo, hi = bootstrap_ci(stat, len(y), strata=strata, seed=seed + 7)
            return f"{stat(np.arange(len(y))):.3f} [{lo:.3f}, {hi:.3f}]"

        everyone = np.ones(len(y), dtype=bool)

        def r2(g: Group, v: str) -> float:
            return 1.0 - float(np.sum((g[1][v] - g[0]) ** 2) / np.sum((g[0] - g[0].mean()) ** 2))

        extra = {
            "evaluator split": (
                f"{HOLDOUT:.0%} of waybills by HMAC-SHA256 of the waybill number, before any PSI; "
                "their transit hours stay with the evaluator; the railway predicts them en route"
            ),
            f"ETAs within ±{TOLERANCE:g} h, share [95% CI]": "; ".join(
                f"{v} {share(everyone, err[v] <= TOLERANCE)}" for v in VARIANTS
            ),
            f"late arrivals (> timetable + {LATE:g} h) with ETA within ±{LATE_TOLERANCE:g} h": (
                "; ".join(f"{v} {share(late, err[v] <= LATE_TOLERANCE)}" for v in VARIANTS)
                + f" (late: {int(late.sum())} of {len(y)} held-out waybills)"
            ),
            "RMSE, hours": ", ".join(
                f"{v} {float(np.sqrt(np.mean((preds[v] - y) ** 2))):.2f}" for v in VARIANTS
            ),
            "R² on the held-out waybills (mean over seeds)": ", ".join(
                f"{v} {np.mean([r2(g, v) for g in groups]):.3f}" for v in VARIANTS
            ),
            "timetable ETA (图定运到时限 + drayage allowance) MAE, hours": (
                f"{float(np.mean(np.abs(timetable - y))):.2f}"
            ),
            "contribution (exact Shapley of the MAE reduction on the job's validation split, "
            "hours, mean over seeds)": ", ".join(
                f"{p} {np.mean([r['shapley'].get(p, 0.0) for _, _, r in runs]):+.2f}"
                for p in PROVIDERS
            ),
            "training waybills aligned per seed (rail ∩ port ∩ trucking: rail only, SQL and "
            "fused; rail ∩ port: rail + port)": ", ".join(
                f"{r['aligned']} and {r['port_aligned']}" for _, _, r in runs
            ),
            "held-out waybills evaluated per seed: those both federated models predicted": (
                ", ".join(str(g[0].size) for g in groups)
            ),
        }
        return MetricResult(
            metric="ETA mean absolute error on the evaluator's held-out waybills, hours "
            "(vertical linear regression)",
            lower_is_better=True,
            estimates=ests,
            ordering=" > ".join(VARIANTS),
            ordering_holds=holds,
            steps=steps,
            seeds=[s for s, _, _ in runs],
            extra=extra,
            controls=[
                irrelevant,
                kept_out_control(
                    runs,
                    "held-out waybills kept out of training",
                    "no predicted waybill in the training file; training PSI and jobs read "
                    "waybills only",
                    "waybills",
                )
            ],
        )


def _with_aggregates(
    table: pa.Table, rows: np.ndarray, terminals: dict[int, tuple[float, float]]
) -> np.ndarray:
    """The railway's own columns of ``rows`` plus the port's aggregates of each row's
    destination terminal (joined at home)."""
    dest = [int(t) for t in table.column("dest_terminal").to_numpy()[rows]]
    missing = sorted(set(dest) - set(terminals))
    if missing:
        raise ScenarioError(f"the port's aggregates name no terminal {missing}")
    x = [table.column(c).to_numpy().astype(float)[rows] for c in FEATURES[RAIL]]
    x += [np.asarray([terminals[d][k] for d in dest], dtype=float) for k in (0, 1)]
    return np.column_stack(x)
