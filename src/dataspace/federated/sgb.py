"""SecureBoost-style vertical gradient-boosted trees (Cheng et al. 2019), on additive shares.

Parties hold different columns of the same PSI-aligned rows; the *label party* (the bank)
holds the labels. Per boosting round the label party computes ``g = p - y`` and
``h = p(1 - p)`` and, per tree level, sends them **protected** to every passive party, who
buckets them by its own quantile bins (computed at home) and returns protected per-bin sums;
the label party recovers the sums, finds the best split (gain) over all parties' columns and
tells the owner only "the split is yours: your column j, bin k". The owner keeps the
threshold in its split book under a record id; the tree, held by the label party, stores
(owner, record id) and the leaf values. Prediction routes through the owners.

Protection: SecureBoost uses Paillier. Measured here (``phe`` 1.5, 2048-bit keys, no gmpy2)
one encryption costs ~90 ms and one ciphertext addition ~0.15 ms: 100k rows would take hours
per tree. We use instead the existing mpc engine's building blocks — additive shares over
Z_2^64 with correlated randomness from the space operator acting as dealer
(:mod:`.sgb_share`) — which is O(rows x columns) ``uint64`` work per level.

What leaks (SecureBoost is **not provably secure**; SecretFlow's docs say so too):

* to the label party: every node's instance space — which rows go left and right at every
  split, including splits on passive columns — the per-bin (G, H) sums of every passive
  column at every node it aggregates, each passive column's global row count per bin, and
  which passive column (by index) each split uses;
* to the owner of a split: the rows that reach that node (sent with "the split is yours"),
  and at prediction time the rows asking it for a direction;
* to the dealer: nothing (random numbers only); dealer + one party colluding: everything
  that party's peer masked.

Because of the first item :class:`SecureBoost` refuses to train unless the caller passes
``allow_secureboost_leakage=True`` — to stand for "the agreement's policy names
SecureBoost and its leakage".
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dataspace.errors import Forbidden
from dataspace.federated.errors import InvalidTrainingInput, MalformedMessage
from dataspace.federated.mpc.net import Network
from dataspace.federated.sgb_share import (
    ShareDealer,
    ShareLabel,
    SharePassive,
    frac_bits_for,
    pack,
    unpack,
)
from dataspace.federated.sgb_tree import (
    Binner,
    FeatureRef,
    Histograms,
    SgbParams,
    Tree,
    base_score,
    grow_tree,
    logistic_grad,
    too_small,
)
from dataspace.federated.vlr import PartyData

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

LEAKAGE = (
    "label party learns each node's instance space (rows left/right at every split), "
    "per-bin gradient/hessian sums of passive columns, their global per-bin row counts "
    "and the column index of each split; a split's owner learns the rows reaching that node"
)


class SecureBoostNotAllowed(Forbidden):
    code = "secureboost_not_allowed"

    def __init__(self) -> None:
        super().__init__(
            "SecureBoost reveals each tree node's instance space to the label party and is "
            "not provably secure; training refused",
            hint="train only where the agreement's policy names SecureBoost and its leakage, "
            "then pass allow_secureboost_leakage=True — or use vertical LR (vlr)",
            leakage=LEAKAGE,
        )


def split_reply(reply: Any) -> tuple[int, Mask] | None:
    """A passive party's answer to a split: (record, left mask), or None if it refused."""
    answer = np.asarray(reply)
    if answer.size and int(answer[0]) < 0:
        return None
    return int(answer[0]), answer[1:].astype(bool)


class SplitBook:
    """A party's private half of its splits: record id -> (column, threshold)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, float]] = []

    def add(self, column: int, threshold: float) -> int:
        self.records.append((column, threshold))
        return len(self.records) - 1

    def left(self, record: int, features: Floats) -> Mask:
        column, threshold = self.records[record]
        return np.asarray(features[:, column] <= threshold)


class _Passive:
    """A passive party: its columns, bins and split book never leave it."""

    def __init__(self, data: PartyData, net: Network, params: SgbParams) -> None:
        self.name, self.net = data.name, net
        self.features = np.asarray(data.features, dtype=np.float64)
        self.binner = Binner.fit(self.features, params.bins)
        self.bins = self.binner.transform(self.features)
        self.share = SharePassive(self.name, net, self.bins, self.binner.sizes())
        self.book = SplitBook()
        self.least = params.min_child_rows

    def take_split(self, label: str) -> None:
        column, k = (int(v) for v in self.net.recv(self.name, label, "sgb/split"))
        rows = np.asarray(self.net.recv(self.name, label, "sgb/split/rows"), dtype=np.int64)
        # A split on a bin it does not have, or rows named twice or out of order, is no
        # split an honest label party asks for: refuse it rather than answer.
        if not 0 <= column < self.bins.shape[1] or not 0 <= k < len(self.binner.edges[column]):
            raise MalformedMessage(f"split asks for bin {k} of column {column}, which "
                                   f"{self.name} does not have")
        if rows.ndim != 1 or (rows.size and (rows[0] < 0 or rows[-1] >= self.bins.shape[0]
                                             or (np.diff(rows) <= 0).any())):
            raise MalformedMessage("a split's rows must be distinct training rows, in order")
        left = self.bins[rows, column] <= k
        if too_small(left, self.least):  # refused: the label party keeps the node a leaf
            self.net.send(self.name, label, "sgb/split/left", np.array([-1], dtype=np.int64))
            return
        record = self.book.add(column, float(self.binner.edges[column][k]))
        self.net.send(self.name, label, "sgb/split/left", np.r_[record, left].astype(np.int64))


class _Label:
    """The label party's state and its view of the histograms."""

    def __init__(self, data: PartyData, net: Network, params: SgbParams) -> None:
        self.name, self.net = data.name, net
        self.least = params.min_child_rows
        self.features = np.asarray(data.features, dtype=np.float64)
        assert data.labels is not None
        self.labels = np.asarray(data.labels, dtype=np.float64)
        self.binner = Binner.fit(self.features, params.bins)
        self.bins = self.binner.transform(self.features)
        sizes = self.binner.sizes()
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.sums = Histograms(self.bins, sizes)
        self.book = SplitBook()
        self.shares: dict[str, ShareLabel] = {}
        self.features_ref = [
            FeatureRef(self.name, j, int(self.offsets[j]), s) for j, s in enumerate(sizes)
        ]


class _Source:
    """:class:`HistogramSource` for :func:`grow_tree`, driving the parties' messages."""

    def __init__(
        self, label: _Label, passives: list[_Passive], dealer: ShareDealer, frac_bits: int
    ) -> None:
        self.label, self.passives, self.dealer = label, passives, dealer
        self.frac_bits = frac_bits
        self.features = list(label.features_ref)
        offset = label.total
        for p in passives:
            sizes = p.binner.sizes()
            for j, s in enumerate(sizes):
                self.features.append(FeatureRef(p.name, j, offset, s))
                offset += s
        self.width = offset
        self.calls = 0
        self.dealer_seconds = 0.0
        self.nodes_revealed = 0

    def histograms(self, nodes: Sequence[Ints], g: Floats, h: Floats) -> list[Floats]:
        lab = self.label
        own = lab.sums(nodes, g, h)
        out = [np.empty((self.width, 2)) for _ in nodes]
        for hist, o in zip(out, own, strict=True):
            hist[: lab.total] = o
        if not self.passives:
            return out
        self.calls += 1
        packed = pack(g, h, self.frac_bits)
        x = np.zeros((g.shape[0], len(nodes)), dtype=np.uint64)
        for c, rows in enumerate(nodes):
            x[rows, c] = packed[rows]
        offset = lab.total
        for p in self.passives:
            tag = f"{p.name}/{self.calls}"
            start = time.perf_counter()
            self.dealer.level(p.name, lab.name, tag, len(nodes))
            self.dealer_seconds += time.perf_counter() - start
            share = lab.shares[p.name]
            seed = share.send_masked(self.dealer.name, tag, x)
            p.share.level(self.dealer.name, lab.name, tag)
            gs, hs = unpack(share.collect(tag, seed, len(nodes)), self.frac_bits)
            for c, hist in enumerate(out):
                hist[offset : offset + share.total, 0] = gs[:, c]
                hist[offset : offset + share.total, 1] = hs[:, c]
            offset += share.total
        return out

    def split(self, node_rows: Ints, feature: FeatureRef, k: int) -> tuple[int, Mask] | None:
        lab = self.label
        self.nodes_revealed += 1
        if feature.party == lab.name:
            left = np.asarray(lab.bins[node_rows, feature.column] <= k)
            if too_small(left, lab.least):
                return None
            record = lab.book.add(feature.column, float(lab.binner.edges[feature.column][k]))
            return record, left
        owner = next(p for p in self.passives if p.name == feature.party)
        lab.net.send(lab.name, owner.name, "sgb/split", np.array([feature.column, k]))
        lab.net.send(lab.name, owner.name, "sgb/split/rows", node_rows)
        owner.take_split(lab.name)
        return split_reply(lab.net.recv(lab.name, owner.name, "sgb/split/left"))


@dataclass
class SgbModel:
    """A trained model. ``trees`` and ``base`` are the label party's; ``books[p]`` is held
    by party ``p`` alone (its thresholds)."""

    label_party: str
    parties: tuple[str, ...]
    trees: list[Tree]
    base: float
    books: dict[str, SplitBook]
    params: SgbParams
    frac_bits: int
    seconds: float = 0.0
    dealer_seconds: float = 0.0
    bytes_by_link: dict[str, int] = field(default_factory=dict)
    nodes_revealed: int = 0
    leakage: str = LEAKAGE

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes_by_link.values())

    def owners(self) -> dict[str, int]:
        """How many splits each party holds (``model show``: who holds which part)."""
        counts = dict.fromkeys(self.parties, 0)
        for tree in self.trees:
            for owner, record in zip(tree.owner, tree.split, strict=True):
                if record >= 0:
                    counts[owner] += 1
        return counts


def _check(parties: Sequence[PartyData]) -> tuple[PartyData, list[PartyData]]:
    names = [p.name for p in parties]
    if len(parties) < 1 or len(set(names)) != len(names):
        raise InvalidTrainingInput("parties must be distinctly named")
    labelled = [p for p in parties if p.labels is not None]
    if len(labelled) != 1:
        raise InvalidTrainingInput(f"exactly one party must hold labels, found {len(labelled)}")
    label = labelled[0]
    rows = label.features.shape[0]
    for p in parties:
        if p.features.ndim != 2 or p.features.shape[0] != rows:
            raise InvalidTrainingInput(
                f"party {p.name} has misaligned rows",
                hint="align all parties on the same entities with PSI 'align' mode first",
            )
        if not np.isfinite(p.features).all():
            raise InvalidTrainingInput(f"party {p.name} has missing or infinite values")
    assert label.labels is not None
    if not np.isin(label.labels, (0.0, 1.0)).all():
        raise InvalidTrainingInput("labels must be 0 or 1")
    return label, [p for p in parties if p is not label]


class SecureBoost:
    """Vertical GBDT. ``allow_secureboost_leakage`` must be True for :meth:`fit` to run."""

    name = "vgbdt"

    def __init__(
        self, params: SgbParams | None = None, *, allow_secureboost_leakage: bool = False
    ) -> None:
        self.params = params or SgbParams()
        self.allowed = allow_secureboost_leakage

    def fit(self, parties: Sequence[PartyData], dealer: str = "operator") -> SgbModel:
        if self.allowed is not True:
            raise SecureBoostNotAllowed()
        label_data, passive_data = _check(parties)
        start = time.perf_counter()
        net = Network()
        params = self.params
        label = _Label(label_data, net, params)
        passives = [_Passive(p, net, params) for p in passive_data]
        share_dealer = ShareDealer(dealer, net)
        rows = label.labels.shape[0]
        frac_bits = frac_bits_for(rows)
        dealer_setup = 0.0
        for p in passives:
            t = time.perf_counter()
            share_dealer.setup(p.name, rows, p.features.shape[1])
            dealer_setup += time.perf_counter() - t
            p.share.setup(dealer, label.name)
            share = ShareLabel(label.name, net, p.name, p.binner.sizes())
            share.setup()
            label.shares[p.name] = share
        source = _Source(label, passives, share_dealer, frac_bits)
        source.dealer_seconds += dealer_setup
        base = base_score(label.labels)
        scores = np.full(rows, base)
        trees = []
        for _ in range(params.trees):
            g, h = logistic_grad(scores, label.labels)
            tree, update = grow_tree(source, g, h, params)
            trees.append(tree)
            scores += update
        books = {label.name: label.book} | {p.name: p.book for p in passives}
        return SgbModel(
            label_party=label.name,
            parties=tuple(p.name for p in parties),
            trees=trees,
            base=base,
            books=books,
            params=params,
            frac_bits=frac_bits,
            seconds=time.perf_counter() - start,
            dealer_seconds=source.dealer_seconds,
            bytes_by_link={f"{a}->{b}": s.bytes for (a, b), s in net.links.items()},
            nodes_revealed=source.nodes_revealed,
        )


def predict(model: SgbModel, blocks: Mapping[str, Floats]) -> Floats:
    """Scores (log-odds) for new aligned rows; each split's direction is computed by its
    owner on its own columns (the label party sends the rows at the node, the owner answers
    left/right)."""
    net = Network()
    label = model.label_party
    n = int(np.asarray(blocks[label]).shape[0])

    def left_of(record: int, rows: Ints, owner: str) -> Mask:
        if owner == label:
            return model.books[owner].left(record, np.asarray(blocks[owner])[rows])
        net.send(label, owner, "sgb/route", np.r_[record, rows].astype(np.int64))
        asked = np.asarray(net.recv(owner, label, "sgb/route"), dtype=np.int64)
        features = np.asarray(blocks[owner], dtype=np.float64)
        answer = model.books[owner].left(int(asked[0]), features[asked[1:]])
        net.send(owner, label, "sgb/route/left", answer.astype(np.int64))
        return np.asarray(net.recv(label, owner, "sgb/route/left")).astype(bool)

    out = np.full(n, model.base)
    for tree in model.trees:
        out += _route_owned(tree, n, left_of)
    return out


class _Router(Protocol):
    def __call__(self, record: int, rows: Ints, owner: str) -> Mask: ...


def _route_owned(tree: Tree, n: int, router: _Router) -> Floats:
    out = np.zeros(n)
    stack = [(0, np.arange(n, dtype=np.int64))]
    while stack:
        node, rows = stack.pop()
        if tree.split[node] < 0:
            out[rows] = tree.value[node]
            continue
        if rows.size == 0:
            continue
        mask = router(tree.split[node], rows, tree.owner[node])
        stack += [(tree.left[node], rows[mask]), (tree.right[node], rows[~mask])]
    return out


__all__ = [
    "LEAKAGE",
    "SecureBoost",
    "SecureBoostNotAllowed",
    "SgbModel",
    "SgbParams",
    "SplitBook",
    "predict",
]
