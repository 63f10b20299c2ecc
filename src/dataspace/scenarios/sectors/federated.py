"""The seven scenarios that need federated training: one latent-factor generator, configured
per sector (parties, views, label), with party-only baselines computable today and a flow that
trains through ``scenarios.training`` once ``dataspace train`` exists.

Vertical scenarios (VFL): every entity has latent factors z; each party sees a different noisy,
partial, transformed view of z under its own identifiers (统一社会信用代码 or 身份证 with valid
check characters), covering 60–80% of the consumer's entities; the label depends on z plus a
shock no party observes. Horizontal scenarios (FedAvg): each party holds other entities with the
same features; with ``concept_shift`` each party's label depends on z differently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios import ids
from dataspace.scenarios.base import (
    Generated,
    MetricResult,
    NeedsTraining,
    OfferSpec,
    Party,
    Scenario,
)
from dataspace.scenarios.common import ENTITIES, overlap_mask, rng_for
from dataspace.scenarios.training import train

LATENTS = 6


@dataclass(frozen=True)
class View:
    party: str
    title: str
    dataset: str
    features: tuple[str, ...]
    latents: tuple[int, ...]  # which latent factors this party sees
    noise: float = 0.6


@dataclass(frozen=True)
class Spec:
    name: str
    sector: str
    use_case: str
    capability: str
    metric_name: str
    model: str  # vlr | vgbdt | fedavg
    id_kind: str  # uscc | id_card
    purpose: str
    views: tuple[View, ...]  # views[0] is the consumer (holds the label)
    label: str
    horizontal: bool = False
    concept_shift: bool = False
    irrelevant: str | None = None  # a party whose view carries no signal (negative control)


class TrainingScenario(Scenario):
    needs_training = True
    pending = "its flow and metric over federated training are not written yet"

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.name = spec.name
        self.sector = spec.sector
        self.use_case = spec.use_case
        self.capability = spec.capability
        self.metric_name = spec.metric_name

    def parties(self) -> list[Party]:
        return [
            Party(v.party, "consumer" if i == 0 else "provider", v.title, (v.dataset,))
            for i, v in enumerate(self.spec.views)
        ]

    def params(self, size: str) -> dict[str, Any]:
        s = self.spec
        return {
            "entities": ENTITIES[size],
            "latents": LATENTS,
            "model": s.model,
            "views": [[v.party, list(v.features), list(v.latents), v.noise] for v in s.views],
            "label_weights": [1.0, -0.8, 0.6, 0.9, -0.5, 0.7],
            "shock_sd": 1.0,
            "overlap": [0.62, 0.78],
            "heldout_share": 0.3,
            "horizontal": s.horizontal,
            "concept_shift": s.concept_shift,
            "irrelevant": s.irrelevant,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        p = self.params(size)
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        n = p["entities"]
        z = rng.normal(size=(n, LATENTS))
        w = np.asarray(p["label_weights"])
        shock = rng.normal(0, p["shock_sd"], size=n)
        logit = z @ w + shock - 1.5
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        areas = [py.choice(sorted(ids.COUNTIES)) for _ in range(n)]
        make = ids.firm_code if self.spec.id_kind == "uscc" else ids.person_id
        keys = ids.unique(make, n, py, areas)
        heldout = rng.random(n) < p["heldout_share"]  # split by entity before any PSI
        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        for i, v in enumerate(self.spec.views):
            rows = np.ones(n, dtype=bool) if i == 0 else overlap_mask(rng, n, *p["overlap"])
            if self.spec.horizontal:
                rows = rng.integers(0, len(self.spec.views), size=n) == i
            if i == 0:
                rows &= ~heldout
            idx = np.flatnonzero(rows)
            cols: dict[str, Any] = {"entity_id": [keys[j] for j in idx]}
            mix = rng.normal(size=(len(v.latents), len(v.features)))
            cols_z = np.asarray(v.latents, dtype=np.int64)
            if v.party != self.spec.irrelevant:
                signal = z[:, cols_z][idx] @ mix
            else:
                signal = rng.normal(size=(len(idx), len(v.features)))
            for k, f in enumerate(v.features):
                cols[f] = np.round(signal[:, k] + rng.normal(0, v.noise, len(idx)), 4)
            if i == 0 or self.spec.horizontal:
                y = label[idx]
                if self.spec.concept_shift and i > 0:
                    flip = z[idx] @ (-w) + shock[idx] - 1.5
                    y = (rng.random(len(idx)) < 1 / (1 + np.exp(-flip))).astype(np.int64)
                cols[self.spec.label] = y
            tables[v.party] = [(v.dataset, pa.table(cols))]
        return Generated(
            tables=tables,
            params=p,
            version=f"{self.name}/1",
            heldout={"keys": [keys[j] for j in np.flatnonzero(heldout)], "label": label[heldout]},
        )

    def offers(self) -> list[OfferSpec]:
        consumer = self.spec.views[0].party
        out = []
        for v in self.spec.views[1:]:
            out.append(
                OfferSpec(
                    v.party,
                    v.dataset,
                    "psi-only",
                    {"purposes": self.spec.purpose, "output": "pseudonymized"},
                    consumer,
                    self.spec.purpose,
                    price="20 CNY",
                    key=f"psi:{v.party}",
                )
            )
            out.append(
                OfferSpec(
                    v.party,
                    v.dataset,
                    "federated-train",
                    {"purposes": self.spec.purpose},
                    consumer,
                    self.spec.purpose,
                    price="200 CNY",
                    key=f"train:{v.party}",
                )
            )
        return out

    def flow(self, ctx: Any) -> dict[str, Any]:
        consumer = self.spec.views[0]
        ctx.step(f"federated training ({self.spec.model})")
        view = train(
            ctx,
            model=self.spec.model,
            agreements=[ctx.agreements[f"train:{v.party}"] for v in self.spec.views[1:]],
            dataset=ctx.dataset(consumer.party, consumer.dataset),
            label=self.spec.label,
            features=list(consumer.features),
        )
        return {"training": view}

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        from dataspace.scenarios.training import require_training

        require_training()
        raise NeedsTraining(f"{self.name}: {self.pending}")


def v(
    party: str,
    title: str,
    dataset: str,
    features: str,
    latents: tuple[int, ...],
    noise: float = 0.6,
) -> View:
    return View(party, title, dataset, tuple(features.split(",")), latents, noise)


SPECS = [
    Spec(
        "finance",
        "finance",
        "SME credit from power and tax data (电力看信贷 / 信易贷)",
        "PSI + VFL",
        "AUC / KS, bank-only vs fused",
        "vlr",
        "uscc",
        "credit-risk",
        (
            v("bank", "商业银行", "loans", "loan_amount,account_flow,credit_inquiries", (0, 1)),
            v("tax-bureau", "税务局", "tax", "tax_grade_score,invoiced,zero_filing_months", (2, 3)),
            v("power-grid", "电网", "power", "kwh_trend,kwh_volatility,arrears", (4, 5)),
            v("map-vendor", "地图服务商", "poi", "poi_density,footfall", (), 0.6),
        ),
        "delinquent_90d",
        irrelevant="map-vendor",
    ),
    Spec(
        "manufacturing",
        "manufacturing",
        "equipment failure prediction across operators",
        "horizontal FL + secure aggregation",
        "PR-AUC local vs federated (concept-shift control)",
        "fedavg",
        "uscc",
        "predictive-maintenance",
        (
            v(
                "plant-a",
                "装备运营商A",
                "sensors",
                "vibration,temperature,load,hours",
                (0, 1, 2, 3),
            ),
            v(
                "plant-b",
                "装备运营商B",
                "sensors",
                "vibration,temperature,load,hours",
                (0, 1, 2, 3),
            ),
            v(
                "plant-c",
                "装备运营商C",
                "sensors",
                "vibration,temperature,load,hours",
                (0, 1, 2, 3),
            ),
        ),
        "failed_30d",
        horizontal=True,
        concept_shift=True,
    ),
    Spec(
        "transport",
        "transport",
        "multimodal one-waybill (多式联运一单制) and ETA",
        "PSI + governed SQL + VFL",
        "ETA error, rail-only vs fused",
        "vgbdt",
        "uscc",
        "logistics",
        (
            v("rail", "铁路货运", "waybills", "distance,wagons,station_dwell", (0, 1)),
            v("port", "港口", "berths", "berth_wait,crane_rate", (2, 3)),
            v("trucking", "公路运输", "trucks", "truck_eta_gap,driver_hours", (4, 5)),
        ),
        "late",
    ),
    Spec(
        "commerce",
        "commerce",
        "brand–retailer demand forecast",
        "VFL or secure aggregation",
        "WAPE and stock-out rate, brand-only vs fused",
        "vgbdt",
        "uscc",
        "demand-forecasting",
        (
            v("brand", "品牌商", "shipments", "shipped,promo_budget", (0, 1)),
            v("retailer", "零售商", "pos", "pos_sales,stock_days,footfall", (2, 3, 4)),
            v("logistics", "物流商", "delivery", "delivery_delay", (5,)),
        ),
        "stock_out",
    ),
    Spec(
        "urban",
        "urban",
        "care alerts for elderly people living alone from power and water use",
        "PSI + anomaly model + DP dashboards",
        "alert precision / recall and lead time vs rule",
        "vlr",
        "id_card",
        "public-services",
        (
            v("civil-affairs", "民政局", "elders", "age,living_alone_years", (0, 1)),
            v("power-grid", "电网", "power", "night_kwh_drop,daily_kwh_var", (2, 3)),
            v("water-utility", "自来水公司", "water", "morning_use_drop,flat_days", (4, 5)),
        ),
        "care_event",
    ),
    Spec(
        "science",
        "science",
        "cross-lab activity prediction (QSAR)",
        "horizontal FL",
        "AUC-PR per partner, local vs federated",
        "fedavg",
        "uscc",
        "scientific-research",
        (
            v("lab-a", "药物研究所A", "assays", "logp,tpsa,hbd,hba,rotb,rings", (0, 1, 2, 3, 4, 5)),
            v("lab-b", "药物研究所B", "assays", "logp,tpsa,hbd,hba,rotb,rings", (0, 1, 2, 3, 4, 5)),
            v("lab-c", "药物研究所C", "assays", "logp,tpsa,hbd,hba,rotb,rings", (0, 1, 2, 3, 4, 5)),
        ),
        "active",
        horizontal=True,
    ),
]


# Why each remaining vertical scenario is still pending (overrides the class default).
PENDING: dict[str, str] = {}


def _training(spec: Spec) -> Scenario:
    s = TrainingScenario(spec)
    if spec.name in PENDING:
        s.pending = PENDING[spec.name]
    return s


def scenarios() -> list[Scenario]:
    from dataspace.scenarios.sectors.commerce import StockOut
    from dataspace.scenarios.sectors.finance import SmeCredit
    from dataspace.scenarios.sectors.manufacturing import FailurePrediction
    from dataspace.scenarios.sectors.science import Qsar
    from dataspace.scenarios.sectors.transport import MultimodalEta
    from dataspace.scenarios.sectors.urban import CareAlerts

    # finished scenarios run on real nodes with their own generator and flow
    # (sectors/finance.py, manufacturing.py, science.py, urban.py, commerce.py, transport.py)
    done: list[Scenario] = [
        SmeCredit(), FailurePrediction(), Qsar(), CareAlerts(), StockOut(), MultimodalEta()
    ]
    names = {s.name for s in done}
    return [*done, *(_training(s) for s in SPECS if s.name not in names)]
