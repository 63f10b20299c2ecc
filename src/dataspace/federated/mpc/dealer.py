"""The dealer: hands out correlated randomness (Beaver triples) and never sees inputs.

In production the dealer is the space operator's node, which is **not** one of the computing
parties. It learns nothing about the data: it only draws random numbers. The two computing
parties learn nothing from what it sends them (uniform shares). **A dealer that colludes with
one computing party breaks privacy** — with the triple it can unmask every opened value — so
the operator's trust is part of the threat model (honest-but-curious, no collusion).

Every triple has an id; each party consumes it once (:class:`TripleReused` otherwise).

Three kinds of correlation:

* ``triple`` — elementwise Beaver triple ``c = a * b`` over shares.
* ``matrix_triple`` — ``C = A @ B`` for shared-by-shared matrix products.
* ``owned mask`` + ``cross triple`` — for a matrix ``X`` held in the clear by one party (its own
  features) times a shared vector: the owner gets a random ``U`` once and sends ``E = X - U``
  to the peer once; every product then takes a fresh ``v`` (to the peer) and shares of
  ``U @ v`` (or ``U.T @ v``). Reusing ``U`` across epochs is SecureML's trick (§4.2 of the
  paper): the peer sees the same ``E`` every time, so nothing new is revealed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from dataspace.federated.mpc.fixedpoint import Ring
from dataspace.federated.mpc.rand import Csprng

if TYPE_CHECKING:
    from dataspace.federated.mpc.net import Network


class Dealer:
    def __init__(self, name: str, net: Network) -> None:
        self.name = name
        self.net = net
        self.rng = Csprng()
        self.seconds = 0.0
        self.issued = 0
        self._counter = 0
        self._masks: dict[str, Ring] = {}

    def _next_id(self, kind: str) -> str:
        self._counter += 1
        return f"{kind}{self._counter}"

    def _split(self, value: Ring) -> tuple[Ring, Ring]:
        s0 = self.rng.ring(value.shape)
        return s0, value - s0

    def triple(self, p0: str, p1: str, shape: tuple[int, ...]) -> str:
        start = time.perf_counter()
        tid = self._next_id("t")
        a, b = self.rng.ring(shape), self.rng.ring(shape)
        self._send_triple(tid, p0, p1, a, b, a * b)
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
        for (name, *parts) in zip((p0, p1), self._split(a), self._split(b), self._split(c),
                                  strict=True):
            for label, part in zip("abc", parts, strict=True):
                self.net.send(self.name, name, f"triple/{tid}/{label}", part)
        self.issued += 1

    def owned_mask(self, owner: str, shape: tuple[int, ...]) -> str:
        """A random ``U`` for a matrix ``owner`` holds in the clear; kept for cross triples."""
        start = time.perf_counter()
        mid = self._next_id("u")
        mask = self.rng.ring(shape)
        self._masks[mid] = mask
        self.net.send(self.name, owner, f"mask/{mid}/U", mask)
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
        v = self.rng.ring(v_shape)
        c = (mask.T @ v) if transpose else (mask @ v)
        c_owner, c_peer = self._split(np.asarray(c, dtype=np.uint64))
        self.net.send(self.name, peer, f"triple/{tid}/v", v)
        self.net.send(self.name, peer, f"triple/{tid}/c", c_peer)
        self.net.send(self.name, owner, f"triple/{tid}/c", c_owner)
        self.issued += 1
        self.seconds += time.perf_counter() - start
        return tid

    def forget(self, mid: str) -> None:
        self._masks.pop(mid, None)
