"""SecureBoost inference: new aligned rows routed through the trees, one round trip per
tree level and split owner.

The label party holds the trees (owner and record id of every split, the leaf values); each
party holds the thresholds of its own splits (:class:`~dataspace.federated.sgb.SplitBook`).
:func:`predict_levels` walks **all trees at once, level by level**: at each level it evaluates
its own splits itself and, for every other owner, sends one request listing (record id, the
rows reaching that node) for each of that owner's splits on the level; the owner answers only
the left/right bit of each listed row (:func:`answer`). Round trips: at most ``max_depth`` per
owner, whatever the number of trees.

Leakage (standard SecureBoost inference, docs/sgb.md): the label party learns, for every row,
on which side of each passive split it falls (so its path through every tree, and the
prediction); an owner learns which of the new rows reach each of its split nodes (and so a
little about the splits above it, its own or others'). Nobody learns another's thresholds or
columns. The row numbers are positions in the PSI-aligned order, public to the parties.

Messages are ``int64`` arrays: a request ``[ROUTE, k, record_1, n_1, …, record_k, n_k, rows_1…,
rows_k…]`` or ``[DONE]``; an answer is the concatenated bits (1 = left), packed eight to a
byte into ``uint64`` words (:func:`pack_bits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import MalformedMessage
from dataspace.federated.sgb import SplitBook
from dataspace.federated.sgb_tree import Tree

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

ROUTE, DONE = 1, 0
REQUEST, ANSWER = "sgb/predict", "sgb/predict/left"


class Owners(Protocol):
    """The label party's link to the other split owners."""

    def ask(self, owner: str, request: Ints) -> None:
        """Send ``request`` (see :func:`encode_request`) to ``owner``."""

    def bits(self, owner: str) -> npt.NDArray[np.generic]:
        """The answer of ``owner`` to the last request."""


def encode_request(items: Sequence[tuple[int, Ints]]) -> Ints:
    head = [ROUTE, len(items)]
    for record, rows in items:
        head += [int(record), int(rows.size)]
    parts = [np.asarray(head, dtype=np.int64)] + [np.asarray(r, dtype=np.int64) for _, r in items]
    return np.concatenate(parts).astype(np.int64)


def decode_request(
    message: npt.NDArray[np.generic], rows: int, records: int
) -> list[tuple[int, Ints]]:
    """The (record id, rows) pairs of a request, checked against what this owner holds."""
    msg = np.asarray(message)
    if msg.dtype != np.int64 or msg.ndim != 1 or msg.size < 2 or int(msg[0]) != ROUTE:
        raise MalformedMessage("a prediction request must be int64 [ROUTE, k, …]")
    k = int(msg[1])
    head = 2 + 2 * k
    if k < 0 or msg.size < head:
        raise MalformedMessage(f"a prediction request announces {k} splits but is too short")
    pairs = msg[2:head].reshape(k, 2)
    sizes = pairs[:, 1]
    if (sizes < 0).any() or int(sizes.sum()) != msg.size - head:
        raise MalformedMessage("a prediction request's row counts do not add up")
    if k and ((pairs[:, 0] < 0).any() or (pairs[:, 0] >= records).any()):
        raise MalformedMessage(f"a prediction request names a split record outside 0..{records}")
    body = msg[head:]
    if body.size and (body.min() < 0 or body.max() >= rows):
        raise MalformedMessage(f"a prediction request names rows outside 0..{rows - 1}")
    out, start = [], 0
    for record, size in pairs.tolist():
        out.append((int(record), body[start : start + size].astype(np.int64)))
        start += size
    return out


def pack_bits(bits: Mask) -> npt.NDArray[np.uint64]:
    """Bits, eight to a byte, in whole little-endian ``uint64`` words (zero padding)."""
    packed = np.packbits(np.asarray(bits, dtype=bool))
    padded = np.zeros(-(-packed.size // 8) * 8, dtype=np.uint8)
    padded[: packed.size] = packed
    return padded.view("<u8").copy()


def unpack_bits(words: npt.NDArray[np.generic], count: int) -> Mask:
    """The first ``count`` bits of :func:`pack_bits` output; refuses a wrong length or padding."""
    w = np.asarray(words)
    if w.dtype != np.uint64 or w.ndim != 1 or w.size != -(-count // 64):
        raise MalformedMessage(f"an answer must be {-(-count // 64)} uint64 words of bits")
    bits = np.unpackbits(w.astype("<u8").view(np.uint8))
    if bits[count:].any():
        raise MalformedMessage("an answer's padding bits are not zero")
    return bits[:count].astype(bool)


def answer(book: SplitBook, features: Floats, message: npt.NDArray[np.generic]) -> Any:
    """The owner's side: left (1) or right (0) for each listed row at each listed split,
    packed (:func:`pack_bits`)."""
    items = decode_request(message, int(features.shape[0]), len(book.records))
    bits = [book.left(record, features[rows]) for record, rows in items]
    return pack_bits(np.concatenate(bits) if bits else np.zeros(0, dtype=bool))


def predict_levels(
    trees: Sequence[Tree],
    base: float,
    n: int,
    label: str,
    own_left: Callable[[int, Ints], Mask],
    owners: Owners,
) -> tuple[Floats, int]:
    """Scores (log-odds) of ``n`` rows, and how many split nodes were asked of other owners.

    Equal to :func:`dataspace.federated.sgb.predict` on the same rows (the same per-tree
    accumulation)."""
    leaves = np.zeros((len(trees), n))
    frontier: list[tuple[int, int, Ints]] = [
        (t, 0, np.arange(n, dtype=np.int64)) for t in range(len(trees))
    ]
    asked = 0
    while frontier:
        decided: list[tuple[int, int, Ints, Mask]] = []
        remote: dict[str, list[tuple[int, int, Ints]]] = {}
        for t, node, rows in frontier:
            tree = trees[t]
            if tree.split[node] < 0:
                leaves[t, rows] = tree.value[node]
            elif rows.size == 0:
                continue
            elif tree.owner[node] == label:
                decided.append((t, node, rows, np.asarray(own_left(tree.split[node], rows))))
            else:
                remote.setdefault(tree.owner[node], []).append((t, node, rows))
        for owner, items in remote.items():
            owners.ask(owner, encode_request([(trees[t].split[nd], r) for t, nd, r in items]))
            asked += len(items)
        for owner, items in remote.items():
            expected = sum(int(r.size) for _, _, r in items)
            try:
                bits = unpack_bits(owners.bits(owner), expected)
            except MalformedMessage as exc:
                raise MalformedMessage(f"{owner} answered badly: {exc.message}") from None
            start = 0
            for t, node, rows in items:
                decided.append((t, node, rows, bits[start : start + rows.size]))
                start += rows.size
        frontier = []
        for t, node, rows, mask in decided:
            tree = trees[t]
            frontier += [(t, tree.left[node], rows[mask]), (t, tree.right[node], rows[~mask])]
    out = np.full(n, float(base))
    for t in range(len(trees)):
        out += leaves[t]
    return out, asked
