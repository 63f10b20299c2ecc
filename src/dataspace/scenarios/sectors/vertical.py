"""Shared pieces of the PSI + vertical-FL scenarios (finance, commerce).

One label party aligns with each provider by ECDH-PSI (``mode=align``), then starts one
vertical-LR training job over every coalition with exact Shapley values; the metric is the
held-out AUC per coalition with a Hanley–McNeil 95% CI pooled over seeds. Each scenario keeps
its own generator, parties, offers' datasets and wording; this module holds only the mechanics.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dataspace.scenarios.base import Estimate, Generated, MetricResult, OfferSpec, ScenarioError
from dataspace.scenarios.stats import label_copy_flags

TRAIN_TIMEOUT = 600.0

Runs = list[tuple[int, Generated, dict[str, Any]]]


def coalition_key(parties: tuple[str, ...]) -> str:
    return "+".join([parties[0], *sorted(parties[1:])])


def hanley_mcneil(a: float, n_pos: int, n_neg: int) -> float:
    """Variance of an AUC estimate (Hanley & McNeil 1982)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / max(
        1, n_pos * n_neg
    )


def vertical_offers(
    consumer: str,
    provider_datasets: Sequence[tuple[str, str]],
    purpose: str,
    features: Mapping[str, list[str]],
) -> list[OfferSpec]:
    """A ``psi-only`` and a ``federated-train`` offer from each provider to the label party."""
    out = []
    for provider, dataset in provider_datasets:
        out.append(
            OfferSpec(
                provider,
                dataset,
                "psi-only",
                {"purposes": [purpose], "fields": ["entity_id"]},
                consumer,
                purpose,
                price="20 CNY",
                key=f"psi:{provider}",
            )
        )
        out.append(
            OfferSpec(
                provider,
                dataset,
                "federated-train",
                {"purposes": [purpose], "fields": features[provider]},
                consumer,
                purpose,
                price="200 CNY",
                key=f"train:{provider}",
            )
        )
    return out


def vertical_flow(
    ctx: Any,
    *,
    label_party: str,
    dataset: str,
    providers: Sequence[str],
    key: str,
    label: str,
    features: Mapping[str, list[str]],
    params: Mapping[str, Any],
    holdout: float,
    psi_step: str,
    train_step: str,
    bytes_field: str,
    timeout: float = TRAIN_TIMEOUT,
) -> dict[str, Any]:
    """PSI-align with each provider, run one vertical-LR job over every coalition, report it.

    ``psi_step`` is formatted with ``provider``; ``bytes_field`` names the per-seed count of bytes
    the label party exchanged.
    """
    api = ctx.api[label_party]
    ds = ctx.dataset(label_party, dataset)
    own = ctx.own(label_party, dataset)
    flags = label_copy_flags(
        {c: own.column(c).to_numpy().astype(float) for c in features[label_party]},
        own.column(label).to_numpy().astype(float),
    )
    if flags:
        raise ScenarioError(f"label-copy columns refused: {flags}")
    align, views = [], []
    for provider in providers:
        ctx.step(psi_step.format(provider=provider))
        view = api.psi(
            agreements=[ctx.agreements[f"psi:{provider}"]], dataset=ds, key=key, mode="align"
        )
        align.append(view["id"])
        views.append(view)
    ctx.step(train_step)
    body = {
        "agreements": [ctx.agreements[f"train:{p}"] for p in providers],
        "peers": list(providers),
        "model": "vlr",
        "label": label,
        "features": features,
        "align": align,
        "params": params,
        "holdout": holdout,
        "contribution": True,
    }
    view = dict(api.json("POST", "/train", json=body))
    job = view["id"]
    deadline = time.monotonic() + timeout
    while view.get("state") not in ("SUCCEEDED", "FAILED", "DENIED"):
        if time.monotonic() > deadline:
            raise ScenarioError(f"training job {job} still {view.get('state')}")
        time.sleep(0.25)
        view = dict(api.json("GET", f"/train/jobs/{job}"))
    if view["state"] != "SUCCEEDED":
        raise ScenarioError(f"training job {job} ended {view['state']}: {view.get('error')}")
    result = view["result"]
    # The label party's own view of the held-out rows: the public split of the aligned rows (it
    # knows which of its rows were aligned and their labels; nothing new leaves any node).
    positions = None
    for psi_view in views:
        rows = ctx.kept_positions(label_party, psi_view)
        positions = set(rows) if positions is None else positions & set(rows)
    from dataspace.services.train_roles import split_rows

    common = np.asarray(sorted(positions or ()), dtype=np.int64)
    _, test = split_rows(int(common.size), holdout, 0)
    y = own.column(label).to_numpy()[common[test]]
    metrics = result["metrics"]
    return {
        "job_id": job,
        "model_id": result["model_id"],
        "aligned": int(common.size),
        "held_out": int(metrics["held_out_rows"]),
        "train_rows": int(metrics["train_rows"]),
        "positives": int(y.sum()),
        "negatives": int(y.size - y.sum()),
        "auc": {k: float(v) for k, v in metrics["auc_by_coalition"].items()},
        "shapley": {
            k: float(v) for k, v in (result.get("contribution") or {}).get("values", {}).items()
        },
        "train_seconds": float(metrics.get("train_seconds") or 0.0),
        bytes_field: int(metrics.get("bytes_exchanged_by_initiator") or 0),
    }


def vertical_metric(
    runs: Runs,
    *,
    variants: Mapping[str, tuple[str, ...]],
    providers: Sequence[str],
    alone: str,
    fused: str,
    metric: str,
    ordering: str,
    lift_label: str,
    aligned_label: str,
    held_out_label: str,
    note: tuple[str, str],
) -> MetricResult:
    """Held-out AUC per coalition (Hanley–McNeil CI pooled over seeds), lifts and Shapley.

    ``alone`` is the label party's own coalition key, ``fused`` the variant with every party;
    the ``*_label`` arguments and ``note`` (key, text) are the report's wording.
    """
    estimates = []
    for variant, parties in variants.items():
        key = coalition_key(parties)
        values, variances, n = [], [], 0
        for _, _, r in runs:
            a = r["auc"][key]
            values.append(a)
            variances.append(hanley_mcneil(a, r["positives"], r["negatives"]))
            n += r["held_out"]
        mean = float(np.mean(values))
        half = 1.96 * float(np.sqrt(np.sum(variances))) / len(values)
        estimates.append(Estimate(variant, mean, mean - half, mean + half, n))
    vals = [e.value for e in estimates]
    holds = vals[0] < vals[-1] and vals[0] < vals[1]
    shap = {p: float(np.mean([r["shapley"].get(p, 0.0) for _, _, r in runs])) for p in providers}
    fused_key = coalition_key(variants[fused])
    lifts = [r["auc"][fused_key] - r["auc"][alone] for _, _, r in runs]
    extra = {
        lift_label: ", ".join(f"{x:+.3f}" for x in lifts),
        "contribution (exact Shapley of held-out AUC, mean over seeds)": ", ".join(
            f"{p} {v:+.4f}" for p, v in shap.items()
        ),
        aligned_label: ", ".join(str(r["aligned"]) for _, _, r in runs),
        held_out_label: ", ".join(f"{r['held_out']} ({r['positives']})" for _, _, r in runs),
        note[0]: note[1],
    }
    return MetricResult(
        metric=metric,
        lower_is_better=False,
        estimates=estimates,
        ordering=ordering,
        ordering_holds=holds,
        seeds=[s for s, _, _ in runs],
        extra=extra,
    )


def latent_label(rng: np.random.Generator, p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Six latent factors per entity and a label drawn from them plus an unobserved shock."""
    n = p["entities"]
    z = rng.normal(size=(n, 6))
    shock = rng.normal(0, p["shock_sd"], size=n)
    logit = z @ np.asarray(p["label_weights"]) + p["label_intercept"] + shock
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return z, label
