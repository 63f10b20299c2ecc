"""工业制造 · equipment failure prediction across operators, by horizontal FL (FedAvg) with
secure aggregation, and a concept-shift negative control.

Three operators of the same class of equipment (装备运营商 A, B, C) each hold their own
machines' condition-monitoring features — aggregated over the 90 days **before** the label
window (vibration RMS and peak, bearing temperature and its rise, load, motor current, run
hours, lubrication interval, start–stop cycles, ambient humidity), already normalised per
sensor against the OEM's spec sheet — and whether the machine failed in the next 30 days
(``failed_30d``). Operator A is small (few machines, few failures) and wants a better model;
B and C are larger. No machine is in two fleets; no row leaves any operator.

Flow, per seed, through the nodes' APIs: A starts one FedAvg job (``POST /api/v1/train``,
``model=fedavg``, A's own fleet as a client, B and C under their ``federated-train``
agreements; logistic model; every round's updates summed by pairwise-masking secure
aggregation). Then the **negative control**: the same job on a second set of fleets where B's
and C's machines fail by a different mechanism (another equipment generation: failures driven
by load and lubrication, not by vibration and heat) — federated training is then expected
**not** to beat A's own model.

Metric: PR-AUC (average precision) of A's held-out machines — the held-out flag was drawn per
machine before anything ran — for A's model trained alone vs the federated model, same model
family, optimiser and number of epochs; mean over seeds with a 95% bootstrap CI (machines
resampled within each seed). A computes both at home: it scores its held-out machines with the
global θ every node keeps and with its own local model (see ``sectors/horizontal.py``). The
job's own released figures (ROC AUC per operator, federated vs alone) are reported alongside.

Data: a structural latent-factor generator. Each machine has five latent factors (bearing wear,
thermal stress, load, lubrication quality, age); each operator's sensors are noisy linear views
of them with its own calibration offset; failure depends on the latents plus a shock no sensor
sees, so no column copies the label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios.base import (
    Control,
    Estimate,
    Generated,
    MetricResult,
    OfferSpec,
    Party,
    Scenario,
    ScenarioError,
)
from dataspace.scenarios.common import rng_for
from dataspace.scenarios.sectors import horizontal as hz

A, B, C = "plant-a", "plant-b", "plant-c"
PLANTS = (A, B, C)
PURPOSE = "predictive-maintenance"
LABEL = "failed_30d"
FEATURES = [
    "vibration_rms",
    "vibration_peak",
    "bearing_temp",
    "temp_rise",
    "load_pct",
    "motor_current",
    "run_hours",
    "lube_interval",
    "start_stop_cycles",
    "ambient_humidity",
]
# latents: 0 bearing wear, 1 thermal stress, 2 load, 3 lubrication quality, 4 age
MIX = np.array(
    [
        [1.0, 0.2, 0.1, 0.0, 0.2],  # vibration_rms
        [0.8, 0.0, 0.3, -0.2, 0.0],  # vibration_peak
        [0.2, 1.0, 0.3, 0.0, 0.0],  # bearing_temp
        [0.3, 0.8, 0.0, -0.3, 0.0],  # temp_rise
        [0.0, 0.2, 1.0, 0.0, 0.0],  # load_pct
        [0.1, 0.3, 0.8, 0.0, 0.1],  # motor_current
        [0.2, 0.0, 0.2, 0.0, 1.0],  # run_hours
        [0.0, 0.0, 0.0, -1.0, 0.2],  # lube_interval
        [0.0, 0.1, 0.5, 0.0, 0.6],  # start_stop_cycles
        [0.0, 0.0, 0.0, 0.0, 0.0],  # ambient_humidity (pure noise)
    ]
)
WEIGHTS = [1.2, 1.0, 0.3, -0.6, 0.5]  # failure mechanism shared by every fleet
SHIFTED = [-0.3, -0.4, 1.3, 1.2, -0.8]  # B and C in the control: another mechanism
FLEET = {  # machines per operator: training, held out
    "small": {A: (90, 400), B: (500, 150), C: (500, 150)},
    "default": {A: (200, 1000), B: (1500, 400), C: (1500, 400)},
    "large": {A: (500, 3000), B: (6000, 1500), C: (6000, 1500)},
}
SEEDS = {"small": 2, "default": 3, "large": 5}
PARAMS = {"rounds": 8, "local_epochs": 2, "batch_size": 16}  # ints only: lr 0.1 default
SHARED, SHIFT = hz.Job("sensors", "shared"), hz.Job("sensors_shift", "shift")


class FailurePrediction(Scenario):
    name = "manufacturing"
    sector = "manufacturing"
    use_case = "equipment failure prediction across operators"
    capability = "horizontal FL + secure aggregation"
    metric_name = "PR-AUC local vs federated (concept-shift control)"
    needs_training = True
    seeds = SEEDS
    label = LABEL

    def parties(self) -> list[Party]:
        return [
            Party(A, "consumer", "装备运营商A (small fleet, starts the job)", ("sensors",)),
            Party(B, "provider", "装备运营商B", ("sensors",)),
            Party(C, "provider", "装备运营商C", ("sensors",)),
        ]

    def params(self, size: str) -> dict[str, Any]:
        return {
            "fleet": {k: list(v) for k, v in FLEET[size].items()},
            "latents": ["bearing_wear", "thermal_stress", "load", "lubrication", "age"],
            "mix": MIX.tolist(),
            "weights": WEIGHTS,
            "shifted_weights": SHIFTED,
            "intercept": -2.6,
            "shock_sd": 0.7,
            "sensor_noise": 0.6,
            "calibration_sd": 0.2,
            "fedavg": PARAMS,
        }

    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated:
        if data != "synthetic":
            raise ScenarioError("manufacturing runs on synthetic data only")
        p = self.params(size)
        rng = rng_for(seed, self.name)
        tables: dict[str, list[tuple[str, pa.Table]]] = {}
        for plant in PLANTS:
            tables[plant] = []
            for job in (SHARED, SHIFT):
                n_train, n_test = p["fleet"][plant]
                n = n_train + n_test
                z = rng.normal(size=(n, 5))
                w = SHIFTED if (job is SHIFT and plant != A) else WEIGHTS
                logit = z @ np.asarray(w) + p["intercept"] + rng.normal(0, p["shock_sd"], n)
                y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
                offset = rng.normal(0, p["calibration_sd"], len(FEATURES))
                x = z @ MIX.T + offset + rng.normal(0, p["sensor_noise"], (n, len(FEATURES)))
                test = np.zeros(n, dtype=np.int64)
                test[rng.permutation(n)[:n_test]] = 1
                prefix = {A: "A", B: "B", C: "C"}[plant]
                cols: dict[str, Any] = {"entity_id": [f"{prefix}-{i:05d}" for i in range(n)]}
                for k, f in enumerate(FEATURES):
                    cols[f] = np.round(x[:, k], 4)
                cols[LABEL] = y
                cols[hz.TEST] = test
                tables[plant].append((job.dataset, pa.table(cols)))
        return Generated(
            tables=tables,
            params=p,
            version="manufacturing/1",
            heldout={"split": f"per machine, column {hz.TEST}, drawn before any job"},
        )

    def offers(self) -> list[OfferSpec]:
        return hz.offers(list(PLANTS), A, [SHARED, SHIFT], [*FEATURES, LABEL, hz.TEST], PURPOSE)

    def flow(self, ctx: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for job in (SHARED, SHIFT):
            ctx.step(f"FedAvg + secure aggregation ({job.key})")
            result = hz.run_fedavg(
                ctx,
                consumer=A,
                providers=[B, C],
                job=job,
                label=LABEL,
                features=FEATURES,
                params=PARAMS,
            )
            metrics = result["metrics"]
            home = hz.home_scores(ctx, A, job.dataset, FEATURES, LABEL, result["model_id"], PARAMS)
            hz.check_baseline(home, metrics["per_node"][A])
            out[job.key] = {
                "model_id": result["model_id"],
                "per_node": metrics["per_node"],
                "auc_federated_mean": float(metrics["auc_federated_mean"]),
                "auc_local_mean": float(metrics["auc_local_mean"]),
                "overall_auc": float(metrics["overall"].get("auc", float("nan"))),
                "train_rows": int(metrics["train_rows"]),
                **home,
            }
        return out

    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        seed0 = runs[0][0]
        est: dict[str, Estimate] = {}
        for key, label in (("shared", ""), ("shift", "concept shift: ")):
            for variant in ("local", "federated"):
                name = f"{label}plant-a {'alone' if variant == 'local' else 'federated'}"
                per_seed = [(r[key]["y"], r[key][variant]) for _, _, r in runs]
                est[name] = hz.pooled_estimate(name, per_seed, seed0 + len(est))
        loc, fed = est["plant-a alone"], est["plant-a federated"]
        gain = hz.pooled_step(
            loc.variant,
            fed.variant,
            [(s["y"], s["local"], s["federated"]) for s in (r["shared"] for _, _, r in runs)],
            seed0,
        )
        s_loc, s_fed = est["concept shift: plant-a alone"], est["concept shift: plant-a federated"]
        holds = loc.value < fed.value
        control = Control(
            "concept shift (B and C fail by another mechanism)",
            "federated PR-AUC not above plant-a alone",
            f"federated {s_fed.value:.3f} vs alone {s_loc.value:.3f}",
            s_fed.value <= s_loc.value,
        )

        def seeds_of(key: str, field: str) -> str:
            return ", ".join(f"{r[key][field]:.3f}" for _, _, r in runs)

        extra = {
            "PR-AUC lift, federated − alone, per seed": ", ".join(
                f"{r['shared']['pr_auc_federated'] - r['shared']['pr_auc_local']:+.3f}"
                for _, _, r in runs
            ),
            "held-out failure rate at plant-a (per seed)": ", ".join(
                f"{np.mean(r['shared']['y']):.3f}" for _, _, r in runs
            ),
            "job-released ROC AUC, mean over operators, federated / alone (per seed)": ", ".join(
                f"{r['shared']['auc_federated_mean']:.3f} / {r['shared']['auc_local_mean']:.3f}"
                for _, _, r in runs
            ),
            "concept shift: job-released ROC AUC, mean over operators, federated / alone": (
                ", ".join(
                    f"{r['shift']['auc_federated_mean']:.3f} / {r['shift']['auc_local_mean']:.3f}"
                    for _, _, r in runs
                )
            ),
            "plant-a home ROC AUC of its own model (checked = the job's auc_local)": seeds_of(
                "shared", "auc_local_home"
            ),
        }
        return MetricResult(
            metric="PR-AUC of plant-a's held-out machines (logistic, FedAvg)",
            lower_is_better=False,
            estimates=[loc, fed, s_loc, s_fed],
            ordering="plant-a alone < plant-a federated; under concept shift, not",
            ordering_holds=holds and control.passed,
            steps=[gain],
            seeds=[s for s, _, _ in runs],
            extra=extra,
            controls=[control],
        )
