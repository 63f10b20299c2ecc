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

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dataspace.federated.mpc.fixedpoint import Ring
from dataspace.federated.mpc.net import Network
from dataspace.federated.mpc.rand import Csprng

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

LOW = np.uint64(0xFFFFFFFF)


def expand(seed: bytes, label: int, shape: tuple[int, ...]) -> Ring:
    """Deterministic uniform ring elements from ``seed`` (AES-256-CTR, nonce = ``label``)."""
    # label in the nonce's high half, the block counter in its low half: streams never overlap
    nonce = label.to_bytes(8, "big") + bytes(8)
    enc = Cipher(algorithms.AES(seed), modes.CTR(nonce)).encryptor()
    count = int(np.prod(shape))
    return (
        np.frombuffer(enc.update(bytes(8 * count)), dtype="<u8")
        .reshape(shape)
        .astype(np.uint64, copy=False)
    )


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


class Grouping:
    """Sums of rows of an (n, c) ``uint64`` array by a label per row, mod 2^64.

    Each word is split into 32-bit halves whose sums over n < 2^21 rows are exact in
    float64, so numpy's ``bincount`` does the work; larger n falls back to ``reduceat``.
    """

    def __init__(self, labels: Ints, size: int) -> None:
        self.labels = labels
        self.size = size
        self.order = np.argsort(labels, kind="stable")
        ordered = labels[self.order]
        self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self.groups = ordered[self.starts]

    def sum(self, values: Ring) -> Ring:
        n, width = values.shape
        if n >= 1 << 21:
            out = np.zeros((self.size, width), dtype=np.uint64)
            out[self.groups] = np.add.reduceat(values[self.order], self.starts, axis=0)
            return out
        index = (self.labels[:, None] + self.size * np.arange(width)[None, :]).ravel()
        flat = values.ravel()
        total = self.size * width
        lo = np.bincount(index, weights=(flat & LOW).astype(np.float64), minlength=total)
        hi = np.bincount(index, weights=(flat >> np.uint64(32)).astype(np.float64), minlength=total)
        words = lo.astype(np.uint64) + (hi.astype(np.uint64) << np.uint64(32))
        return np.ascontiguousarray(words.reshape(width, self.size).T)


class ShareDealer:
    """The operator's part: permutations at setup, a seed and ``d_j`` per level."""

    def __init__(self, name: str, net: Network) -> None:
        self.name, self.net = name, net
        self.rng = Csprng()
        self.perms: dict[str, Ints] = {}
        self.seconds = 0.0

    def setup(self, passive: str, rows: int, columns: int) -> None:
        perms = np.argsort(self.rng.ring((columns, rows)), axis=1).astype(np.int64)
        self.perms[passive] = perms
        self.net.send(self.name, passive, "sgb/perm", perms)

    def level(self, passive: str, label: str, tag: str, width: int) -> None:
        perms = self.perms[passive]
        rows = perms.shape[1]
        seed = secrets.token_bytes(32)
        self.net.send(self.name, label, f"sgb/{tag}/seed", np.frombuffer(seed, dtype="<u8"))
        a = expand(seed, 0, (rows, width))
        d = np.empty((perms.shape[0], rows, width), dtype=np.uint64)
        for j, perm in enumerate(perms):
            d[j] = a[perm] - expand(seed, j + 1, (rows, width))
        self.net.send(self.name, passive, f"sgb/{tag}/d", d)


class SharePassive:
    """A passive party's part: bins its columns at home, answers with its share of sums."""

    def __init__(self, name: str, net: Network, bins: Ints, sizes: list[int]) -> None:
        self.name, self.net = name, net
        self.bins, self.sizes = bins, sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.by_bin = [Grouping(bins[:, j], s) for j, s in enumerate(sizes)]
        self.by_label: list[Grouping] = []

    def setup(self, dealer: str, label: str) -> None:
        perms = np.asarray(self.net.recv(self.name, dealer, "sgb/perm"), dtype=np.int64)
        labs = np.stack([self.bins[perm, j] for j, perm in enumerate(perms)])
        self.by_label = [Grouping(lab, s) for lab, s in zip(labs, self.sizes, strict=True)]
        self.net.send(self.name, label, "sgb/labels", labs)

    def level(self, dealer: str, label: str, tag: str) -> None:
        m = np.asarray(self.net.recv(self.name, label, f"sgb/{tag}/m"), dtype=np.uint64)
        d = np.asarray(self.net.recv(self.name, dealer, f"sgb/{tag}/d"), dtype=np.uint64)
        out = np.empty((self.total, m.shape[1]), dtype=np.uint64)
        for j, off in enumerate(self.offsets):
            out[off : off + self.sizes[j]] = self.by_bin[j].sum(m) + self.by_label[j].sum(d[j])
        self.net.send(self.name, label, f"sgb/{tag}/sums", out)


class ShareLabel:
    """The label party's side for one passive party."""

    def __init__(self, name: str, net: Network, passive: str, sizes: list[int]) -> None:
        self.name, self.net, self.passive = name, net, passive
        self.sizes = sizes
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.total = int(sum(sizes))
        self.by_label: list[Grouping] = []

    def setup(self) -> None:
        labs = np.asarray(self.net.recv(self.name, self.passive, "sgb/labels"), dtype=np.int64)
        self.by_label = [Grouping(lab, s) for lab, s in zip(labs, self.sizes, strict=True)]

    def send_masked(self, dealer: str, tag: str, x: Ring) -> bytes:
        seed = np.asarray(self.net.recv(self.name, dealer, f"sgb/{tag}/seed"), dtype="<u8")
        raw = seed.tobytes()
        self.net.send(self.name, self.passive, f"sgb/{tag}/m", x - expand(raw, 0, x.shape))
        return raw

    def collect(self, tag: str, seed: bytes, width: int) -> Ring:
        rows = self.by_label[0].order.shape[0] if self.by_label else 0
        got = self.net.recv(self.name, self.passive, f"sgb/{tag}/sums")
        total = np.array(got, dtype=np.uint64)
        for j, off in enumerate(self.offsets):
            b = expand(seed, j + 1, (rows, width))
            total[off : off + self.sizes[j]] += self.by_label[j].sum(b)
        return total
