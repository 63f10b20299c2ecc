"""城市治理 · care alerts for elderly people living alone from power and water use.

Parties: the civil-affairs bureau (民政局, consumer) holds its register of elderly residents
living alone (身份证, county, age, years alone), the watch list it monitors (one row per
registered elder and monitoring day) and, for the elders of past seasons, the community
workers' care records (the day a fall or illness began, found after the fact); the power grid
(电网) and the water utility (自来水公司), providers, hold each real-name account's daily kWh
and m³ and derive, next to their data, the days on which a household used less than half
(power) or less than a third (water) of its own 28-day median, and per household whether it
had such a day in the watch period.

Flow: PSI on the composite key (身份证, day) with the grid and with the water utility tells the
bureau which of its watched elder-days were low-use days — nothing about residents it does
not watch, nothing about usage levels. The bureau's anomaly model (logistic regression at its
own node, trained on its training elders' care records over the released flags, threshold
chosen there) turns each elder-day into an alert or not. A DP query (ε = 1 per query) at each
provider feeds the dashboard: households with a low-use day per county, with its error — over
the household table (one row per household, m = 1, enforced on its 身份证 column), since a
per-day count would let one household weigh 21 days. No
federated training: no model crosses nodes, only PSI flags and DP aggregates do.

Metric, on held-out elders (split by elder before PSI, truth held by the evaluator): F1 of
alerts, with precision (alert episodes that found an ongoing care event), recall (events
alerted within two days of onset; later is too late for a fall) and lead time (days from
onset to alert), against the fixed rule care programmes run today on the grid alone ("power
low two days running") and the same rule over both utilities. Documented ordering: the power
rule has the lowest F1. Honest finding: the
multiplier is the fusion of the two utilities; the anomaly model is no better than the
two-utility rule (F1 within its CI) and alerts later (it waits for corroboration, so its lead
time against the power rule is negative, reported as such). Control on the DP dashboard: each
county cell's error against the 95% bound its release states — noise present (median error at
least 5% of the bound) and within the bound for at least 80% of the cells.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios import ids
from dataspace.scenarios.base import Control, Generated, MetricResult, OfferSpec, Party, Scenario
from dataspace.scenarios.common import estimates, ordered, overlap_mask, paired_steps, rng_for
from dataspace.scenarios.stats import label_copy_flags

VERSION = "urban-care/1"
CIVIL, GRID, WATER = "civil-affairs", "power-grid", "water-utility"
PROVIDERS = (GRID, WATER)
PURPOSE = "public-services"
ELDERS = {"small": 1500, "default": 3000, "large": 10000}
BASE_DAYS, WATCH_DAYS = 28, 21
POWER_LOW, WATER_LOW = 0.5, 0.33
EPSILON = 1.0
TIMELY = 2  # days: an alert later than this after onset counts as a missed event
START = dt.date(2026, 1, 5)
EVENT_TYPES = {  # name: (share, power factor, water factor) while the event lasts
    "bedridden (lights and taps idle)": (0.5, 0.3, 0.1),
    "lights left on, taps idle": (0.3, 1.0, 0.1),
    "tap left running, lights off": (0.2, 0.3, 1.0),
}
VARIANTS = (
    "fixed rule (power low 2 days)",
    "fixed rule (power or water low 2 days)",
    "anomaly model (power + water)",
)


def day_label(d: int) -> str:
    return (START + dt.timedelta(days=d)).isoformat()


def _runs(flags: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each day (per row)."""
    out = np.zeros(flags.shape)
    for d in range(flags.shape[1]):
        out[:, d] = np.where(flags[:, d], (out[:, d - 1] if d else 0) + 1, 0)
    return out


def features(p: np.ndarray, w: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Per elder-day features from the released flags (elders × days × k)."""
    rp, rw = np.minimum(_runs(p), 4), np.minimum(_runs(w), 4)
    both = (p & w).astype(float)
    either = (p | w).astype(float)
    a = np.repeat(((age - 78) / 8)[:, None], p.shape[1], axis=1)
    return np.stack([rp, rw, both, _runs(either.astype(bool)).clip(0, 4), rp * rw, a], axis=2)


def fit_logistic(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Ridge logistic regression by Newton steps; returns [intercept, *coef]."""
    xa = np.column_stack([np.ones(len(x)), x])
    beta = np.zeros(xa.shape[1])
    penalty = alpha * np.eye(xa.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(25):
        prob = 1 / (1 + np.exp(-(xa @ beta)))
        grad = xa.T @ (prob - y) + penalty @ beta
        hess = (xa * (prob * (1 - prob))[:, None]).T @ xa + penalty
        beta -= np.linalg.solve(hess, grad)
    return beta


def episodes(alert: np.ndarray, onset: np.ndarray) -> dict[str, np.ndarray]:
    """Per elder: true alerts (event found within TIMELY days, once), false alert episodes,
    event, delay (days from onset to the first alert after it)."""
    n, days = alert.shape
    tp, fp, event, delay = np.zeros(n), np.zeros(n), onset >= 0, np.full(n, np.nan)
    for i in range(n):
        for d in range(days):
            if not alert[i, d] or (d and alert[i, d - 1]):
                continue  # not the first day of an alert episode
            if event[i] and d >= onset[i]:
                if np.isnan(delay[i]):  # found; in time only within TIMELY days
                    delay[i] = d - onset[i]
                    tp[i] = float(delay[i] <= TIMELY)
            else:
                fp[i] += 1
    return {"tp": tp, "fp": fp, "event": event.astype(float), "delay": delay}


def f1(ep: dict[str, np.ndarray], idx: np.ndarray) -> float:
    tp, fp, ev = ep["tp"][idx].sum(), ep["fp"][idx].sum(), ep["event"][idx].sum()
    return float(2 * tp / max(1.0, 2 * tp + fp + (ev - tp)))


def choose_threshold(scores: np.ndarray, onset: np.ndarray) -> float:
    best, best_t = -1.0, 0.5
    for t in np.quantile(scores, np.linspace(0.80, 0.995, 40)):
        value = f1(episodes(scores > t, onset), np.arange(len(onset)))
        if value > best:
            best, best_t = value, float(t)
    return best_t


class CareAlerts(Scenario):
    name = "urban"
    sector = "urban"
    use_case = "care alerts for elderly people living alone from power and water use"
    capability = "PSI + anomaly model + DP dashboards"
    metric_name = "alert precision / recall and lead time vs rule"

    def parties(self) -> list[Party]:
        return [
            Party(CIVIL, "consumer", "民政局", ("elders", "watch", "care_records")),
            Party(GRID, "provider", "国网供电公司",
                  ("daily_power", "low_power_days", "low_power_households")),
            Party(WATER, "provider", "自来水公司",
                  ("daily_water", "low_water_days", "low_water_households")),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "elders": ELDERS[size],
            "base_days": BASE_DAYS,
            "watch_days": WATCH_DAYS,
            "power_low": POWER_LOW,
            "water_low": WATER_LOW,
            "event_intercept": -1.5,
            "event_frailty": 0.8,
            "event_types": {k: list(v) for k, v in EVENT_TYPES.items()},
            "day_out_rate": 0.012,
            "trip_share": 0.12,
            "noise_sd": {"power": 0.25, "water": 0.3},
            "coverage": [0.62, 0.78],
            "heldout_share": 0.5,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ValueError("this scenario has synthetic data only")
        p = self.params(size)
        n, days = p["elders"], BASE_DAYS + WATCH_DAYS
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        areas = [py.choice(sorted(ids.COUNTIES)) for _ in range(n)]
        pid = ids.unique(ids.person_id, n, py, areas)
        frailty = rng.normal(size=n)
        age = np.clip(np.round(78 + 5 * frailty + rng.normal(0, 5, n)), 65, 99)
        alone = np.clip(np.round(rng.gamma(2, 4, n)), 1, 40)
        has_event = rng.random(n) < 1 / (
            1 + np.exp(-(p["event_intercept"] + p["event_frailty"] * frailty))
        )
        onset = np.where(has_event, rng.integers(2, WATCH_DAYS - 3, n), -1)
        kind = rng.choice(len(EVENT_TYPES), size=n, p=[v[0] for v in EVENT_TYPES.values()])
        pf = np.ones((n, days))
        wf = np.ones((n, days))
        for i in np.flatnonzero(has_event):
            _, fp_, fw_ = list(EVENT_TYPES.values())[kind[i]]
            pf[i, BASE_DAYS + onset[i] :] *= fp_
            wf[i, BASE_DAYS + onset[i] :] *= fw_
        out = rng.random((n, days)) < p["day_out_rate"]  # a day with the children
        for i in np.flatnonzero(rng.random(n) < p["trip_share"]):  # a trip of 2–5 days
            s = int(rng.integers(BASE_DAYS, days - 2))
            out[i, s : s + int(rng.integers(2, 6))] = True
        pf[out] *= 0.3
        wf[out] *= 0.05
        power = (
            rng.lognormal(np.log(4.0), 0.4, n)[:, None]
            * pf
            * rng.lognormal(0, p["noise_sd"]["power"], (n, days))
        )
        water = (
            rng.lognormal(np.log(0.15), 0.4, n)[:, None]
            * wf
            * rng.lognormal(0, p["noise_sd"]["water"], (n, days))
        )
        heldout = rng.random(n) < p["heldout_share"]  # split by elder before any PSI
        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        watch = np.repeat(np.arange(n), WATCH_DAYS)
        tables[CIVIL] = [
            (
                "elders",
                pa.table(
                    {
                        "entity_id": pid,
                        "county": areas,
                        "age": age.astype(np.int64),
                        "years_alone": alone.astype(np.int64),
                    }
                ),
            ),
            (
                "watch",
                pa.table(
                    {
                        "entity_id": [pid[i] for i in watch],
                        "day": [day_label(d) for _ in range(n) for d in range(WATCH_DAYS)],
                    }
                ),
            ),
            (
                "care_records",
                pa.table(
                    {
                        "entity_id": [pid[i] for i in np.flatnonzero(~heldout)],
                        "onset_day": [
                            day_label(int(onset[i])) if onset[i] >= 0 else None
                            for i in np.flatnonzero(~heldout)
                        ],
                    }
                ),
            ),
        ]
        for party, values, low, unit, prefix in (
            (GRID, power, POWER_LOW, "kwh", "31"),
            (WATER, water, WATER_LOW, "m3", "66"),
        ):
            served = np.flatnonzero(overlap_mask(rng, n, *p["coverage"]))
            median = np.median(values[:, :BASE_DAYS], axis=1)
            flag = values < low * median[:, None]
            accounts = {i: f"{prefix}{py.randrange(10**10):010d}" for i in served}
            daily: dict[str, list[Any]] = {
                "account_no": [],
                "entity_id": [],
                "county": [],
                "day": [],
                unit: [],
                "low": [],
            }
            lows: dict[str, list[Any]] = {"entity_id": [], "day": []}
            households: dict[str, list[Any]] = {"entity_id": [], "county": [], "low_use": []}
            for i in served:
                for d in range(days):
                    daily["account_no"].append(accounts[i])
                    daily["entity_id"].append(pid[i])
                    daily["county"].append(areas[i])
                    daily["day"].append(day_label(d - BASE_DAYS))
                    daily[unit].append(round(float(values[i, d]), 3))
                    is_low = bool(d >= BASE_DAYS and flag[i, d])
                    daily["low"].append(int(is_low))
                    if is_low:
                        lows["entity_id"].append(pid[i])
                        lows["day"].append(day_label(d - BASE_DAYS))
                households["entity_id"].append(pid[i])
                households["county"].append(areas[i])
                households["low_use"].append(int(bool(flag[i, BASE_DAYS:].any())))
            kind_name = "power" if party == GRID else "water"
            tables[party] = [
                (f"daily_{kind_name}", pa.table(daily)),
                (f"low_{kind_name}_days", pa.table(lows)),
                (f"low_{kind_name}_households", pa.table(households)),
            ]
        return Generated(
            tables=tables,
            heldout={"eval": heldout, "onset": onset},
            params=p,
            version=VERSION,
            reclassify={
                GRID: [("daily_power", "kwh", "none"), ("daily_power", "low", "none"),
                       ("low_power_households", "low_use", "none")],
                WATER: [("daily_water", "m3", "none"), ("daily_water", "low", "none"),
                        ("low_water_households", "low_use", "none")],
            },
        )

    def offers(self) -> list[OfferSpec]:
        out = []
        for party in PROVIDERS:
            kind = "power" if party == GRID else "water"
            out += [
                OfferSpec(
                    party,
                    f"low_{kind}_days",
                    "psi-only",
                    {"purposes": PURPOSE, "fields": "entity_id,day", "output": "pseudonymized"},
                    CIVIL,
                    PURPOSE,
                    price="20 CNY",
                    key=f"psi:{party}",
                ),
                OfferSpec(
                    party,
                    f"low_{kind}_households",
                    "dp-stats",
                    {
                        "purposes": PURPOSE,
                        "epsilon": 4.0,
                        "delta": 1e-5,
                        "min_group_size": 10,
                        "fields": "county,low_use",
                    },
                    CIVIL,
                    PURPOSE,
                    price="5 CNY",
                    dp_bounds={"low_use": (0.0, 1.0)},
                    dp_epsilon_per_query=EPSILON,
                    dp_delta=1e-6,
                    dp_max_contributions=1,
                    dp_contributor="entity_id",
                    key=f"dp:{party}",
                ),
            ]
        return out

    def flow(self, ctx: Any) -> dict[str, Any]:
        civil = ctx.api[CIVIL]
        watch = ctx.own(CIVIL, "watch")
        elders = ctx.own(CIVIL, "elders")
        n = elders.num_rows
        flags: dict[str, np.ndarray] = {}
        dashboard: dict[str, dict[str, float]] = {}
        bounds: dict[str, float] = {}
        for party in PROVIDERS:
            kind = "power" if party == GRID else "water"
            ctx.step(f"PSI on (身份证, day) with {party}")
            view = civil.psi(
                agreements=[ctx.agreements[f"psi:{party}"]],
                dataset=ctx.dataset(CIVIL, "watch"),
                key="entity_id:id_card,day:text",
                mode="me",
            )
            f = np.zeros(watch.num_rows, dtype=bool)
            f[ctx.kept_positions(CIVIL, view)] = True
            flags[kind] = f.reshape(n, WATCH_DAYS)  # watch rows are elder-major, day-minor
            ctx.step(f"DP dashboard: households with a low-use day per county at {party}")
            table, meta = civil.query(
                ctx.agreements[f"dp:{party}"],
                "SELECT county, SUM(low_use) AS low_households "
                f"FROM {ctx.dataset(party, f'low_{kind}_households')} GROUP BY county",
            )
            dashboard[kind] = {r["county"]: float(r["low_households"])
                               for r in table.to_pylist()}  # fmt: skip
            bounds[kind] = float((meta.get("error_bounds") or {}).get("low_households") or 0.0)
        # The anomaly model, at the bureau's node, on its own records and the released flags.
        ctx.step("anomaly model at the civil-affairs node")
        ids_ = elders.column("entity_id").to_pylist()
        age = elders.column("age").to_numpy().astype(float)
        rec = ctx.own(CIVIL, "care_records").to_pylist()
        day_index = {day_label(d): d for d in range(WATCH_DAYS)}
        row = {pid: i for i, pid in enumerate(ids_)}
        train = np.array([row[r["entity_id"]] for r in rec], dtype=np.int64)
        onset = np.array([day_index[r["onset_day"]] if r["onset_day"] else -1 for r in rec])
        x = features(flags["power"], flags["water"], age)
        y = (np.arange(WATCH_DAYS)[None, :] >= onset[:, None]) & (onset[:, None] >= 0)
        beta = fit_logistic(x[train].reshape(-1, x.shape[2]), y.reshape(-1).astype(float))
        scores = beta[0] + x @ beta[1:]
        threshold = choose_threshold(scores[train], onset)
        own_flags = label_copy_flags({"age": age[train]}, (onset >= 0).astype(float))
        return {
            "power": flags["power"],
            "water": flags["water"],
            "model_alert": scores > threshold,
            "threshold": threshold,
            "dashboard": dashboard,
            "dp_bound": bounds,
            "copy_flags": own_flags,
            "psi_power_days": int(flags["power"].sum()),
            "psi_water_days": int(flags["water"].sum()),
            "train_elders": len(train),
        }

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        per: dict[str, list[dict[str, np.ndarray]]] = {v: [] for v in VARIANTS}
        strata: list[int] = []
        dp_err: list[float] = []
        dp_ratio: list[float] = []  # each cell's |error| over the 95% bound its release stated
        copy: list[str] = []
        for seed, gen, rel in runs:
            ev = np.flatnonzero(np.asarray(gen.heldout["eval"]))
            onset = np.asarray(gen.heldout["onset"])[ev]
            p, w = rel["power"][ev], rel["water"][ev]
            rule_p = p & np.roll(p, 1, axis=1)
            rule_p[:, 0] = False
            either = p | w
            rule_e = either & np.roll(either, 1, axis=1)
            rule_e[:, 0] = False
            for name, alert in zip(VARIANTS, (rule_p, rule_e, rel["model_alert"][ev]), strict=True):
                per[name].append(episodes(alert, onset))
            strata += [seed] * len(ev)
            truth = _dashboard_truth(gen)
            for kind, counts in rel["dashboard"].items():
                errors = [abs(v - truth[kind].get(c, 0)) for c, v in counts.items()]
                dp_err += errors
                bound = float(rel["dp_bound"].get(kind) or 0.0)
                dp_ratio += [e / bound if bound > 0 else float("inf") for e in errors]
            copy += rel["copy_flags"]
        ep = {
            k: {f: np.concatenate([e[f] for e in v]) for f in ("tp", "fp", "event", "delay")}
            for k, v in per.items()
        }
        n = len(strata)
        stats = {k: _f1_of(e) for k, e in ep.items()}
        est = estimates(stats, n, strata, seed=runs[0][0])
        values = [e.value for e in est]
        power, either_rule, model_ = VARIANTS
        steps = paired_steps(stats, [(power, either_rule), (power, model_)], n, strata,
                             seed=runs[0][0], lower_is_better=False)

        def summary(e: dict[str, np.ndarray]) -> str:
            tp, fp, events = e["tp"].sum(), e["fp"].sum(), e["event"].sum()
            delay = e["delay"][~np.isnan(e["delay"])]
            mean = float(delay.mean()) if delay.size else float("nan")
            return (
                f"precision {tp / max(1, tp + fp):.2f}, recall {tp / max(1, events):.2f}, "
                f"mean days from onset to alert {mean:.2f}"
            )

        rule, model = ep[VARIANTS[0]], ep[VARIANTS[2]]
        both = ~np.isnan(rule["delay"]) & ~np.isnan(model["delay"])
        lead = float(np.mean(rule["delay"][both] - model["delay"][both])) if both.any() else 0.0
        extra = {v: summary(ep[v]) for v in VARIANTS}
        extra["lead time of the model over the fixed rule (events both caught), days"] = (
            f"{lead:+.2f}"
        )
        extra["events among held-out elders"] = str(int(model["event"].sum()))
        extra[f"DP dashboard error at ε = {EPSILON} (median absolute, households)"] = (
            f"{np.median(dp_err):.2f}" if dp_err else "n/a"
        )
        return MetricResult(
            metric="F1 of care alerts (held-out elders)",
            lower_is_better=False,
            estimates=est,
            ordering="fixed rule (power) < fixed rule (power or water) and "
            "fixed rule (power) < anomaly model (power + water)",
            ordering_holds=ordered(values[:2], False) and values[0] < values[2],
            steps=steps,
            seeds=[r[0] for r in runs],
            extra=extra,
            controls=[
                _dp_calibration(dp_ratio),
                Control(
                    "label-copy check on the bureau's age column",
                    "not flagged (age raises risk, it does not copy the event)",
                    "flagged" if copy else "not flagged",
                    not copy,
                )
            ],
        )


def _dp_calibration(ratios: list[float]) -> Control:
    """The dashboard's noise against the 95% error bound each DP release states: noise there
    (the median error at least 5% of the bound; exactly 0 would mean none was added) and no
    more than stated (the bound covers at least 80% of the county cells; ~95% expected, 80%
    leaves room for the few dozen cells of a run)."""
    r = np.asarray(ratios, dtype=float)
    covered = float(np.mean(r <= 1.0)) if r.size else 0.0
    median = float(np.median(r)) if r.size else 0.0
    return Control(
        "DP dashboard noise against its stated 95% error bound",
        "noise present (median |error| ≥ 5% of the bound) and within it (≥ 80% of the county "
        "cells inside the bound)",
        f"{covered:.0%} of {r.size} cells inside; median |error| {median:.2f} × the bound",
        r.size > 0 and covered >= 0.8 and median >= 0.05,
    )


def _f1_of(ep: dict[str, np.ndarray]) -> Callable[[np.ndarray], float]:
    return lambda idx: f1(ep, idx)


def _dashboard_truth(gen: Generated) -> dict[str, dict[str, int]]:
    """Exact households with a low-use day per county, from the providers' own tables
    (evaluator)."""
    out: dict[str, dict[str, int]] = {}
    for party, kind in ((GRID, "power"), (WATER, "water")):
        table = next(t for name, t in gen.tables[party] if name == f"low_{kind}_households")
        counts: dict[str, int] = {}
        for c, low in zip(
            table.column("county").to_pylist(), table.column("low_use").to_pylist(), strict=True
        ):
            counts[c] = counts.get(c, 0) + int(low)
        out[kind] = counts
    return out
