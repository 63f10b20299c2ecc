"""Federated training across nodes, initiator side: ``dataspace train`` / ``predict``.

The initiator (the label party of a vertical job — the bank) holds one agreement with each
provider (action ``federated-train``) and the PSI ``align`` job with each. It::

    start_train   validates, resolves agreements, aligned rows, the dealer; claims the job id
    execute       "open" to every provider (each checks its own agreement) and to the dealer
                  → every node runs the schedule of protocol runs (train.py roles, messages
                    as signed steps) → "finish" everywhere (parts staged)
                  → metrics, contribution → "commit" everywhere → own part final
    on failure    FAILED here with the reason, "abort" to every node: nothing becomes final
    retry         a new attempt under a new job id

docs/training.md has the commands, what travels and who holds what.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dataspace.errors import DataspaceError, NotFound, UsageError
from dataspace.federated import sgb, vlr
from dataspace.federated.baseline import train_plain
from dataspace.federated.contribution import shapley_exact
from dataspace.federated.metrics import auc
from dataspace.metering import revenue
from dataspace.metering.pricing import minor_unit
from dataspace.services import jobs, mp_initiator, multiparty, train_linreg
from dataspace.services import models as model_store
from dataspace.services import mp_store as ms
from dataspace.services import train_fedavg as fedavg_job
from dataspace.services.job_wire import check_job_id, jsonable
from dataspace.services.mp_initiator import Progress, each
from dataspace.services.node import Node, default_actor
from dataspace.services.train_columns import (
    check_named,
    check_parties,
    numeric_block,
    numeric_column,
)
from dataspace.services.train_fedavg import FedJob
from dataspace.services.train_net import PROTOCOL, Mailbox
from dataspace.services.train_party import ACTION, output_for
from dataspace.services.train_party import Session as PartySession
from dataspace.services.train_roles import (
    MAX_SEED,
    Local,
    Spec,
    check_params,
    coalitions,
    sgb_params,
    split_rows,
    vlr_config,
    vlr_part,
)
from dataspace.store.models_compute import JobRow

FAMILIES = ("vlr", "vgbdt", "fedavg", train_linreg.FAMILY)
EARLY_STOPPING = ("vlr", train_linreg.FAMILY)  # the families with --patience / --validation
IDLE_SECONDS = 60.0  # a party ends a job whose initiator sent nothing (not even a keep-alive)


@dataclass
class Peer:
    name: str
    agreement_id: str
    align: str
    features: list[str]
    select: list[int] = field(default_factory=list)


@dataclass
class TrainJob:
    id: str
    spec: Spec
    peers: list[Peer]
    label: str
    dataset: str
    own_features: list[str]
    own_positions: list[int]
    actor: str
    timeout: float
    params: dict[str, Any]
    attempt: int = 1
    retry_of: str | None = None


def parse_features(values: Sequence[str]) -> dict[str, list[str]]:
    """``bank:c1,c2 tax-bureau:c3`` (one or several arguments) → {party: [columns]}."""
    out: dict[str, list[str]] = {}
    for value in values:
        for item in value.split():
            party, sep, cols = item.partition(":")
            if not sep or not cols:
                raise UsageError(f"bad --features item {item!r}", hint="use PARTY:col1,col2")
            out.setdefault(party, []).extend(c for c in cols.split(",") if c)
    return out


def _early_params(
    model: str, params: dict[str, Any] | None, patience: int | None, validation: float | None
) -> dict[str, Any]:
    """``patience`` / ``validation`` (early stopping of vlr and vlinreg) merged into the
    hyper-parameters."""
    out = dict(params or {})
    for key, value in (("patience", patience), ("validation", validation)):
        if value is None:
            continue
        if model not in EARLY_STOPPING:
            raise UsageError(
                f"--{key} applies to {' and '.join(EARLY_STOPPING)} only "
                "(early stopping on a validation split)"
            )
        if key in out and out[key] != value:
            raise UsageError(f"{key} is given twice, as {out[key]!r} and {value!r}")
        out[key] = value
    return out


def _dealer(node: Node) -> str:
    from dataspace.services import space

    return space.dealer(node)


def _same_dataset(first: Any, other: Any) -> None:
    """Align jobs over different datasets of this node cannot be intersected: their row
    positions point into different files (firm A's features would meet firm B's label)."""
    if first is not None and other != first:
        raise UsageError(
            "the align jobs cover different datasets of this node; every align job of one "
            "training or prediction must run on the same dataset",
            hint="align each peer on the one dataset the model is for",
        )


def _aligned(node: Node, job_id: str, peer: str) -> tuple[str, np.ndarray]:
    view = multiparty.get_job(node, job_id)
    result = view.get("result") or {}
    params = view.get("params") or {}
    if view["state"] != jobs.SUCCEEDED or params.get("mode") != "align":
        raise UsageError(f"job {job_id} is not a succeeded PSI align job")
    if peer not in str(view.get("peer", "")).split(","):
        raise UsageError(f"align job {job_id} was not run with {peer}")
    kept = pq.read_table(node.data_dir / result["rows_file"]).sort_by("order")
    return str(params["dataset"]), kept.column("position").to_numpy()


MAX_CONTRIBUTION_PROVIDERS = 4  # as the API's limit on agreements


def start_train(
    node: Node,
    *,
    agreements: Sequence[str],
    peers: Sequence[str] | None = None,
    model: str = "vlr",
    label: str,
    features: dict[str, list[str]],
    align: Sequence[str] = (),
    on: str | None = None,
    peer_keys: dict[str, str] | None = None,
    dataset: str | None = None,
    params: dict[str, Any] | None = None,
    holdout: float = 0.25,
    seed: int = 0,
    patience: int | None = None,
    validation: float | None = None,
    contribution: bool = True,
    revenue_pool: str | None = None,
    job_id: str | None = None,
    actor: str | None = None,
    timeout: float = 30.0,
    idle_timeout: float = 60.0,
    attempt: int = 1,
    retry_of: str | None = None,
) -> TrainJob | FedJob:
    if model not in FAMILIES:
        raise UsageError(f"unknown model family {model!r}", hint="vlr, vgbdt, fedavg or vlinreg")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"the seed must be an integer in [0, 2^63 - 1], got {seed!r}")
    params = _early_params(model, params, patience, validation)
    pool = _revenue_pool(revenue_pool, model, contribution)
    providers = len(peers or ())
    if model != "fedavg" and contribution and providers > MAX_CONTRIBUTION_PROVIDERS:
        raise UsageError(f"contribution trains every coalition of providers (2^n jobs): at "
                         f"most {MAX_CONTRIBUTION_PROVIDERS} providers, not {providers}",
                         hint="train without contribution, or with fewer providers")
    if model == "fedavg":  # horizontal: every party its own rows, no alignment
        return fedavg_job.start(
            node,
            agreements=agreements,
            peers=peers,
            label=label,
            features=features,
            dataset=dataset,
            params=params,
            holdout=holdout,
            seed=seed,
            actor=actor,
            timeout=timeout,
            attempt=attempt,
            retry_of=retry_of,
            job_id=job_id,
        )
    if peer_keys and not on:
        raise UsageError("--peer-key names a provider's key column for --on",
                         hint="add --on KEY, or leave out --peer-key")
    links = multiparty._links(node, agreements, peers)
    align = list(align)
    if on and not align:
        if not dataset:
            raise UsageError("--on needs --dataset (your dataset to align)")
        multiparty.check_peer_keys(peer_keys, links, "--peer-key")
        for link in links:
            done = multiparty.run_psi(
                node,
                agreements=[link.agreement_id],
                peers=[link.peer],
                peer_keys={link.peer: peer_keys[link.peer]}
                if peer_keys and link.peer in peer_keys else None,
                dataset=dataset,
                key=on,
                mode="align",
                actor=actor,
            )
            align.append(done["id"])
    if len(align) != len(links):
        raise UsageError("give one --align JOB per --with PEER (or --on KEY)")
    own_ds, common = None, None
    per_peer = []
    for link, align_id in zip(links, align, strict=True):
        ds, positions = _aligned(node, align_id, link.peer)
        _same_dataset(own_ds, ds)
        own_ds = own_ds or ds
        per_peer.append(positions)
        common = positions if common is None else np.intersect1d(common, positions)
    assert common is not None and own_ds is not None
    common = np.sort(common)
    check_parties(features, [node.name, *[link.peer for link in links]])
    with node.store.read() as session:  # this node's own columns, before anyone is asked
        own_columns = jobs._dataset(node, session, own_ds).columns
    for party, columns in features.items():
        mine = party == node.name
        check_named(party, columns, own_columns if mine else None, label=label if mine else None)
    out_peers = []
    for link, align_id, positions in zip(links, align, per_peer, strict=True):
        where = {int(p): i for i, p in enumerate(positions)}
        cols = features.get(link.peer) or []
        if not cols:
            raise UsageError(f"name the features of {link.peer} (--features {link.peer}:c1,c2)")
        out_peers.append(
            Peer(link.peer, link.agreement_id, align_id, cols, [where[int(p)] for p in common])
        )
    own = features.get(node.name) or []
    if not own:
        raise UsageError(f"name this node's features (--features {node.name}:c1,c2)")
    parties = (node.name, *[p.name for p in out_peers])
    widths = {node.name: len(own), **{p.name: len(p.features) for p in out_peers}}
    spec = Spec(
        job_id="",
        family=model,
        parties=parties,
        widths=widths,
        columns={node.name: own, **{p.name: p.features for p in out_peers}},
        dealer=_dealer(node),
        rows=int(common.size),
        holdout=holdout,
        seed=seed,
        params=dict(params or {}),
        contribution=contribution,
        revenue_pool=pool,
    )
    if spec.dealer in parties:
        raise UsageError("the dealer must not be one of the data parties")
    if spec.rows < 20:
        raise UsageError(f"only {spec.rows} aligned rows: too few to train and evaluate")
    new_id = check_job_id(job_id) if job_id else uuid.uuid4().hex
    check_params(spec)
    spec = Spec(**{**spec.__dict__, "job_id": new_id})
    job = TrainJob(
        new_id,
        spec,
        out_peers,
        label,
        own_ds,
        own,
        [int(x) for x in common],
        actor or default_actor(),
        timeout,
        {},
        attempt,
        retry_of,
    )
    job.params = {
        "model": model,
        "label": label,
        "features": {k: list(v) for k, v in features.items()},
        "align": align,
        "params": dict(params or {}),
        "holdout": holdout,
        "seed": seed,
        "contribution": contribution,
        "revenue_pool": pool,
        "dataset": own_ds,
    }
    runs = len(coalitions(spec))
    mp_initiator.claim(
        node,
        new_id,
        action=ACTION,
        params=job.params,
        participants=[{"peer": p.name, "agreement_id": p.agreement_id} for p in out_peers],
        total=3 * (len(out_peers) + 1) + runs,
        dealer=spec.dealer,
        attempt=attempt,
        retry_of=retry_of,
        idle_timeout=idle_timeout,
        step_timeout=timeout,
    )
    return job


class _Runner(mp_initiator.Coordinator):
    def __init__(self, node: Node, job: TrainJob, progress: Progress | None) -> None:
        super().__init__(
            node, job.id, protocol=PROTOCOL, actor=job.actor, timeout=job.timeout, progress=progress
        )
        self.job = job

    def call(self, peer: str, name: str, **fields: Any) -> dict[str, Any]:
        return self.call_step(peer, name, **fields)[0]


def execute(
    node: Node, job: TrainJob | FedJob, *, progress: Progress | None = None
) -> dict[str, Any]:
    if isinstance(job, FedJob):
        return fedavg_job.execute(node, job, progress=progress)
    runner = _Runner(node, job, progress)
    spec = job.spec
    peers = [p.name for p in job.peers] + [spec.dealer]
    with mp_initiator.KeepAlive(node, job.id, peers, IDLE_SECONDS) as runner.alive:
        result = mp_initiator.run_or_fail(
            lambda: _run(runner), lambda exc: _fail_everywhere(node, job, exc), "training"
        )
    mp_initiator.complete(
        node,
        job.id,
        result,
        actor=job.actor,
        participants=[(p.name, p.agreement_id) for p in job.peers],
        dealer=spec.dealer,
    )
    return get_job(node, job.id)


def _run(r: _Runner) -> dict[str, Any]:
    node, job, spec = r.node, r.job, r.job.spec
    with node.store.read() as session:
        own = jobs._dataset(node, session, job.dataset)
    local = _own_local(node, own, job)
    nodes = [p.name for p in job.peers] + [spec.dealer]
    mailbox = Mailbox(node, job.id, node.name, node.name, nodes, timeout=job.timeout)
    by_peer = {p.name: p for p in job.peers}

    def open_(name: str) -> Any:
        p = by_peer.get(name)
        return r.call(
            name,
            "open",
            spec=spec.to_dict(),
            idle_timeout=IDLE_SECONDS,
            agreement_id=p.agreement_id if p else None,
            kind=ACTION,
            features=p.features if p else [],
            align=p.align if p else "",
            select=p.select if p else None,
        )

    each(nodes, open_)  # every provider checks its own agreement before any message
    each(nodes, lambda name: r.call(name, "start"))
    me = PartySession(job.id, node.name, ms.INITIATOR, spec, mailbox, None, local)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    outputs = []
    try:
        for index, coalition in enumerate(coalitions(spec)):
            start = time.perf_counter()
            outputs.append(run_schedule_one(me, index, coalition))
            r.record(
                ms.event(
                    node.name,
                    index + 1,
                    f"run {'+'.join(coalition)}",
                    seconds=round(time.perf_counter() - start, 3),
                ),
                None,
            )
    finally:
        mailbox.close()
    train_seconds = time.perf_counter() - t0
    finished = each(nodes, lambda name: r.call(name, "finish"))
    parts = {name: out.get("part_sha256") for name, out in zip(nodes, finished, strict=True)}
    # Metrics on the held-out rows: every coalition's model, and the label party alone.
    _, test = split_rows(spec.rows, spec.holdout, spec.seed)
    assert local.labels is not None
    y_test = local.labels[test]
    values: dict[frozenset[str], float] = {}
    regression = spec.family == train_linreg.FAMILY
    if regression:  # MAE / RMSE / R² per coalition; Shapley of minus the MAE
        scored, values, preds = train_linreg.evaluate(spec, local, coalitions(spec), outputs)
        scored["heldout_file"] = train_linreg.write_heldout(
            node.data_dir, job.id, np.asarray(job.own_positions), spec, local, preds
        )
    else:
        for coalition, out in zip(coalitions(spec), outputs, strict=True):
            values[frozenset(coalition[1:])] = auc(out["scores"], y_test)
        values[frozenset()] = _alone(spec, local)
        scored = {
            "auc": values[frozenset(spec.parties[1:])],
            "auc_label_party_only": values[frozenset()],
            "auc_by_coalition": {"+".join([spec.label, *sorted(k)]): v for k, v in values.items()},
        }
    metrics = {
        **scored,
        "held_out_rows": int(test.size),
        "train_rows": int(spec.rows - test.size),
        "train_seconds": round(train_seconds, 3),
        "bytes_exchanged_by_initiator": mailbox.bytes_out + mailbox.bytes_in,
        "requests_by_initiator": mailbox.requests,
    }
    first = outputs[0]
    metrics["seed"] = spec.seed
    if spec.family in EARLY_STOPPING:
        # the validation curve: vlr's Brier score, vlinreg's MSE of the standardised target
        cfg = (train_linreg.config if regression else vlr_config)(spec, spec.parties[:2])
        metrics.update(
            epochs_run=first.get("epochs_run"),
            best_epoch=first.get("best_epoch"),
            stopping=first.get("stopping"),
            **{
                "validation_mse" if regression else "validation_brier": [
                    round(float(v), 6) for v in first.get("validation") or []
                ]
            },
            validation_rows=round((spec.rows - test.size) * cfg.validation_fraction),
        )
        own_part = (train_linreg.part if regression else vlr_part)(first["model"])
    else:
        metrics.update(split_nodes_revealed=first.get("nodes_revealed"))
        own_part = dict(first["model"])
    contribution: dict[str, Any] = {}
    if spec.contribution:
        # every coalition was trained: the exact value is at hand for any number of providers
        shap = shapley_exact(list(spec.parties[1:]),
                             lambda s: values[frozenset(str(x) for x in s)])
        contribution = {
            "method": shap.method,
            "metric": "-mae" if regression else "auc",  # -mae: MAE reduction, target units
            "values": shap.values,
            "base": values[frozenset()],
            "coalitions": len(values),
        }
        if spec.revenue_pool is not None:
            contribution["revenue"] = revenue_shares(
                spec.revenue_pool, {str(k): v for k, v in shap.values.items()})
    parts[node.name] = model_store.stage(
        node,
        model_id=job.id,
        family=spec.family,
        role=ms.INITIATOR,
        initiator=node.name,
        part=own_part,
        info={"params": spec.to_dict()},
    )
    holders = {
        name: {"sha256": digest, "holds": _holds(spec, name)} for name, digest in parts.items()
    }
    info = {
        "parts": holders,
        "metrics": metrics,
        "contribution": contribution,
        "params": spec.to_dict(),
    }
    # Every other node commits first; this (the label party's) part becomes final only after
    # all did. A commit that fails fails the job, and the abort makes the nodes that committed
    # revoke their parts (mp_party._unwind_commit): no node of a failed job holds a model.
    each(nodes, lambda name: r.call(name, "commit", model=jsonable(info)))
    model_store.finalize(node, job.id, info, actor=job.actor)
    return {
        "model_id": job.id,
        "family": spec.family,
        "metrics": metrics,
        "contribution": contribution,
        "parts": holders,
    }


def run_schedule_one(s: PartySession, index: int, coalition: tuple[str, ...]) -> dict[str, Any]:
    from dataspace.services.train_roles import sgb_run, vlr_run

    run = vlr_run if s.spec.family == "vlr" else sgb_run
    if s.spec.family == train_linreg.FAMILY:
        run = train_linreg.run
    out = run(s.mailbox, s.spec, index, coalition, s.local)
    s.mailbox.flush()
    return out


def _holds(spec: Spec, name: str) -> str:
    if name == spec.dealer:
        return "nothing (dealer: randomness only)"
    if spec.family in ("vlr", train_linreg.FAMILY):
        extra = " and the intercept" if name == spec.label else ""
        if spec.family == train_linreg.FAMILY and name == spec.label:
            extra = ", the intercept and the target scaling"
        return f"weights of its {spec.widths[name]} columns, its scaler{extra}"
    if name == spec.label:
        return "the trees (owners, record ids, leaf values) and its own split thresholds"
    return "the thresholds of its own splits (split book)"


def _alone(spec: Spec, local: Local) -> float:
    """The label party's model on its own columns, trained at home (the contribution base)."""
    assert local.block is not None and local.labels is not None
    fit, test = split_rows(spec.rows, spec.holdout, spec.seed)
    if spec.family == "vlr":
        config = vlr_config(spec, (spec.label, spec.label))
        w, b, _ = train_plain([local.block[fit]], local.labels[fit], config)
        from dataspace.federated.baseline import prepare
        from dataspace.federated.plan import make_plan

        plan = make_plan(fit.size, config)
        _, scalers = prepare([local.block[fit]], plan, config.clip)
        return auc(scalers[0].transform(local.block[test]) @ w + b, local.labels[test])
    boost = sgb.SecureBoost(sgb_params(spec), allow_secureboost_leakage=True)
    model = boost.fit([vlr.PartyData(spec.label, local.block[fit], local.labels[fit])])
    return auc(sgb.predict(model, {spec.label: local.block[test]}), local.labels[test])


def _own_local(node: Node, dataset: Any, job: TrainJob) -> Local:
    table = pq.read_table(dataset.path, columns=[*job.own_features, job.label])
    table = table.take(np.asarray(job.own_positions, dtype=np.int64))
    block = numeric_block(table, job.own_features)
    labels = numeric_column(table, job.label)
    # Everything about this node's own data is checked before any provider is asked: found
    # later, the job would fail after the providers ran it (and counted it).
    bad = [c for i, c in enumerate(job.own_features) if not np.isfinite(block[:, i]).all()]
    if bad:
        raise UsageError(f"column(s) {', '.join(bad)} have missing or infinite values in the "
                         "aligned rows")
    if job.spec.family == train_linreg.FAMILY:
        if not np.isfinite(labels).all():
            raise UsageError(f"the target column {job.label} has missing or infinite values")
        return Local(block, labels)
    if not np.isin(labels, (0.0, 1.0)).all():
        found = np.unique(labels[~np.isin(labels, (0.0, 1.0))])
        shown = ", ".join(f"{v:g}" for v in found[:5]) + (" …" if found.size > 5 else "")
        raise UsageError(
            f"the label column {job.label} must hold 0 and 1 only; it also holds {shown}",
            hint="a classifier (vlr, vgbdt) needs a 0/1 label: recode it, or train a "
            "continuous target with --model vlinreg",
        )
    fit, test = split_rows(job.spec.rows, job.spec.holdout, job.spec.seed)
    for rows, what in ((fit, "training"), (test, "held-out")):
        if np.unique(labels[rows]).size < 2:
            raise UsageError(f"the {what} rows hold one class of {job.label} only: AUC and "
                             "the model need both", hint="align more rows or change --seed")
    return Local(block, labels)


def _fail_everywhere(node: Node, job: TrainJob, exc: DataspaceError) -> None:
    peers = [p.name for p in job.peers] + [job.spec.dealer]
    mp_initiator.fail_everywhere(node, job.id, exc, actor=job.actor, peers=peers)


# --- one call, background, retry, views ------------------------------------------------------


def run_train(node: Node, *, progress: Progress | None = None, **kw: Any) -> dict[str, Any]:
    return execute(node, start_train(node, **kw), progress=progress)


def start_background(node: Node, job: TrainJob | FedJob) -> dict[str, Any]:
    if isinstance(job, FedJob):
        return fedavg_job.start_background(node, job)

    mp_initiator.in_background(f"train-{job.id[:12]}", lambda: execute(node, job))
    return get_job(node, job.id)


def get_job(node: Node, job_id: str) -> dict[str, Any]:
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        if row is None or row.action != ACTION:
            raise NotFound(f"no training job {job_id!r}", hint="see `dataspace job list`")
        return ms.view(row)


def is_training_job(node: Node, job_id: str) -> bool:
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        return row is not None and row.action == ACTION


def retry(
    node: Node,
    job_id: str,
    *,
    actor: str | None = None,
    progress: Progress | None = None,
    background: bool = False,
) -> dict[str, Any]:
    view = get_job(node, job_id)
    if view["role"] != ms.INITIATOR:
        raise NotFound(f"no training job {job_id!r} started by this node")
    mp_initiator.check_retryable(job_id, view["state"])
    job = mp_initiator.start_retry(node, job_id, lambda: _start_again(node, job_id, view, actor))
    if background:
        return start_background(node, job)
    return execute(node, job, progress=progress)


def _start_again(
    node: Node, job_id: str, view: dict[str, Any], actor: str | None
) -> TrainJob | FedJob:
    """The new attempt of a failed training, claimed (not yet run); pending aborts told first."""
    mp_initiator.deliver_pending_aborts(node, job_id, view)
    ms.set_meta(node, job_id, pending_aborts=[])  # told or not, the retry starts afresh
    p = dict(view["params"] or {})
    parts = view.get("participants") or []
    return start_train(
        node,
        agreements=[str(x["agreement_id"]) for x in parts],
        peers=[str(x["peer"]) for x in parts],
        model=p["model"],
        label=p["label"],
        features=p["features"],
        align=p.get("align") or (),
        dataset=p.get("dataset"),
        params=p.get("params"),
        holdout=float(p.get("holdout", 0.25)),
        seed=int(p.get("seed", 0)),
        contribution=bool(p.get("contribution", True)),
        revenue_pool=p.get("revenue_pool"),
        actor=actor,
        attempt=int(view.get("attempt") or 1) + 1,
        retry_of=job_id,
    )


def _revenue_pool(pool: str | None, model: str, contribution: bool) -> str | None:
    """A revenue pool in its canonical form (``"3000.00 CNY"``), or None."""
    if pool is None:
        return None
    if model == "fedavg" or not contribution:
        raise UsageError("a revenue pool is split by contribution: it needs a vertical model "
                         "(vlr, vgbdt, vlinreg) with contribution on")
    return str(revenue.parse_pool(pool))


def revenue_shares(pool: str, values: Mapping[str, float]) -> dict[str, Any]:
    """Each provider's part of ``pool`` by its contribution (:func:`revenue.split`); every
    node computes the same from the same values."""
    price = revenue.parse_pool(pool)
    shares = revenue.split(price.amount, {str(k): _number(v) for k, v in values.items()},
                           minor_unit(price.currency))  # fmt: skip
    return {"pool": pool, "currency": price.currency,
            "shares": {name: str(amount) for name, amount in shares.items()}}


def _number(value: Any) -> float:
    """A contribution value as committed: a number, or its decimal string (the wire's form)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"contribution value {value!r} is not a number")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise UsageError(f"contribution value {value!r} is not a number in range") from None


def check_family(family: str) -> str:
    """The ``output`` a family needs from every provider's policy (see docs/training.md)."""
    return output_for(family)


def list_jobs(node: Node, *, state: str | None = None) -> list[dict[str, Any]]:
    from sqlalchemy import select

    stmt = select(JobRow).where(JobRow.action == ACTION).order_by(JobRow.created_at.desc())
    if state:
        stmt = stmt.where(JobRow.state == state.upper())
    with node.store.read() as session:
        return [ms.view(r) for r in session.scalars(stmt)]
