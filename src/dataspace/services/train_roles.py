"""What each node runs in a vertical training job: the cores, one role per node.

A job's public description (:class:`Spec`) is the same at every node: the model family, the
data parties in order (the label party first), each party's number of columns, the dealer,
the number of aligned rows, the held-out split and the hyper-parameters. From it every node
derives the same schedule of protocol *runs* (:func:`schedule`): the full model, its
held-out prediction, and — for contribution — the same for every coalition of providers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dataspace.errors import UsageError
from dataspace.federated import sgb, sgb_share, vlr
from dataspace.federated.errors import InvalidTrainingInput, MalformedMessage
from dataspace.federated.plan import Scaler, TrainConfig
from dataspace.federated.sgb_tree import (
    SgbParams,
    base_score,
    grow_tree,
    logistic_grad,
    plain_histograms,
)
from dataspace.services.train_net import Mailbox, NodeNetwork, using

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

VLR_DEFAULTS: dict[str, Any] = {
    "epochs": 8,
    "batch_size": 256,
    "learning_rate": 0.5,
    "lr_decay": 0.2,
    "l2": 1e-3,
}
# Early stopping (vlr, vlinreg): off unless ``patience`` is given — then training stops once
# the validation loss (vlr: the Brier score; vlinreg: the mean squared error of the
# standardised target) has not improved by ``min_delta`` for ``patience`` epochs and the best
# epoch's weights are kept. ``validation``: the share of the training rows validated on.
VLR_EARLY: dict[str, Any] = {"patience": None, "min_delta": 1e-4, "validation": 0.2}
VLR_KNOWN = (*VLR_DEFAULTS, *VLR_EARLY, "clip")
SGB_DEFAULTS: dict[str, Any] = {"trees": 10, "max_depth": 3, "bins": 16,
                                "min_child_rows": 10}  # the node floor's default
CTL = "sgb/ctl"
STOP, BRIER = "vlr/stop", "vlr/brier"  # BRIER: the validation loss, vlinreg's MSE too
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Spec:
    job_id: str
    family: str
    parties: tuple[str, ...]  # data parties; parties[0] holds the labels
    widths: dict[str, int]
    columns: dict[str, list[str]]
    dealer: str
    rows: int
    holdout: float = 0.25
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    contribution: bool = True
    revenue_pool: str | None = None  # "3000.00 CNY": split among providers by contribution

    @property
    def label(self) -> str:
        return self.parties[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "parties": list(self.parties),
            "widths": self.widths,
            "columns": self.columns,
            "dealer": self.dealer,
            "rows": self.rows,
            "holdout": self.holdout,
            "seed": self.seed,
            "params": self.params,
            "contribution": self.contribution,
            "revenue_pool": self.revenue_pool,
        }

    @classmethod
    def from_dict(cls, job_id: str, d: dict[str, Any]) -> Spec:
        return cls(
            job_id,
            str(d["family"]),
            tuple(d["parties"]),
            {str(k): int(v) for k, v in d["widths"].items()},
            {str(k): [str(c) for c in v] for k, v in d["columns"].items()},
            str(d["dealer"]),
            int(d["rows"]),
            float(d.get("holdout", 0.25)),
            int(d.get("seed", 0)),
            dict(d.get("params") or {}),
            bool(d.get("contribution", True)),
            str(d["revenue_pool"]) if d.get("revenue_pool") is not None else None,
        )


def split_rows(rows: int, holdout: float, seed: int) -> tuple[Ints, Ints]:
    """The public train / held-out split of the aligned rows (positions only)."""
    order = np.random.default_rng([seed, 7]).permutation(rows)
    n_test = max(2, round(rows * holdout))
    return np.sort(order[n_test:]).astype(np.int64), np.sort(order[:n_test]).astype(np.int64)


def coalitions(spec: Spec) -> list[tuple[str, ...]]:
    """The full model first, then every smaller non-empty coalition of providers (+ label)."""
    providers = spec.parties[1:]
    out = [spec.parties]
    if spec.contribution:
        for k in range(len(providers) - 1, 0, -1):
            for subset in itertools.combinations(providers, k):
                out.append((spec.label, *subset))
    return out


@dataclass
class Local:
    """This node's aligned block (and the labels, at the label party)."""

    block: Floats | None = None
    labels: Floats | None = None


# --- vertical LR -----------------------------------------------------------------------------


def early_stopping(spec: Spec) -> bool:
    return {**VLR_EARLY, **spec.params}.get("patience") is not None


def vlr_config(
    spec: Spec, coalition: Sequence[str], defaults: Mapping[str, Any] = VLR_DEFAULTS
) -> TrainConfig:
    """The core's configuration for one run (``defaults``: the family's — vlr's, or vlinreg's
    from services/train_linreg.py; both take the same parameters and early stopping).
    ``spec.seed`` draws the validation split and the mini-batches (public row positions) —
    never masks or triples, which come from ``secrets``."""
    p = {**defaults, **VLR_EARLY, **spec.params}
    epochs = int(p["epochs"])
    early = p["patience"] is not None
    return TrainConfig(
        epochs=epochs,
        batch_size=int(p["batch_size"]),
        learning_rate=float(p["learning_rate"]),
        lr_decay=float(p["lr_decay"]),
        l2=float(p["l2"]),
        validation_fraction=float(p["validation"]),
        # early stopping off: every epoch "improves", the last is kept, the same at every node
        patience=int(p["patience"]) if early else epochs,
        min_delta=float(p["min_delta"]) if early else -math.inf,
        seed=spec.seed,
        dealer=spec.dealer,
        helper=coalition[1],
        clip=float(p["clip"]) if p.get("clip") is not None else TrainConfig.clip,
    )


def check_params(spec: Spec) -> None:
    """Refuse bad hyper-parameters before any node is asked (a clear error, not a failed job)."""
    if not 0 <= spec.seed <= MAX_SEED:
        raise UsageError(f"seed must be an integer in [0, 2^63 - 1], got {spec.seed}")
    if not 0.0 < spec.holdout < 0.9:
        raise UsageError(f"holdout must lie in (0, 0.9), got {spec.holdout}")
    if spec.family == "vlr":
        known: Sequence[str] = VLR_KNOWN
        build: Any = lambda: vlr_config(spec, spec.parties[:2])  # noqa: E731
    elif spec.family == "vgbdt":
        known = tuple(SgbParams.__dataclass_fields__)
        build = lambda: sgb_params(spec)  # noqa: E731
    elif spec.family == "vlinreg":  # vlr's parameters and early stopping, its own defaults
        from dataspace.services import train_linreg  # it imports this module

        known = VLR_KNOWN
        build = lambda: train_linreg.config(spec, spec.parties[:2])  # noqa: E731
    else:
        return
    unknown = sorted(set(spec.params) - set(known))
    if unknown:
        raise UsageError(
            f"unknown {spec.family} parameter(s) {unknown}", hint=f"known: {', '.join(known)}"
        )
    try:
        patience = spec.params.get("patience")
        whole = not isinstance(patience, bool) and float(patience or 0) == int(patience or 0)
        if patience is not None and not (whole and int(patience) >= 1):
            raise UsageError(f"patience must be a whole number of epochs >= 1, not {patience!r}")
        build()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad {spec.family} parameters ({exc})") from None
    except InvalidTrainingInput as exc:
        raise UsageError(exc.message, hint=exc.hint) from None


def _placeholder(spec: Spec, name: str, rows: int) -> Floats:
    return np.zeros((rows, spec.widths[name]))


#: :func:`vlr.fit`'s ``decide``: the validation loss in, (loss, improved, stop) out.
Decide = Callable[[float], tuple[float, bool, bool]]


def vertical_run(
    mb: Mailbox,
    spec: Spec,
    index: int,
    coalition: Sequence[str],
    local: Local,
    config: TrainConfig,
    *,
    train: Callable[[list[vlr.PartyData], Decide], Any],
    placeholder: Callable[[str, Scaler], vlr.PartyModel],
    predict: Callable[[dict[str, vlr.PartyModel], dict[str, Floats]], Floats],
) -> tuple[dict[str, Any], Any]:
    """One replicated run of a vertical core on ``coalition`` (vlr, vlinreg): train with the
    label party's early-stopping decisions (:func:`_stop_rule`), then predict the held-out rows
    jointly. ``train`` is the core's training on (parties, decide), ``placeholder`` another
    party's model part of zeros (its name, a neutral scaler), ``predict`` the joint scores.
    Returns this node's view (the label party's carries the scores and the schedule run) and
    the core's result."""
    me = mb.me
    fit, test = split_rows(spec.rows, spec.holdout, spec.seed)
    parties = []
    for name in coalition:
        real = name == me and local.block is not None
        x = (
            local.block[fit]
            if real and local.block is not None
            else _placeholder(spec, name, fit.size)
        )
        y = None
        if name == spec.label:
            y = local.labels[fit] if real and local.labels is not None else np.zeros(fit.size)
        parties.append(vlr.PartyData(name, x, y, tuple(spec.columns.get(name, []))))
    net = NodeNetwork(mb, f"{index}/train", replicate=True)
    with using(net):
        result = train(parties, _stop_rule(net, spec, coalition, config))
    if me not in coalition:
        return {"seconds": result.seconds}, result
    models: dict[str, vlr.PartyModel] = dict(result.models)
    for name in coalition:  # placeholders of the others' parts, for the replicated prediction
        if name != me:
            width = spec.widths[name]
            models[name] = placeholder(name, Scaler(np.zeros(width), np.ones(width), config.clip))
    assert local.block is not None
    features = {
        name: (local.block[test] if name == me else _placeholder(spec, name, test.size))
        for name in coalition
    }
    with using(NodeNetwork(mb, f"{index}/predict", replicate=True)):
        scores = predict(models, features)
    out: dict[str, Any] = {"model": result.models[me], "seconds": result.seconds}
    if me == spec.label:
        out.update(
            scores=scores,
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            stopping=_stopping(spec, config, result.epochs_run),
            bytes=result.bytes_total,
        )
    return out, result


def vlr_run(
    mb: Mailbox, spec: Spec, index: int, coalition: Sequence[str], local: Local
) -> dict[str, Any]:
    """Train on ``coalition`` and score the held-out rows; returns this node's view."""
    config = vlr_config(spec, coalition)
    out, result = vertical_run(
        mb,
        spec,
        index,
        coalition,
        local,
        config,
        train=lambda parties, decide: vlr.train(parties, config, decide=decide),
        placeholder=lambda name, scaler: vlr.PartyModel(
            name, (), np.zeros(scaler.mean.size), scaler, 0.0 if name == spec.label else None
        ),
        predict=lambda models, features: vlr.predict(
            models, features, label_party=spec.label
        ).scores,
    )
    if mb.me == spec.label:
        out.update(
            validation=[r.validation_brier for r in result.validation],
            openings=[f"{o.what} -> {','.join(o.to)}" for o in result.openings[-4:]],
        )
    return out


def _stop_rule(net: NodeNetwork, spec: Spec, coalition: Sequence[str], config: TrainConfig) -> Any:
    """Early stopping across nodes, for :func:`vlr.train`'s (and :func:`vlinreg.train`'s)
    ``decide``.

    Run replicated, a node computes the opened validation loss — the "score": vlr's Brier
    score, vlinreg's mean squared error of the standardised target — correctly only where it
    is one of the two computing parties (the core opens it to both; here the helper's copy is
    the one computed from both real shares). So after each epoch the helper sends its score
    to the label party (both are entitled to it), the label party decides — improved (keep
    these weights as the best) and stop — and, with early stopping on, sends those two bits to
    every other node of the run (the helper, further providers, the dealer): they follow the
    same schedule without seeing the score. Every node runs this same code; only the real
    sender's messages leave it."""
    label, helper = spec.label, coalition[1]
    others = [*coalition[1:], spec.dealer]
    early = early_stopping(spec)
    state = {"best": math.inf, "stale": 0}

    def decide(loss: float) -> tuple[float, bool, bool]:
        net.send(helper, label, BRIER, np.array([loss], dtype=np.float64))
        score = float(np.asarray(net.recv(label, helper, BRIER), dtype=np.float64).reshape(-1)[0])
        if net.me == label and not (math.isfinite(score) and 0.0 <= score < 1e6):
            raise MalformedMessage(f"{helper} sent an implausible validation score {score!r}")
        improved = score < state["best"] - config.min_delta
        state["stale"] = 0 if improved else state["stale"] + 1
        stop = state["stale"] >= config.patience
        if improved:
            state["best"] = score
        if not early:  # the schedule is data-independent: nobody needs to be told
            return score, improved, stop
        flags = np.array([int(improved), int(stop)], dtype=np.int64)
        for name in others:
            net.send(label, name, STOP, flags)
        for name in others:
            got = np.asarray(net.recv(name, label, STOP), dtype=np.int64)
            if name == net.me:
                if got.shape != (2,) or not np.isin(got, (0, 1)).all():
                    raise MalformedMessage(f"{label} sent a bad early-stopping decision")
                improved, stop = bool(got[0]), bool(got[1])
        return score, improved, stop

    return decide


def _stopping(spec: Spec, config: TrainConfig, epochs_run: int) -> dict[str, Any]:
    if not early_stopping(spec):
        return {"early_stopping": False, "reason": "max_epochs", "kept": "last epoch"}
    return {
        "early_stopping": True,
        "reason": "patience" if epochs_run < config.epochs else "max_epochs",
        "patience": config.patience,
        "min_delta": config.min_delta,
        "validation_fraction": config.validation_fraction,
        "kept": "best epoch",
    }


def vlr_part(model: vlr.PartyModel) -> dict[str, Any]:
    return {
        "party": model.party,
        "columns": list(model.columns),
        "weights": model.weights.tolist(),
        "mean": model.scaler.mean.tolist(),
        "scale": model.scaler.scale.tolist(),
        "clip": model.scaler.clip,
        "intercept": model.intercept,
    }


def vlr_model(part: dict[str, Any]) -> vlr.PartyModel:
    return vlr.PartyModel(
        str(part["party"]),
        tuple(part["columns"]),
        np.asarray(part["weights"], dtype=np.float64),
        Scaler(np.asarray(part["mean"]), np.asarray(part["scale"]), float(part["clip"])),
        None if part.get("intercept") is None else float(part["intercept"]),
    )


# --- vertical GBDT (SecureBoost-style) ------------------------------------------------------


_SGB_WHOLE = ("trees", "max_depth", "bins", "min_child_rows")


def sgb_params(spec: Spec) -> SgbParams:
    """The job's boosting parameters, typed: they cross nodes as JSON, where a float arrives
    as its decimal text ("0.1"); whole-number fields refuse fractions, the rest must be
    finite."""
    p = {**SGB_DEFAULTS, **spec.params}
    out: dict[str, Any] = {}
    for key in SgbParams.__dataclass_fields__:
        if key not in p:
            continue
        value = p[key]
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number, not {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer past any float
            raise ValueError(f"{key} is out of range: {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{key} must be finite, not {value!r}")
        if key in _SGB_WHOLE:
            if number != int(number):
                raise ValueError(f"{key} must be a whole number, not {value!r}")
            out[key] = int(number)
        else:
            out[key] = number
    return SgbParams(**out)


class _RemotePassive:
    """What the label party knows of a passive party: its name and bins per column."""

    def __init__(self, name: str, sizes: list[int]) -> None:
        self.name = name
        self._sizes = sizes
        self.binner = self

    def sizes(self) -> list[int]:
        return self._sizes


class _NodeSource(sgb._Source):
    """:class:`sgb._Source` with the passive parties and the dealer on other nodes: the
    label party tells each which step comes next (a control message) instead of calling it."""

    def __init__(self, label: Any, passives: list[Any], dealer: str, frac_bits: int) -> None:
        super().__init__(label, passives, None, frac_bits)  # type: ignore[arg-type]
        self.dealer_name = dealer
        self.index = {p.name: i for i, p in enumerate(passives)}

    def histograms(self, nodes: Sequence[Ints], g: Floats, h: Floats) -> list[Floats]:
        lab = self.label
        own = plain_histograms(lab.bins, lab.offsets, lab.total, nodes, g, h)
        out = [np.empty((self.width, 2)) for _ in nodes]
        for hist, o in zip(out, own, strict=True):
            hist[: lab.total] = o
        if not self.passives:
            return out
        self.calls += 1
        packed = sgb_share.pack(g, h, self.frac_bits)
        x = np.zeros((g.shape[0], len(nodes)), dtype=np.uint64)
        for c, rows in enumerate(nodes):
            x[rows, c] = packed[rows]
        offset = lab.total
        net = lab.net
        for p in self.passives:
            tag = f"{p.name}/{self.calls}"
            net.send(
                lab.name,
                self.dealer_name,
                CTL,
                np.array([1, self.index[p.name], self.calls, len(nodes)], dtype=np.int64),
            )
            net.send(lab.name, p.name, CTL, np.array([1, self.calls], dtype=np.int64))
            share = lab.shares[p.name]
            seed = share.send_masked(self.dealer_name, tag, x)
            gs, hs = sgb_share.unpack(share.collect(tag, seed, len(nodes)), self.frac_bits)
            for c, hist in enumerate(out):
                hist[offset : offset + share.total, 0] = gs[:, c]
                hist[offset : offset + share.total, 1] = hs[:, c]
            offset += share.total
        return out

    def split(self, node_rows: Ints, feature: Any, k: int) -> tuple[int, Any] | None:
        lab = self.label
        if feature.party == lab.name:
            return super().split(node_rows, feature, k)
        self.nodes_revealed += 1
        lab.net.send(lab.name, feature.party, CTL, np.array([2], dtype=np.int64))
        lab.net.send(lab.name, feature.party, "sgb/split", np.array([feature.column, k]))
        lab.net.send(lab.name, feature.party, "sgb/split/rows", node_rows)
        return sgb.split_reply(lab.net.recv(lab.name, feature.party, "sgb/split/left"))


def sgb_run(
    mb: Mailbox, spec: Spec, index: int, coalition: Sequence[str], local: Local
) -> dict[str, Any]:
    """SecureBoost on ``coalition`` (this node's role only), then the held-out scores."""
    me, label = mb.me, spec.label
    fit, test = split_rows(spec.rows, spec.holdout, spec.seed)
    params = sgb_params(spec)
    passives = [p for p in coalition if p != label]
    net = NodeNetwork(mb, f"{index}/train", replicate=False)
    # What an honest label party asks at most, per coalition: a histogram level per depth of
    # each tree, at most 2^(depth-1) nodes wide, a split per inner node, each split's
    # held-out rows routed once. A provider (and the dealer) refuses more: each extra answer
    # would tell the label party more of a provider's bins than the trees do.
    levels_cap = params.trees * params.max_depth
    width_cap = 2 ** (params.max_depth - 1)
    splits_cap = params.trees * (2**params.max_depth - 1)
    if me == spec.dealer:
        dealer = sgb_share.ShareDealer(me, net)
        for p in passives:
            dealer.setup(p, fit.size, spec.widths[p])
        levels: dict[int, int] = dict.fromkeys(range(len(passives)), 0)
        while True:
            ctl = np.asarray(net.recv(me, label, CTL), dtype=np.int64)
            if ctl[0] == 0:
                return {}
            who, width = int(ctl[1]), int(ctl[3])
            if who not in levels or not 1 <= width <= width_cap or levels[who] >= levels_cap:
                raise MalformedMessage("a histogram level beyond what the job's trees need")
            levels[who] += 1
            dealer.level(passives[who], label, f"{passives[who]}/{ctl[2]}", width)
    assert local.block is not None
    if me != label:
        data = vlr.PartyData(me, local.block[fit], None)
        passive = sgb._Passive(data, net, params)
        net.send(me, label, "sgb/sizes", np.asarray(passive.binner.sizes(), dtype=np.int64))
        passive.share.setup(spec.dealer, label)
        held = local.block[test]
        shared, routed, splits_asked = 0, set(), 0
        while True:
            ctl = np.asarray(net.recv(me, label, CTL), dtype=np.int64)
            if ctl[0] == 0:
                break
            if ctl[0] == 1:
                shared += 1
                if shared > levels_cap:
                    raise MalformedMessage("more histogram levels than the job's trees need")
                passive.share.level(spec.dealer, label, f"{me}/{ctl[1]}")
            elif ctl[0] == 2:
                splits_asked += 1  # refused splits count too: each answer says something
                if splits_asked > splits_cap:
                    raise MalformedMessage("more splits than the job's trees can have")
                passive.take_split(label)
            else:  # 3: route held-out rows at one of this party's splits, once each
                asked = np.asarray(net.recv(me, label, "sgb/route"), dtype=np.int64)
                record, rows = int(asked[0]), asked[1:]
                if (record in routed or not 0 <= record < len(passive.book.records)
                        or np.unique(rows).size != rows.size
                        or (rows.size and (rows.min() < 0 or rows.max() >= held.shape[0]))):
                    raise MalformedMessage("a route must name a split once and distinct "
                                           "held-out rows")
                routed.add(record)
                answer = passive.book.left(record, held[rows])
                net.send(me, label, "sgb/route/left", answer.astype(np.int64))
        return {
            "model": {
                "party": me,
                "book": passive.book.records,
                "edges": [e.tolist() for e in passive.binner.edges],
            }
        }
    assert local.labels is not None
    lab = sgb._Label(vlr.PartyData(me, local.block[fit], local.labels[fit]), net, params)
    remote = []
    for p in passives:
        sizes = np.asarray(net.recv(me, p, "sgb/sizes"), dtype=np.int64).tolist()
        remote.append(_RemotePassive(p, [int(s) for s in sizes]))
        share = sgb_share.ShareLabel(me, net, p, [int(s) for s in sizes])
        share.setup()
        lab.shares[p] = share
    frac_bits = sgb_share.frac_bits_for(fit.size)
    source = _NodeSource(lab, remote, spec.dealer, frac_bits)
    base = base_score(lab.labels)
    scores = np.full(fit.size, base)
    trees = []
    for _ in range(params.trees):
        g, h = logistic_grad(scores, lab.labels)
        tree, update = grow_tree(source, g, h, params)
        trees.append(tree)
        scores += update
    net.send(me, spec.dealer, CTL, np.array([0, 0, 0, 0], dtype=np.int64))
    held = local.block[test]

    def left_of(record: int, rows: Ints, owner: str) -> Any:
        if owner == me:
            return lab.book.left(record, held[rows])
        net.send(me, owner, CTL, np.array([3], dtype=np.int64))
        net.send(me, owner, "sgb/route", np.r_[record, rows].astype(np.int64))
        return np.asarray(net.recv(me, owner, "sgb/route/left")).astype(bool)

    out_scores = np.full(test.size, base)
    for tree in trees:
        out_scores += sgb._route_owned(tree, test.size, left_of)
    for p in passives:
        net.send(me, p, CTL, np.array([0], dtype=np.int64))
    mb.flush()
    owners = dict.fromkeys(coalition, 0)
    for tree in trees:
        for owner, record in zip(tree.owner, tree.split, strict=True):
            if record >= 0:
                owners[owner] += 1
    return {
        "model": {
            "party": me,
            "base": base,
            "book": lab.book.records,
            "trees": [_tree(t) for t in trees],
            "splits_by_party": owners,
        },
        "scores": out_scores,
        "nodes_revealed": source.nodes_revealed,
        "leakage": sgb.LEAKAGE,
    }


def _tree(tree: Any) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in vars(tree).items()}
