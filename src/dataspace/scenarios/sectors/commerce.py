"""商贸流通 · brand–retailer demand: next-week stock-out per store-SKU, by PSI + vertical FL.

A consumer brand holds its own shipments to each store-SKU (出货量, 促销投入, 铺货天数) and the
label: whether the store-SKU went out of stock in the following week. The retailer holds the
point-of-sale sell-through (POS 周销量, 销量环比) and its on-hand inventory (库存天数); the
logistics provider holds what is in transit to the store and its delivery delays (在途量, 延误天数).
All three know a store-SKU by the same text key (门店编码-SKU 条码); the retailer and the logistics
provider each know 60–80% of the brand's store-SKUs.

Flow, per seed, all through the nodes' APIs: the brand aligns with each provider by ECDH-PSI on
the store-SKU key (``mode=align``: only row positions stay at each node, no identifier or row
leaves); it then starts one vertical-LR training job (``POST /api/v1/train``) with the space
operator as the dealer of Beaver triples. Each provider checks its own ``federated-train``
agreement (purpose, the feature columns it is asked for, output ``aggregate-only``) before any
message. The job trains every coalition — brand alone (at home), brand + retailer,
brand + logistics, brand + retailer + logistics — on the same aligned rows, scores the same
held-out rows (a public-seed split of the aligned store-SKUs), and returns each coalition's AUC
and each provider's exact Shapley value. Only protocol messages (secret shares) and the final
model parts leave a node.

Metric: held-out AUC of next-week stock-out for brand → brand + retailer →
brand + retailer + logistics, same population, same model family (vertical LR), same schedule
(epochs, batch); 95% CI from the Hanley–McNeil standard error on each seed's held-out set,
pooled over seeds. Stock-out is a classification target, so the demand-forecast WAPE is not
reported: the training service's vertical models are binary classifiers, and no honest vertical
regression path exists.

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
    Generated,
    MetricResult,
    OfferSpec,
    Party,
    Scenario,
    ScenarioError,
)
from dataspace.scenarios.common import overlap_mask, rng_for
from dataspace.scenarios.sectors.vertical import (
    Runs,
    latent_label,
    vertical_flow,
    vertical_metric,
    vertical_offers,
)

BRAND, RETAILER, LOGISTICS = "brand", "retailer", "logistics"
PROVIDERS = (RETAILER, LOGISTICS)
PURPOSE = "demand-forecasting"
KEY = "entity_id:text"  # entity_id holds the store-SKU key: 门店编码-SKU 条码
LABEL = "stock_out_next_week"
ENTITIES = {"small": 1200, "default": 4000, "large": 20000}
SEEDS = {"small": 2, "default": 3, "large": 5}
VLR_PARAMS = {"epochs": 6, "batch_size": 128}
HOLDOUT = 0.3
FEATURES = {
    BRAND: ["shipped_4w", "promo_spend", "days_listed"],
    RETAILER: ["pos_units_week", "pos_trend", "stock_days"],
    LOGISTICS: ["in_transit_units", "delay_days"],
}
VARIANTS = {
    "brand only": (BRAND,),
    "brand + retailer": (BRAND, RETAILER),
    "brand + retailer + logistics": (BRAND, RETAILER, LOGISTICS),
}


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
    needs_training = True  # runs: the training service is in this build; the runner adds a dealer
    seeds = SEEDS
    label = LABEL

    def parties(self) -> list[Party]:
        return [
            Party(BRAND, "consumer", "品牌商 (label party)", ("shipments",)),
            Party(RETAILER, "provider", "零售商", ("pos",)),
            Party(LOGISTICS, "provider", "物流商", ("delivery",)),
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
        # brand: every store-SKU it ships to (the 4 weeks before the label week)
        b = np.arange(n)
        tables[BRAND] = [
            (
                "shipments",
                pa.table(
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
                ),
            )
        ]
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
        return Generated(
            tables=tables,
            params=p,
            version="commerce/1",
            heldout={"split": "public-seed split of the aligned store-SKUs", "share": HOLDOUT},
        )

    def offers(self) -> list[OfferSpec]:
        return vertical_offers(
            BRAND, ((RETAILER, "pos"), (LOGISTICS, "delivery")), PURPOSE, FEATURES
        )

    def flow(self, ctx: Any) -> dict[str, Any]:
        return vertical_flow(
            ctx,
            label_party=BRAND,
            dataset="shipments",
            providers=PROVIDERS,
            key=KEY,
            label=LABEL,
            features=FEATURES,
            params=VLR_PARAMS,
            holdout=HOLDOUT,
            psi_step="PSI on store-SKU with {provider}",
            train_step="vertical LR: brand + retailer + logistics, every coalition, Shapley",
            bytes_field="bytes_by_brand",
        )

    def metric(self, runs: Runs) -> MetricResult:
        return vertical_metric(
            runs,
            variants=VARIANTS,
            providers=PROVIDERS,
            alone=BRAND,
            fused="brand + retailer + logistics",
            metric="held-out stock-out AUC (vertical LR)",
            ordering="brand only < brand + retailer, brand only < brand + retailer + logistics",
            lift_label="AUC lift, fused − brand only, per seed",
            aligned_label="aligned store-SKUs (brand ∩ retailer ∩ logistics) per seed",
            held_out_label="held-out store-SKUs per seed (stock-outs)",
            note=("WAPE", "not reported: stock-out is trained as a binary target (vertical LR)"),
        )
