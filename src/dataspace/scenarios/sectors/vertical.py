"""Shared pieces of the PSI + vertical-FL scenarios (finance, commerce).

One label party aligns with each provider by ECDH-PSI (``mode=align``), then starts one
vertical-LR training job over every coalition with exact Shapley values; the metric is the
held-out AUC per coalition with a Hanley–McNeil 95% CI pooled over seeds
(:func:`vertical_flow`, :func:`vertical_metric`). Each scenario keeps its own generator,
parties, offers' datasets and wording; this module holds only the mechanics.

The steps those are made of serve a flow that keeps an evaluator's held-out entities out of
training (finance): :func:`evaluator_split` (by a keyed hash of the entity, before any PSI),
:func:`refuse_label_copies`, :func:`psi_align`, :func:`train_job`, :func:`predict_scores`
(scoring new aligned rows with a trained model) and :func:`home_lr` (the label party's own
baseline, same family and schedule as the job).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.scenarios.base import Estimate, Generated, MetricResult, OfferSpec, ScenarioError
from dataspace.scenarios.stats import bootstrap_ci, label_copy_flags, mean_over_strata

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


# --- the steps a vertical flow is made of (each through the label party's node) -------------


def refuse_label_copies(
    own: pa.Table,
    columns: Sequence[str],
    label: str,
    *,
    planted: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Refuse to train when one of the label party's feature columns looks like a copy of the
    label (:func:`~dataspace.scenarios.stats.label_copy_flags`); ``planted`` adds columns to
    the check (the negative control plants one). Raises :class:`ScenarioError` naming them."""
    feats = {c: own.column(c).to_numpy().astype(float) for c in columns}
    feats.update({k: np.asarray(v, dtype=float) for k, v in (planted or {}).items()})
    flags = label_copy_flags(feats, own.column(label).to_numpy().astype(float))
    if flags:
        raise ScenarioError(
            f"label-copy columns refused: {flags}",
            hint="drop the column: it copies the label, so any lift it shows is leakage",
            columns=flags,
        )


def psi_align(
    ctx: Any,
    party: str,
    dataset: str,
    providers: Sequence[str],
    key: str,
    step: str,
    *,
    parallel: bool = False,
) -> dict[str, dict[str, Any]]:
    """ECDH-PSI ``mode=align`` of ``party``'s ``dataset`` with each provider (agreement
    ``psi:<provider>``); returns each provider's job view. ``step`` is formatted with
    ``provider``. ``parallel`` runs the jobs at once (each is its own job with its own peer)."""

    def one(provider: str) -> dict[str, Any]:
        view: dict[str, Any] = ctx.api[party].psi(
            agreements=[ctx.agreements[f"psi:{provider}"]],
            dataset=ctx.dataset(party, dataset),
            key=key,
            mode="align",
        )
        return view

    if not parallel:
        out = {}
        for provider in providers:
            ctx.step(step.format(provider=provider))
            out[provider] = one(provider)
        return out
    for provider in providers:
        ctx.step(step.format(provider=provider))
    with ThreadPoolExecutor(max_workers=len(providers)) as pool:
        return dict(zip(providers, pool.map(one, providers), strict=True))


def common_positions(ctx: Any, party: str, views: Iterable[dict[str, Any]]) -> np.ndarray:
    """``party``'s row positions kept by every one of the align jobs, sorted (the rows a
    training or prediction job over those jobs uses, in its order)."""
    positions: set[int] | None = None
    for view in views:
        rows = set(ctx.kept_positions(party, view))
        positions = rows if positions is None else positions & rows
    return np.asarray(sorted(positions or ()), dtype=np.int64)


def train_job(
    ctx: Any, party: str, body: Mapping[str, Any], *, timeout: float = TRAIN_TIMEOUT
) -> dict[str, Any]:
    """``POST /train`` at ``party``'s node and wait for the job; returns its final view."""
    api = ctx.api[party]
    view = dict(api.json("POST", "/train", json=dict(body)))
    job = view["id"]
    deadline = time.monotonic() + timeout
    while view.get("state") not in ("SUCCEEDED", "FAILED", "DENIED"):
        if time.monotonic() > deadline:
            raise ScenarioError(f"training job {job} still {view.get('state')}")
        time.sleep(0.25)
        view = dict(api.json("GET", f"/train/jobs/{job}"))
    if view["state"] != "SUCCEEDED":
        raise ScenarioError(f"training job {job} ended {view['state']}: {view.get('error')}")
    return view


def predict_scores(
    ctx: Any, party: str, model_id: str, align: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``POST /predict``: score the rows of the align jobs ``align`` with ``model_id``. The
    scores are revealed to ``party`` only and written under its node's data dir; returns
    (``party``'s row positions, scores)."""
    body = {"model": model_id, "rows": list(align)}
    view = dict(ctx.api[party].json("POST", "/predict", json=body))
    if view.get("state") != "SUCCEEDED":
        raise ScenarioError(f"prediction with {model_id} ended {view.get('state')}")
    table = pq.read_table(view["result"]["scores_file"])
    return table.column("position").to_numpy(), table.column("score").to_numpy()


def home_lr(
    block: np.ndarray, labels: np.ndarray, params: Mapping[str, Any], seed: int, party: str
) -> Callable[[np.ndarray], np.ndarray]:
    """The label party's model on its own columns, trained at home with the training job's own
    schedule (:func:`~dataspace.federated.baseline.train_plain` with the job's
    :func:`~dataspace.services.train_roles.vlr_config`: the same family, epochs, batches,
    validation split and seed); returns its scorer (the linear score)."""
    from dataspace.federated.baseline import prepare, train_plain
    from dataspace.federated.plan import make_plan
    from dataspace.services.train_roles import Spec, vlr_config

    spec = Spec(
        job_id="home",
        family="vlr",
        parties=(party,),
        widths={party: int(block.shape[1])},
        columns={},
        dealer="operator",
        rows=int(labels.size),
        seed=seed,
        params=dict(params),
    )
    config = vlr_config(spec, (party, party))
    w, b, _ = train_plain([block], labels, config)
    _, scalers = prepare([block], make_plan(int(labels.size), config), config.clip)
    scaler = scalers[0]
    return lambda x: np.asarray(scaler.transform(x) @ w + b, dtype=float)


def evaluator_split(entity_ids: Sequence[str], share: float, key: bytes) -> np.ndarray:
    """The evaluator's split, by entity and before any PSI: an entity is held out when
    HMAC-SHA256(``key``, its identifier), read as a number in [0, 1), is below ``share``.
    Returns the held-out mask. Only the evaluator knows ``key``; an entity's side does not
    depend on any other entity, on its data or on which party knows it."""
    out = np.empty(len(entity_ids), dtype=bool)
    for i, e in enumerate(entity_ids):
        digest = hmac.new(key, str(e).encode("utf-8"), hashlib.sha256).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2**64 < share
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
    own = ctx.own(label_party, dataset)
    refuse_label_copies(own, features[label_party], label)
    views = psi_align(ctx, label_party, dataset, providers, key, psi_step)
    align = [v["id"] for v in views.values()]
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
    view = train_job(ctx, label_party, body, timeout=timeout)
    job = view["id"]
    result = view["result"]
    # The label party's own view of the held-out rows: the public split of the aligned rows (it
    # knows which of its rows were aligned and their labels; nothing new leaves any node).
    from dataspace.services.train_roles import split_rows

    common = common_positions(ctx, label_party, views.values())
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


Group = tuple[np.ndarray, dict[str, np.ndarray]]  # one seed: held-out labels, scores by variant


def held_out_estimate(
    groups: Sequence[Group],
    metric: Callable[[np.ndarray, np.ndarray], float],
    variant: str,
    base: str | None = None,
    *,
    reps: int = 300,
) -> tuple[float, float, float, int]:
    """The evaluator's estimate over seeds: ``metric(scores, labels)`` of ``variant`` on each
    seed's held-out entities (minus ``base``'s on the same entities, when given), averaged over
    seeds, with a 95% CI from a bootstrap of entities within each seed (one set of resamples for
    every variant: a lift's CI is paired). Returns (value, low, high, entities)."""
    y = np.concatenate([g[0] for g in groups])
    strata = np.concatenate([np.full(g[0].size, i) for i, g in enumerate(groups)])
    a = np.concatenate([g[1][variant] for g in groups])
    b = np.concatenate([g[1][base] for g in groups]) if base else None

    def one(idx: np.ndarray) -> float:
        value = metric(a[idx], y[idx])
        return value - metric(b[idx], y[idx]) if b is not None else value

    stat = mean_over_strata(one, strata)
    low, high = bootstrap_ci(stat, int(y.size), strata=strata.tolist(), reps=reps, seed=0)
    return stat(np.arange(y.size)), low, high, int(y.size)


def latent_label(rng: np.random.Generator, p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Six latent factors per entity and a label drawn from them plus an unobserved shock."""
    n = p["entities"]
    z = rng.normal(size=(n, 6))
    shock = rng.normal(0, p["shock_sd"], size=n)
    logit = z @ np.asarray(p["label_weights"]) + p["label_intercept"] + shock
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return z, label
