"""Horizontal FedAvg across nodes: every party trains on its own rows, the initiator
coordinates, each round's updates are combined by secure aggregation (signed steps).

Steps (frames with ``"protocol": "fedavg"`` on ``POST /peer/v1/mp/step``, initiator → provider):

* ``open`` — the provider checks **its own** agreement (action ``federated-train``, purpose,
  ``fields`` = its feature columns and label, ``output = aggregate-only``), loads its rows,
  splits off its held-out rows and answers with its number of training rows (public);
* ``round#k`` — θ and a fresh secure-aggregation session: the provider trains
  ``local_epochs`` from θ, scales (n_k/N) or clips (DP) its update and answers with its
  secagg start message; ``agg#…`` steps carry the coordinator's secagg rounds;
* ``eval`` — the final θ: the provider answers its own held-out metrics (loss, AUC, rows and
  the AUC of a model trained on its rows alone) and enters a secagg session over its score
  histograms, so the initiator learns the overall AUC without any node's scores;
* ``commit`` — the model is recorded (``model.trained``), usage metered, ``job.completed``.

A provider that fails, or the initiator's ``abort``, ends the job FAILED; nothing is recorded
as a model before ``commit``. docs/training.md has the figures.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dataspace.errors import DataspaceError, UsageError
from dataspace.federated.fedavg import (
    Client,
    DpFedAvg,
    FedAvgConfig,
    dp_epsilon,
    evaluate,
    local_train,
    noise_share,
)
from dataspace.federated.hfl_models import Model
from dataspace.privacy.secagg import FixedPoint, SessionConfig, aggregator, ed25519_verifier
from dataspace.privacy.secagg.errors import AdvertisementRejected
from dataspace.services import jobs, mp_initiator, mp_party, mp_protocols, multiparty
from dataspace.services import models as model_store
from dataspace.services import mp_store as ms
from dataspace.services.job_wire import check_job_id, jsonable
from dataspace.services.mp_initiator import Progress, each
from dataspace.services.mp_keys import party_keys, party_names
from dataspace.services.mp_wire import MultipartyFailed, pack_frame
from dataspace.services.node import Node, default_actor
from dataspace.services.train_columns import (
    check_named,
    check_parties,
    numeric_block,
    numeric_column,
)
from dataspace.store.models_compute import JobRow

PROTOCOL = "fedavg"
ACTION = ms.TRAIN
FAMILY = "fedavg"
BINS = 256  # score histogram resolution for the overall AUC
MAX_HOLDOUT = 0.5  # a provider keeps at least half its rows for training
#: The job parameter saying whether the initiator adds an update of its own data to each round.
INITIATOR_TRAINS = "initiator_trains"
CONFIG_KEYS = ("rounds", "local_epochs", "batch_size", "learning_rate", "l2", "update_bound")


# --- shared: the data a party holds -----------------------------------------------------------


def parse_labels(label: str, parties: Sequence[str]) -> dict[str, str]:
    """``y`` (same name everywhere) or ``bank:y p2:target`` → {party: label column}."""
    if ":" not in label:
        return dict.fromkeys(parties, label)
    out = {}
    for item in label.split():
        party, _, col = item.partition(":")
        out[party] = col
    missing = [p for p in parties if p not in out]
    if missing:
        raise UsageError(f"name the label column of {', '.join(missing)} (--label PARTY:col)")
    return out


def load_rows(
    dataset: Any, features: list[str], label: str, holdout: float, column: str | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, x_test, y_test) of a dataset: held-out rows by ``column`` (truthy) or a seeded
    fraction ``holdout``."""
    names = [*features, label] + ([column] if column else [])
    have = set(pq.read_schema(dataset.path).names)
    missing = [n for n in names if n not in have]
    if missing:  # name only what is missing: the error may travel to another node
        raise UsageError(f"dataset {dataset.name} has no column {', '.join(missing)}")
    table = pq.read_table(dataset.path, columns=names)
    for name in names:
        if table.column(name).null_count:
            raise UsageError(f"column {name} has missing values")
    x = numeric_block(table, features)
    y = numeric_column(table, label)
    if column:
        test = table.column(column).to_numpy().astype(bool)
    else:
        test = np.zeros(y.size, dtype=bool)
        order = np.random.default_rng(seed).permutation(y.size)
        test[order[: round(holdout * y.size)]] = True
    if test.all() or not test.any():
        raise UsageError("the held-out split must leave rows on both sides")
    return x[~test], y[~test], x[test], y[test]


MAX_HIDDEN = 1024  # an MLP's hidden units: the model's size is dim × hidden + 2 × hidden + 1


def model_of(p: dict[str, Any], dim: int) -> Model:
    hidden = p.get("hidden", 8)
    if isinstance(hidden, str) and hidden.isascii() and hidden.isdigit():
        hidden = int(hidden)  # parameters may come back from the store as text
    if not isinstance(hidden, int) or isinstance(hidden, bool) or not 1 <= hidden <= MAX_HIDDEN:
        raise UsageError(f"hidden must be a whole number of units from 1 to {MAX_HIDDEN}, "
                         f"not {hidden!r}")
    return Model(str(p.get("model", "logistic")), dim, hidden)


CONFIG_TYPES: dict[str, type] = {
    "rounds": int,
    "local_epochs": int,
    "batch_size": int,
    "learning_rate": float,
    "l2": float,
    "update_bound": float,
}


def _charge_epsilon(node: Node, ps: Any, decision: Any, config: FedAvgConfig,
                    epsilon: float | None) -> None:
    """Charge a DP job's ε (and δ, where the agreement budgets it) to this node's agreement
    budget at open, before any round: every round's θ is noised by that budget."""
    enforcement = decision.enforcement
    if epsilon is None or enforcement is None or enforcement.epsilon_budget is None:
        return
    from dataspace.privacy.budget import ensure_budget, reserve

    assert config.dp is not None
    delta = config.dp.delta if enforcement.delta_budget is not None else 0
    ensure_budget(node.store, ps.agreement_id, str(enforcement.epsilon_budget),
                  str(enforcement.delta_budget or 0))
    reserve(node.store, ps.agreement_id, str(epsilon), str(delta), ps.job_id)
    ps.epsilon = Decimal(str(epsilon))


def _reads_another(contributors: int, config: FedAvgConfig) -> bool:
    """Every provider sees each step of the model: without noise and with fewer than three
    contributors, one subtracts its own update from the step and reads the other's."""
    return config.dp is None and contributors < 3


def config_of(p: dict[str, Any]) -> FedAvgConfig:
    """The training configuration from job parameters. Parameters cross nodes as JSON (and
    decimals as strings, as the ledger keeps them), so each is converted to its type here."""
    try:
        dp = p.get("dp")
        dpc = DpFedAvg(**{k: float(v) for k, v in dict(dp).items()}) if dp else None
        kw = {k: CONFIG_TYPES[k](p[k]) for k in CONFIG_KEYS if k in p}
        config = FedAvgConfig(**kw, dp=dpc, seed=int(p.get("seed", 0)))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid FedAvg parameter: {exc}", hint="numbers only") from None
    if dpc is not None:
        # no noise is no privacy: sigma = z * C must be positive, delta a probability
        if not (math.isfinite(dpc.clip) and dpc.clip > 0
                and math.isfinite(dpc.noise_multiplier) and dpc.noise_multiplier > 0
                and 0 < dpc.delta < 1):
            raise UsageError("DP-FedAvg needs clip > 0, noise_multiplier > 0 and 0 < delta < 1",
                             hint="e.g. dp = {clip: 0.5, noise_multiplier: 5, delta: 1e-5}")
        epsilon_of(config)
    return config


def epsilon_of(config: FedAvgConfig) -> float | None:
    """The ε the job's DP-FedAvg states (at its δ, over its rounds), None without DP; a clear
    error when the accounting cannot state one (noise too small for any finite ε)."""
    if config.dp is None:
        return None
    try:
        eps = dp_epsilon(config.dp, config.rounds)
    except Exception as exc:  # OpenDP raises its own type on overflow
        raise UsageError(f"DP-FedAvg's ε cannot be stated for these parameters ({exc})",
                         hint="raise noise_multiplier or lower the rounds") from None
    if not math.isfinite(eps):
        raise UsageError("DP-FedAvg's ε is unbounded for these parameters",
                         hint="raise noise_multiplier or delta")
    return eps


def local_update(
    model: Model, theta: np.ndarray, c: Client, config: FedAvgConfig, rng: Any, total: int
) -> np.ndarray:
    delta = local_train(model, theta, c.x, c.y, config, rng) - theta
    if config.dp:
        delta = delta * min(1.0, config.dp.clip / max(float(np.linalg.norm(delta)), 1e-12))
    else:
        delta = delta * (c.y.shape[0] / total)
    bound = config.dp.clip if config.dp else config.update_bound
    return np.asarray(np.clip(delta, -bound, bound), dtype=np.float64)


def node_metrics(
    model: Model, theta: np.ndarray, c: Client, config: FedAvgConfig
) -> dict[str, Any]:
    """This party's held-out metrics, and those of a model trained on its rows alone."""
    own = evaluate(model, theta, [c]).per_client[c.name]
    alone = local_train(
        model,
        model.init(config.seed),
        c.x,
        c.y,
        config,
        np.random.default_rng(config.seed),
        epochs=config.rounds * config.local_epochs,
    )
    solo = evaluate(model, alone, [c]).per_client[c.name]
    return {
        **{k: float(v) for k, v in own.items()},
        **{f"{k}_local": float(v) for k, v in solo.items()},
        "test_rows": int(c.y_test.size),
        "train_rows": int(c.y.size),
    }


def histogram(model: Model, theta: np.ndarray, c: Client) -> np.ndarray:
    """[positives per score bin, negatives per bin, loss sum, rows] — summed across parties."""
    out = model.output(theta, c.x_test)
    loss = model.loss(theta, c.x_test, c.y_test) * c.y_test.size
    if model.kind == "linear":
        return np.asarray(np.r_[np.zeros(2 * BINS), loss, c.y_test.size], dtype=np.float64)
    b = np.clip((np.asarray(out) * BINS).astype(int), 0, BINS - 1)
    pos = np.bincount(b[c.y_test == 1], minlength=BINS)
    neg = np.bincount(b[c.y_test == 0], minlength=BINS)
    return np.asarray(np.r_[pos, neg, loss, c.y_test.size], dtype=np.float64)


def overall(h: np.ndarray) -> dict[str, float]:
    pos, neg = h[:BINS], h[BINS : 2 * BINS]
    out = {"loss": float(h[-2] / max(h[-1], 1.0)), "test_rows": float(round(h[-1]))}
    if pos.sum() > 0 and neg.sum() > 0:
        below = np.r_[0.0, np.cumsum(neg)[:-1]]
        out["auc"] = float(((below + 0.5 * neg) * pos).sum() / (pos.sum() * neg.sum()))
    return out


def secagg_config(
    session: str, parties: Sequence[int], length: int, bound: float, bits: int
) -> SessionConfig:
    return SessionConfig(
        bytes.fromhex(session),
        tuple(int(p) for p in parties),
        length,
        FixedPoint(float(bound), int(bits), max_count=len(parties) + 1),
        threshold=len(parties),
    )


# --- provider side ----------------------------------------------------------------------------


@dataclass
class _Party:
    job_id: str
    initiator: str
    params: dict[str, Any]
    client: Client
    ps: mp_party._Session
    agg: Any = None
    cache: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_seen: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None  # the one answering a step: not idle meanwhile


_PARTIES: dict[str, _Party] = {}
_REG = threading.Lock()
mp_protocols.register_sessions(_PARTIES, _REG)
IDLE_SECONDS = 120.0  # a provider ends a job whose initiator sent nothing for this long


def handle(
    node: Node, caller: str, header: dict[str, Any], blobs: list[bytes], body: bytes
) -> bytes:
    job_id = check_job_id(str(header.get("job_id", "")))
    name = str(header.get("name", ""))
    digest = hashlib.sha256(body).hexdigest()
    with _REG:
        s = _PARTIES.get(job_id)
    if name == "open" and s is None:
        return _open(node, caller, job_id, header, digest)
    if s is None and (again := mp_party.ended_answer(job_id, caller, digest)) is not None:
        return again  # the job's last step (commit), sent again after its answer was lost
    if s is None or s.initiator != caller:
        raise MultipartyFailed(
            f"{node.name} holds no running FedAvg job {job_id} (it ended, or the node restarted)",
            hint="the initiator starts a new attempt with `dataspace job retry`",
            cause="session-lost",
        )

    def answer() -> bytes:
        s.thread, s.last_seen = threading.current_thread(), time.monotonic()
        try:
            return answer_step()
        finally:
            s.thread, s.last_seen = None, time.monotonic()

    def answer_step() -> bytes:
        if not mp_party._running(node, job_id):
            with _REG:
                _PARTIES.pop(job_id, None)
            raise MultipartyFailed(f"the job ended on {node.name}", cause="aborted")
        t0 = time.process_time()
        try:
            out = _step(node, s, name, header, blobs)
        except DataspaceError as exc:
            _end(node, s, exc)
            raise
        except Exception as exc:
            err = MultipartyFailed(f"FedAvg failed on {node.name} ({type(exc).__name__}: {exc})")
            _end(node, s, err)
            raise err from exc
        finally:
            s.ps.cpu += time.process_time() - t0
        s.ps.bytes_out += len(out)
        return out

    return mp_party.answer_keeping_the_last(
        s, job_id, name, digest, caller, answer, _PARTIES, _REG
    )


def _end(node: Node, s: _Party, exc: DataspaceError) -> None:
    with _REG:
        _PARTIES.pop(s.job_id, None)
    mp_party._end_error(node, s.ps, exc, step=1, name="train")


def _open(node: Node, caller: str, job_id: str, header: dict[str, Any], digest: str) -> bytes:
    mp_party.check_new(node, job_id)
    params = dict(header.get("params") or {})
    mp_party.claim(
        node,
        job_id,
        caller,
        header,
        action=ACTION,
        request={"mp": {"model": FAMILY, **params}, "idle_timeout": IDLE_SECONDS},
    )
    ps = mp_party._Session(job_id, caller, ACTION, IDLE_SECONDS)
    features = [str(c) for c in header.get("features") or []]
    label = str(header.get("label") or "")
    column = params.get("holdout_column")
    try:
        config = config_of(params)
        epsilon = epsilon_of(config)
        fields = [*features, label] + ([str(column)] if column else [])
        delta = config.dp.delta if config.dp else None
        if delta is not None and delta > float(node.limits.dp_train_max_delta):
            # the initiator states δ and is charged OpenDP's ε at it: a large δ is a small ε
            # and next to no privacy (δ = 0.5 charges a ninth of the ε at 1e-5)
            raise UsageError(f"DP-FedAvg's delta {delta:g} is above {node.name}'s limit "
                             f"{float(node.limits.dp_train_max_delta):g}",
                             hint="state a smaller delta (and pay the larger epsilon)")
        dataset, decision = mp_party._check(node, ps, header, fields, "aggregate-only", epsilon,
                                            delta)
        if ps.terms is not None and ps.terms.contribution_share:
            raise UsageError(f"{node.name}'s offer is priced by its share of a revenue pool, "
                             "which FedAvg does not measure", hint="train a vertical model")
        x, y, xt, yt = load_rows(
            dataset,
            features,
            label,
            float(params.get("holdout", 0.25)),
            column,
            int(params.get("seed", 0)),
        )
        ps.rows_scanned = int(y.size + yt.size)
        floor = mp_party.least_rows(node, decision)
        if not 0.0 <= float(params.get("holdout", 0.25)) <= MAX_HOLDOUT or y.size < floor:
            # an update over a handful of rows is those rows (one row's gradient is the row)
            raise UsageError(f"a FedAvg job must train on at least {floor} of this node's rows "
                             f"with a holdout of at most {MAX_HOLDOUT}; it asked for "
                             f"{y.size} training rows, holdout {params.get('holdout', 0.25)}")
        if x.shape[1] != int(params["dim"]):
            raise UsageError("the job's number of feature columns does not match this node's")
        model_of(params, x.shape[1])
        # last: every check of this node passed, so ε is spent only on a job that runs here
        # (it stays spent if the job fails at another node later: θ may have gone out)
        _charge_epsilon(node, ps, decision, config, epsilon)
    except DataspaceError as exc:
        mp_party._end_error(node, ps, exc, step=0, name="open")
        raise
    except Exception as exc:  # a bug: the admitted job must not stay RUNNING
        err = MultipartyFailed(f"step open failed on {node.name} ({type(exc).__name__})")
        mp_party._end_error(node, ps, err, step=0, name="open")
        raise err from exc
    s = _Party(job_id, caller, params, Client(node.name, x, y, xt, yt), ps)
    ev = ms.event(node.name, 0, "open", request_sha256=digest, rows=int(y.size))
    ms.add_events(node, job_id, [ev], actor=f"peer:{caller}")
    answer = pack_frame({"job_id": job_id, "event": ev, "train_rows": int(y.size)})
    s.cache["open"] = (digest, answer)
    with _REG:
        _PARTIES[job_id] = s
    mp_party.watch_quiet(node, s, _PARTIES, _REG, "FedAvg")
    return answer


def _step(node: Node, s: _Party, name: str, header: dict[str, Any], blobs: list[bytes]) -> bytes:
    p = s.params
    model, config = model_of(p, int(p["dim"])), config_of(p)
    job_id = s.job_id
    if name.startswith("round#") or name == "eval":
        theta = np.frombuffer(blobs[0], dtype=np.float64).copy()
        extra: dict[str, Any] = {}
        if name == "eval":
            values = histogram(model, theta, s.client)
            extra["metrics"] = node_metrics(model, theta, s.client, config)
        else:
            k = int(name.partition("#")[2])
            if not 1 <= k <= config.rounds:
                raise UsageError(f"round {k} is outside the job's {config.rounds} rounds")
            rng = np.random.default_rng([config.seed, int(header["index"]), k])
            values = local_update(model, theta, s.client, config, rng, int(header["total"]))
        parties = {int(i) for i in header["parties"]}
        if len(parties) < 2 or int(header["index"]) not in parties:
            # alone in a sum, this node's update (or histogram) would reach the initiator as is
            raise UsageError("a FedAvg round must aggregate this node with at least one other")
        contributors = len(parties) + (p.get(INITIATOR_TRAINS) is True)
        if name != "eval" and _reads_another(contributors, config):
            raise UsageError("without DP a FedAvg round needs three contributors: with two, "
                             "the other provider reads this node's update from the next model")
        # The initiator sends the bound. Refusing a value beyond it would answer "is your
        # largest update above B?" -- a bisection over jobs reads it; clipping answers nothing.
        bound = float(header["bound"])
        if not math.isfinite(bound) or bound <= 0:
            raise UsageError(f"the round's bound {header['bound']!r} is not a positive number")
        values = np.clip(values, -bound, bound)
        if config.dp and name != "eval":
            share = noise_share(config.dp, len(parties))
            values = share.apply(values)
            bound = share.encoded_bound
        cfg = secagg_config(
            str(header["session"]), header["parties"], values.size, bound, header["bits"]
        )
        # who the other parties are, from this node's membership list: the initiator may not
        # play one of them (a sum with a phantom party is this node's update)
        index = int(header["index"])
        names = party_names(header.get("members"), cfg.parties)
        if names.get(index) != node.name:
            raise AdvertisementRejected(f"the job names {names.get(index)!r}, not {node.name}, "
                                        f"as party {index}")
        if s.initiator in names.values():
            raise AdvertisementRejected(f"the coordinator {s.initiator} lists itself as a party")
        s.agg = aggregator(str(p.get("secagg", "pairwise-masking"))).party(
            cfg, index, values, count=1, signer=node.signer.sign,
            verifier=ed25519_verifier(party_keys(node, names), names),
        )
        return pack_frame({"job_id": job_id, **extra}, [s.agg.start()])
    if name.startswith("agg#"):
        if s.agg is None or len(blobs) != 1:
            raise UsageError("a secure-aggregation round carries exactly one message")
        return pack_frame({"job_id": job_id}, [s.agg.handle(blobs[0])])
    if name == "commit":
        return _commit(node, s, header, blobs)
    raise UsageError(f"unknown FedAvg step {name!r}")


def _commit(node: Node, s: _Party, header: dict[str, Any], blobs: list[bytes]) -> bytes:
    info = dict(header.get("model") or {})
    info.pop("part", None)
    if len(blobs) != 1:
        raise UsageError("the commit step carries the model's parameters")
    theta = np.frombuffer(blobs[0], dtype=np.float64)
    part = {**dict(header.get("shape") or {}), "theta": theta.tolist()}
    model_store.stage(
        node,
        model_id=s.job_id,
        family=FAMILY,
        role=ms.PARTICIPANT,
        initiator=s.initiator,
        part=part,
        info={"params": s.params},
    )
    ended_here_first = mp_party.complete(
        node,
        s.ps,
        {"model_id": s.job_id, "role": ms.PARTICIPANT},
        mp_party._usage(s.ps, "completed", int(s.client.y.size)),
        {"model_id": s.job_id},
        # the part becomes final with the job's metering, or not at all
        also=lambda db: model_store.finalize_in(db, s.job_id, info, actor=f"peer:{s.initiator}"),
    )
    if not ended_here_first:  # aborted or timed out meanwhile: no model, no "done"
        model_store.discard_staged(node, s.job_id)  # θ was written to stage it: remove it
        raise MultipartyFailed(f"job {s.job_id} had already ended on {node.name}; nothing was "
                               "committed", node=node.name)
    with _REG:
        _PARTIES.pop(s.job_id, None)
    ev = ms.event(node.name, 2, "commit")
    ms.add_events(node, s.job_id, [ev], actor=f"peer:{s.initiator}")
    return pack_frame({"job_id": s.job_id, "event": ev})


mp_protocols.register(PROTOCOL, handle)


# --- initiator side ---------------------------------------------------------------------------


@dataclass
class FedJob:
    id: str
    peers: list[dict[str, Any]]  # name, agreement_id, features, label
    params: dict[str, Any]
    own: Client | None
    actor: str
    timeout: float


def start(
    node: Node,
    *,
    agreements: Sequence[str],
    peers: Sequence[str] | None = None,
    label: str,
    features: dict[str, list[str]],
    dataset: str | None = None,
    params: dict[str, Any] | None = None,
    holdout: float = 0.25,
    seed: int = 0,
    actor: str | None = None,
    timeout: float = 30.0,
    attempt: int = 1,
    retry_of: str | None = None,
    job_id: str | None = None,
) -> FedJob:
    providers = len(peers or ())
    if providers >= 2 and _reads_another(providers + bool(dataset), config_of(dict(params or {}))):
        raise UsageError(
            "without DP, FedAvg needs three contributors: with two providers and no data of "
            "this node's, each provider could read the other's update from the next model",
            hint="add a provider, train on this node's data too (--dataset), or use DP-FedAvg",
        )
    links = multiparty._links(node, agreements, peers)
    names = [lk.peer for lk in links] + ([node.name] if dataset else [])
    labels = parse_labels(label, names)
    check_parties(features, [node.name, *[lk.peer for lk in links]])
    for party, columns in features.items():
        check_named(party, columns, label=labels.get(party))
    p = {**dict(params or {}), "holdout": holdout, "seed": seed}
    for lk in links:
        if not features.get(lk.peer):
            raise UsageError(f"name the features of {lk.peer} (--features {lk.peer}:c1,c2)")
    dims = {len(features[n]) for n in names if features.get(n)}
    if dataset and not features.get(node.name):
        raise UsageError(f"name this node's features (--features {node.name}:c1,c2)")
    if len(dims) != 1:
        raise UsageError("every party needs the same number of feature columns (same schema)")
    p["dim"] = dims.pop()
    model_of(p, p["dim"])
    config = config_of(p)
    if len(links) < 2:
        # each provider refuses a sum whose only other contributor is the initiator (the
        # initiator would subtract its own update): two providers at least, whatever it holds
        raise UsageError("FedAvg needs at least two providers besides the initiator")
    p[INITIATOR_TRAINS] = bool(dataset)
    own = None
    if dataset:
        with node.store.read() as session:
            ds = jobs._dataset(node, session, dataset, mine=True)
        x, y, xt, yt = load_rows(
            ds, features[node.name], labels[node.name], holdout, p.get("holdout_column"), seed
        )
        own = Client(node.name, x, y, xt, yt)
    job_id = check_job_id(job_id) if job_id else uuid.uuid4().hex
    fed_peers = [
        {
            "peer": lk.peer,
            "agreement_id": lk.agreement_id,
            "features": features[lk.peer],
            "label": labels[lk.peer],
        }
        for lk in links
    ]
    job_params = {
        "model": FAMILY,
        "label": label,
        "features": {k: list(v) for k, v in features.items()},
        "params": dict(params or {}),
        "holdout": holdout,
        "seed": seed,
        "dataset": dataset,
        "align": [],
    }
    mp_initiator.claim(
        node,
        job_id,
        action=ACTION,
        params=job_params,
        participants=[{"peer": lk.peer, "agreement_id": lk.agreement_id} for lk in links],
        total=config.rounds + 3,
        attempt=attempt,
        retry_of=retry_of,
        step_timeout=timeout,
    )
    return FedJob(job_id, fed_peers, p, own, actor or default_actor(), timeout)


class _Run(mp_initiator.Coordinator):
    def __init__(self, node: Node, job: FedJob, progress: Progress | None) -> None:
        super().__init__(
            node, job.id, protocol=PROTOCOL, actor=job.actor, timeout=job.timeout, progress=progress
        )
        self.job = job

    def call(
        self, peer: str, name: str, blobs: Sequence[bytes] = (), **fields: Any
    ) -> tuple[dict[str, Any], list[bytes]]:
        """A step at ``peer``; a failure's message names the peer."""
        try:
            return self.call_step(peer, name, blobs, **fields)
        except DataspaceError as exc:
            if peer not in exc.message:
                exc.message = f"{peer}: {exc.message}"
            raise

    def each(self, call: Callable[[int, dict[str, Any]], Any]) -> list[Any]:
        """``call(index, peer)`` for every provider (indexes from 1), in parallel."""
        return each(list(enumerate(self.job.peers, start=1)), lambda ip: call(*ip))

    def secagg(
        self, name: str, theta: np.ndarray, bound: float, bits: int, *,
        wide: float | None = None, **fields: Any,
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """One secure aggregation over the providers' answers to step ``name``; ``wide`` is
        the encoding bound of noised updates (each provider derives the same from ``bound``)."""
        parties = list(range(1, len(self.job.peers) + 1))
        session = secrets.token_hex(16)
        length = (
            model_of(self.job.params, self.job.params["dim"]).size
            if name != "eval"
            else 2 * BINS + 2
        )
        cfg = secagg_config(session, parties, length, wide if wide is not None else bound, bits)
        coordinator = aggregator(
            str(self.job.params.get("secagg", "pairwise-masking"))
        ).coordinator(cfg)
        members = [[i, p["peer"]] for i, p in enumerate(self.job.peers, start=1)]
        opened = self.each(
            lambda i, p: self.call(
                p["peer"],
                name,
                [theta.tobytes()],
                session=session,
                parties=parties,
                members=members,
                index=i,
                bound=bound,
                bits=bits,
                **fields,
            )
        )
        for _, blobs in opened:
            coordinator.receive(blobs[0])
        k = 0
        while not coordinator.finished:
            messages = coordinator.advance()
            if not messages:
                break
            k += 1

            def send(
                i: int, p: dict[str, Any], m: dict[int, bytes] = messages, k: int = k
            ) -> tuple[dict[str, Any], list[bytes]]:
                return self.call(p["peer"], f"agg#{name}#{k}", [m[i]]) if i in m else ({}, [])

            answers = self.each(send)
            for _, blobs in answers:
                if blobs and blobs[0]:
                    coordinator.receive(blobs[0])
        return np.asarray(coordinator.result().sum, dtype=np.float64), [h for h, _ in opened]


def execute(node: Node, job: FedJob, *, progress: Progress | None = None) -> dict[str, Any]:
    r = _Run(node, job, progress)
    with mp_initiator.KeepAlive(node, job.id, [p["peer"] for p in job.peers],
                                IDLE_SECONDS) as r.alive:
        result = mp_initiator.run_or_fail(
            lambda: _run(r), lambda exc: _fail_everywhere(node, job, exc), "FedAvg"
        )
    mp_initiator.complete(
        node,
        job.id,
        result,
        actor=job.actor,
        participants=[(p["peer"], p["agreement_id"]) for p in job.peers],
    )
    return _view(node, job.id)


def _run(r: _Run) -> dict[str, Any]:
    node, job, p = r.node, r.job, r.job.params
    model, config = model_of(p, p["dim"]), config_of(p)
    opened = r.each(
        lambda i, q: r.call(
            q["peer"],
            "open",
            params=p,
            agreement_id=q["agreement_id"],
            features=q["features"],
            label=q["label"],
        )
    )
    sizes = {q["peer"]: int(h["train_rows"]) for q, (h, _) in zip(job.peers, opened, strict=True)}
    if job.own is not None:
        sizes[node.name] = int(job.own.y.size)
    total = sum(sizes.values())
    clients = len(sizes)
    bound = config.dp.clip if config.dp else config.update_bound
    # DP: the providers noise their own updates (noise_share), so this node -- the
    # consumer's -- sees only noised sums; its own update needs no noise against itself
    wide = noise_share(config.dp, len(job.peers)).encoded_bound if config.dp else bound
    theta = model.init(config.seed)
    t0 = time.perf_counter()
    for k in range(1, config.rounds + 1):
        start_ = time.perf_counter()
        summed, _ = r.secagg(f"round#{k}", theta, bound, 24, total=total, wide=wide)
        if job.own is not None:
            rng = np.random.default_rng([config.seed, 0, k])
            summed = summed + local_update(model, theta, job.own, config, rng, total)
        if config.dp:
            summed = summed / clients
        theta = theta + summed
        r.record(
            ms.event(node.name, k, f"round {k}", seconds=round(time.perf_counter() - start_, 3))
        )
    train_seconds = time.perf_counter() - t0
    big = float(2 ** int(np.ceil(np.log2(max(total, 2) * 40.0))))
    hist, answers = r.secagg("eval", theta, big, 8)
    per_node = {
        q["peer"]: {
            k: int(float(v)) if k.endswith("_rows") else float(v)
            for k, v in dict(h.get("metrics") or {}).items()
        }
        for q, h in zip(job.peers, answers, strict=True)
    }
    if job.own is not None:
        hist = hist + histogram(model, theta, job.own)
        per_node[node.name] = node_metrics(model, theta, job.own, config)
    metric = "loss" if model.kind == "linear" else "auc"
    fed_mean = float(np.mean([m.get(metric, np.nan) for m in per_node.values()]))
    local_mean = float(np.mean([m.get(f"{metric}_local", np.nan) for m in per_node.values()]))
    metrics: dict[str, Any] = {
        "overall": overall(hist),
        "per_node": per_node,
        f"{metric}_federated_mean": fed_mean,
        f"{metric}_local_mean": local_mean,
        "clients": clients,
        "train_rows": total,
        "rounds": config.rounds,
        "train_seconds": round(train_seconds, 3),
    }
    if config.dp:
        metrics["dp"] = {
            "epsilon": dp_epsilon(config.dp, config.rounds),
            "delta": config.dp.delta,
            "clip": config.dp.clip,
            "noise_multiplier": config.dp.noise_multiplier,
        }
    part = {"kind": model.kind, "dim": model.dim, "hidden": model.hidden, "theta": theta.tolist()}
    digest = model_store.stage(
        node,
        model_id=job.id,
        family=FAMILY,
        role=ms.INITIATOR,
        initiator=node.name,
        part=part,
        info={"params": p},
    )
    holders = {name: {"sha256": digest, "holds": "the whole global model (θ)"} for name in sizes}
    info = {"parts": holders, "metrics": metrics, "contribution": {}, "params": p}
    shape = {"kind": model.kind, "dim": model.dim, "hidden": model.hidden}

    def theirs(peer: str) -> dict[str, Any]:
        """What a client's record of the model says: the overall metrics and its own, not the
        other nodes' (each node's held-out metrics are the initiator's to know: exact, outside
        any DP statement)."""
        own = {k: v for k, v in metrics.items() if k not in ("per_node",) and "_mean" not in k}
        return {**info, "metrics": {**own, "per_node": {peer: per_node.get(peer, {})}}}

    r.each(
        lambda i, q: r.call(
            q["peer"], "commit", [theta.tobytes()], model=jsonable(theirs(q["peer"])),
            shape=shape,
        )
    )
    model_store.finalize(node, job.id, info, actor=job.actor)
    return {"model_id": job.id, "family": FAMILY, "metrics": metrics, "parts": holders}


def _fail_everywhere(node: Node, job: FedJob, exc: DataspaceError) -> None:
    peers = [q["peer"] for q in job.peers]
    mp_initiator.fail_everywhere(node, job.id, exc, actor=job.actor, peers=peers, blame=False)


def start_background(node: Node, job: FedJob) -> dict[str, Any]:
    mp_initiator.in_background(f"fedavg-{job.id[:12]}", lambda: execute(node, job))
    return _view(node, job.id)


def _view(node: Node, job_id: str) -> dict[str, Any]:
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        return ms.view(row)
