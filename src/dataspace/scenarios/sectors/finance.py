"""金融服务 · SME credit from power and tax data (电力看信贷 / 信易贷), by PSI + vertical FL.

A commercial bank holds its SME loans with the label (90-day delinquency in the label window;
every feature is from the months before it: the bank's 12, the grid's 24); the tax bureau holds
纳税信用等级, 开票金额 and 零申报月数; the power grid holds the firm's 户号, 24 months of kWh,
缴费方式 and 欠费次数. All three know firms by 统一社会信用代码 (valid check characters); the tax
bureau and the grid each know 60–80% of the bank's borrowers. A fourth provider, an ad-data
vendor (互联网广告数据商), knows 60–80% of them too, but its columns are independent of every
latent factor: it is the irrelevant party of the negative control.

Evaluator split, by firm and before any PSI: the evaluator (an independent role outside every
node, like an auditor) holds out the firms whose HMAC-SHA256 under its own key (derived from
the run's seed, so a run is reproducible) falls below 30%. The bank registers two files:
``loans`` (the other firms, with the label) and ``applicants`` (the held-out firms' features,
**without** the label). The held-out labels stay with the evaluator: no node ever holds them,
and the held-out firms never enter the training PSI or any training job — they are aligned
only afterwards, to be scored, in a PSI of their own.

Flow, per seed, all through the nodes' APIs: a leakage check refuses any bank column that
copies the label (a planted copy must be caught); the bank aligns ``loans`` with each provider
by ECDH-PSI on 统一社会信用代码 (``mode=align``: only row positions stay at each node); it trains
one vertical LR on bank + tax + grid (``POST /api/v1/train``, the space operator deals Beaver
triples; each provider checks its own ``federated-train`` agreement first; every coalition is
also trained for each provider's exact Shapley value on the job's validation split), one on
bank + tax and one on bank + ad vendor (the control), each over the training firms its parties
share, all three with the same family, schedule and seed (``epochs``, ``batch_size``, no
early stopping, no search). The training job's coalition models are not kept (only the full
model is), so bank + tax is its own job. The bank-only baseline is trained at home on the
fused job's rows with the same family and schedule (the job's own plaintext LR, same epochs,
batches, seed). Then, like scoring new applicants, the bank aligns ``applicants`` with each
provider and scores them with each model (``POST /api/v1/predict``: each provider computes its
share at home, only the total score is opened, to the bank). Only protocol messages leave a
provider's node; the bank hands its held-out scores, by firm, to the evaluator.

Metric (computed by the evaluator on the held-out firms only, joined by 统一社会信用代码): AUC
and KS (max TPR − FPR) of bank only, bank + tax and bank + tax + grid on one population, the
held-out firms every one of the three models scored (the held-out firms the bank, the tax
bureau and the grid all know, about 0.3 × 0.7 × 0.7 ≈ 15% of the firms), the mean over seeds;
95% CIs from a bootstrap of held-out firms within each seed, the same resamples for every row
(so the lifts bank + tax − bank only and fused − bank + tax are paired). The three models'
training firms differ (bank only and fused: bank ∩ tax ∩ grid; bank + tax: bank ∩ tax, a third
to a half more), which favours bank + tax over fused; a bank-only model trained on the
bank + tax rows, on the same held-out firms, shows what the extra rows alone are worth.
Controls: the irrelevant party shows no significant lift over bank only trained on the same
rows (the CI of its lift reaches 0; its three noise columns may cost a little at small sizes);
the planted label-copy column is flagged and training refused; the evaluator checks that no
scored firm was in the training file. (The concept-shift control — federated not beating
local — is the manufacturing scenario's.)

Data: a structural latent-factor generator. Each firm has six latent factors (scale, bank
relationship, tax compliance, revenue momentum, operating activity, payment discipline); each
party sees its own noisy, transformed view; the label depends on the latents plus a shock no
party observes, so no single column copies it.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios import ids
from dataspace.scenarios.base import (
    STEP_REPS,
    Control,
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
    Group,
    Runs,
    evaluator_tables,
    fit_job,
    held_out_estimate,
    held_out_groups,
    held_out_table,
    home_baseline,
    job_datasets,
    kept_out_control,
    latent_label,
    predict_scores,
    psi_align,
    refuse_label_copies,
    vertical_offers,
)
from dataspace.scenarios.stats import auc, ks, where_zero

BANK, TAX, GRID, AD = "bank", "tax-bureau", "power-grid", "ad-vendor"
PURPOSE = "credit-risk"
KEY = "entity_id:uscc"  # entity_id holds the 统一社会信用代码
LABEL = "delinquent_90d"
MONTHS = 24
# small: 3000 firms, so that the ~15% the three steps are compared on (~450 per seed) can show
# the tax bureau's lift (about +0.05 AUC); at 1400 it was significant in only 2/3 of seed pairs.
ENTITIES = {"small": 3000, "default": 4000, "large": 20000}
SEEDS = {"small": 2, "default": 3, "large": 5}
VLR_PARAMS = {"epochs": 8, "batch_size": 128}
HOLDOUT = 0.3  # the evaluator's held-out share of firms (by firm, before PSI)
VALIDATION = 0.2  # the training job's own split of the training firms (Shapley values only)
GRADES = ("D", "C", "M", "B", "A")  # 纳税信用等级, worst to best
PAYMENT = ("柜台缴费", "线上缴费", "银行代扣")  # 缴费方式
FEATURES = {
    BANK: ["loan_amount", "account_flow", "credit_inquiries_6m"],
    TAX: ["tax_credit_level", "invoiced_12m", "zero_filing_months"],
    GRID: [*(f"kwh_m{m:02d}" for m in range(1, MONTHS + 1)), "arrears_count", "autopay"],
    AD: ["app_active_days", "ad_clicks_30d", "web_visits_90d"],
}
PROVIDERS = (TAX, GRID, AD)
ALONE, TAXED, FUSED = "bank only", "bank + tax", "bank + tax + grid"
CONTROL = "bank + ad vendor"
ALONE_TAX_ROWS = "bank only (bank ∩ tax rows)"  # the bank's model on the bank + tax job's rows
STEPS = ((ALONE, TAXED), (TAXED, FUSED))  # (worse, better): the ordering's two steps
PLANTED = "collections_flag"  # the planted label copy (the outcome, 1% flipped)
METRICS = {"AUC": auc, "KS": ks}
BASELINE = ("auc_label_party_only", auc)  # the job's own bank-only metric, recomputed at home


def evaluator_key(seed: int) -> bytes:
    """The evaluator's split key (derived from the seed, so a run is reproducible)."""
    return f"finance evaluator split key/{seed}".encode()


class SmeCredit(Scenario):
    name = "finance"
    sector = "finance"
    use_case = "SME credit from power and tax data (电力看信贷 / 信易贷)"
    capability = "PSI + VFL"
    metric_name = "AUC / KS, bank-only → bank + tax → fused"
    needs_training = True  # vertical LR: the runner adds the operator as dealer
    seeds = SEEDS
    label = LABEL

    def parties(self) -> list[Party]:
        return [
            Party(BANK, "consumer", "商业银行 (label party)", ("loans", "applicants")),
            Party(TAX, "provider", "税务局", ("tax",)),
            Party(GRID, "provider", "国网供电公司", ("power",)),
            Party(AD, "provider", "互联网广告数据商 (negative control: irrelevant)", ("audience",)),
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
            "split": "evaluator: HMAC-SHA256(key, 统一社会信用代码) < holdout, before any PSI",
            "validation": VALIDATION,
            "irrelevant": {"party": AD, "columns": FEATURES[AD]},
            "planted": PLANTED,
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
        # bank: every borrower (features from the 12 months before the label window), split by
        # the evaluator before any PSI: the held-out firms' labels go to the evaluator only.
        bank = pa.table(
            {
                "entity_id": codes,
                "loan_amount": np.round(np.exp(4.0 + 0.6 * z[:, 0] + eps(nb, n)), 1),  # 万元
                "account_flow": np.round(30 * (z[:, 1] + 0.3 * z[:, 3] + eps(nb, n)), 1),
                "credit_inquiries_6m": rng.poisson(np.exp(0.8 - 0.6 * z[:, 1])),
                LABEL: label,
            }
        )
        loans, applicants, heldout = evaluator_tables(
            bank, LABEL, p["holdout"], evaluator_key(seed), p["split"]
        )
        tables[BANK] = [("loans", loans), ("applicants", applicants)]  # applicants: no label
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
        # ad-data vendor: 60–80% of the borrowers, columns drawn independently of every latent
        # factor and of the label (its own random stream): the irrelevant party.
        a = np.flatnonzero(overlap_mask(rng, n, *p["overlap"]))
        noise = rng_for(seed, f"{self.name}/{AD}")
        tables[AD] = [
            (
                "audience",
                pa.table(
                    {
                        "entity_id": [codes[i] for i in a],
                        "app_active_days": noise.integers(0, 31, size=a.size),
                        "ad_clicks_30d": noise.poisson(noise.gamma(2.0, 3.0, size=a.size)),
                        "web_visits_90d": np.round(noise.lognormal(3.0, 1.0, size=a.size), 1),
                    }
                ),
            )
        ]
        return Generated(
            tables=tables,
            params=p,
            version="finance/3",
            heldout=heldout,
        )

    def offers(self) -> list[OfferSpec]:
        providers = ((TAX, "tax"), (GRID, "power"), (AD, "audience"))
        return vertical_offers(BANK, providers, PURPOSE, FEATURES)

    # --- the flow: what the bank does through the nodes' APIs ---------------------------------

    def flow(self, ctx: Any) -> dict[str, Any]:
        loans, applicants = ctx.own(BANK, "loans"), ctx.own(BANK, "applicants")
        ctx.step("leakage check of the bank's columns (and a planted label copy)")
        refuse_label_copies(loans, FEATURES[BANK], LABEL)  # raises: the run is refused
        planted = _planted_copy(loans.column(LABEL).to_numpy(), ctx.seed)
        try:
            refuse_label_copies(loans, FEATURES[BANK], LABEL, planted={PLANTED: planted})
            caught: list[str] = []
        except ScenarioError as exc:
            caught = [str(c) for c in exc.details.get("columns", [])]
        # The jobs of one phase are independent (each its own job id and peers): run at once.
        fit_views = psi_align(
            ctx,
            BANK,
            "loans",
            PROVIDERS,
            KEY,
            "PSI (training firms) with {provider}",
            parallel=True,
        )
        ctx.step("vertical LR: bank + tax + grid, every coalition, Shapley")
        ctx.step("vertical LR: bank + tax (the middle step)")
        ctx.step("vertical LR: bank + ad vendor (negative control)")
        with ThreadPoolExecutor(max_workers=3) as pool:
            fused_job = pool.submit(self._train, ctx, fit_views, (TAX, GRID), contribution=True)
            taxed_job = pool.submit(self._train, ctx, fit_views, (TAX,), contribution=False)
            control_job = pool.submit(self._train, ctx, fit_views, (AD,), contribution=False)
            fused, taxed, control = fused_job.result(), taxed_job.result(), control_job.result()
        score_views = psi_align(
            ctx,
            BANK,
            "applicants",
            PROVIDERS,
            KEY,
            "PSI (held-out applicants) with {provider}",
            parallel=True,
        )
        ctx.step("scoring the held-out applicants (bank only, bank + tax, fused, control)")

        def score(job: dict[str, Any], providers: tuple[str, ...]) -> dict[int, float]:
            align = [score_views[p]["id"] for p in providers]
            return predict_scores(ctx, BANK, job["view"]["result"]["model_id"], align)

        with ThreadPoolExecutor(max_workers=3) as pool:
            runs = [
                pool.submit(score, job, providers)
                for job, providers in ((fused, (TAX, GRID)), (taxed, (TAX,)), (control, (AD,)))
            ]
            by_fused, by_taxed, by_control = (f.result() for f in runs)
        # One population for the three steps: the held-out firms every model could score.
        _, scores = held_out_table(
            applicants,
            FEATURES[BANK],
            {FUSED: by_fused, TAXED: by_taxed},
            {ALONE: fused["home"], ALONE_TAX_ROWS: taxed["home"]},
        )
        _, control_scores = held_out_table(
            applicants, FEATURES[BANK], {CONTROL: by_control}, {ALONE: control["home"]}
        )
        view, metrics = fused["view"], fused["view"]["result"]["metrics"]
        contribution = view["result"].get("contribution") or {}
        return {
            "job_id": view["id"],
            "model_id": view["result"]["model_id"],
            "tax_model_id": taxed["view"]["result"]["model_id"],
            "control_model_id": control["view"]["result"]["model_id"],
            # what the nodes' own records say each step read
            "train_psi_datasets": job_datasets(fit_views.values()),
            "train_job_datasets": job_datasets(j["view"] for j in (fused, taxed, control)),
            "score_psi_datasets": job_datasets(score_views.values()),
            "aligned": int(fused["common"].size),
            "job_rows": int(metrics["train_rows"]) + int(metrics["held_out_rows"]),
            "fit_rows": int(fused["fit"].size),
            "tax_aligned": int(taxed["common"].size),
            "tax_fit_rows": int(taxed["fit"].size),
            "control_aligned": int(control["common"].size),
            "scored": len(by_fused),
            "tax_scored": len(by_taxed),
            "evaluated": len(scores["entity_id"]),
            "control_scored": len(control_scores["entity_id"]),
            "planted_flagged": ",".join(caught),
            "baseline_gap": max(j["gap"] for j in (fused, taxed, control)),
            "scores": scores,
            "control_scores": control_scores,
            "shapley": {k: float(v) for k, v in (contribution.get("values") or {}).items()},
            "train_seconds": float(metrics.get("train_seconds") or 0.0),
            "bytes_by_bank": int(metrics.get("bytes_exchanged_by_initiator") or 0),
        }

    def _train(
        self,
        ctx: Any,
        views: dict[str, dict[str, Any]],
        providers: tuple[str, ...],
        *,
        contribution: bool,
    ) -> dict[str, Any]:
        """One vertical-LR job over the training firms the bank shares with ``providers``, and
        the bank-only model trained at home on exactly the job's fitting rows (``home``, with its
        ``gap`` to the job's own bank-only baseline)."""
        job = fit_job(
            ctx,
            BANK,
            views,
            providers,
            family="vlr",
            label=LABEL,
            features=FEATURES,
            params=VLR_PARAMS,
            validation=VALIDATION,
            contribution=contribution,
        )
        loans = ctx.own(BANK, "loans")
        x, y = _block(loans), loans.column(LABEL).to_numpy().astype(float)
        home, gap = home_baseline(
            job, x, y, VLR_PARAMS, ctx.seed, BANK, family="vlr", baseline=BASELINE
        )
        return {**job, "home": home, "gap": gap}

    # --- the metric: what the evaluator computes on its held-out firms --------------------------

    def metric(self, runs: Runs) -> MetricResult:
        main, leaks = held_out_groups(runs, BANK)
        ctl, control_leaks = held_out_groups(runs, BANK, "control_scores")
        if leaks or control_leaks:
            n = len(leaks) + len(control_leaks)
            raise ScenarioError(f"{n} scored firms are not the evaluator's held-out firms")
        estimates: list[Estimate] = []
        steps: list[Estimate] = []
        for m in METRICS:
            estimates += [held_out(main, m, v) for v in (ALONE, TAXED, FUSED)]
            estimates.append(held_out(main, m, FUSED, ALONE, f"lift: fused − bank only · {m}"))
            steps += [
                held_out(main, m, better, worse, f"{step_name(worse, better)} · {m}",
                         reps=STEP_REPS)
                for worse, better in STEPS
            ]
        controls = [
            held_out(ctl, m, CONTROL, ALONE, f"control lift: + ad vendor · {m}") for m in METRICS
        ]
        estimates += controls
        value = {e.variant: e.value for e in estimates}
        holds = all(
            value[f"{ALONE} · {m}"] < value[f"{TAXED} · {m}"] < value[f"{FUSED} · {m}"]
            for m in METRICS
        )
        flagged = [r["planted_flagged"] for _, _, r in runs]
        shap = {
            p: float(np.mean([r["shapley"].get(p, 0.0) for _, _, r in runs])) for p in (TAX, GRID)
        }
        ctl_values = {
            v: [float(np.mean([METRICS[m](g[1][v], g[0]) for g in ctl])) for m in METRICS]
            for v in (ALONE, CONTROL)
        }
        extra = {
            "evaluator split": (
                f"{HOLDOUT:.0%} of firms by HMAC-SHA256 of 统一社会信用代码, before any PSI; "
                "their labels stay with the evaluator; the bank scores them as applicants"
            ),
            **{
                f"{m} lifts per seed (bank + tax − bank only / fused − bank + tax)": _per_seed(
                    main, m
                )
                for m in METRICS
            },
            "contribution (exact Shapley of the job's validation AUC, mean over seeds)": ", ".join(
                f"{p} {v:+.4f}" for p, v in shap.items()
            ),
            "training firms aligned per seed (bank ∩ tax ∩ grid: bank only and fused; "
            "bank ∩ tax: bank + tax)": ", ".join(
                f"{r['aligned']} and {r['tax_aligned']}" for _, _, r in runs
            ),
            "held-out firms of the three steps per seed (positives): those every model scored, "
            "i.e. the held-out firms the bank, the tax bureau and the grid all know": ", ".join(
                f"{y.size} ({int(y.sum())})" for y, _ in main
            ),
            "bank only trained on the bank + tax rows (what more training rows alone are worth)": (
                "AUC {:.3f} KS {:.3f}, vs AUC {:.3f} KS {:.3f} trained on the fused rows".format(
                    *(value_of(main, m, ALONE_TAX_ROWS) for m in METRICS),
                    *(value[f"{ALONE} · {m}"] for m in METRICS),
                )
            ),
            "control (same rows: bank ∩ ad vendor)": (
                f"bank only AUC {ctl_values[ALONE][0]:.3f} KS {ctl_values[ALONE][1]:.3f}; "
                f"bank + ad vendor AUC {ctl_values[CONTROL][0]:.3f} KS {ctl_values[CONTROL][1]:.3f}"
            ),
        }
        return MetricResult(
            metric="AUC and KS on the evaluator's held-out firms (vertical LR)",
            lower_is_better=False,
            estimates=estimates,
            ordering="bank only < bank + tax < bank + tax + grid (AUC and KS)",
            ordering_holds=holds,
            steps=steps,
            seeds=[s for s, _, _ in runs],
            extra=extra,
            controls=[
                Control(
                    "irrelevant party (ad vendor, independent of every latent) vs bank only",
                    "no significant lift: the 95% CI of the AUC and KS lifts over bank only "
                    "reaches 0 (a CI wholly above 0 would mean leakage or a broken alignment)",
                    "; ".join(_describe(e) for e in controls),
                    all(e.low <= 0.0 for e in controls),
                ),
                Control(
                    f"planted label-copy column ({PLANTED}: the outcome, 1% flipped)",
                    "flagged by the leakage check, training refused",
                    "; ".join(
                        f"seed {s}: " + (f"flagged {f}, refused" if f else "not flagged")
                        for (s, _, _), f in zip(runs, flagged, strict=True)
                    ),
                    all(f == PLANTED for f in flagged),
                ),
                kept_out_control(
                    runs,
                    "held-out firms kept out of training",
                    "no scored firm in the training file; training PSI and jobs read loans only",
                    "loans",
                ),
            ],
        )


def held_out(
    groups: list[Group],
    metric: str,
    variant: str,
    base: str | None = None,
    name: str = "",
    *,
    reps: int = 300,
) -> Estimate:
    """``metric`` of ``variant`` (minus ``base``'s, paired) on the evaluator's held-out firms."""
    value, low, high, n = held_out_estimate(groups, METRICS[metric], variant, base, reps=reps)
    return Estimate(name or f"{variant} · {metric}", value, low, high, n)


def _describe(e: Estimate) -> str:
    where = where_zero(e.low, e.high)
    return f"{e.variant.rsplit(' · ', 1)[1]} {e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}] ({where})"


def value_of(groups: list[Group], metric: str, variant: str) -> float:
    """``metric`` of ``variant`` on each seed's held-out firms, the mean over seeds."""
    return float(np.mean([METRICS[metric](g[1][variant], g[0]) for g in groups]))


def _per_seed(groups: list[Group], metric: str) -> str:
    """Each seed's two step lifts (bank + tax − bank only / fused − bank + tax)."""
    fn = METRICS[metric]
    return ", ".join(
        " / ".join(f"{fn(g[1][b], g[0]) - fn(g[1][a], g[0]):+.3f}" for a, b in STEPS)
        for g in groups
    )


def _planted_copy(label: np.ndarray, seed: int) -> np.ndarray:
    """A column that copies the outcome (1% of firms flipped), like a collections flag that was
    filled in after the label window."""
    flip = np.random.default_rng([seed, 99]).random(label.size) < 0.01
    return np.where(flip, 1 - label, label).astype(float)


def _block(table: pa.Table) -> np.ndarray:
    return np.column_stack([table.column(c).to_numpy().astype(float) for c in FEATURES[BANK]])
