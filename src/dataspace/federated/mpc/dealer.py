"""The dealer: hands out correlated randomness (Beaver triples) and never sees inputs.

In production the dealer is the space operator's node, which is **not** one of the computing
parties. It learns nothing about the data: it only draws random numbers. The two computing
parties learn nothing from what it sends them (uniform shares). **A dealer that colludes with
one computing party breaks privacy** — with the triple it can unmask every opened value — so
the operator's trust is part of the threat model (honest-but-curious, no collusion).

Every triple has an id; each party consumes it once (:class:`TripleReused` otherwise). A
party's parts of one triple travel as one message (``triple/<id>``, :func:`wire.pack_arrays`);
inside :meth:`Dealer.batch` the parts of many triples travel as one ``bundle/<id>`` message per
party (fewer, larger messages; the same values). Inside a batch the parts that are uniform on
their own (the first party's share of every split value, a cross triple's ``v`` and the
owner's share of ``U @ v``) are not sent: the recipient gets a fresh 32-byte seed in the
bundle and expands them itself (AES-256-CTR, the dealer's draws in the same order), so only
the corrections travel — about 60 % fewer bytes for vertical LR. The seed goes only to its
recipient, so what each party holds is distributed exactly as before.

Six kinds of correlation:

* ``triple`` — elementwise Beaver triple ``c = a * b`` over shares.
* ``cube_tuple`` — a uniform ``r`` and the powers of its parts that make
  ``a = ±t 2^(63-s) - (r mod 2^63) >> s``, ``a^2`` and ``a^3`` linear in the shares: one
  masked opening truncates ``z`` exactly and gives ``z^3`` (the sigmoid's cubic term);
  ``square_tuple`` (uniform ``a``, ``a^2``) gives ``z^2`` from one opening of ``z - a``.
* ``matrix_triple`` — ``C = A @ B`` for shared-by-shared matrix products.
* ``trunc_pair`` — shares of a uniform ``r``, of its top bit and of its low 63 bits shifted
  right: one masked opening ``x + 2^62 + r`` then truncates ``x`` exactly (:meth:`Mpc.trunc_exact
  <dataspace.federated.mpc.engine.Mpc.trunc_exact>`).
* ``owned mask`` + ``cross triple`` — for a matrix ``X`` held in the clear by one party (its own
  features) times a shared vector: the owner gets a random ``U`` once and sends ``E = X - U``
  to the peer once; every product then takes a fresh ``v`` (to the peer) and shares of
  ``U @ v`` (or ``U.T @ v``). Reusing ``U`` across epochs is SecureML's trick (§4.2 of the
  paper): the peer sees the same ``E`` every time, so nothing new is revealed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dataspace.federated.mpc.fixedpoint import (
    LOW_63,
    Ring,
    field_words,
    pack_fields,
    unpack_fields,
)
from dataspace.federated.mpc.rand import Csprng, SeededStream, expand

if TYPE_CHECKING:
    from dataspace.federated.mpc.net import Network


@dataclass(frozen=True)
class Seeded:
    """A part the recipient expands from its bundle seed instead of receiving it."""

    array: Ring


#: A part's place in a bundle: its shape, and whether it comes from the seed.
PartLayout = tuple[tuple[int, ...], bool]


@dataclass
class Bundle:
    """The triples dealt inside one :meth:`Dealer.batch`: per recipient, (triple id, its
    parts' layout) in dealing order; sent parts are packed in that order after the seed."""

    bid: str
    layout: dict[str, list[tuple[str, list[PartLayout]]]] = field(default_factory=dict)
    parts: dict[str, list[Ring]] = field(default_factory=dict)
    seeds: dict[str, SeededStream] = field(default_factory=dict)


def _plain(part: Ring | Seeded) -> Ring:
    return part.array if isinstance(part, Seeded) else part


class Dealer:
    def __init__(self, name: str, net: Network) -> None:
        self.name = name
        self.net = net
        self.rng = Csprng()
        self.seconds = 0.0
        self.issued = 0
        self._counter = 0
        self._masks: dict[str, Ring] = {}
        self._bundle: Bundle | None = None

    @contextmanager
    def batch(self) -> Iterator[Bundle]:
        """Deal every triple issued inside as one message per recipient (sent on exit)."""
        bundle = Bundle(self._next_id("b"))
        self._bundle = bundle
        try:
            yield bundle
        finally:
            self._bundle = None
        for recipient in bundle.layout:
            parts = bundle.parts.get(recipient, [])
            stream = bundle.seeds.get(recipient)
            if stream is not None:
                parts = [np.frombuffer(stream.seed, dtype="<u8"), *parts]
            self.net.send_arrays(self.name, recipient, f"bundle/{bundle.bid}", parts)
        bundle.parts.clear()
        bundle.seeds.clear()

    def _random(self, recipient: str, shape: tuple[int, ...]) -> Ring | Seeded:
        """A uniform part for ``recipient``: from its bundle seed inside a batch."""
        if self._bundle is None:
            return self.rng.ring(shape)
        stream = self._bundle.seeds.get(recipient)
        if stream is None:
            stream = self._bundle.seeds[recipient] = SeededStream()
        return Seeded(stream.ring(shape))

    def _deliver(self, recipient: str, tid: str, parts: list[Ring | Seeded]) -> None:
        if self._bundle is None:
            arrays = [p.array if isinstance(p, Seeded) else p for p in parts]
            self.net.send_arrays(self.name, recipient, f"triple/{tid}", arrays)
            return
        layout = []
        sent = self._bundle.parts.setdefault(recipient, [])
        for part in parts:
            seeded = isinstance(part, Seeded)
            array = part.array if isinstance(part, Seeded) else part
            layout.append((tuple(array.shape), seeded))
            if not seeded:
                sent.append(array)
        self._bundle.layout.setdefault(recipient, []).append((tid, layout))

    def _next_id(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}{self._counter}"

    def _split(self, value: Ring, first: str) -> tuple[Ring | Seeded, Ring]:
        """Shares of ``value``: ``first``'s uniform (from its seed in a batch), the rest."""
        s0 = self._random(first, value.shape)
        return s0, value - (s0.array if isinstance(s0, Seeded) else s0)

    def triple(self, p0: str, p1: str, shape: tuple[int, ...]) -> str:
        start = time.perf_counter()
        tid = self._next_id("t")
        a, b = self.rng.ring(shape), self.rng.ring(shape)
        self._send_triple(tid, p0, p1, a, b, a * b)
        self.seconds += time.perf_counter() - start
        return tid

    def cube_tuple(self, p0: str, p1: str, shape: tuple[int, ...], bits: int) -> str:
        """For :meth:`Mpc.cube <dataspace.federated.mpc.engine.Mpc.cube>`: shares of a
        uniform ``r``, of ``l = (r mod 2^63) >> bits``, ``l^2``, ``l^3``, and — mod
        ``2^(bits+1)``, three to a word (:func:`~.fixedpoint.pack_fields`) — of ``t = r >> 63``,
        ``t l`` and ``t l^2``. Once ``c = z + 2^62 + r`` is open, ``z >> bits`` is a public
        value plus ``a = ±t 2^(63-bits) - l``; with ``T = 2^(63-bits)``, ``T^2 = 0`` in the
        ring (``bits <= 31``) and ``t^2 = t``, so ``a^2 = l^2 ∓ 2T (t l)`` and
        ``a^3 = ±3T (t l^2) - l^3``, where only the low ``bits + 1`` bits of ``t``, ``t l``,
        ``t l^2`` matter."""
        start = time.perf_counter()
        tid = self._next_id("q")
        r0, r1, top, low = self._truncation_mask(p0, p1, shape, bits)
        l2 = low * low
        parts = [self._split(value, p0) for value in (low, l2, l2 * low)]
        width = bits + 1
        narrow = [top, top * low, top * l2]
        # drawn after the splits: a seeded party expands its parts in the order they are
        # delivered, which is the order they are drawn in
        first = self._random(p0, (field_words(len(narrow), width), *shape))
        mask = np.uint64((1 << width) - 1)
        second = pack_fields(
            [(v - f) & mask for v, f in zip(narrow, unpack_fields(_plain(first), 3, width),
                                              strict=True)],
            width,
        )
        for k, (name, r_share, fields) in enumerate(((p0, r0, first), (p1, r1, second))):
            self._deliver(name, tid, [r_share, *(split[k] for split in parts), fields])
        self.issued += 1
        self.seconds += time.perf_counter() - start
        return tid

    def square_tuple(self, p0: str, p1: str, shape: tuple[int, ...]) -> str:
        start = time.perf_counter()
        tid = self._next_id("s")
        a = self.rng.ring(shape)
        for name, *parts in zip((p0, p1), self._split(a, p0), self._split(a * a, p0),
                                strict=True):
            self._deliver(name, tid, parts)
        self.issued += 1
        self.seconds += time.perf_counter() - start
        return tid

    def _truncation_mask(
        self, p0: str, p1: str, shape: tuple[int, ...], bits: int
    ) -> tuple[Ring | Seeded, Ring | Seeded, Ring, Ring]:
        """A uniform ``r`` as both parties' shares (each uniform on its own: from its seed in
        a batch), with its top bit ``t`` and ``l = (r mod 2^63) >> bits`` in the clear."""
        r0, r1 = self._random(p0, shape), self._random(p1, shape)
        r = _plain(r0) + _plain(r1)
        top = r >> np.uint64(63)
        r &= LOW_63
        r >>= np.uint64(bits)
        return r0, r1, top, r

    def trunc_pair(self, p0: str, p1: str, shape: tuple[int, ...], bits: int) -> str:
        """Shares of a uniform ``r``, of ``r >> 63`` and of ``(r mod 2^63) >> bits``. Both
        shares of ``r`` are uniform on their own (from each party's seed in a batch), so only
        the other two parts' corrections travel to the second party."""
        start = time.perf_counter()
        tid = self._next_id("r")
        r0, r1, top, low = self._truncation_mask(p0, p1, shape, bits)
        for name, r_share, *parts in zip(
            (p0, p1), (r0, r1), self._split(top, p0), self._split(low, p0), strict=True
        ):
            self._deliver(name, tid, [r_share, *parts])
        self.issued += 1
        self.seconds += time.perf_counter() - start
        return tid

    def matrix_triple(
        self, p0: str, p1: str, shape_a: tuple[int, int], shape_b: tuple[int, ...]
    ) -> str:
        start = time.perf_counter()
        tid = self._next_id("m")
        a, b = self.rng.ring(shape_a), self.rng.ring(shape_b)
        self._send_triple(tid, p0, p1, a, b, a @ b)
        self.seconds += time.perf_counter() - start
        return tid

    def _send_triple(self, tid: str, p0: str, p1: str, a: Ring, b: Ring, c: Ring) -> None:
        for (name, *parts) in zip(
            (p0, p1), self._split(a, p0), self._split(b, p0), self._split(c, p0), strict=True
        ):
            self._deliver(name, tid, parts)
        self.issued += 1

    def owned_mask(self, owner: str, shape: tuple[int, ...]) -> str:
        """A random ``U`` for a matrix ``owner`` holds in the clear; kept for cross triples.
        The owner gets a 32-byte seed and expands ``U`` itself (AES-256-CTR)."""
        start = time.perf_counter()
        mid = self._next_id("u")
        seed = secrets.token_bytes(32)
        self._masks[mid] = expand(seed, 0, shape)
        self.net.send(self.name, owner, f"mask/{mid}/seed", np.frombuffer(seed, dtype="<u8"))
        self.seconds += time.perf_counter() - start
        return mid

    def cross_triple(
        self, mid: str, owner: str, peer: str, rows: slice, v_shape: tuple[int, ...],
        transpose: bool,
    ) -> str:
        """``v`` to ``peer`` and shares of ``U[rows] @ v`` (``U[rows].T @ v``) to both."""
        start = time.perf_counter()
        tid = self._next_id("x")
        mask = self._masks[mid][rows]
        v = self._random(peer, v_shape)
        plain_v = v.array if isinstance(v, Seeded) else v
        c_peer = mask.T @ plain_v if transpose else mask @ plain_v
        c_owner = self._random(owner, c_peer.shape)
        c_peer -= c_owner.array if isinstance(c_owner, Seeded) else c_owner  # shares of U @ v
        self._deliver(peer, tid, [v, c_peer])
        self._deliver(owner, tid, [c_owner])
        self.issued += 1
        self.seconds += time.perf_counter() - start
        return tid

    def forget(self, mid: str) -> None:
        self._masks.pop(mid, None)
