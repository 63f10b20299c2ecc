"""金融服务 · SME credit from power and tax data (电力看信贷 / 信易贷), by PSI + vertical FL.

A commercial bank holds its SME loans with the label (90-day delinquency in the label window);
the tax bureau holds 纳税信用等级, 开票金额 and 零申报月数; the power grid holds the firm's 户号,
24 months of kWh, 缴费方式 and 欠费次数. All three know firms by 统一社会信用代码 (valid check
characters); the tax bureau and the grid each know 60–80% of the bank's borrowers.

Flow, per seed, all through the nodes' APIs: the bank aligns with each provider by ECDH-PSI on
统一社会信用代码 (``mode=align``: only row positions stay at each node, no identifier or row
leaves); it then starts one vertical-LR training job (``POST /api/v1/train``) with the space
operator as the dealer of Beaver triples. Each provider checks its own ``federated-train``
agreement (purpose, the feature columns it is asked for, output ``aggregate-only``) before any
message. The job trains every coalition — bank alone (at home), bank + tax, bank + grid,
bank + tax + grid — on the same aligned rows, scores the same held-out rows (a public-seed split
of the aligned firms, by firm), and returns each coalition's AUC and each provider's exact
Shapley value. Only protocol messages (secret shares) and the final model parts leave a node.

Metric: held-out AUC for bank → bank + tax → bank + tax + grid, same population, same model
family (vertical LR), same schedule (epochs, batch); 95% CI from the Hanley–McNeil standard
error on each seed's held-out set, pooled over seeds. KS needs the held-out scores, which the
training job keeps inside the bank's node: it is not reported.

Data: a structural latent-factor generator. Each firm has six latent factors (scale, bank
relationship, tax compliance, revenue momentum, operating activity, payment discipline); each
party sees its own noisy, transformed view; the label depends on the latents plus a shock no
party observes, so no single column copies it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios import ids
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

BANK, TAX, GRID = "bank", "tax-bureau", "power-grid"
PURPOSE = "credit-risk"
KEY = "entity_id:uscc"  # entity_id holds the 统一社会信用代码
LABEL = "delinquent_90d"
MONTHS = 24
ENTITIES = {"small": 1400, "default": 4000, "large": 20000}
SEEDS = {"small": 2, "default": 3, "large": 5}
VLR_PARAMS = {"epochs": 8, "batch_size": 128}
HOLDOUT = 0.3
GRADES = ("D", "C", "M", "B", "A")  # 纳税信用等级, worst to best
PAYMENT = ("柜台缴费", "线上缴费", "银行代扣")  # 缴费方式
FEATURES = {
    BANK: ["loan_amount", "account_flow", "credit_inquiries_6m"],
    TAX: ["tax_credit_level", "invoiced_12m", "zero_filing_months"],
    GRID: [*(f"kwh_m{m:02d}" for m in range(1, MONTHS + 1)), "arrears_count", "autopay"],
}
VARIANTS = {"bank only": (BANK,), "bank + tax": (BANK, TAX), "bank + tax + grid": (BANK, TAX, GRID)}


class SmeCredit(Scenario):
    name = "finance"
    sector = "finance"
    use_case = "SME credit from power and tax data (电力看信贷 / 信易贷)"
    capability = "PSI + VFL"
    metric_name = "AUC, bank-only vs fused"
    needs_training = True  # runs: the training service is in this build; the runner adds a dealer
    seeds = SEEDS
    label = LABEL

    def parties(self) -> list[Party]:
        return [
            Party(BANK, "consumer", "商业银行 (label party)", ("loans",)),
            Party(TAX, "provider", "税务局", ("tax",)),
            Party(GRID, "provider", "国网供电公司", ("power",)),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "entities": ENTITIES[size],
            "latents": [
                "scale",
                "bank_relationship",
                "tax_compliance",
                "revenue_momentum",
                "operating_activity",
                "payment_discipline",
            ],
            "label_weights": [-0.5, -0.9, -0.8, -0.6, -0.9, -0.9],
            "label_intercept": -1.6,
            "shock_sd": 0.8,
            "overlap": [0.62, 0.78],
            "noise": {"bank": 0.5, "tax": 0.5, "grid": 0.45},
            "months": MONTHS,
            "model": "vlr",
            "vlr": VLR_PARAMS,
            "holdout": HOLDOUT,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ScenarioError("finance runs on synthetic data only (--data synthetic)")
        p = self.params(size)
        rng = rng_for(seed, self.name)
        py = random.Random(seed)
        n = p["entities"]
        z, label = latent_label(rng, p)
        areas = [py.choice(sorted(ids.COUNTIES)) for _ in range(n)]
        codes = ids.unique(ids.firm_code, n, py, areas)
        nb, nt, ng = (p["noise"][k] for k in ("bank", "tax", "grid"))

        def eps(sd: float, k: int) -> np.ndarray:
            return np.asarray(rng.normal(0, sd, size=k), dtype=float)

        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        # bank: every borrower (features from the 12 months before the label window)
        b = np.arange(n)
        tables[BANK] = [
            (
                "loans",
                pa.table(
                    {
                        "entity_id": [codes[i] for i in b],
                        "loan_amount": np.round(
                            np.exp(4.0 + 0.6 * z[b, 0] + eps(nb, n)), 1
                        ),  # 万元
                        "account_flow": np.round(30 * (z[b, 1] + 0.3 * z[b, 3] + eps(nb, n)), 1),
                        "credit_inquiries_6m": rng.poisson(np.exp(0.8 - 0.6 * z[b, 1])),
                        LABEL: label,
                    }
                ),
            )
        ]
        # tax bureau: 60–80% of the borrowers
        t = np.flatnonzero(overlap_mask(rng, n, *p["overlap"]))
        level = np.clip(np.round(2.2 + 1.1 * (z[t, 2] + eps(nt, t.size))), 0, 4).astype(int)
        tables[TAX] = [
            (
                "tax",
                pa.table(
                    {
                        "entity_id": [codes[i] for i in t],
                        "tax_credit_grade": [GRADES[k] for k in level],  # 纳税信用等级
                        "tax_credit_level": level,
                        "invoiced_12m": np.round(
                            np.exp(5.0 + 0.5 * z[t, 0] + 0.5 * z[t, 3] + eps(nt, t.size)), 1
                        ),  # 开票金额, 万元
                        "zero_filing_months": np.clip(
                            rng.poisson(np.exp(0.2 - 0.9 * z[t, 3])), 0, 12
                        ),
                    }
                ),
            )
        ]
        # power grid: 60–80% of the borrowers, 24 months of kWh
        g = np.flatnonzero(overlap_mask(rng, n, *p["overlap"]))
        month = np.arange(MONTHS) / (MONTHS - 1) - 0.5
        season = 0.15 * np.cos(2 * np.pi * np.arange(MONTHS) / 12)
        level_kwh = 9.0 + 0.4 * z[g, 0]
        trend = 1.2 * (z[g, 4] + eps(ng, g.size))
        log_kwh = (
            level_kwh[:, None]
            + trend[:, None] * month[None, :]
            + season[None, :]
            + rng.normal(0, 0.12, size=(g.size, MONTHS))
        )
        kwh = np.round(np.exp(log_kwh) / 1000, 2)  # MWh per month
        discipline = z[g, 5] + eps(ng, g.size)
        method = np.digitize(discipline, [-0.6, 0.5])
        cols: dict[str, Any] = {
            "entity_id": [codes[i] for i in g],
            "account_no": [f"{py.randrange(10**12, 10**13)}" for _ in g],  # 户号
        }
        for m in range(MONTHS):
            cols[f"kwh_m{m + 1:02d}"] = kwh[:, m]
        cols["payment_method"] = [PAYMENT[k] for k in method]  # 缴费方式
        cols["autopay"] = (method == 2).astype(np.int64)
        cols["arrears_count"] = rng.poisson(np.exp(0.3 - 0.9 * discipline))  # 欠费次数
        tables[GRID] = [("power", pa.table(cols))]
        return Generated(
            tables=tables,
            params=p,
            version="finance/2",
            heldout={"split": "public-seed split of the aligned firms (by firm)", "share": HOLDOUT},
        )

    def offers(self) -> list[OfferSpec]:
        return vertical_offers(BANK, ((TAX, "tax"), (GRID, "power")), PURPOSE, FEATURES)

    def flow(self, ctx: Any) -> dict[str, Any]:
        return vertical_flow(
            ctx,
            label_party=BANK,
            dataset="loans",
            providers=(TAX, GRID),
            key=KEY,
            label=LABEL,
            features=FEATURES,
            params=VLR_PARAMS,
            holdout=HOLDOUT,
            psi_step="PSI on 统一社会信用代码 with {provider}",
            train_step="vertical LR: bank + tax + grid, every coalition, Shapley",
            bytes_field="bytes_by_bank",
        )

    def metric(self, runs: Runs) -> MetricResult:
        return vertical_metric(
            runs,
            variants=VARIANTS,
            providers=(TAX, GRID),
            alone=BANK,
            fused="bank + tax + grid",
            metric="held-out AUC (vertical LR)",
            ordering="bank only < bank + tax, bank only < bank + tax + grid",
            lift_label="AUC lift, fused − bank only, per seed",
            aligned_label="aligned firms (bank ∩ tax ∩ grid) per seed",
            held_out_label="held-out firms per seed (positives)",
            note=("KS", "not reported: the held-out scores stay inside the bank's training job"),
        )
