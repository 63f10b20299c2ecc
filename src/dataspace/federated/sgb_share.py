"""Per-bin gradient sums of a passive party's columns, on additive shares over Z_2^64.

The label party L holds, per row, packed fixed-point gradients ``x`` (one ``uint64`` column
per tree node being aggregated, zero outside the node). The passive party P holds each
column's bin index per row. L must learn ``sum_{i: bin_j(i) = k} x_i`` for every column j and
bin k, P must learn nothing about ``x``, and L nothing about the bins beyond those sums.

A dealer D (the space operator, not a computing party, semi-honest, colluding with nobody)
hands out a *permutation correlation* per passive column j:

* setup, once per training: D draws a uniform permutation ``π_j`` and sends it to P; P sends L
  ``lab_j = bin_j[π_j]`` — the multiset of bin labels in an order uniformly random to L;
* per tree level: D draws a seed; L and D expand it (AES-256-CTR) to uniform ``a`` and ``b_j``;
  D sends P ``d_j = a[π_j] - b_j``. L sends P ``m = x - a`` (uniform to P).
  P: ``s_j = m[π_j] + d_j = x[π_j] - b_j`` — shares of ``x[π_j]``, L holding ``b_j``.
  Bin sums: P sums ``s_j`` over positions with label k (equivalently ``m`` by ``bin_j`` plus
  ``d_j`` by ``lab_j``), L sums ``b_j`` by ``lab_j``; P sends its sums to L, who adds.

What each sees: P — ``π_j`` (its own, from D), ``m`` and ``d_j`` (uniform): nothing of ``x``.
L — ``lab_j`` (a uniformly shuffled list of bin labels: the *global* row count per bin of
each passive column, nothing per row), and the per-bin sums (what SecureBoost reveals).
D — only its own random numbers. Everything travels as :mod:`..mpc.wire` bytes.
"""

from __future__ import annotations

import secrets
import time

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import MalformedMessage
from dataspace.federated.mpc.fixedpoint import Ring
from dataspace.federated.mpc.net import Network
from dataspace.federated.mpc.rand import Csprng, expand
from dataspace.federated.sgb_tree import BinOrder

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

LOW = np.uint64(0xFFFFFFFF)


def frac_bits_for(rows: int) -> int:
    """Fractional bits so that packed sums over ``rows`` rows cannot overflow:
    ``|sum g| * 2^f < 2^31`` (|g| <= 1) and ``sum h * 2^f < 2^32`` (h <= 1/4)."""
    return int(min(20, 30 - int(np.ceil(np.log2(max(rows, 2))))))


def pack(g: Floats, h: Floats, frac_bits: int) -> Ring:
    """``h`` in the low 32 bits, signed ``g`` in the high 32 bits (mod 2^64)."""
    scale = float(1 << frac_bits)
    hi = np.rint(g * scale).astype(np.int64).astype(np.uint64) << np.uint64(32)
    return hi + np.rint(h * scale).astype(np.uint64)


def unpack(total: Ring, frac_bits: int) -> tuple[Floats, Floats]:
    scale = float(1 << frac_bits)
    low = total & LOW
    g = ((total - low).view(np.int64) >> np.int64(32)).astype(np.float64) / scale
    return g, low.astype(np.float64) / scale


class ShareDealer:
    """The operator's part: permutations at setup, a seed and ``d_j`` per level."""

    def __init__(self, name: str, net: Network) -> None:
        self.name, self.net = name, net
        self.rng = Csprng()
        self.perms: dict[str, Ints] = {}
        self.seconds = 0.0
        self._buffers: dict[str, Ring] = {}

    def _buffer(self, name: str, shape: tuple[int, ...]) -> Ring:
        """A scratch array kept across levels (fresh 8 MB arrays cost page faults)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = np.empty(shape, dtype=np.uint64)
        return buf

    def setup(self, passive: str, rows: int, columns: int) -> None:
        perms = np.argsort(self.rng.ring((columns, rows)), axis=1).astype(np.int64)
        self.perms[passive] = perms
        self.net.send(self.name, passive, "sgb/perm", perms)

    def level(self, passive: str, label: str, tag: str, width: int) -> None:
        start = time.perf_counter()
        perms = self.perms[passive]
        columns, rows = perms.shape
        seed = secrets.token_bytes(32)
        self.net.send(self.name, label, f"sgb/{tag}/seed", np.frombuffer(seed, dtype="<u8"))
        a = expand(seed, 0, (width, rows), out=self._buffer("a", (width, rows)))  # a row/node
        d = self._buffer("d", (width, columns, rows))  # reused: the message is a copy
        gathered = self._buffer("gathered", (rows,))
        for c in range(width):
            for j, perm in enumerate(perms):
                b = expand(seed, _stream(c, j, columns), (rows,), out=d[c, j])
                np.subtract(np.take(a[c], perm, out=gathered), b, out=b)  # a[π_j] - b_j
        self.net.send(self.name, passive, f"sgb/{tag}/d", d)
        self.seconds += time.perf_counter() - start


def _stream(node: int, column: int, columns: int) -> int:
    """The AES-CTR nonce label of ``b_j`` for one node (label 0 is ``a``)."""
    return 1 + node * columns + column


class SharePassive:
    """A passive party's part: bins its columns at home, answers with its share of sums."""

    def __init__(self, name: str, net: Network, bins: Ints, sizes: list[int]) -> None:
        self.name, self.net = name, net
        self.bins, self.sizes = bins, sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.perms: Ints | None = None
        self.by_label: BinOrder | None = None
        self._shares: Ring | None = None

    def setup(self, dealer: str, label: str) -> None:
        perms = np.asarray(self.net.recv(self.name, dealer, "sgb/perm"), dtype=np.int64)
        labs = np.take_along_axis(np.asarray(self.bins).T, perms, axis=1)  # bin_j[π_j]
        self.perms, self.by_label = perms, BinOrder(labs, self.sizes)
        self.net.send(self.name, label, "sgb/labels", labs)

    def level(self, dealer: str, label: str, tag: str) -> None:
        """``s_j = m[π_j] + d_j`` (shares of ``x[π_j]``), summed by ``lab_j``: ``d_j`` is read
        in order and the gathers read ``m`` and ``s_j``, which stay in cache."""
        assert self.perms is not None and self.by_label is not None, "setup() first"
        m = np.asarray(self.net.recv(self.name, label, f"sgb/{tag}/m"), dtype=np.uint64)
        d = np.asarray(self.net.recv(self.name, dealer, f"sgb/{tag}/d"), dtype=np.uint64)
        columns, rows = self.perms.shape
        if m.ndim != 2 or m.shape[1] != rows or d.shape != (m.shape[0], columns, rows):
            raise MalformedMessage(f"a histogram level of shape {m.shape} does not fit the "
                                   f"dealer's {d.shape} over {rows} training rows")
        out = np.empty((self.total, m.shape[0]), dtype=np.uint64)
        if self._shares is None or self._shares.shape != (m.shape[1],):
            self._shares = np.empty(m.shape[1], dtype=np.uint64)
        shares = self._shares
        for c in range(m.shape[0]):  # one row of m (and of d) per node
            for j, perm in enumerate(self.perms):
                np.add(np.take(m[c], perm, out=shares), d[c, j], out=shares)
                self.by_label.sum_column(j, shares, out[:, c])
        self.net.send(self.name, label, f"sgb/{tag}/sums", out)


class ShareLabel:
    """The label party's side for one passive party."""

    def __init__(self, name: str, net: Network, passive: str, sizes: list[int]) -> None:
        self.name, self.net, self.passive = name, net, passive
        self.sizes = sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.by_label: BinOrder | None = None
        self._b: Ring | None = None
        self._m: Ring | None = None

    def setup(self) -> None:
        labs = np.asarray(self.net.recv(self.name, self.passive, "sgb/labels"), dtype=np.int64)
        self.by_label = BinOrder(labs, self.sizes)

    def send_masked(self, dealer: str, tag: str, x: Ring) -> bytes:
        """``x`` is (rows, nodes); ``m = x - a`` travels node by node (one row per node)."""
        seed = np.asarray(self.net.recv(self.name, dealer, f"sgb/{tag}/seed"), dtype="<u8")
        raw = seed.tobytes()
        shape = (x.shape[1], x.shape[0])
        if self._m is None or self._m.shape != shape:
            self._m = np.empty(shape, dtype=np.uint64)  # reused: the message is a copy
        m = expand(raw, 0, shape, out=self._m)
        np.subtract(x.T, m, out=m)
        self.net.send(self.name, self.passive, f"sgb/{tag}/m", m)
        return raw

    def collect(self, tag: str, seed: bytes, width: int) -> Ring:
        assert self.by_label is not None, "setup() first"
        order = self.by_label
        total = np.array(self.net.recv(self.name, self.passive, f"sgb/{tag}/sums"), np.uint64)
        if self._b is None or self._b.shape != (order.columns, order.n):
            self._b = np.empty((order.columns, order.n), dtype=np.uint64)  # reused
        b = self._b
        sums = np.empty(order.total, dtype=np.uint64)
        for c in range(width):
            for j in range(order.columns):
                expand(seed, _stream(c, j, order.columns), (order.n,), out=b[j])
                order.sum_column(j, b[j], sums)
            total[:, c] += sums
        return total
