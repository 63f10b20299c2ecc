"""科技创新 · cross-lab activity prediction (QSAR), by horizontal FL (FedAvg) with secure
aggregation.

Three drug-research labs (药物研究所 A, B, C) have each screened their own compounds against
the same target: per compound, ten physicochemical descriptors computed from the structure
(logP, TPSA, H-bond donors and acceptors, rotatable bonds, ring count, molecular weight,
aromatic rings, Fsp3, formal charge — standardised with the consortium's published means and
scales) and whether it was active in the assay (``active``). Each lab explores its own region
of chemical space (its compounds' latent properties are shifted), the structure–activity
relationship is shared. No compound is held by two labs; no row leaves any lab.

Flow, per seed: lab A starts one FedAvg job (``POST /api/v1/train``, ``model=fedavg``, its own
compounds as a client, B and C under their ``federated-train`` agreements; logistic model;
updates summed by pairwise-masking secure aggregation each round). A second job over the same
labs is the negative control: there each lab's activity follows its own mechanism (B's the
reverse of A's, C's a permutation), so federated averaging must not beat the labs alone.

Metric: AUC-PR (average precision) **per partner** on its own held-out compounds (a per-compound
flag drawn before anything ran), the lab's model trained alone vs the federated model — same
family, optimiser and number of epochs. Each lab computes both at home with the global θ every
node keeps (``sectors/horizontal.py``); the home baseline is checked against the job's released
``auc_local``. Mean over seeds with a 95% bootstrap CI (compounds resampled within each seed).
The documented ordering is on the mean over labs; each lab's figure is reported.

Data: a structural latent-factor generator (six latent properties per compound: lipophilicity,
polarity, size, flexibility, aromaticity, charge); descriptors are noisy linear views; activity
depends on the latents plus a shock no descriptor sees (assay noise), so no column copies it.
"""

from __future__ import annotations

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
from dataspace.scenarios.common import rng_for
from dataspace.scenarios.sectors import horizontal as hz

LABS = ("lab-a", "lab-b", "lab-c")
MEAN = {"local": "mean over labs: alone", "federated": "mean over labs: federated"}
PURPOSE = "scientific-research"
LABEL = "active"
FEATURES = ["logp", "tpsa", "hbd", "hba", "rotb", "rings", "mw", "arom_rings", "fsp3", "charge"]
MIX = np.array(
    [
        [1.0, -0.3, 0.2, 0.0, 0.3, 0.0],  # logp
        [-0.3, 1.0, 0.2, 0.0, 0.0, 0.2],  # tpsa
        [0.0, 0.8, 0.0, 0.0, 0.0, 0.0],  # hbd
        [0.0, 0.7, 0.3, 0.0, 0.0, 0.0],  # hba
        [0.0, 0.0, 0.3, 1.0, 0.0, 0.0],  # rotb
        [0.2, 0.0, 0.5, -0.3, 0.7, 0.0],  # rings
        [0.2, 0.2, 1.0, 0.2, 0.2, 0.0],  # mw
        [0.2, 0.0, 0.0, 0.0, 1.0, 0.0],  # arom_rings
        [0.0, 0.0, 0.0, 0.5, -0.8, 0.0],  # fsp3
        [0.0, 0.2, 0.0, 0.0, 0.0, 1.0],  # charge
    ]
)
WEIGHTS = [1.1, -0.9, 0.4, -0.7, 0.8, -0.5]  # the shared structure–activity relationship
LAB_SHIFT = {"lab-a": 0.0, "lab-b": 0.4, "lab-c": -0.4}  # each lab's chemical space
COMPOUNDS = {  # per lab: training, held out
    "small": (110, 300),
    "default": (250, 800),
    "large": (800, 3000),
}
SEEDS = {"small": 2, "default": 3, "large": 5}
PARAMS = {"rounds": 8, "local_epochs": 2, "batch_size": 16}  # ints only: lr 0.1 default
JOB = hz.Job("assays", "train")
# The negative control: the same labs and compounds, but each lab's activity follows its own
# mechanism (B's is A's reversed, C's a permutation): federated averaging has nothing shared to
# learn, so it must not beat each lab alone.
SHIFT = hz.Job("assays_shift", "shift")
SHIFTED = {"lab-a": WEIGHTS, "lab-b": [-w for w in WEIGHTS], "lab-c": WEIGHTS[3:] + WEIGHTS[:3]}


class Qsar(Scenario):
    name = "science"
    sector = "science"
    use_case = "cross-lab activity prediction (QSAR)"
    capability = "horizontal FL"
    metric_name = "AUC-PR per partner, local vs federated (concept-shift control)"
    needs_training = True
    seeds = SEEDS
    label = LABEL

    def parties(self) -> list[Party]:
        return [
            Party("lab-a", "consumer", "药物研究所A (starts the job)", ("assays", "assays_shift")),
            Party("lab-b", "provider", "药物研究所B", ("assays", "assays_shift")),
            Party("lab-c", "provider", "药物研究所C", ("assays", "assays_shift")),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "compounds": list(COMPOUNDS[size]),
            "latents": [
                "lipophilicity",
                "polarity",
                "size",
                "flexibility",
                "aromaticity",
                "charge",
            ],
            "mix": MIX.tolist(),
            "weights": WEIGHTS,
            "shifted_weights": SHIFTED,
            "lab_shift": LAB_SHIFT,
            "intercept": -2.4,
            "shock_sd": 0.8,
            "descriptor_noise": 0.5,
            "fedavg": PARAMS,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ScenarioError("science runs on synthetic data only")
        p = self.params(size)
        rng = rng_for(seed, self.name)
        n_train, n_test = p["compounds"]
        n = n_train + n_test
        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        for lab in LABS:
            z = rng.normal(size=(n, 6)) + LAB_SHIFT[lab]
            logit = z @ np.asarray(WEIGHTS) + p["intercept"] + rng.normal(0, p["shock_sd"], n)
            y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
            x = z @ MIX.T + rng.normal(0, p["descriptor_noise"], (n, len(FEATURES)))
            test = np.zeros(n, dtype=np.int64)
            test[rng.permutation(n)[:n_test]] = 1
            tag = lab[-1].upper()
            cols: dict[str, Any] = {"entity_id": [f"{tag}CPD{i:06d}" for i in range(n)]}
            for k, f in enumerate(FEATURES):
                cols[f] = np.round(x[:, k], 4)
            cols[LABEL] = y
            cols[hz.TEST] = test
            own = z @ np.asarray(SHIFTED[lab]) + p["intercept"] + rng.normal(0, p["shock_sd"], n)
            shifted = {**cols, LABEL: (rng.random(n) < 1 / (1 + np.exp(-own))).astype(np.int64)}
            tables[lab] = [(JOB.dataset, pa.table(cols)), (SHIFT.dataset, pa.table(shifted))]
        return Generated(
            tables=tables,
            params=p,
            version="science/2",  # 2: the concept-shift tables
            heldout={"split": f"per compound, column {hz.TEST}, drawn before any job"},
        )

    def offers(self) -> list[OfferSpec]:
        return hz.offers(list(LABS), LABS[0], [JOB, SHIFT], [*FEATURES, LABEL, hz.TEST], PURPOSE)

    def flow(self, ctx: Any) -> dict[str, Any]:
        ctx.step("FedAvg + secure aggregation across three labs")
        result = hz.run_fedavg(
            ctx,
            consumer=LABS[0],
            providers=list(LABS[1:]),
            job=JOB,
            label=LABEL,
            features=FEATURES,
            params=PARAMS,
        )
        metrics = result["metrics"]
        out: dict[str, Any] = {
            "model_id": result["model_id"],
            "auc_federated_mean": float(metrics["auc_federated_mean"]),
            "auc_local_mean": float(metrics["auc_local_mean"]),
            "overall_auc": float(metrics["overall"].get("auc", float("nan"))),
        }
        for lab in LABS:  # each lab at home, with the θ its node keeps
            ctx.step(f"{lab}: AUC-PR at home, alone vs federated")
            home = hz.home_scores(ctx, lab, JOB.dataset, FEATURES, LABEL, out["model_id"], PARAMS)
            hz.check_baseline(home, metrics["per_node"][lab])
            out[lab] = home
        ctx.step("negative control: FedAvg across labs whose mechanisms differ")
        shift = hz.run_fedavg(ctx, consumer=LABS[0], providers=list(LABS[1:]), job=SHIFT,
                              label=LABEL, features=FEATURES, params=PARAMS)
        out["shift"] = {}
        for lab in LABS:
            home = hz.home_scores(ctx, lab, SHIFT.dataset, FEATURES, LABEL, shift["model_id"],
                                  PARAMS)
            hz.check_baseline(home, shift["metrics"]["per_node"][lab])
            out["shift"][lab] = home
        return out

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        seed0 = runs[0][0]
        estimates = []
        for i, lab in enumerate(LABS):
            for j, variant in enumerate(("local", "federated")):
                name = f"{lab} {'alone' if variant == 'local' else 'federated'}"
                per_seed = [(r[lab]["y"], r[lab][variant]) for _, _, r in runs]
                estimates.append(hz.pooled_estimate(name, per_seed, seed0 + 2 * i + j))
        shifted = []
        for i, lab in enumerate(LABS):
            for j, variant in enumerate(("local", "federated")):
                name = f"concept shift: {lab} {'alone' if variant == 'local' else 'federated'}"
                per_seed = [(r["shift"][lab]["y"], r["shift"][lab][variant]) for _, _, r in runs]
                shifted.append(hz.pooled_estimate(name, per_seed, seed0 + 10 + 2 * i + j))
        # each (lab, seed)'s held-out rows a stratum of their own: the mean over them is the
        # mean over labs of each lab's mean over seeds (every lab has every seed), the
        # ordering's statistic
        scored = [(r[lab]["y"], r[lab]["local"], r[lab]["federated"])
                  for lab in LABS for _, _, r in runs]
        means = [
            hz.pooled_estimate(MEAN[v], [(y, s[i]) for y, *s in scored], seed0 + 20 + i)
            for i, v in enumerate(("local", "federated"))
        ]
        alone, fed = means
        gain = hz.pooled_step(MEAN["local"], MEAN["federated"], scored, seed0)
        s_alone = float(np.mean([e.value for e in shifted[0::2]]))
        s_fed = float(np.mean([e.value for e in shifted[1::2]]))
        control = Control(
            "concept shift (each lab's activity by its own mechanism)",
            "mean federated AUC-PR over labs not above alone",
            f"federated {s_fed:.3f} vs alone {s_alone:.3f}",
            s_fed <= s_alone,
        )
        wins = sum(f.value > a.value for a, f in zip(estimates[0::2], estimates[1::2], strict=True))
        extra = {
            "labs where federated beats alone": f"{wins} of {len(LABS)}",
            "AUC-PR lift per lab, per seed": "; ".join(
                lab
                + " "
                + ", ".join(
                    f"{r[lab]['pr_auc_federated'] - r[lab]['pr_auc_local']:+.3f}"
                    for _, _, r in runs
                )
                for lab in LABS
            ),
            "job-released ROC AUC, mean over labs, federated / alone (per seed)": ", ".join(
                f"{r['auc_federated_mean']:.3f} / {r['auc_local_mean']:.3f}" for _, _, r in runs
            ),
        }
        return MetricResult(
            metric="AUC-PR of each lab's held-out compounds (logistic, FedAvg)",
            lower_is_better=False,
            estimates=estimates + means + shifted,
            ordering="mean over labs: alone < federated; under concept shift, not",
            ordering_holds=alone.value < fed.value and control.passed,
            steps=[gain],
            seeds=[s for s, _, _ in runs],
            extra=extra,
            controls=[control],
        )
