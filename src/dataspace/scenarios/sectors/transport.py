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
60–80% of the railway's waybills (and boxes of their own that never went by rail).

Flow, per seed, all through the nodes' APIs: the railway aligns with each provider by ECDH-PSI
on the waybill number (``mode=align``: only row positions stay at each node, no identifier or
row leaves); it asks the port one governed SQL query (``aggregate-only``, groups of at least
10): the mean berth occupancy and yard queue per terminal — aggregates it joins at home to its
waybills' destination terminal; it then starts one vertical **linear regression** job
(``POST /api/v1/train``, ``model = vlinreg``: squared loss on additive secret shares, Beaver
triples from the space operator as dealer). Each provider checks its own ``federated-train``
agreement (purpose, the columns it is asked for, output ``aggregate-only``) before any message.
The job trains every coalition — railway alone (at home), railway + port, railway + trucking,
railway + port + trucking — on the same aligned rows, predicts the same held-out rows (a
public-seed split of the aligned waybills) and keeps those predictions inside the railway's
node; the railway also fits, at home and on the same rows with the same schedule, its own model
plus the port's terminal aggregates. Only protocol messages (secret shares), the SQL
aggregates and the final model parts leave a node.

Metric: held-out ETA mean absolute error (hours) for railway only → railway + port terminal
aggregates (SQL) → railway + port (VFL) → railway + port + trucking (VFL): same population,
same model family (linear regression), same schedule (epochs, batch, step); 95% CI from a
bootstrap of the held-out waybills stratified by seed. Reported with it: the share of ETAs
within ±6 h, the share of late arrivals (more than 12 h over the timetable) whose ETA was
within ±12 h, RMSE and R², the timetable's own error, and each provider's exact Shapley value
of the MAE reduction.

Data: a structural latent-factor generator. Each waybill has six latent factors (rail-line
congestion, berth congestion — partly a per-terminal effect —, vessel schedule slip, road
congestion, truck dispatch delay, weather and inspection holds); each party sees its own noisy,
transformed view of some of them, from windows before the label; the transit time depends on
the route lengths, the latents and a shock no party observes, so no single column copies it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.scenarios.base import (
    Generated,
    MetricResult,
    OfferSpec,
    Party,
    Scenario,
    ScenarioError,
)
from dataspace.scenarios.common import estimates, ordered, overlap_mask, rng_for
from dataspace.scenarios.sectors.vertical import coalition_key, vertical_offers
from dataspace.scenarios.stats import bootstrap_ci, label_copy_flags

RAIL, PORT, TRUCKING = "rail", "port", "trucking"
PROVIDERS = (PORT, TRUCKING)
PURPOSE = "logistics"
KEY = "entity_id:text"  # entity_id holds the one-waybill number (多式联运运单号)
LABEL = "transit_hours"
ENTITIES = {"small": 1500, "default": 5000, "large": 20000}
SEEDS = {"small": 2, "default": 3, "large": 5}
PARAMS = {"epochs": 12, "batch_size": 64, "learning_rate": 0.1, "lr_decay": 0.05, "l2": 1e-3}
HOLDOUT = 0.3
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
}
SQL_FIELDS = ["terminal", "berth_occupancy_72h", "yard_queue_teu"]
FUSED = "rail + port + trucking (VFL)"
VARIANTS = {
    "rail only": (RAIL,),
    "rail + port terminal aggregates (SQL)": None,
    "rail + port (VFL)": (RAIL, PORT),
    FUSED: (RAIL, PORT, TRUCKING),
}
TRAIN_TIMEOUT = 900.0


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
            Party(RAIL, "consumer", "铁路货运 (label party)", ("waybills",)),
            Party(PORT, "provider", "港口", ("berths",)),
            Party(TRUCKING, "provider", "公路运输", ("trucks",)),
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
            "tolerance_hours": TOLERANCE,
            "late_hours": LATE,
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
        r = np.arange(n)  # the railway: every waybill it issued (and delivered)
        tables[RAIL] = [
            (
                "waybills",
                pa.table(
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
                ),
            )
        ]
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
        return Generated(
            tables=tables,
            params=p,
            version="transport/1",
            heldout={"split": "public-seed split of the aligned waybills", "share": HOLDOUT},
        )

    def offers(self) -> list[OfferSpec]:
        out = vertical_offers(RAIL, ((PORT, "berths"), (TRUCKING, "trucks")), PURPOSE, FEATURES)
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
        api = ctx.api[RAIL]
        ds = ctx.dataset(RAIL, "waybills")
        own = ctx.own(RAIL, "waybills")
        flags = label_copy_flags(
            {c: own.column(c).to_numpy().astype(float) for c in FEATURES[RAIL]},
            own.column(LABEL).to_numpy().astype(float),
        )
        if flags:
            raise ScenarioError(f"label-copy columns refused: {flags}")
        align, positions = [], None
        for provider in PROVIDERS:
            ctx.step(f"PSI on the one-waybill number with {provider}")
            view = api.psi(
                agreements=[ctx.agreements[f"psi:{provider}"]], dataset=ds, key=KEY, mode="align"
            )
            align.append(view["id"])
            rows = set(ctx.kept_positions(RAIL, view))
            positions = rows if positions is None else positions & rows
        ctx.step("governed SQL: berth occupancy and yard queue per terminal (port)")
        table, _ = api.query(
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
        ctx.step("vertical linear regression: rail + port + trucking, every coalition, Shapley")
        body = {
            "agreements": [ctx.agreements[f"train:{p}"] for p in PROVIDERS],
            "peers": list(PROVIDERS),
            "model": "vlinreg",
            "label": LABEL,
            "features": FEATURES,
            "align": align,
            "params": PARAMS,
            "holdout": HOLDOUT,
            "contribution": True,
        }
        view = _wait(api, dict(api.json("POST", "/train", json=body)))
        result = view["result"]
        metrics = result["metrics"]
        # The held-out predictions never left the railway's node: read them there.
        held = pq.read_table(ctx.roots[RAIL] / "data" / metrics["heldout_file"])
        common = np.asarray(sorted(positions or ()), dtype=np.int64)
        if not np.array_equal(np.sort(held.column("position").to_numpy()), _test_rows(common)):
            raise ScenarioError("the job's held-out rows are not the public split of the aligned")
        pos = held.column("position").to_numpy()
        y = held.column("target").to_numpy()
        preds = {
            variant: held.column(coalition_key(parties)).to_numpy()
            for variant, parties in VARIANTS.items()
            if parties is not None
        }
        preds["rail + port terminal aggregates (SQL)"] = _with_aggregates(
            own, common, pos, terminals
        )
        return {
            "job_id": view["id"],
            "model_id": result["model_id"],
            "aligned": int(common.size),
            "held_out": int(metrics["held_out_rows"]),
            "train_rows": int(metrics["train_rows"]),
            "sql_groups": len(terminals),
            "target": y,
            "timetable": own.column("timetable_hours").to_numpy()[pos],
            "predictions": preds,
            "shapley": {
                k: float(v)
                for k, v in (result.get("contribution") or {}).get("values", {}).items()
            },
            "r2": {k: float(v) for k, v in metrics["r2_by_coalition"].items()},
            "train_seconds": float(metrics.get("train_seconds") or 0.0),
            "bytes_by_rail": int(metrics.get("bytes_exchanged_by_initiator") or 0),
        }

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        y = np.concatenate([r["target"] for _, _, r in runs])
        timetable = np.concatenate([r["timetable"] for _, _, r in runs])
        strata = [i for i, (_, _, r) in enumerate(runs) for _ in range(len(r["target"]))]
        preds = {v: np.concatenate([r["predictions"][v] for _, _, r in runs]) for v in VARIANTS}
        err = {v: np.abs(p - y) for v, p in preds.items()}
        seed = runs[0][0]
        mae = {v: _mean_of(e) for v, e in err.items()}
        ests = estimates(mae, len(y), strata, seed=seed)
        values = [e.value for e in ests]
        holds = ordered(values, lower_is_better=True)
        late = (y - timetable) > LATE

        def share(mask: np.ndarray, ok: np.ndarray) -> str:
            def stat(idx: np.ndarray) -> float:
                m = mask[idx]
                return float(ok[idx][m].mean()) if m.any() else float("nan")

            lo, hi = bootstrap_ci(stat, len(y), strata=strata, seed=seed + 7)
            return f"{stat(np.arange(len(y))):.3f} [{lo:.3f}, {hi:.3f}]"

        everyone = np.ones(len(y), dtype=bool)
        diff = err["rail only"] - err[FUSED]
        lo, hi = bootstrap_ci(lambda i: float(diff[i].mean()), len(y), strata=strata, seed=seed)
        extra = {
            "MAE reduction, rail only − fused, hours (paired bootstrap 95% CI)": (
                f"{diff.mean():.2f} [{lo:.2f}, {hi:.2f}]"
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
            "R² (mean over seeds)": ", ".join(
                f"{v} {np.mean([r['r2'][coalition_key(p)] for _, _, r in runs]):.3f}"
                for v, p in VARIANTS.items()
                if p is not None
            ),
            "timetable ETA (图定运到时限 + drayage allowance) MAE, hours": (
                f"{float(np.mean(np.abs(timetable - y))):.2f}"
            ),
            "contribution (exact Shapley of the MAE reduction, hours, mean over seeds)": ", ".join(
                f"{p} {np.mean([r['shapley'].get(p, 0.0) for _, _, r in runs]):+.2f}"
                for p in PROVIDERS
            ),
            "aligned waybills (rail ∩ port ∩ trucking) per seed": ", ".join(
                str(r["aligned"]) for _, _, r in runs
            ),
            "held-out waybills per seed": ", ".join(str(r["held_out"]) for _, _, r in runs),
        }
        return MetricResult(
            metric="held-out ETA mean absolute error, hours (vertical linear regression)",
            lower_is_better=True,
            estimates=ests,
            ordering=" > ".join(VARIANTS),
            ordering_holds=holds,
            seeds=[s for s, _, _ in runs],
            extra=extra,
        )


def _mean_of(errors: np.ndarray) -> Callable[[np.ndarray], float]:
    def stat(idx: np.ndarray) -> float:
        return float(errors[idx].mean())

    return stat


def _wait(api: Any, view: dict[str, Any]) -> dict[str, Any]:
    job = view["id"]
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while view.get("state") not in ("SUCCEEDED", "FAILED", "DENIED"):
        if time.monotonic() > deadline:
            raise ScenarioError(f"training job {job} still {view.get('state')}")
        time.sleep(0.25)
        view = dict(api.json("GET", f"/train/jobs/{job}"))
    if view["state"] != "SUCCEEDED":
        raise ScenarioError(f"training job {job} ended {view['state']}: {view.get('error')}")
    return view


def _test_rows(common: np.ndarray) -> np.ndarray:
    from dataspace.services.train_roles import split_rows

    _, test = split_rows(int(common.size), HOLDOUT, 0)
    return np.sort(common[test])


def _with_aggregates(
    own: pa.Table,
    common: np.ndarray,
    test_positions: np.ndarray,
    terminals: dict[int, tuple[float, float]],
) -> np.ndarray:
    """The railway's own model plus the port's per-terminal aggregates, fitted at home on the
    aligned training rows with the job's schedule; its predictions for the held-out rows."""
    from dataspace.federated import vlinreg
    from dataspace.federated.plan import TrainConfig
    from dataspace.services.train_linreg import DEFAULTS
    from dataspace.services.train_roles import split_rows

    fit, _ = split_rows(int(common.size), HOLDOUT, 0)
    dest = [int(t) for t in own.column("dest_terminal").to_pylist()]
    missing = sorted({dest[i] for i in common} - set(terminals))
    if missing:
        raise ScenarioError(f"the port's aggregates name no terminal {missing}")

    def block(rows: np.ndarray) -> np.ndarray:
        x = [own.column(c).to_numpy().astype(float)[rows] for c in FEATURES[RAIL]]
        x += [np.asarray([terminals[dest[i]][k] for i in rows]) for k in (0, 1)]
        return np.column_stack(x)

    p = {**DEFAULTS, **PARAMS}
    config = TrainConfig(
        epochs=int(p["epochs"]),
        batch_size=int(p["batch_size"]),
        learning_rate=float(p["learning_rate"]),
        lr_decay=float(p["lr_decay"]),
        l2=float(p["l2"]),
        patience=int(p["epochs"]),
        min_delta=-np.inf,
    )
    y = own.column(LABEL).to_numpy().astype(float)
    model = vlinreg.train_plain_linear([block(common[fit])], y[common[fit]], config)
    return model.predict([block(test_positions)])
