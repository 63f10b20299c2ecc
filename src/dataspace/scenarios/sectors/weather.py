"""气象服务 · weather-index crop insurance (气象 + 保险 + 农业农村).

Parties: the insurer (保险公司, consumer) holds its policies per county and season, with the
loss rate its adjusters assessed on past claims, and the prefecture-level rainfall it buys today
to price an index; the meteorological service (气象局, provider) holds its stations' daily
rainfall and maximum temperature for the growing season (June–August); the agriculture and
rural affairs bureau (农业农村局, provider) holds village crop-loss reports (灾情统计).

Flow: PSI on the county code (GB/T 2260) tells the insurer which of its insured counties have a
station (no other county is revealed); governed SQL at the weather service releases season
rainfall and heat days per county and year (groups of at least k = 10 station-days); governed
SQL at the bureau releases the mean reported loss per county and year (groups of at least
k = 10 villages — smaller ones are suppressed). The insurer fits a ridge regression of loss on
the weather indices on the released aggregates and turns it into an index payout.

Counties held by the evaluator are split off before any PSI: their loss is in no party's
table. Metric, on those counties: **basis risk** — the correlation of the index payout with
the actual loss (higher is better) — and the **missed-big-loss rate**: the share of county
seasons with a loss of at least 30% that triggered no payout. Insurer-only index (prefecture
rainfall, its own claims) vs fused index (station weather, the bureau's losses), same model
family (ridge on deficit, deficit², heat) and the same trigger. Placebo control: the fused
model fed each county's weather of another season (the next, cyclically; computed at the
insurer from the same released aggregates) must not beat the insurer's own index — the 95% CI
of its correlation lift reaches 0; fed the right season it is the fused index, +0.43 over
the insurer's.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios.base import (
    Control,
    Generated,
    MetricResult,
    OfferSpec,
    Party,
    Scenario,
    ScenarioError,
)
from dataspace.scenarios.common import estimates, paired_steps, rng_for
from dataspace.scenarios.stats import bootstrap_ci, label_copy_flags, ridge_fit, ridge_predict

VERSION = "weather-index/1"
INSURER, WEATHER, AGRI = "insurer", "weather-service", "agri-bureau"
COUNTIES = {"small": 72, "default": 180, "large": 480}
YEARS = {"small": 6, "default": 8, "large": 10}
SEASON_DAYS = 92  # June–August
NORMAL_RAIN = 450.0  # mm per season
TRIGGER = 0.2  # predicted loss rate above which the index pays
BIG_LOSS = 0.30
PLACEBO = "placebo lift: another season's weather − insurer-only (correlation)"
PROVINCES = ("41", "37", "34", "42", "43", "13", "62", "61", "51", "65")


def county_codes(py: random.Random, n: int) -> list[str]:
    """n distinct GB/T 2260-shaped county codes, about six per prefecture."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        prefecture = py.choice(PROVINCES) + f"{py.randint(1, 17):02d}"
        for _ in range(py.randint(4, 8)):
            code = prefecture + f"{py.randint(21, 30):02d}"
            if code not in seen and len(out) < n:
                seen.add(code)
                out.append(code)
    return out


def design(deficit: np.ndarray, heat: np.ndarray | None) -> np.ndarray:
    cols = [deficit, deficit**2] + ([heat / 10.0] if heat is not None else [])
    return np.column_stack(cols)


class WeatherIndexInsurance(Scenario):
    name = "weather"
    sector = "meteorology"
    use_case = "weather-index crop insurance (气象 + 保险 + 农业农村)"
    capability = "PSI + governed SQL + regression"
    metric_name = "basis risk (corr of payout with loss), missed-big-loss rate"

    def parties(self) -> list[Party]:
        return [
            Party(INSURER, "consumer", "财产保险公司", ("policies", "prefecture_rain")),
            Party(WEATHER, "provider", "气象局", ("stations", "station_daily")),
            Party(AGRI, "provider", "农业农村局", ("village_losses",)),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "counties": COUNTIES[size],
            "years": YEARS[size],
            "season_days": SEASON_DAYS,
            "normal_rain": NORMAL_RAIN,
            "prefecture_sd": 0.22,
            "local_sd": 0.22,
            "heat_mean": 7.0,
            "station_cover": 0.9,
            "stations": [1, 3],
            "loss": {"base": 0.03, "deficit": 0.75, "heat": 0.012, "shock_sd": 0.035},
            "adjuster_sd": 0.08,
            "village_sd": 0.05,
            "villages": [6, 18],
            "eval_share": 0.3,
            "trigger": TRIGGER,
            "big_loss": BIG_LOSS,
            "insurer_index_sd": 0.08,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ScenarioError(
                f"{self.name} has synthetic data only",
                hint="--data public runs: health, agriculture",
            )
        p = self.params(size)
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        n, n_years = p["counties"], p["years"]
        codes = county_codes(py, n)
        prefs = sorted({c[:4] for c in codes})
        pref_of = np.array([prefs.index(c[:4]) for c in codes])
        years = [2019 + y for y in range(n_years)]
        pref_rain = rng.normal(0, p["prefecture_sd"], size=(len(prefs), n_years))
        local_rain = rng.normal(0, p["local_sd"], size=(n, n_years))
        rain = NORMAL_RAIN * np.exp(pref_rain[pref_of] + local_rain - 0.05)
        heat_pref = rng.normal(0, 0.35, size=(len(prefs), n_years))
        heat = rng.poisson(
            p["heat_mean"] * np.exp(heat_pref[pref_of] + rng.normal(0, 0.35, (n, n_years)))
        )
        heat = np.minimum(heat, SEASON_DAYS)
        deficit = np.maximum(0.0, 1.0 - rain / NORMAL_RAIN)
        lp = p["loss"]
        shock = rng.normal(0, lp["shock_sd"], size=(n, n_years))  # pests, hail: nobody sees it
        loss = np.clip(
            lp["base"] + lp["deficit"] * deficit**1.3 + lp["heat"] * heat + shock, 0.0, 0.95
        )
        evaluation = rng.random(n) < p["eval_share"]  # split by county before any PSI
        # Weather service: stations in ~90% of counties, daily rain and tmax.
        st_rows: dict[str, list[Any]] = {"station_id": [], "county": [], "elevation_m": []}
        daily: dict[str, list[Any]] = {
            "station_id": [],
            "county": [],
            "year": [],
            "day": [],
            "rain_mm": [],
            "tmax_c": [],
        }
        has_station = rng.random(n) < p["station_cover"]
        serial = 0
        for c in map(int, np.flatnonzero(has_station)):
            for _ in range(int(rng.integers(p["stations"][0], p["stations"][1] + 1))):
                serial += 1
                sid = f"5{serial:04d}"
                st_rows["station_id"].append(sid)
                st_rows["county"].append(codes[c])
                st_rows["elevation_m"].append(int(rng.integers(20, 1500)))
                for y in range(n_years):
                    total = rain[c, y] * float(rng.lognormal(0, 0.08))
                    share = rng.dirichlet(np.full(SEASON_DAYS, 0.25))
                    hot = np.zeros(SEASON_DAYS, dtype=bool)
                    hot[rng.choice(SEASON_DAYS, size=int(heat[c, y]), replace=False)] = True
                    tmax = np.where(
                        hot,
                        rng.uniform(35.0, 39.5, SEASON_DAYS),
                        rng.uniform(25.0, 34.8, SEASON_DAYS),
                    )
                    daily["station_id"] += [sid] * SEASON_DAYS
                    daily["county"] += [codes[c]] * SEASON_DAYS
                    daily["year"] += [years[y]] * SEASON_DAYS
                    daily["day"] += list(range(1, SEASON_DAYS + 1))
                    daily["rain_mm"] += np.round(total * share, 1).tolist()
                    daily["tmax_c"] += np.round(tmax, 1).tolist()
        # Insurer: policies in every county, adjusted claim losses for the past (non-evaluation)
        # counties only; the prefecture rainfall it buys (a smoothed, coarser view).
        pol: dict[str, list[Any]] = {
            "policy_no": [],
            "county": [],
            "year": [],
            "area_mu": [],
            "sum_insured": [],
            "claim_loss_rate": [],
        }
        for c in range(n):
            for y in range(n_years):
                for _ in range(int(rng.integers(3, 7))):
                    pol["policy_no"].append(f"PZHA{years[y]}{len(pol['policy_no']):07d}")
                    pol["county"].append(codes[c])
                    pol["year"].append(years[y])
                    area = int(rng.integers(50, 2000))
                    pol["area_mu"].append(area)
                    pol["sum_insured"].append(area * 800)
                    adj = float(np.clip(loss[c, y] + rng.normal(0, p["adjuster_sd"]), 0, 1))
                    pol["claim_loss_rate"].append(None if evaluation[c] else round(adj, 4))
        pr_mean = NORMAL_RAIN * np.exp(pref_rain - 0.05 + p["local_sd"] ** 2 / 2)
        pr: dict[str, list[Any]] = {"prefecture": [], "year": [], "rain_mm": []}
        for i, pref in enumerate(prefs):
            for y in range(n_years):
                pr["prefecture"].append(pref)
                pr["year"].append(years[y])
                noisy = pr_mean[i, y] * float(rng.lognormal(0, p["insurer_index_sd"]))
                pr["rain_mm"].append(round(noisy, 1))
        # Bureau: village loss reports for the non-evaluation counties.
        vil: dict[str, list[Any]] = {"village_code": [], "county": [], "year": [], "loss_rate": []}
        for c in map(int, np.flatnonzero(~evaluation)):
            n_vil = int(rng.integers(p["villages"][0], p["villages"][1] + 1))
            for y in range(n_years):
                for v in range(n_vil):
                    vil["village_code"].append(f"{codes[c]}{v + 1:03d}000")
                    vil["county"].append(codes[c])
                    vil["year"].append(years[y])
                    rate = float(np.clip(loss[c, y] + rng.normal(0, p["village_sd"]), 0, 1))
                    vil["loss_rate"].append(round(rate, 4))
        return Generated(
            tables={
                INSURER: [("policies", pa.table(pol)), ("prefecture_rain", pa.table(pr))],
                WEATHER: [("stations", pa.table(st_rows)), ("station_daily", pa.table(daily))],
                AGRI: [("village_losses", pa.table(vil))],
            },
            heldout={"codes": codes, "years": years, "loss": loss, "eval": evaluation},
            params=p,
            version=VERSION,
            reclassify={AGRI: [("village_losses", "village_code", "none")]},
        )

    def offers(self) -> list[OfferSpec]:
        return [
            OfferSpec(
                WEATHER,
                "stations",
                "psi-only",
                {"purposes": "agri-insurance", "fields": "county", "output": "pseudonymized"},
                INSURER,
                "agri-insurance",
                price="10 CNY",
                key="psi",
            ),
            OfferSpec(
                WEATHER,
                "station_daily",
                "aggregate-only",
                {
                    "purposes": "agri-insurance",
                    "min_group_size": 10,
                    "fields": "county,year,rain_mm,tmax_c,station_id",
                },
                INSURER,
                "agri-insurance",
                price="30 CNY",
                key="weather-sql",
            ),
            OfferSpec(
                AGRI,
                "village_losses",
                "aggregate-only",
                {
                    "purposes": "agri-insurance",
                    "min_group_size": 10,
                    "fields": "county,year,loss_rate",
                },
                INSURER,
                "agri-insurance",
                price="20 CNY",
                key="loss-sql",
            ),
        ]

    def flow(self, ctx: Any) -> dict[str, Any]:
        insurer = ctx.api[INSURER]
        ctx.step("PSI on county code with the weather service")
        view = insurer.psi(
            agreements=[ctx.agreements["psi"]],
            dataset=ctx.dataset(INSURER, "policies"),
            key="county:text",
            mode="me",
        )
        policies = ctx.own(INSURER, "policies")
        county_col = policies.column("county").to_pylist()
        covered = sorted({county_col[i] for i in ctx.kept_positions(INSURER, view)})
        ctx.step("governed SQL: season rainfall and heat days per county")
        wx, _ = insurer.query(
            ctx.agreements["weather-sql"],
            "SELECT county, year, AVG(rain_mm) AS rain_day, "
            "COUNT(*) FILTER (WHERE tmax_c >= 35) AS hot_station_days, "
            "COUNT(DISTINCT station_id) AS stations, COUNT(*) AS n "
            f"FROM {ctx.dataset(WEATHER, 'station_daily')} GROUP BY county, year",
        )
        ctx.step("governed SQL: reported crop loss per county (k = 10 villages)")
        ls, _ = insurer.query(
            ctx.agreements["loss-sql"],
            "SELECT county, year, AVG(loss_rate) AS loss, COUNT(*) AS villages "
            f"FROM {ctx.dataset(AGRI, 'village_losses')} GROUP BY county, year",
        )
        ctx.step("regression of loss on weather indices (at the insurer)")
        weather = {
            (r["county"], int(r["year"])): (
                float(r["rain_day"]) * SEASON_DAYS,
                # fewer than k hot station-days is suppressed by the provider: counted as none
                float(r["hot_station_days"] or 0) / max(int(r["stations"] or 1), 1),
            )
            for r in wx.to_pylist()
        }
        losses = {(r["county"], int(r["year"])): float(r["loss"]) for r in ls.to_pylist()}
        own = self._own_model(policies, ctx.own(INSURER, "prefecture_rain"))
        fused: dict[str, float] = {}
        train = [k for k in losses if k in weather]
        x = design(
            np.array([max(0.0, 1 - weather[k][0] / NORMAL_RAIN) for k in train]),
            np.array([weather[k][1] for k in train]),
        )
        beta = ridge_fit(x, np.array([losses[k] for k in train]), alpha=0.1)
        # The placebo: the same model fed each county's weather of *another* season (the next
        # one, cyclically). The county's climate stays; the season's link to the loss goes.
        years = sorted({y for _, y in weather})
        other = {y: years[(i + 1) % len(years)] for i, y in enumerate(years)}
        placebo: dict[str, float] = {}
        for key, pred in own.items():
            county, year = key.split("|")
            wkey = (county, int(year))
            fused[key] = placebo[key] = pred  # no station: the insurer's own index
            for out, season in ((fused, wkey), (placebo, (county, other.get(int(year), 0)))):
                if county in covered and wkey in weather and season in weather:
                    rain, hot = weather[season]
                    xi = design(np.array([max(0.0, 1 - rain / NORMAL_RAIN)]), np.array([hot]))
                    out[key] = float(ridge_predict(beta, xi)[0])
        return {
            "insurer_only": own,
            "fused": fused,
            "placebo": placebo,
            "covered_counties": len(covered),
            "psi_matches": len(covered),
            "weather_groups": wx.num_rows,
            "loss_groups": ls.num_rows,
            "training_seasons": len(train),
        }

    @staticmethod
    def _own_model(policies: pa.Table, pref_rain: pa.Table) -> dict[str, float]:
        """The insurer alone: its adjusted claims against the prefecture rainfall it buys."""
        rain = {
            (r["prefecture"], int(r["year"])): float(r["rain_mm"]) for r in pref_rain.to_pylist()
        }
        claims: dict[tuple[str, int], list[float]] = {}
        keys: set[tuple[str, int]] = set()
        for r in policies.select(["county", "year", "claim_loss_rate"]).to_pylist():
            key = (r["county"], int(r["year"]))
            keys.add(key)
            if r["claim_loss_rate"] is not None:
                claims.setdefault(key, []).append(float(r["claim_loss_rate"]))

        def deficit(key: tuple[str, int]) -> float:
            return max(0.0, 1 - rain[(key[0][:4], key[1])] / NORMAL_RAIN)

        train = sorted(claims)
        x = design(np.array([deficit(k) for k in train]), None)
        beta = ridge_fit(x, np.array([np.mean(claims[k]) for k in train]), alpha=0.1)
        return {
            f"{k[0]}|{k[1]}": float(ridge_predict(beta, design(np.array([deficit(k)]), None))[0])
            for k in sorted(keys)
        }

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        names = {
            "insurer_only": "insurer-only index (prefecture rain, own claims)",
            "fused": "fused index (stations + bureau losses)",
        }
        pay: dict[str, list[float]] = {k: [] for k in (*names, "placebo")}
        actual: list[float] = []
        strata: list[int] = []
        for seed, gen, rel in runs:
            h = gen.heldout
            for c in np.flatnonzero(h["eval"]):
                for y, year in enumerate(h["years"]):
                    key = f"{h['codes'][c]}|{year}"
                    for k in pay:
                        pred = rel[k][key]
                        pay[k].append(pred if pred >= TRIGGER else 0.0)
                    actual.append(float(h["loss"][c, y]))
                    strata.append(seed)
        loss = np.asarray(actual)
        arrays = {k: np.asarray(v) for k, v in pay.items()}
        big = loss >= BIG_LOSS

        def corr(k: str) -> Any:
            def stat(idx: np.ndarray) -> float:
                a, b = arrays[k][idx], loss[idx]
                if np.std(a) == 0 or np.std(b) == 0:
                    return float("nan")
                return float(np.corrcoef(a, b)[0, 1])

            return stat

        def missed(k: str) -> Any:
            def stat(idx: np.ndarray) -> float:
                sel = idx[big[idx]]
                return float(np.mean(arrays[k][sel] == 0)) if len(sel) else float("nan")

            return stat

        stats = {names[k]: corr(k) for k in names}
        est = estimates(stats, len(loss), strata, seed=runs[0][0])
        steps = paired_steps(stats, [(names["insurer_only"], names["fused"])], len(loss), strata,
                             seed=runs[0][0], lower_is_better=False)

        def placebo_lift(idx: np.ndarray) -> float:
            return float(corr("placebo")(idx) - corr("insurer_only")(idx))

        [placebo] = estimates({PLACEBO: placebo_lift}, len(loss), strata, seed=runs[0][0] + 11)
        miss = {
            k: (
                missed(k)(np.arange(len(loss))),
                bootstrap_ci(missed(k), len(loss), strata=strata, seed=runs[0][0] + 7),
            )
            for k in names
        }
        extra = {
            f"missed-big-loss rate, {names[k]}": f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            for k, (v, (lo, hi)) in miss.items()
        }
        extra["big-loss county seasons (loss ≥ 30%)"] = str(int(big.sum()))
        extra["evaluation county seasons"] = str(len(loss))
        extra["basis risk (1 − corr)"] = ", ".join(
            f"{e.variant.split(' (')[0]} {1 - e.value:.3f}" for e in est
        )
        flags = label_copy_flags({"fused payout": arrays["fused"]}, loss, corr_max=0.99)
        holds = est[1].value > est[0].value and miss["fused"][0] <= miss["insurer_only"][0]
        return MetricResult(
            metric="correlation of index payout with actual loss (evaluation counties)",
            lower_is_better=False,
            estimates=[*est, placebo],
            ordering="insurer-only < fused (correlation); fused ≤ insurer-only (missed big losses)",
            ordering_holds=holds,
            steps=steps,
            seeds=[r[0] for r in runs],
            extra=extra,
            controls=[
                Control(
                    "placebo: the fused model fed each county's weather of another season",
                    "no gain over the insurer's own index: the 95% CI of the correlation lift "
                    "reaches 0 (above 0 would mean the fused index gains from something other "
                    "than the season's weather)",
                    f"{placebo.value:+.3f} [{placebo.low:+.3f}, {placebo.high:+.3f}]",
                    placebo.low <= 0.0,
                ),
                Control(
                    "evaluation counties' losses are in no party's table",
                    "the fused payout is not a copy of the loss (corr < 0.99)",
                    "copy" if flags else "not a copy",
                    not flags,
                )
            ],
        )
