"""Histogram gradient-boosted trees (XGBoost's second-order objective), shared by the
federated SecureBoost trainer and its plaintext reference.

One algorithm, two sources of histograms: :func:`grow_tree` asks a :class:`HistogramSource`
for per-bin gradient/hessian sums of the nodes of one level and for the row partition of a
chosen split. :class:`CentralSource` answers from pooled plaintext columns (the parity
reference, :func:`train_central`); :mod:`dataspace.federated.sgb` answers through the
SecureBoost protocol. Same binning, same gain, same tie-breaking: the two differ only by the
fixed-point rounding of the passive parties' sums.

Binary logistic loss: ``g = p - y``, ``h = p (1 - p)``; gain of a split
``(G_L^2/(H_L+λ) + G_R^2/(H_R+λ) - G^2/(H+λ)) / 2``; leaf value ``-η G/(H+λ)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import InvalidTrainingInput

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Words = npt.NDArray[np.uint64]


#: The deepest tree: 2^16 leaves is far beyond what boosting uses, and every level is a round
#: of histograms at each provider.
MAX_DEPTH = 16


def too_small(left: npt.NDArray[np.bool_], least: int) -> bool:
    """Whether either side of a split holds fewer than ``least`` rows."""
    n_left = int(np.count_nonzero(left))
    return min(n_left, left.size - n_left) < least


@dataclass(frozen=True)
class SgbParams:
    """Boosting parameters (names follow XGBoost/LightGBM where they exist)."""

    trees: int = 30
    max_depth: int = 3
    learning_rate: float = 0.3
    l2: float = 1.0  # lambda
    min_child_weight: float = 1.0  # min hessian sum per child
    min_gain: float = 0.0  # gamma
    bins: int = 32  # quantile bins per column (max_bin)
    #: least rows in any child (min_child_samples): a node of a handful of rows gives the label
    #: party each provider's bins for those rows. Across nodes a provider asks at least its
    #: agreement's minGroupSize (or its floor) and refuses a split of its own below it.
    min_child_rows: int = 1

    def __post_init__(self) -> None:
        if self.trees < 1 or self.max_depth < 1:
            raise InvalidTrainingInput("trees and max_depth must be at least 1")
        if self.max_depth > MAX_DEPTH:
            raise InvalidTrainingInput(
                f"max_depth must be at most {MAX_DEPTH}, got {self.max_depth}"
            )
        if isinstance(self.min_child_rows, bool) or not (
            isinstance(self.min_child_rows, int) and self.min_child_rows >= 1
        ):
            raise InvalidTrainingInput(
                f"min_child_rows must be a whole number >= 1, got {self.min_child_rows!r}"
            )
        if not 2 <= self.bins <= 256:
            raise InvalidTrainingInput(f"bins must lie in [2, 256], got {self.bins}")
        if self.learning_rate <= 0 or self.l2 < 0 or self.min_child_weight < 0:
            raise InvalidTrainingInput("learning_rate must be > 0, l2 and min_child_weight >= 0")


@dataclass(frozen=True)
class Binner:
    """Quantile bin edges per column, computed by the column's owner on its own rows.

    ``bin = searchsorted(edges, x, 'left')``: bin ``k`` holds ``edges[k-1] < x <= edges[k]``,
    so "bin <= k" is "x <= edges[k]" — the threshold only the owner keeps.
    """

    edges: tuple[Floats, ...]

    @classmethod
    def fit(cls, x: Floats, bins: int) -> Binner:
        qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        return cls(tuple(np.unique(np.quantile(x[:, j], qs)) for j in range(x.shape[1])))

    def transform(self, x: Floats) -> Ints:
        out = np.empty(x.shape, dtype=np.int64)
        for j, e in enumerate(self.edges):
            out[:, j] = np.searchsorted(e, x[:, j], side="left")
        return out

    def sizes(self) -> list[int]:
        return [len(e) + 1 for e in self.edges]


def logistic_grad(scores: Floats, labels: Floats) -> tuple[Floats, Floats]:
    p = 0.5 * (1.0 + np.tanh(0.5 * scores))
    return p - labels, p * (1.0 - p)


def base_score(labels: Floats) -> float:
    mean = float(np.clip(labels.mean(), 1e-6, 1 - 1e-6))
    return float(np.log(mean / (1 - mean)))


@dataclass
class Tree:
    """Nodes in arrays. Internal node ``i``: ``owner[i]`` holds split record ``split[i]``;
    leaves have ``split[i] == -1`` and a ``value``. Nobody but the owner knows a split's
    column threshold; the label party knows (owner, record id) and the leaf values."""

    owner: list[str] = field(default_factory=list)
    split: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)

    def add(self) -> int:
        self.owner.append("")
        self.split.append(-1)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(0.0)
        return len(self.split) - 1


@dataclass(frozen=True)
class FeatureRef:
    party: str
    column: int  # index within the party's block
    offset: int  # first row of this feature in a node histogram
    size: int  # number of bins


class HistogramSource(Protocol):
    """What :func:`grow_tree` needs from the parties."""

    features: list[FeatureRef]

    def histograms(self, nodes: Sequence[Ints], g: Floats, h: Floats) -> list[Floats]:
        """Per node, a ``(total bins, 2)`` array of (G, H) sums over the node's rows."""
        ...

    def split(
        self, node_rows: Ints, feature: FeatureRef, k: int
    ) -> tuple[int, npt.NDArray[np.bool_]] | None:
        """The owner records "bin <= k" of ``feature``; returns (record id, left mask), or
        None when it refuses a split leaving a child under ``min_child_rows``."""
        ...


def best_split(
    hist: Floats, features: Sequence[FeatureRef], params: SgbParams
) -> tuple[float, int, int]:
    """(gain, feature index, bin) of the best split of one node; gain -inf if none.

    All features at once: each feature's bins laid out in one row of a padded matrix
    (:func:`_layout`), cumulative sums along the rows; ties go to the first feature (in
    order, by more than 1e-12) and, within it, to the first bin."""
    if not features:
        return (-np.inf, -1, -1)
    index, splits = _layout(tuple(features))
    lam, mcw = params.l2, params.min_child_weight
    seg = hist[index]  # (features, width, 2); padding reads a zero row
    seg[index < 0] = 0.0
    gt, ht = seg[:, :, 0].sum(axis=1, keepdims=True), seg[:, :, 1].sum(axis=1, keepdims=True)
    gl = np.cumsum(seg[:, :-1, 0], axis=1)
    hl = np.cumsum(seg[:, :-1, 1], axis=1)
    gr, hr = gt - gl, ht - hl
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = 0.5 * (gl**2 / (hl + lam) + gr**2 / (hr + lam) - gt**2 / (ht + lam))
    gain = np.where(splits & (hl >= mcw) & (hr >= mcw), gain, -np.inf)
    ks = np.argmax(gain, axis=1)
    top = gain[np.arange(len(features)), ks].tolist()
    best = (-np.inf, -1, -1)
    for fi, g in enumerate(top):
        if g > best[0] + 1e-12:
            best = (float(g), fi, int(ks[fi]))
    return best


@functools.lru_cache(maxsize=64)
def _layout(features: tuple[FeatureRef, ...]) -> tuple[Ints, npt.NDArray[np.bool_]]:
    """Row ``i``: the histogram rows of feature ``i`` (-1 as padding), and which of its
    ``width - 1`` split points exist (``size - 1`` of them)."""
    width = max(max(f.size for f in features), 2)
    index = np.full((len(features), width), -1, dtype=np.int64)
    splits = np.zeros((len(features), width - 1), dtype=bool)
    for i, f in enumerate(features):
        index[i, : f.size] = np.arange(f.offset, f.offset + f.size)
        splits[i, : f.size - 1] = True
    return index, splits


def grow_tree(
    source: HistogramSource, g: Floats, h: Floats, params: SgbParams
) -> tuple[Tree, Floats]:
    """Level-wise growth to ``max_depth``; a sibling's histogram is parent minus the
    smaller child's (only the smaller child is aggregated). Returns the tree and each
    training row's leaf value (the label party knows every leaf's rows)."""
    tree = Tree()
    root = tree.add()
    all_rows = np.arange(g.shape[0], dtype=np.int64)
    frontier: list[tuple[int, Ints, Floats]] = [
        (root, all_rows, source.histograms([all_rows], g, h)[0])
    ]
    leaves: list[tuple[int, Ints]] = []
    for depth in range(params.max_depth):
        pairs: list[tuple[int, Ints, Ints, Floats]] = []
        for node, rows, hist in frontier:
            gain, fi, k = best_split(hist, source.features, params)
            if fi < 0 or gain <= params.min_gain:
                leaves.append((node, rows))
                continue
            feature = source.features[fi]
            taken = source.split(rows, feature, k)
            if taken is None or too_small(taken[1], params.min_child_rows):
                leaves.append((node, rows))  # a child would be a handful of rows: stop here
                continue
            record, left = taken
            tree.owner[node], tree.split[node] = feature.party, record
            tree.left[node], tree.right[node] = tree.add(), tree.add()
            pairs.append((node, rows[left], rows[~left], hist))
        if depth == params.max_depth - 1:
            for node, lrows, rrows, _ in pairs:
                leaves += [(tree.left[node], lrows), (tree.right[node], rrows)]
            break
        small = [lr if lr.size <= rr.size else rr for _, lr, rr, _ in pairs]
        hists = source.histograms(small, g, h) if small else []
        frontier = []
        for (node, lrows, rrows, parent), sh in zip(pairs, hists, strict=True):
            other = parent - sh
            lh, rh = (sh, other) if lrows.size <= rrows.size else (other, sh)
            frontier += [(tree.left[node], lrows, lh), (tree.right[node], rrows, rh)]
    else:
        leaves += [(node, rows) for node, rows, _ in frontier]
    update = np.zeros(g.shape[0])
    for node, rows in leaves:
        tree.value[node] = float(
            -params.learning_rate * g[rows].sum() / (h[rows].sum() + params.l2)
        )
        update[rows] = tree.value[node]
    return tree, update


def plain_histograms(
    bins: Ints, offsets: Ints, total: int, nodes: Sequence[Ints], g: Floats, h: Floats
) -> list[Floats]:
    """Plaintext (G, H) per bin for each node: one ``bincount`` over all columns."""
    out = []
    d = bins.shape[1]
    for rows in nodes:
        flat = (np.take(bins, rows, axis=0) + offsets).ravel()
        hist = np.empty((total, 2))
        hist[:, 0] = np.bincount(flat, weights=np.repeat(np.take(g, rows), d), minlength=total)
        hist[:, 1] = np.bincount(flat, weights=np.repeat(np.take(h, rows), d), minlength=total)
        out.append(hist)
    return out


class BinOrder:
    """Sums by label, column by column: ``labels[j]`` (length n) puts position ``t`` of
    column ``j`` into bin ``labels[j, t]`` of ``sizes[j]``; sums come out as one vector of
    ``sum(sizes)`` entries (column ``j``'s bins at ``offsets[j]``).

    Each column is sorted once (stable: within a bin positions stay ascending); a sum is then
    a gather into that order and one ``np.add.reduceat`` over the bins — exact mod 2^64 for
    ``uint64``. Working column by column keeps the gather's source in cache.
    """

    def __init__(self, labels: Ints, sizes: Sequence[int]) -> None:
        labels = np.asarray(labels)
        self.columns, self.n = labels.shape
        small = labels.astype(np.int16 if max(sizes, default=1) < 1 << 15 else np.int64)
        self.order = np.argsort(small, axis=1, kind="stable")  # radix sort for int16
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.sizes = list(sizes)
        self.total = int(sum(sizes))
        self.segments = []  # per column: (bins that are not empty, where their rows start)
        for j, size in enumerate(sizes):
            counts = np.bincount(labels[j], minlength=size)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            self.segments.append((counts > 0, starts[counts > 0]))
        self._buf = np.empty(self.n, dtype=np.uint64)

    def reduce(self, j: int, ordered: npt.NDArray[Any], out: npt.NDArray[Any]) -> None:
        """Column ``j``'s bin sums of ``ordered`` (its values in this order) into ``out``."""
        nonempty, starts = self.segments[j]
        seg = out[self.offsets[j] : self.offsets[j] + self.sizes[j]]
        seg[:] = 0
        if starts.size:
            seg[nonempty] = np.add.reduceat(ordered, starts)

    def sum_column(self, j: int, values: Words, out: Words) -> None:
        """Column ``j``'s sums of ``values`` (n,) by ``labels[j]``, into ``out`` (the full
        ``sum(sizes)`` vector)."""
        self.reduce(j, np.take(values, self.order[j], out=self._buf), out)


class Histograms:
    """Plaintext (G, H) per bin of one party's binned columns, for the nodes of a level.

    A node with many rows is summed in each column's sorted order (:class:`BinOrder`, g and
    h as the real and imaginary parts of one complex vector, zero outside the node); a
    small node by ``bincount`` over its rows only (as :func:`plain_histograms`; the two agree
    to rounding). The federated label party and the plaintext reference use the same class.
    """

    def __init__(self, bins: Ints, sizes: Sequence[int]) -> None:
        self.order = BinOrder(np.asarray(bins).T, sizes)
        self.flat = np.asarray(bins) + self.order.offsets  # (n, d) histogram slots
        self.total = self.order.total

    def __call__(self, nodes: Sequence[Ints], g: Floats, h: Floats) -> list[Floats]:
        n, d = self.flat.shape
        out = []
        for rows in nodes:
            hist = np.empty((self.total, 2))
            if 3 * rows.size >= n:
                weights = np.zeros(n, dtype=np.complex128)
                weights.real[rows] = g[rows]
                weights.imag[rows] = h[rows]
                sums = np.zeros(self.total, dtype=np.complex128)
                for j in range(d):
                    self.order.reduce(j, np.take(weights, self.order.order[j]), sums)
                hist[:, 0], hist[:, 1] = sums.real, sums.imag
            else:
                flat = np.take(self.flat, rows, axis=0).ravel()
                hist[:, 0] = np.bincount(flat, np.repeat(np.take(g, rows), d), self.total)
                hist[:, 1] = np.bincount(flat, np.repeat(np.take(h, rows), d), self.total)
            out.append(hist)
        return out


class CentralSource:
    """All columns pooled in one place, in the clear: the reference implementation."""

    def __init__(self, x: Floats, params: SgbParams, party: str = "central") -> None:
        self.binner = Binner.fit(x, params.bins)
        self.bins = self.binner.transform(x)
        sizes = self.binner.sizes()
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.features = [FeatureRef(party, j, int(self.offsets[j]), s) for j, s in enumerate(sizes)]
        self.records: list[tuple[int, float]] = []
        self.sums = Histograms(self.bins, sizes)

    def histograms(self, nodes: Sequence[Ints], g: Floats, h: Floats) -> list[Floats]:
        return self.sums(nodes, g, h)

    def split(
        self, node_rows: Ints, feature: FeatureRef, k: int
    ) -> tuple[int, npt.NDArray[np.bool_]] | None:
        self.records.append((feature.column, float(self.binner.edges[feature.column][k])))
        return len(self.records) - 1, self.bins[node_rows, feature.column] <= k


@dataclass
class CentralModel:
    trees: list[Tree]
    base: float
    records: list[tuple[int, float]]  # record id -> (column, threshold)

    def decision_function(self, x: Floats) -> Floats:
        out = np.full(x.shape[0], self.base)

        def left_of(record: int, rows: Ints) -> npt.NDArray[np.bool_]:
            column, threshold = self.records[record]
            return np.asarray(x[rows, column] <= threshold)

        for tree in self.trees:
            out += route(tree, x.shape[0], left_of)
        return out


def route(tree: Tree, n: int, left_of: _LeftOf) -> Floats:
    """Leaf values for ``n`` rows, asking ``left_of(record, rows)`` at each internal node."""
    out = np.zeros(n)
    stack = [(0, np.arange(n, dtype=np.int64))]
    while stack:
        node, rows = stack.pop()
        if tree.split[node] < 0:
            out[rows] = tree.value[node]
            continue
        if rows.size == 0:
            continue
        mask = left_of(tree.split[node], rows)
        stack += [(tree.left[node], rows[mask]), (tree.right[node], rows[~mask])]
    return out


class _LeftOf(Protocol):
    def __call__(self, record: int, rows: Ints) -> npt.NDArray[np.bool_]: ...


def train_central(x: Floats, labels: Floats, params: SgbParams | None = None) -> CentralModel:
    """The same GBDT on pooled plaintext columns (the parity reference)."""
    params = params or SgbParams()
    source = CentralSource(np.asarray(x, dtype=np.float64), params)
    base = base_score(labels)
    scores = np.full(labels.shape[0], base)
    trees = []
    for _ in range(params.trees):
        g, h = logistic_grad(scores, labels)
        tree, update = grow_tree(source, g, h, params)
        trees.append(tree)
        scores += update
    return CentralModel(trees, base, source.records)
