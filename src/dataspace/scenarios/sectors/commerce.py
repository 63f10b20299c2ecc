"""商贸流通 · brand–retailer demand: next-week stock-out per store-SKU, by PSI + vertical FL.

A consumer brand holds its own shipments to each store-SKU (出货量, 促销投入, 铺货天数) and the
label: whether the store-SKU went out of stock in the following week. The retailer holds the
point-of-sale sell-through (POS 周销量, 销量环比) and its on-hand inventory (库存天数); the
logistics provider holds what is in transit to the store and its delivery delays (在途量, 延误天数).
All three know a store-SKU by the same text key (门店编码-SKU 条码); the retailer and the logistics
provider each know 60–80% of the brand's store-SKUs. A review site (点评平台) holds review
counts, ratings and photo shares for 60–80% of them too; in this generator its columns are drawn
independently of everything else: it is the irrelevant party of the negative control.

Evaluator split, by store-SKU and before any PSI: the evaluator (an independent role outside
every node) holds out the store-SKUs whose HMAC-SHA256 under its own key (derived from the
run's seed, so a run is reproducible) falls below 30%. The brand registers two files:
``shipments`` (the other store-SKUs, with the label) and ``watchlist`` (the held-out
store-SKUs' features, **without** the label). The held-out labels stay with the evaluator: no
node ever holds them, and the held-out store-SKUs never enter the training PSI or any training
job — they are aligned only afterwards, to be scored, in a PSI of their own.

Flow, per seed, all through the nodes' APIs: a leakage check refuses any brand column that
copies the label; the brand aligns ``shipments`` with each provider by ECDH-PSI on the
store-SKU key (``mode=align``: only row positions stay at each node, no identifier or row
leaves); it trains one vertical LR on brand + retailer + logistics (``POST /api/v1/train``,
the space operator deals Beaver triples; each provider checks its own ``federated-train``
agreement — purpose, the feature columns it is asked for, output ``aggregate-only`` — before
any message; every coalition is also trained for each provider's exact Shapley value on the
job's validation split) and one on brand + retailer, each over the training store-SKUs its
parties share, both with the same family, schedule and seed (``epochs``, ``batch_size``, no
early stopping, no search), and one on brand + review site (the control). The brand-only
baseline is trained at home on the fused job's rows with the same family and schedule (the
job's own plaintext LR), and once more on the control job's rows. Then the brand aligns
``watchlist`` with each provider and scores it with each model (``POST /api/v1/predict``: each
provider computes its share at home, only the total score is opened, to the brand), and hands
its held-out scores, by store-SKU, to the evaluator. Only protocol messages (secret shares) and
the final model parts leave a node.

Metric (computed by the evaluator on the held-out store-SKUs only, joined by the store-SKU
key): AUC of next-week stock-out for brand only, brand + retailer and
brand + retailer + logistics on one population — the held-out store-SKUs both models scored
(those the retailer and the logistics provider both know, about 0.3 × 0.7 × 0.7 ≈ 15% of the
store-SKUs) —, the mean over seeds; 95% CIs from a bootstrap of held-out store-SKUs within each
seed, the same resamples for every row (so the lifts over brand only are paired). Stock-out is
a classification target, so the demand-forecast WAPE is not reported: the scenario trains a
binary classifier (vertical LR). Negative control: brand + review site against brand only on
the held-out store-SKUs the control model scored, both fitted on the control job's rows; the
95% CI of its AUC lift must reach 0 (a CI wholly above 0 would mean leakage, a broken alignment
or a mixed-up model).

Data: a structural latent-factor generator. Each store-SKU has six latent factors (base demand,
promotion lift, sell-through velocity, inventory cover, pipeline in transit, supply
reliability); each party sees its own noisy, transformed view; the label depends on the latents
plus a shock no party observes, so no single column copies it. The brand sees demand and
promotion well but inventory, sell-through and the supply pipeline only through its shipments.
"""

from __future__ import annotations

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
from dataspace.scenarios.common import overlap_mask, rng_for, step_name
from dataspace.scenarios.sectors.vertical import (
    Runs,
    evaluator_tables,
    flow_record,
    held_out_estimate,
    held_out_flow,
    held_out_groups,
    irrelevant_party_control,
    irrelevant_table,
    kept_out_control,
    latent_label,
    vertical_offers,
)
from dataspace.scenarios.stats import auc

BRAND, RETAILER, LOGISTICS, REVIEWS = "brand", "retailer", "logistics", "reviews"
PROVIDERS = (RETAILER, LOGISTICS)
PURPOSE = "demand-forecasting"
KEY = "entity_id:text"  # entity_id holds the store-SKU key: 门店编码-SKU 条码
LABEL = "stock_out_next_week"
ENTITIES = {"small": 1200, "default": 4000, "large": 20000}
SEEDS = {"small": 2, "default": 3, "large": 5}
VLR_PARAMS = {"epochs": 6, "batch_size": 128}
HOLDOUT = 0.3  # the evaluator's held-out share of store-SKUs (by store-SKU, before PSI)
VALIDATION = 0.2  # the training job's own split of the training rows (Shapley values only)
FEATURES = {
    BRAND: ["shipped_4w", "promo_spend", "days_listed"],
    RETAILER: ["pos_units_week", "pos_trend", "stock_days"],
    LOGISTICS: ["in_transit_units", "delay_days"],
    REVIEWS: ["review_count", "avg_rating", "photo_share"],
}
ALONE, RETAILED, FUSED = "brand only", "brand + retailer", "brand + retailer + logistics"
MODELS = {FUSED: (RETAILER, LOGISTICS), RETAILED: (RETAILER,)}  # the federated variants
CONTROL = "brand + reviews"  # the negative control: an irrelevant party
CONTROL_LIFT = f"control lift: {CONTROL} − {ALONE}"
SPLIT = "evaluator: HMAC-SHA256(key, store-SKU key) < holdout, before any PSI"


def evaluator_key(seed: int) -> bytes:
    """The evaluator's split key (derived from the seed, so a run is reproducible)."""
    return f"commerce evaluator split key/{seed}".encode()


def _gtin13(rng: random.Random) -> str:
    """A GTIN-13 (EAN-13) with a valid check digit, Chinese prefix 690–699."""
    body = f"69{rng.randrange(10)}{rng.randrange(10**9):09d}"
    s = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - s % 10) % 10)


class StockOut(Scenario):
    name = "commerce"
    sector = "commerce"
    use_case = "brand–retailer demand: next-week stock-out per store-SKU"
    capability = "PSI + VFL"
    metric_name = "stock-out AUC, brand-only vs fused"
    needs_training = True  # vertical LR: the runner adds the operator as dealer
    seeds = SEEDS
    label = LABEL

    def parties(self) -> list[Party]:
        return [
            Party(BRAND, "consumer", "品牌商 (label party)", ("shipments", "watchlist")),
            Party(RETAILER, "provider", "零售商", ("pos",)),
            Party(LOGISTICS, "provider", "物流商", ("delivery",)),
            Party(REVIEWS, "provider", "点评平台 (negative control: irrelevant)", ("ratings",)),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "entities": ENTITIES[size],
            "latents": [
                "base_demand",
                "promo_lift",
                "sell_through",
                "inventory_cover",
                "pipeline",
                "supply_reliability",
            ],
            "label_weights": [0.5, 0.5, 0.9, -1.0, -0.8, -0.8],
            "label_intercept": -1.5,
            "shock_sd": 0.8,
            "overlap": [0.62, 0.78],
            "noise": {"brand": 0.5, "retailer": 0.45, "logistics": 0.45},
            "model": "vlr",
            "vlr": VLR_PARAMS,
            "holdout": HOLDOUT,
            "split": SPLIT,
            "validation": VALIDATION,
            "irrelevant": {"party": REVIEWS, "columns": FEATURES[REVIEWS]},
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ScenarioError("commerce runs on synthetic data only (--data synthetic)")
        p = self.params(size)
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        n = p["entities"]
        z, label = latent_label(rng, p)
        stores = [f"S{py.randrange(10**5):05d}" for _ in range(max(1, n // 8))]
        skus = [_gtin13(py) for _ in range(max(1, n // 6))]
        keys: list[str] = []
        seen: set[str] = set()
        while len(keys) < n:
            k = f"{py.choice(stores)}-{py.choice(skus)}"  # 门店编码-SKU 条码
            if k not in seen:
                seen.add(k)
                keys.append(k)
        nb, nr, nl = (p["noise"][k] for k in ("brand", "retailer", "logistics"))

        def eps(sd: float, k: int) -> np.ndarray:
            return np.asarray(rng.normal(0, sd, size=k), dtype=float)

        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        # brand: every store-SKU it ships to (the 4 weeks before the label week), split by the
        # evaluator before any PSI: the held-out store-SKUs' labels go to the evaluator only.
        b = np.arange(n)
        brand = pa.table(
            {
                "entity_id": [keys[i] for i in b],
                "shipped_4w": np.round(
                    np.exp(3.5 + 0.6 * z[b, 0] + 0.3 * z[b, 3] + eps(nb, n))
                ),  # 出货量, units
                "promo_spend": np.round(
                    np.maximum(0.0, 2.0 + 1.5 * (z[b, 1] + eps(nb, n))), 2
                ),  # 促销投入, 千元
                "days_listed": rng.integers(30, 720, size=n),  # 铺货天数 (no signal)
                LABEL: label,
            }
        )
        train, watch, heldout = evaluator_tables(brand, LABEL, HOLDOUT, evaluator_key(seed), SPLIT)
        tables[BRAND] = [("shipments", train), ("watchlist", watch)]  # watchlist: no label
        # retailer: POS sell-through and inventory for 60–80% of the store-SKUs
        r = np.flatnonzero(overlap_mask(rng, n, *p["overlap"]))
        tables[RETAILER] = [
            (
                "pos",
                pa.table(
                    {
                        "entity_id": [keys[i] for i in r],
                        "pos_units_week": np.round(
                            np.exp(2.0 + 0.5 * z[r, 0] + 0.4 * z[r, 2] + eps(nr, r.size))
                        ),  # POS 周销量
                        "pos_trend": np.round(
                            0.2 * (z[r, 2] + 0.5 * z[r, 1] + eps(nr, r.size)), 3
                        ),  # 销量环比
                        "stock_days": np.round(
                            np.exp(2.3 + 0.5 * (z[r, 3] + eps(nr, r.size))), 1
                        ),  # 库存天数
                    }
                ),
            )
        ]
        # logistics: in-transit and delays for 60–80% of the store-SKUs
        g = np.flatnonzero(overlap_mask(rng, n, *p["overlap"]))
        tables[LOGISTICS] = [
            (
                "delivery",
                pa.table(
                    {
                        "entity_id": [keys[i] for i in g],
                        "in_transit_units": np.round(
                            np.exp(2.5 + 0.3 * z[g, 0] + 0.6 * (z[g, 4] + eps(nl, g.size)))
                        ),  # 在途量
                        "delay_days": np.clip(
                            rng.poisson(np.exp(0.4 - 0.8 * (z[g, 5] + eps(nl, g.size)))), 0, 14
                        ),  # 延误天数
                    }
                ),
            )
        ]
        # review site: 60–80% of the store-SKUs, independent of everything: the irrelevant party
        tables[REVIEWS] = [
            (
                "ratings",
                irrelevant_table(
                    self.name, seed, REVIEWS, keys, p["overlap"],
                    lambda noise, k: {
                        "review_count": noise.poisson(noise.gamma(2.0, 20.0, size=k)),
                        "avg_rating": np.round(np.clip(noise.normal(4.3, 0.4, k), 1, 5), 1),
                        "photo_share": np.round(noise.beta(2.0, 8.0, size=k), 3),
                    },
                ),
            )
        ]
        return Generated(
            tables=tables,
            params=p,
            version="commerce/3",
            heldout=heldout,
        )

    def offers(self) -> list[OfferSpec]:
        return vertical_offers(
            BRAND,
            ((RETAILER, "pos"), (LOGISTICS, "delivery"), (REVIEWS, "ratings")),
            PURPOSE,
            FEATURES,
        )

    def flow(self, ctx: Any) -> dict[str, Any]:
        out = held_out_flow(
            ctx,
            party=BRAND,
            train_dataset="shipments",
            score_dataset="watchlist",
            key=KEY,
            label=LABEL,
            features=FEATURES,
            models=MODELS,
            alone=ALONE,
            family="vlr",
            params=VLR_PARAMS,
            validation=VALIDATION,
            baseline=("auc_label_party_only", auc),
            psi_step="PSI (training store-SKUs) on store-SKU with {provider}",
            score_step="PSI (held-out store-SKUs) on store-SKU with {provider}",
            control=(CONTROL, (REVIEWS,)),
        )
        return flow_record(out, BRAND, RETAILED, "retailer")

    def metric(self, runs: Runs) -> MetricResult:
        groups, leaks = held_out_groups(runs, BRAND)
        if leaks:
            raise ScenarioError(f"{len(leaks)} scored store-SKUs are not the held-out ones")

        def est(variant: str, base: str | None = None, name: str = "", reps: int = 300
                ) -> Estimate:
            value, low, high, n = held_out_estimate(groups, auc, variant, base, reps=reps)
            return Estimate(name or variant, value, low, high, n)

        estimates = [est(v) for v in (ALONE, RETAILED, FUSED)]
        steps = [est(v, ALONE, step_name(ALONE, v), STEP_REPS) for v in (RETAILED, FUSED)]
        value = {e.variant: e.value for e in estimates}
        holds = value[ALONE] < value[RETAILED] and value[ALONE] < value[FUSED]
        lift, irrelevant = irrelevant_party_control(
            runs,
            BRAND,
            auc,
            control=CONTROL,
            alone=ALONE,
            name=CONTROL_LIFT,
            lower_is_better=False,
        )
        estimates.append(lift)
        shap = {
            p: float(np.mean([r["shapley"].get(p, 0.0) for _, _, r in runs]))
            for p in MODELS[FUSED]
        }
        extra = {
            "evaluator split": (
                f"{HOLDOUT:.0%} of store-SKUs by HMAC-SHA256 of the store-SKU key, before any "
                "PSI; their labels stay with the evaluator; the brand scores them as its watchlist"
            ),
            "AUC lift, fused − brand only, per seed": ", ".join(
                f"{auc(g[1][FUSED], g[0]) - auc(g[1][ALONE], g[0]):+.3f}" for g in groups
            ),
            "contribution (exact Shapley of the job's validation AUC, mean over seeds)": ", ".join(
                f"{p} {v:+.4f}" for p, v in shap.items()
            ),
            "training store-SKUs aligned per seed (brand ∩ retailer ∩ logistics: brand only and "
            "fused; brand ∩ retailer: brand + retailer)": ", ".join(
                f"{r['aligned']} and {r['retailer_aligned']}" for _, _, r in runs
            ),
            "held-out store-SKUs evaluated per seed (stock-outs): those both models scored": (
                ", ".join(f"{y.size} ({int(y.sum())})" for y, _ in groups)
            ),
            "WAPE": "not reported: stock-out is trained as a binary target (vertical LR)",
        }
        return MetricResult(
            metric="stock-out AUC on the evaluator's held-out store-SKUs (vertical LR)",
            lower_is_better=False,
            estimates=estimates,
            ordering="brand only < brand + retailer, brand only < brand + retailer + logistics",
            ordering_holds=holds,
            steps=steps,
            seeds=[s for s, _, _ in runs],
            extra=extra,
            controls=[
                irrelevant,
                kept_out_control(
                    runs,
                    "held-out store-SKUs kept out of training",
                    "no scored store-SKU in the training file; training PSI and jobs read "
                    "shipments only",
                    "shipments",
                )
            ],
        )
