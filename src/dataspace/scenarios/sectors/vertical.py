"""Shared pieces of the PSI + vertical-FL scenarios (finance, commerce, transport).

Each keeps an evaluator's held-out entities out of training: :func:`evaluator_split` (by a
keyed hash of the entity, before any PSI; :func:`evaluator_tables` applies it to the label
party's file in a generator: a training file with the label, a held-out file without it, the
held-out labels for the evaluator only), :func:`refuse_label_copies`, :func:`psi_align`,
:func:`fit_job` (one training job, :func:`train_job`, and the rows it fitted),
:func:`home_baseline` (the label party's own baseline, :func:`home_lr`: same family and
schedule as the job, vlr or vlinreg, checked against the job's own), :func:`predict_scores`
(scoring new aligned rows with a trained model) and :func:`held_out_table` (the held-out scores
by entity, on one population). Finance composes these steps itself; commerce and transport run
them through :func:`held_out_flow` and release :func:`flow_record`. The evaluator's estimates,
with paired CIs on one population, are :func:`held_out_estimate`'s, over the seeds'
:func:`held_out_groups`; :func:`held_out_leaks` is its check of the scored entities and
:func:`kept_out_control` its control that training read the training file only. Each scenario
keeps its own generator, parties, offers' datasets and wording.
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

from dataspace.scenarios.base import Control, Estimate, Generated, OfferSpec, ScenarioError
from dataspace.scenarios.common import overlap_mask, rng_for
from dataspace.scenarios.stats import (
    bootstrap_ci,
    label_copy_flags,
    mean_over_strata,
    where_zero,
)

TRAIN_TIMEOUT = 600.0

Runs = list[tuple[int, Generated, dict[str, Any]]]


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
                # align tells the label party which of its entities the provider holds
                {"purposes": [purpose], "fields": ["entity_id"], "output": "pseudonymized"},
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


def fit_job(
    ctx: Any,
    party: str,
    views: Mapping[str, dict[str, Any]],
    providers: Sequence[str],
    *,
    family: str,
    label: str,
    features: Mapping[str, list[str]],
    params: Mapping[str, Any],
    validation: float,
    contribution: bool,
) -> dict[str, Any]:
    """One ``family`` job (:func:`train_job`) over the training entities ``party`` shares with
    ``providers`` (their align jobs ``views``), with its own ``validation`` split of those rows
    and the run's seed; ``contribution``: the job also trains every coalition for the providers'
    exact Shapley values. Checks that the job fitted the rows ``party`` counts; returns its
    final ``view`` and ``party``'s row positions: the aligned rows (``common``), the job's
    fitting rows (``fit``) and its validation rows (``test``)."""
    from dataspace.services.train_roles import split_rows

    body = {
        "agreements": [ctx.agreements[f"train:{p}"] for p in providers],
        "peers": list(providers),
        "model": family,
        "label": label,
        "features": {party: features[party], **{p: features[p] for p in providers}},
        "align": [views[p]["id"] for p in providers],
        "params": dict(params),
        "holdout": validation,
        "seed": ctx.seed,
        "contribution": contribution,
    }
    view = train_job(ctx, party, body)
    common = common_positions(ctx, party, [views[p] for p in providers])
    fit, test = split_rows(int(common.size), validation, ctx.seed)
    metrics = view["result"]["metrics"]
    if int(metrics["train_rows"]) != fit.size:
        raise ScenarioError(
            f"job {view['id']} fitted {metrics['train_rows']} rows, {party} counts {fit.size}"
        )
    return {"view": view, "common": common, "fit": common[fit], "test": common[test]}


def predict_scores(
    ctx: Any, party: str, model_id: str, align: Sequence[str], *, column: str = "score"
) -> dict[int, float]:
    """``POST /predict``: score the rows of the align jobs ``align`` with ``model_id``. The
    scores are revealed to ``party`` only and written under its node's data dir; returns the
    scores file's ``column`` (``score`` for vlr, ``prediction`` — in the target's units — for
    vlinreg) by ``party``'s row position."""
    body = {"model": model_id, "rows": list(align)}
    view = dict(ctx.api[party].json("POST", "/predict", json=body))
    if view.get("state") != "SUCCEEDED":
        raise ScenarioError(f"prediction with {model_id} ended {view.get('state')}")
    table = pq.read_table(view["result"]["scores_file"])
    positions, scores = table.column("position").to_numpy(), table.column(column).to_numpy()
    return dict(zip(positions.tolist(), scores.tolist(), strict=True))


def home_lr(
    block: np.ndarray,
    labels: np.ndarray,
    params: Mapping[str, Any],
    seed: int,
    party: str,
    *,
    family: str = "vlr",
) -> Callable[[np.ndarray], np.ndarray]:
    """The label party's model on its own columns, trained at home with the training job's own
    schedule (:func:`~dataspace.federated.baseline.train_plain` with the job's
    :func:`~dataspace.services.train_roles.vlr_config`: the same family, epochs, batches,
    validation split and seed); returns its scorer (the linear score). ``family="vlinreg"``:
    the job's linear regression (:func:`~dataspace.federated.vlinreg.train_plain_linear` with
    :func:`~dataspace.services.train_linreg.config`); the scorer predicts in the target's units."""
    from dataspace.federated.baseline import prepare, train_plain
    from dataspace.federated.plan import make_plan
    from dataspace.services.train_roles import Spec, vlr_config

    spec = Spec(
        job_id="home",
        family=family,
        parties=(party,),
        widths={party: int(block.shape[1])},
        columns={},
        dealer="operator",
        rows=int(labels.size),
        seed=seed,
        params=dict(params),
    )
    if family == "vlinreg":
        from dataspace.federated import vlinreg
        from dataspace.services import train_linreg

        model = vlinreg.train_plain_linear([block], labels, train_linreg.config(spec, (party,) * 2))
        return lambda x: np.asarray(model.predict([x]), dtype=float)
    config = vlr_config(spec, (party, party))
    w, b, _ = train_plain([block], labels, config)
    _, scalers = prepare([block], make_plan(int(labels.size), config), config.clip)
    scaler = scalers[0]
    return lambda x: np.asarray(scaler.transform(x) @ w + b, dtype=float)


def home_baseline(
    job: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, Any],
    seed: int,
    party: str,
    *,
    family: str,
    baseline: tuple[str, Callable[[np.ndarray, np.ndarray], float]],
) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """``party``'s own model (:func:`home_lr`) trained at home on the fitting rows of ``job``
    (a :func:`fit_job`; ``x``, ``y``: ``party``'s columns and label, all its rows), and its gap
    to the job's own baseline. The job scored ``party``'s own model on its validation rows too
    (``baseline``: the job metric's key and the function that recomputes it): a gap of about 0
    shows the baseline here is the job's own (same rows, family and schedule)."""
    fit, test = job["fit"], job["test"]
    home = home_lr(x[fit], y[fit], params, seed, party, family=family)
    name, fn = baseline
    gap = abs(fn(home(x[test]), y[test]) - job["view"]["result"]["metrics"][name])
    return home, float(gap)


def held_out_table(
    held: pa.Table,
    columns: Sequence[str],
    scored: Mapping[str, Mapping[int, float]],
    homes: Mapping[str, Callable[[np.ndarray], np.ndarray]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The label party's scores, by entity, of its held-out rows (``held``, its file without
    the label) that every model of ``scored`` (variant -> scores by row position) scored — one
    population — with its home models' (``homes``, on its ``columns``) scores of the same rows.
    Returns (the rows' positions, the table: ``entity_id`` then a column per variant)."""
    rows = sorted(set.intersection(*(set(s) for s in scored.values())))
    block = np.column_stack([held.column(c).to_numpy().astype(float) for c in columns])
    ids_ = held.column("entity_id").to_pylist()
    table: dict[str, Any] = {"entity_id": [str(ids_[i]) for i in rows]}
    for variant, home in homes.items():
        table[variant] = np.asarray(home(block[rows]), dtype=float).tolist()
    table.update({v: [s[i] for i in rows] for v, s in scored.items()})
    return np.asarray(rows, dtype=np.int64), table


def job_datasets(views: Iterable[Mapping[str, Any]]) -> str:
    """The datasets the nodes' own records of jobs (their views) say they read, comma-separated."""
    return ",".join(sorted({str(v["params"]["dataset"]) for v in views}))


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


def evaluator_tables(
    table: pa.Table, label: str, share: float, key: bytes, split: str
) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """The label party's file split by the evaluator (:func:`evaluator_split` of its
    ``entity_id``, before any PSI): (its training file, with the label; its held-out file, the
    same columns **without** the label; the :attr:`Generated.heldout` slot — the held-out
    entities and their labels, which only the evaluator holds)."""
    ids_ = [str(e) for e in table.column("entity_id").to_pylist()]
    held = evaluator_split(ids_, share, key)
    train, test = np.flatnonzero(~held), np.flatnonzero(held)
    labels = table.column(label).to_numpy()
    return (
        table.take(train),
        table.take(test).drop_columns([label]),
        {
            "split": split,
            "share": share,
            "entity_id": [ids_[i] for i in test],
            "label": labels[test],
        },
    )


def held_out_flow(
    ctx: Any,
    *,
    party: str,
    train_dataset: str,
    score_dataset: str,
    key: str,
    label: str,
    features: Mapping[str, list[str]],
    models: Mapping[str, tuple[str, ...]],
    alone: str,
    family: str,
    params: Mapping[str, Any],
    validation: float,
    baseline: tuple[str, Callable[[np.ndarray, np.ndarray], float]],
    psi_step: str,
    score_step: str,
    control: tuple[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """The evaluator-split flow of a label party (finance's design, for any vertical family).

    ``models`` maps each federated variant to its providers; the first is the full model (its
    job also trains every coalition for the providers' exact Shapley values, on the job's own
    ``validation`` split of the training rows). Steps: a leakage check of ``party``'s columns;
    PSI of ``train_dataset`` (the training entities only) with every provider; one job per
    variant over the training entities its providers share, all with the same family, schedule
    and seed; ``alone`` — ``party``'s own model trained at home on the full job's fitting rows
    with the same family and schedule (:func:`home_lr`), checked against the job's own baseline
    on its validation rows (``baseline``: the job metric's key and the function that recomputes
    it); then PSI of ``score_dataset`` (the evaluator's held-out entities, no label) with every
    provider and ``POST /predict`` with each model. Returns the scores, by entity, of the
    held-out entities every model scored (one population), and what the nodes' own job records
    say each step read.

    ``control`` (a variant name and its providers: an irrelevant party) is trained, checked and
    scored the same way, but compared on its own population: ``party``'s home model trained on
    the control job's fitting rows (``alone`` of ``control_scores``), scored on the held-out
    entities the control model scored — the same rows, so any lift is the party's columns.
    """
    own = ctx.own(party, train_dataset)
    refuse_label_copies(own, features[party], label)
    variants = dict(models)
    if control:
        variants[control[0]] = control[1]
    providers = list(dict.fromkeys(p for ps in variants.values() for p in ps))
    fit_views = psi_align(ctx, party, train_dataset, providers, key, psi_step, parallel=True)
    x = np.column_stack([own.column(c).to_numpy().astype(float) for c in features[party]])
    y = own.column(label).to_numpy().astype(float)
    first = next(iter(models))

    def train(variant: str) -> dict[str, Any]:
        return fit_job(
            ctx,
            party,
            fit_views,
            variants[variant],
            family=family,
            label=label,
            features=features,
            params=params,
            validation=validation,
            contribution=variant == first,
        )

    for variant in variants:
        ctx.step(f"{family}: {variant}" + (", every coalition, Shapley" * (variant == first)))
    with ThreadPoolExecutor(max_workers=len(variants)) as pool:
        jobs = dict(zip(variants, pool.map(train, variants), strict=True))

    def home_of(variant: str) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
        return home_baseline(
            jobs[variant], x, y, params, ctx.seed, party, family=family, baseline=baseline
        )

    home, gap = home_of(first)
    score_views = psi_align(ctx, party, score_dataset, providers, key, score_step, parallel=True)
    ctx.step(f"scoring the held-out entities ({', '.join([alone, *variants])})")
    column = "prediction" if family == "vlinreg" else "score"

    def score(variant: str) -> dict[int, float]:
        align = [score_views[p]["id"] for p in variants[variant]]
        model_id = jobs[variant]["view"]["result"]["model_id"]
        return predict_scores(ctx, party, model_id, align, column=column)

    with ThreadPoolExecutor(max_workers=len(variants)) as pool:
        scored = dict(zip(variants, pool.map(score, variants), strict=True))
    held = ctx.own(party, score_dataset)
    positions, table = held_out_table(
        held, features[party], {v: scored[v] for v in models}, {alone: home}
    )
    out = {
        "jobs": jobs,
        "home": home,
        "baseline_gap": gap,
        "scored": {v: len(s) for v, s in scored.items()},
        "positions": positions,
        "scores": table,
        "train_psi_datasets": job_datasets(fit_views.values()),
        "train_job_datasets": job_datasets(j["view"] for j in jobs.values()),
        "score_psi_datasets": job_datasets(score_views.values()),
    }
    if control:
        name = out["control"] = control[0]
        control_home, control_gap = home_of(name)
        _, out["control_scores"] = held_out_table(
            held, features[party], {name: scored[name]}, {alone: control_home}
        )
        out["baseline_gap"] = max(gap, control_gap)
    return out


def flow_record(out: Mapping[str, Any], party: str, second: str, prefix: str) -> dict[str, Any]:
    """What a label party's flow hands back of a :func:`held_out_flow` run (``out``) with two
    federated variants: the full model's job (the first variant) and ``second``'s, whose keys
    start with ``prefix``; what the nodes' own records say each step read; the rows each job
    aligned and fitted and each model scored; the held-out scores; the providers' Shapley
    values; and the bytes ``party`` sent. With a control variant: its model, the rows its job
    aligned, the held-out entities it scored and its own table (``control_scores``)."""
    first = next(iter(out["jobs"]))
    full, part = out["jobs"][first], out["jobs"][second]
    metrics = full["view"]["result"]["metrics"]
    contribution = full["view"]["result"].get("contribution") or {}
    control: dict[str, Any] = {}
    if "control" in out:
        job = out["jobs"][out["control"]]
        control = {
            "control_model_id": job["view"]["result"]["model_id"],
            "control_aligned": int(job["common"].size),
            "control_scored": out["scored"][out["control"]],
            "control_scores": out["control_scores"],
        }
    return {
        **control,
        "job_id": full["view"]["id"],
        "model_id": full["view"]["result"]["model_id"],
        f"{prefix}_model_id": part["view"]["result"]["model_id"],
        "train_psi_datasets": out["train_psi_datasets"],
        "train_job_datasets": out["train_job_datasets"],
        "score_psi_datasets": out["score_psi_datasets"],
        "aligned": int(full["common"].size),
        "job_rows": int(metrics["train_rows"]) + int(metrics["held_out_rows"]),
        "fit_rows": int(full["fit"].size),
        f"{prefix}_aligned": int(part["common"].size),
        "scored": out["scored"][first],
        f"{prefix}_scored": out["scored"][second],
        "evaluated": len(out["scores"]["entity_id"]),
        "baseline_gap": out["baseline_gap"],
        "scores": out["scores"],
        "shapley": {k: float(v) for k, v in (contribution.get("values") or {}).items()},
        "train_seconds": float(metrics.get("train_seconds") or 0.0),
        f"bytes_by_{party}": int(metrics.get("bytes_exchanged_by_initiator") or 0),
    }


def held_out_leaks(gen: Generated, party: str, entity_ids: Iterable[str]) -> list[str]:
    """The evaluator's check of the scored entities: those in ``party``'s training file (its
    first table) or not among the held-out entities; returns them (empty when clean)."""
    truth = set(gen.heldout["entity_id"])
    trained = {str(e) for e in gen.tables[party][0][1].column("entity_id").to_pylist()}
    return [e for e in entity_ids if e in trained or e not in truth]


Group = tuple[np.ndarray, dict[str, np.ndarray]]  # one seed: held-out labels, scores by variant


def held_out_groups(runs: Runs, party: str, name: str = "scores") -> tuple[list[Group], list[str]]:
    """What the evaluator joins, by entity, for each seed: the held-out labels it holds and the
    scores by variant of the table ``name`` that ``party``'s flow handed it (a
    :func:`held_out_table`); and the scored entities that fail its check
    (:func:`held_out_leaks`: empty when clean)."""
    groups: list[Group] = []
    leaks: list[str] = []
    for _, gen, r in runs:
        truth = dict(zip(gen.heldout["entity_id"], gen.heldout["label"].tolist(), strict=True))
        ids_ = r[name]["entity_id"]
        leaks += held_out_leaks(gen, party, ids_)
        y = np.asarray([truth.get(e, np.nan) for e in ids_], dtype=float)
        scores = {k: np.asarray(v, float) for k, v in r[name].items() if k != "entity_id"}
        groups.append((y, scores))
    return groups, leaks


def kept_out_control(runs: Runs, name: str, expected: str, dataset: str) -> Control:
    """The control that the held-out entities stayed out of training: the nodes' own records
    (the flow's ``train_psi_datasets`` and ``train_job_datasets``) say the training PSI and
    every training job of each seed read the label party's ``dataset`` only."""
    return Control(
        name,
        expected,
        "; ".join(
            f"seed {s}: PSI {r['train_psi_datasets']}, jobs {r['train_job_datasets']}"
            for s, _, r in runs
        ),
        all(
            r["train_psi_datasets"] == r["train_job_datasets"] == f"{dataset}_s{s}"
            for s, _, r in runs
        ),
    )


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


def irrelevant_party_control(
    runs: Runs,
    party: str,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    control: str,
    alone: str,
    name: str,
    lower_is_better: bool,
) -> tuple[Estimate, Control]:
    """The evaluator's negative control of a :func:`held_out_flow` run with a ``control``
    variant (an irrelevant party): the improvement of ``metric`` from ``alone`` to ``control``
    on the held-out entities the control model scored, both models fitted on the control job's
    rows (``control_scores``), paired over seeds as :func:`held_out_estimate`. Passes when its
    95% CI reaches 0: a CI wholly above 0 means the irrelevant columns "helped" — leakage, a
    broken alignment or a model mixed up. Returns (the estimate, named ``name``; the control)."""
    groups, leaks = held_out_groups(runs, party, "control_scores")
    if leaks:
        raise ScenarioError(f"{len(leaks)} entities the control scored are not the held-out ones")
    better, worse = (alone, control) if lower_is_better else (control, alone)
    value, low, high, n = held_out_estimate(groups, metric, better, worse)
    where = where_zero(low, high)
    per_variant = ", ".join(
        f"{v} {np.mean([metric(g[1][v], g[0]) for g in groups]):.3f}" for v in (alone, control)
    )
    return Estimate(name, value, low, high, n), Control(
        f"irrelevant party ({control}, independent of every latent) vs {alone}",
        f"no significant improvement: the 95% CI of {name} reaches 0 (wholly above 0 would "
        "mean leakage, a broken alignment or a mixed-up model)",
        f"{value:+.3f} [{low:+.3f}, {high:+.3f}] ({where}); on the same {n} held-out rows: "
        + per_variant,
        low <= 0.0,
    )


def irrelevant_table(
    scenario: str,
    seed: int,
    party: str,
    keys: Sequence[str],
    overlap: Sequence[float],
    columns: Callable[[np.random.Generator, int], dict[str, Any]],
) -> pa.Table:
    """The table of a negative control's irrelevant party: 60–80% (``overlap``) of the
    entities (``keys``), its ``columns`` drawn from a random stream of its own — independent
    of every latent factor and of the label, and leaving the other parties' data unchanged."""
    noise = rng_for(seed, f"{scenario}/{party}")
    rows = np.flatnonzero(overlap_mask(noise, len(keys), *overlap)).tolist()
    return pa.table({"entity_id": [keys[i] for i in rows], **columns(noise, len(rows))})


def latent_label(rng: np.random.Generator, p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Six latent factors per entity and a label drawn from them plus an unobserved shock."""
    n = p["entities"]
    z = rng.normal(size=(n, 6))
    shock = rng.normal(0, p["shock_sd"], size=n)
    logit = z @ np.asarray(p["label_weights"]) + p["label_intercept"] + shock
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return z, label
