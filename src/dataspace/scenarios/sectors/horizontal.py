"""Shared machinery of the horizontal-FL scenarios (manufacturing, science): FedAvg through the
nodes' training API, and PR-AUC local vs federated computed where the rows live.

Every party holds **its own entities with the same schema** and a held-out flag column
(``is_test``, drawn by entity before anything runs). The consumer starts one FedAvg job
(``POST /api/v1/train``, ``model=fedavg``, with its own dataset as a client); each provider
checks its own ``federated-train`` agreement (fields = features + label + ``is_test``,
``output = aggregate-only``). Updates are combined by secure aggregation (pairwise masking);
only masked updates, the global θ and per-node aggregate metrics leave a node.

PR-AUC is not among the job's released metrics (it reports ROC AUC per node and overall), so
each party computes it **at home**: it scores its own held-out rows with the global θ that every
node keeps (``models/<job>.<node>.json``) and with a model trained on its own rows alone (same
family, same optimiser, same number of epochs as the job's ``auc_local`` baseline — the home
ROC AUC of that model is checked against the job's ``auc_local``). In a deployment only the two
PR-AUC figures would leave the party. The scenario simulates that home step in the evaluator's
process — it reads each party's table and model file directly (not through any node's API) —
and keeps every party's held-out labels and scores, so the confidence intervals can bootstrap
over rows across parties: an evaluator's shortcut, not something a node releases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.federated.fedavg import local_train
from dataspace.federated.hfl_models import Model
from dataspace.scenarios.base import Estimate, OfferSpec, ScenarioError
from dataspace.scenarios.common import paired_steps
from dataspace.scenarios.stats import auc, bootstrap_ci, pr_auc
from dataspace.services.train_fedavg import config_of

TEST = "is_test"
TRAIN_TIMEOUT = 600.0


@dataclass(frozen=True)
class Job:
    """One FedAvg run: which dataset of every party, the params, the agreement key prefix."""

    dataset: str
    key: str


def offers(
    parties: list[str], consumer: str, jobs: list[Job], fields: list[str], purpose: str
) -> list[OfferSpec]:
    return [
        OfferSpec(
            p,
            j.dataset,
            "federated-train",
            {"purposes": [purpose], "fields": fields},
            consumer,
            purpose,
            price="150 CNY",
            key=f"{j.key}:{p}",
        )
        for j in jobs
        for p in parties
        if p != consumer
    ]


def run_fedavg(
    ctx: Any,
    *,
    consumer: str,
    providers: list[str],
    job: Job,
    label: str,
    features: list[str],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Start a FedAvg job from the consumer's node and wait for it; returns its result."""
    api = ctx.api[consumer]
    body = {
        "agreements": [ctx.agreements[f"{job.key}:{p}"] for p in providers],
        "peers": providers,
        "model": "fedavg",
        "label": label,
        "features": {p: features for p in [consumer, *providers]},
        "dataset": ctx.dataset(consumer, job.dataset),
        "params": {**params, "holdout_column": TEST},
    }
    view = dict(api.json("POST", "/train", json=body))
    job_id = view["id"]
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while view.get("state") not in ("SUCCEEDED", "FAILED", "DENIED"):
        if time.monotonic() > deadline:
            raise ScenarioError(f"FedAvg job {job_id} still {view.get('state')}")
        time.sleep(0.2)
        view = dict(api.json("GET", f"/train/jobs/{job_id}"))
    if view["state"] != "SUCCEEDED":
        raise ScenarioError(f"FedAvg job {job_id} ended {view['state']}: {view.get('error')}")
    return dict(view["result"])


def home_scores(
    ctx: Any,
    party: str,
    dataset: str,
    features: list[str],
    label: str,
    model_id: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """At ``party``'s node: its held-out rows scored by the global θ it keeps and by a model
    trained on its own training rows alone (the job's local baseline, same schedule)."""
    part = json.loads(
        (ctx.roots[party] / "data" / "models" / f"{model_id}.{party}.json").read_text()
    )
    model = Model(str(part["kind"]), int(part["dim"]), int(part["hidden"]))
    theta = np.asarray(part["theta"], dtype=np.float64)
    table: pa.Table = next(t for n, t in ctx.generated.tables[party] if n == dataset)
    x = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in features])
    y = table.column(label).to_numpy().astype(np.float64)
    test = table.column(TEST).to_numpy().astype(bool)
    # run_fedavg sends no seed, so the job runs with POST /train's default seed, 0.
    config = config_of({**params, "seed": 0})
    alone = local_train(
        model,
        model.init(config.seed),
        x[~test],
        y[~test],
        config,
        np.random.default_rng(config.seed),
        epochs=config.rounds * config.local_epochs,
    )
    fed = np.asarray(model.output(theta, x[test]), dtype=float)
    loc = np.asarray(model.output(alone, x[test]), dtype=float)
    return {
        "y": y[test].astype(int).tolist(),
        "federated": fed.tolist(),
        "local": loc.tolist(),
        "pr_auc_federated": pr_auc(fed, y[test]),
        "pr_auc_local": pr_auc(loc, y[test]),
        "auc_local_home": auc(loc, y[test]),
        "auc_federated_home": auc(fed, y[test]),
    }


def check_baseline(home: dict[str, Any], released: dict[str, Any]) -> None:
    """The home local model must be the job's own baseline (same ROC AUC as ``auc_local``)."""
    if abs(float(home["auc_local_home"]) - float(released["auc_local"])) > 1e-6:
        raise ScenarioError(
            f"home baseline AUC {home['auc_local_home']:.6f} differs from the job's "
            f"auc_local {released['auc_local']:.6f}"
        )


PerSeed = list[tuple[list[int], list[float]]]  # each seed's held-out labels and scores


def pooled_estimate(name: str, per_seed: PerSeed, seed: int) -> Estimate:
    """Mean over seeds of PR-AUC, 95% CI by a bootstrap of held-out rows within each seed."""
    stat, n, strata = _pooled_pr_auc(per_seed)
    lo, hi = bootstrap_ci(stat, n, strata=strata, seed=seed)
    return Estimate(name, stat(np.arange(n)), lo, hi, n)


def pooled_step(
    worse: str, better: str, scored: list[tuple[list[int], list[float], list[float]]], seed: int
) -> Estimate:
    """The PR-AUC gain from ``worse`` to ``better`` — ``scored`` holds each seed's held-out labels
    and both models' scores of those rows — with a paired 95% CI (both on each resample of rows
    within a seed)."""
    a, n, strata = _pooled_pr_auc([(y, s) for y, s, _ in scored])
    b, _, _ = _pooled_pr_auc([(y, s) for y, _, s in scored])
    [step] = paired_steps({worse: a, better: b}, [(worse, better)], n, strata, seed=seed,
                          lower_is_better=False)
    return step


def _pooled_pr_auc(per_seed: PerSeed) -> tuple[Callable[[np.ndarray], float], int, list[int]]:
    """The mean over seeds of PR-AUC as a statistic of row indices, the rows, their strata."""
    ys = [np.asarray(y, dtype=float) for y, _ in per_seed]
    ss = [np.asarray(s, dtype=float) for _, s in per_seed]
    sizes = [len(y) for y in ys]
    offsets = np.cumsum([0, *sizes])
    strata = np.concatenate([np.full(k, i) for i, k in enumerate(sizes)])
    y_all, s_all = np.concatenate(ys), np.concatenate(ss)

    def stat(idx: np.ndarray) -> float:
        vals = []
        for i in range(len(sizes)):
            sel = idx[(idx >= offsets[i]) & (idx < offsets[i + 1])]
            vals.append(pr_auc(s_all[sel], y_all[sel]))
        return float(np.mean(vals))

    return stat, len(y_all), strata.tolist()
