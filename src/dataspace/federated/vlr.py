"""Vertical federated logistic regression on additive secret shares (SecureML-style).

Parties hold different columns of the same PSI-aligned rows; one of them (the *label party*,
e.g. the bank) holds the labels. Two parties compute: the label party and a *helper* (the
first other party unless ``TrainConfig.helper`` names one); the space operator is the dealer.

Who holds what, per iteration (mini-batch B):

* a computing party keeps its feature block **in the clear, at home**; once per training it
  sends the peer ``X - U`` (``U`` a dealer mask it alone knows) — uniformly random to the peer;
* any other data party (e.g. the grid) secret-shares its standardised block once, one share to
  each computing party, and then takes no part until the end;
* every weight block ``w_p`` (and the intercept) is secret-shared between the two computing
  parties from start to end of training; so are the scores ``z = sum_p X_p[B] w_p``, the
  sigmoid, the residuals ``r = sigma(z) - y``, the gradients ``X_p[B]^T r`` and the updates;
* the labels never leave the label party: it subtracts ``y`` from its share of sigma(z).

Opened during training: **only** the validation Brier score (one number per epoch, to both
computing parties: both must agree to stop). Everything else a party receives is a Beaver
opening or a mask, uniformly distributed. At the end each weight block is opened **to its
owner only** (the intercept to the label party). Prediction (:func:`predict`) needs no
secure multiplication: each owner computes ``X_p w_p`` locally, the pieces are secret-shared
and summed, and only the total score is opened, to the label party (or a named requester).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import InvalidTrainingInput, MpcProtocolError
from dataspace.federated.mpc import Dealer, FixedPoint, Mpc, Network, Opening, OpenLog, Party
from dataspace.federated.mpc.engine import Shared
from dataspace.federated.plan import Plan, Scaler, TrainConfig, make_plan

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PartyData:
    """One party's aligned columns (rows in PSI order); ``labels`` only at the label party."""

    name: str
    features: Floats
    labels: Floats | None = None
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartyModel:
    """The model part one party holds after training: its weights on its standardised
    columns, its own scaler, and — at the label party only — the intercept."""

    party: str
    columns: tuple[str, ...]
    weights: Floats
    scaler: Scaler
    intercept: float | None = None

    def partial_score(self, features: Floats) -> Floats:
        """``X_p w_p`` (plus the intercept at the label party), computed at home."""
        score = self.scaler.transform(features) @ self.weights
        return score + self.intercept if self.intercept is not None else score


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    learning_rate: float
    validation_brier: float
    seconds: float


@dataclass
class VflResult:
    """What a training job produced. ``models[p]`` is held by party ``p`` alone."""

    models: dict[str, PartyModel]
    label_party: str
    compute_parties: tuple[str, str]
    dealer: str
    epochs_run: int
    iterations: int
    best_epoch: int
    validation: list[EpochRecord]
    seconds: float
    dealer_seconds: float
    bytes_by_link: dict[str, int]
    openings: list[Opening]
    masked_openings: int
    config: TrainConfig = field(default_factory=TrainConfig)

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes_by_link.values())


@dataclass(frozen=True)
class Prediction:
    scores: Floats
    to: str
    openings: list[Opening]

    @property
    def probabilities(self) -> Floats:
        return np.asarray(0.5 * (1.0 + np.tanh(0.5 * self.scores)), dtype=np.float64)


def _check(parties: Sequence[PartyData]) -> tuple[PartyData, int]:
    names = [p.name for p in parties]
    if len(parties) < 2 or len(set(names)) != len(names):
        raise InvalidTrainingInput("vertical training needs at least two distinctly named parties")
    labelled = [p for p in parties if p.labels is not None]
    if len(labelled) != 1:
        raise InvalidTrainingInput(
            f"exactly one party must hold the labels, found {len(labelled)}",
            hint="pass labels only with the active party's PartyData",
        )
    label = labelled[0]
    rows = label.features.shape[0]
    for p in parties:
        if p.features.ndim != 2 or p.features.shape[0] != rows:
            raise InvalidTrainingInput(
                f"party {p.name} has {p.features.shape[0]} rows, expected {rows}",
                hint="align all parties on the same entities with PSI 'align' mode first",
            )
        if not np.isfinite(p.features).all():
            raise InvalidTrainingInput(f"party {p.name} has missing or infinite values")
    assert label.labels is not None
    if not ((label.labels == 0.0) | (label.labels == 1.0)).all():
        raise InvalidTrainingInput("labels must be 0 or 1")
    return label, rows


@dataclass
class _Block:
    party: str
    holders: list[tuple[Party, str, str]]  # (computing party, train key, validation key)
    width: int


# The update lr * (l2 * w + X^T r / batch) is summed at (raw bits + 30) fractional bits (at
# most 58: plan.MAX_PRODUCT_BITS) and truncated once, exactly: exact while each weight moves
# by less than 2^(32 - raw bits) in one step (64 with the default 16 + 10 bits). lr / batch
# is encoded with 30 fractional bits; a step below 2^-22 (fewer than 256 units) is refused.
UPDATE_COEFFICIENT_BITS = 30
SMALLEST_STEP = 2.0**-22
# The validation squares are summed untruncated while the sum stays below 2^61: with |r| < 64
# (12 bits of r^2) that is 2^(2 frac_bits + 12) per row.
SQUARE_BITS = 12


class _Session:
    VALIDATION_LOSS = "validation Brier score"

    def __init__(self, parties: Sequence[PartyData], config: TrainConfig) -> None:
        label, rows = _check(parties)
        self.config = config
        self.fp = FixedPoint(config.frac_bits, config.data_frac_bits)
        self.raw_bits = self.fp.frac_bits + self.fp.data_frac_bits  # of a feature product
        self.update_bits = self.raw_bits + UPDATE_COEFFICIENT_BITS
        self.plan: Plan = make_plan(rows, config)
        smallest = config.step(config.epochs - 1) / min(config.batch_size, self.plan.train.size)
        if smallest < SMALLEST_STEP:
            raise InvalidTrainingInput(
                f"the step learning_rate / batch size falls to {smallest:.3g} by the last "
                f"epoch, below what the shared computation resolves ({SMALLEST_STEP:.3g})",
                hint="raise learning_rate, lower lr_decay, or use smaller batches",
            )
        self.label = label.name
        helper = config.helper or next(p.name for p in parties if p.name != label.name)
        if helper not in {p.name for p in parties} or helper == label.name:
            raise InvalidTrainingInput(f"helper {helper!r} must be another data party")
        self.net = Network()
        self.nodes = {p.name: Party(p.name, self.net) for p in parties}
        self.dealer = Dealer(config.dealer, self.net)
        self.log = OpenLog()
        self.mpc = Mpc(self.nodes[label.name], self.nodes[helper], self.dealer, self.fp, self.log)
        self.scalers: dict[str, Scaler] = {}
        self.columns = {p.name: p.columns for p in parties}
        self.blocks: list[_Block] = []
        self.log.step = "setup"
        for p in parties:
            self._load(p)
        assert label.labels is not None
        s0 = self.nodes[label.name]
        s0.mem["y/train"] = self.fp.encode(label.labels[self.plan.train])
        s0.mem["y/val"] = self.fp.encode(label.labels[self.plan.validation])

    def _load(self, data: PartyData) -> None:
        """The party standardises its block and brings it into the computation."""
        node = self.nodes[data.name]
        features = np.asarray(data.features, dtype=np.float64)
        train = np.take(features, self.plan.train, axis=0)  # take: much faster than x[idx]
        scaler = Scaler.fit(train, self.config.clip)
        self.scalers[data.name] = scaler
        parts = [scaler.transform(train),
                 scaler.transform(np.take(features, self.plan.validation, axis=0))]
        if data.name == self.label:  # the intercept column lives in the label party's block
            parts = [np.hstack([x, np.ones((x.shape[0], 1))]) for x in parts]
        fx = self.fp.data_frac_bits
        # standardised and clipped (|x| <= clip <= 16): no overflow check needed
        encoded = [np.rint(x * float(1 << fx)).astype(np.int64).view(np.uint64) for x in parts]
        keys = (f"X/{data.name}/train", f"X/{data.name}/val")
        block = _Block(data.name, [], parts[0].shape[1])
        if self.mpc.index(node) is not None:
            for key, x in zip(keys, encoded, strict=True):
                node.mem[key] = x
                self.mpc.register_owned(node, key)
            block.holders.append((node, *keys))
        else:  # an outside party: each computing party holds one share as its own matrix
            for key, x in zip(keys, encoded, strict=True):
                shared = self.mpc.share(node, x, prefix=key)
                for holder in self.mpc.parties:
                    holder.mem[key] = holder.mem.pop(shared.key)
                    self.mpc.register_owned(holder, key)
            block.holders.extend((holder, *keys) for holder in self.mpc.parties)
        self.blocks.append(block)

    @property
    def width(self) -> int:
        """Weights in all blocks (the intercept included)."""
        return sum(block.width for block in self.blocks)

    def scores(
        self, weights: list[Shared], rows: slice | None, split: str,
        tids: Sequence[str] | None = None,
    ) -> Shared:
        """``sum_p X_p[rows] w_p``, not truncated: it carries :attr:`raw_bits`."""
        products = [
            (holder, train_key if split == "train" else val_key, w, rows, False)
            for block, w in zip(self.blocks, weights, strict=True)
            for holder, train_key, val_key in block.holders
        ]
        return self._sum(self.mpc.owned_matmuls(products, tids))

    def deal_epoch(self, batches: Sequence[slice]) -> tuple[list[_Dealt], _Dealt]:
        """Every correlation one epoch needs, dealt ahead as one message from the dealer to
        each computing party: per iteration the cross triples of the scores, the sigmoid's
        cube tuple and truncation pair, the cross triples of the gradients and the
        updates' truncation pairs; then the same for the validation scores (no gradients),
        plus a square tuple for the validation Brier score."""
        val = self.plan.validation.size
        with self.dealer.batch() as bundle:
            dealt = [self._deal(rows, rows.stop - rows.start, "train") for rows in batches]
            validation = self._deal(None, val, "val")
            validation.square = self.mpc.deal_square((val,))
        for party in self.mpc.parties:
            party.accept(self.dealer.name, bundle)
        return dealt, validation

    def _deal(self, rows: slice | None, size: int, split: str) -> _Dealt:
        forward = [(holder, train_key if split == "train" else val_key, (block.width,),
                    rows, False)
                   for block in self.blocks for holder, train_key, val_key in block.holders]
        backward = [(holder, train_key, (size,), rows, True)
                    for block in self.blocks for holder, train_key, _ in block.holders]
        train = split == "train"
        return _Dealt(
            self.mpc.deal_owned(forward),
            self.deal_residual(size),
            self.mpc.deal_owned(backward) if train else [],
            self.mpc.deal_trunc((self.width,), self.update_bits - self.fp.frac_bits)
            if train else None,
        )

    def _sum(self, parts: list[Shared]) -> Shared:
        total = parts[0]
        for part in parts[1:]:
            out = self.mpc.add(total, part)
            self.mpc.free(total, part)
            total = out
        return total

    def gradients(
        self, blocks: list[_Block], residual: Shared, rows: slice,
        tids: Sequence[str] | None = None,
    ) -> list[Shared]:
        """``X_p[rows]^T r`` for every block, all products in one exchange; not truncated
        (:attr:`raw_bits`): the update truncates them exactly with the weights' term."""
        products = [
            (holder, train_key, residual, rows, True)
            for block in blocks
            for holder, train_key, _ in block.holders
        ]
        parts = iter(self.mpc.owned_matmuls(products, tids))
        return [self._sum([next(parts) for _ in block.holders]) for block in blocks]

    def penalty(self, block: _Block) -> Floats:
        mask = np.full(block.width, self.config.l2)
        if block.party == self.label:
            mask[-1] = 0.0
        return mask

    def deal_residual(self, size: int) -> tuple[str, ...]:
        """What :meth:`residual` needs from the dealer for ``size`` rows."""
        return self.mpc.deal_sigmoid((size,), self.raw_bits)

    def residual(
        self, z: Shared, labels_key: str, rows: slice | None,
        tids: tuple[str, ...] | None = None,
    ) -> Shared:
        """The loss gradient in the scores, ``sigma(z) - y``, for raw scores ``z``; ``tids``:
        the sigmoid's correlations if dealt ahead (:meth:`deal_residual`). (vlinreg's session
        overrides both with ``z - y``.)"""
        s = self.mpc.sigmoid(z, (tids[0], tids[1]) if tids else None, frac_bits=self.raw_bits)
        labels = self.mpc.parties[0].mem[labels_key]
        r = self.mpc.sub_own(s, self.mpc.parties[0], labels[rows] if rows else labels)
        self.mpc.free(s)
        return r

    def validation_loss(self, weights: list[Shared], dealt: _Dealt | None = None) -> float:
        """Mean squared residual on the validation rows (the Brier score here; the MSE of the
        standardised target for vlinreg): residuals and squares stay shared, only the sum is
        opened, to both computing parties. The squares are summed untruncated (the opened sum
        is read at twice the fractional bits) unless the sum could pass 2^61; then they are
        truncated exactly first."""
        z = self.scores(weights, None, "val", dealt.forward if dealt else None)
        r = self.residual(z, "y/val", None, dealt.residual if dealt else None)
        sq = self.mpc.square(r, dealt.square if dealt else None, truncate=False)
        bits = 2 * self.fp.frac_bits
        shift = max(0, bits + SQUARE_BITS + r.shape[0].bit_length() - 61)
        if shift:  # a very large validation split at high precision: make room for the sum
            narrow = self.mpc.trunc_exact(sq, shift)
            self.mpc.free(sq)
            sq, bits = narrow, bits - shift
        total = self.mpc._new("sum", [p.mem[sq.key].sum(keepdims=True) for p in self.mpc.parties])
        opened = self.mpc.reveal(total, self.mpc.parties, f"{self.VALIDATION_LOSS} (sum)")
        self.mpc.free(z, r, sq, total)
        squares = self.fp.decode(opened, bits)
        return float(squares[0]) / self.plan.validation.size


@dataclass
class _Dealt:
    """Ids of the correlations dealt ahead for one iteration (or one validation pass)."""

    forward: list[str]
    residual: tuple[str, ...]  # vlr: the sigmoid's cube tuple and truncation pair
    backward: list[str]
    update: str | None  # the truncation pair of the update of all weight blocks at once
    square: str | None = None


@dataclass
class Fitted:
    """What :func:`fit` leaves: the best epoch's weights (still shared) and the schedule run;
    ``curve``: (epoch, learning rate, validation loss, seconds) per epoch."""

    best_weights: list[Shared]
    best_epoch: int
    epochs_run: int
    iterations: int
    curve: list[tuple[int, float, float, float]]


def fit(
    session: _Session,
    config: TrainConfig,
    decide: Callable[[float], tuple[float, bool, bool]] | None = None,
) -> Fitted:
    """Mini-batch SGD with L2 on the shares, the session's loss, early stopping on its
    validation loss; shared by vlr and vlinreg (their sessions differ only in the loss)."""
    mpc, plan = session.mpc, session.plan
    weights = [mpc.public(np.zeros(b.width, dtype=np.uint64), f"w/{b.party}")
               for b in session.blocks]  # fmt: skip
    best_weights = [mpc.copy(w) for w in weights]
    best, best_epoch, stale, iterations, epochs_run = np.inf, 0, 0, 0, 0
    curve: list[tuple[int, float, float, float]] = []
    for epoch in range(config.epochs):
        epoch_start = time.perf_counter()
        lr = config.step(epoch)
        session.log.step = f"epoch {epoch}"
        penalty = lr * np.concatenate([session.penalty(block) for block in session.blocks])
        widths = [block.width for block in session.blocks]
        batches = [plan.batches[j] for j in plan.batch_order(epoch, config.seed)]
        dealt, dealt_val = session.deal_epoch(batches)
        for rows, ahead in zip(batches, dealt, strict=True):
            size = rows.stop - rows.start
            z = session.scores(weights, rows, "train", ahead.forward)
            r = session.residual(z, "y/train", rows, ahead.residual)
            grads = session.gradients(session.blocks, r, rows, ahead.backward)
            w, g = mpc.concat(weights), mpc.concat(grads)  # one exact truncation for all
            terms = [(w, penalty, session.fp.frac_bits), (g, lr / size, session.raw_bits)]
            delta = mpc.lincomb_exact(terms, session.update_bits, ahead.update)
            updated = mpc.sub(w, delta)
            mpc.free(z, r, w, g, delta, *weights, *grads)
            weights = mpc.split(updated, widths)
            mpc.free(updated)
            iterations += 1
        epochs_run = epoch + 1
        loss = session.validation_loss(weights, dealt_val)
        if decide is None and not (math.isfinite(loss) and loss >= 0.0):
            # a mean of squares: anything else is an MPC fault (e.g. a fixed-point value past
            # its bound ruins every weight), never an improvement to keep and release
            raise MpcProtocolError(
                f"the validation loss of epoch {epoch} came out {loss!r}, which a mean of "
                "squares cannot be: a fixed-point fault in the shared computation",
                hint="train again (fresh randomness); nothing was released",
            )
        improved = loss < best - config.min_delta
        stale = 0 if improved else stale + 1
        stop = stale >= config.patience
        if decide is not None:
            loss, improved, stop = decide(loss)
        curve.append((epoch, lr, loss, time.perf_counter() - epoch_start))
        if improved:
            best, best_epoch = loss, epoch
            mpc.free(*best_weights)
            best_weights = [mpc.copy(w) for w in weights]
        if stop:
            break
    return Fitted(best_weights, best_epoch, epochs_run, iterations, curve)


def train(
    parties: Sequence[PartyData],
    config: TrainConfig | None = None,
    *,
    decide: Callable[[float], tuple[float, bool, bool]] | None = None,
) -> VflResult:
    """Train VFL logistic regression; see the module docstring for what each party learns.

    ``decide`` (across nodes, where each node runs this program with placeholders for the
    others) replaces the early-stopping rule: called after each epoch with the validation
    Brier score as computed here, it returns (the score, improved, stop) that every party
    follows — the label party's decisions (services/train_roles.py).
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    session = _Session(parties, config)
    fitted = fit(session, config, decide)
    curve = [EpochRecord(*point) for point in fitted.curve]

    def part(party: str, weights: Floats, intercept: float | None) -> PartyModel:
        return PartyModel(
            party, session.columns[party], weights, session.scalers[party], intercept
        )

    return VflResult(
        models=release(session, fitted, part),
        validation=curve,
        **run_facts(session, fitted, started, config),
    )


M = TypeVar("M", bound="PartyModel")


def release(
    session: _Session, fitted: Fitted, part: Callable[[str, Floats, float | None], M]
) -> dict[str, M]:
    """Open each best-epoch weight block to its owner only (the intercept goes with the label
    party's block); ``part`` makes the owner's model part from (party, weights, intercept)."""
    session.log.step = "release"
    models: dict[str, M] = {}
    for block, w in zip(session.blocks, fitted.best_weights, strict=True):
        opened = session.mpc.reveal(w, [block.party], f"weights of {block.party} (to its owner)")
        values = session.fp.decode(opened)
        intercept = None
        if block.party == session.label:
            values, intercept = values[:-1], float(values[-1])
        models[block.party] = part(block.party, values, intercept)
    return models


def run_facts(
    session: _Session, fitted: Fitted, started: float, config: TrainConfig
) -> dict[str, Any]:
    """What every vertical regression reports about its run besides models and curve."""
    mpc = session.mpc
    return {
        "label_party": session.label,
        "compute_parties": (mpc.parties[0].name, mpc.parties[1].name),
        "dealer": session.dealer.name,
        "epochs_run": fitted.epochs_run,
        "iterations": fitted.iterations,
        "best_epoch": fitted.best_epoch,
        "seconds": time.perf_counter() - started,
        "dealer_seconds": session.dealer.seconds,
        "bytes_by_link": {f"{a}->{b}": s.bytes for (a, b), s in session.net.links.items()},
        "openings": list(session.log.openings),
        "masked_openings": session.log.masked_openings,
        "config": config,
    }


def predict(
    models: Mapping[str, PartyModel],
    features: Mapping[str, Floats],
    *,
    label_party: str,
    to: str | None = None,
    frac_bits: int = 16,
) -> Prediction:
    """Score new aligned rows: each party computes ``X_p w_p`` at home, the pieces are
    secret-shared between the label party and one other party and summed, and only the total
    is opened — to ``to`` (default: the label party)."""
    if set(models) != set(features):
        raise InvalidTrainingInput("every model part needs its party's features and vice versa")
    others = [name for name in models if name != label_party]
    if label_party not in models or not others:
        raise InvalidTrainingInput("prediction needs the label party and at least one other")
    rows = {np.asarray(x).shape[0] for x in features.values()}
    if len(rows) != 1:
        raise InvalidTrainingInput("the parties' rows are not aligned (different row counts)")
    net = Network()
    nodes = {name: Party(name, net) for name in models}
    log = OpenLog(step="predict")
    fp = FixedPoint(frac_bits)
    mpc = Mpc(nodes[label_party], nodes[others[0]], Dealer("operator", net), fp, log)
    total: Shared | None = None
    for name, model in models.items():
        partial = fp.encode(model.partial_score(np.asarray(features[name], dtype=np.float64)))
        part = mpc.share(nodes[name], partial, prefix=f"score/{name}")
        total = part if total is None else mpc.add(total, part)
    assert total is not None
    recipient = to or label_party
    opened = mpc.reveal(total, [recipient], f"scores (to {recipient})")
    return Prediction(fp.decode(opened), recipient, list(log.openings))
