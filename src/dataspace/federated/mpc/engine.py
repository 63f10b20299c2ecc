"""Two-party additive secret sharing over Z_2^64 with a dealer (semi-honest, no collusion).

A :class:`Shared` value is a handle; its two shares live in the memories of the two computing
:class:`Party` objects, and every step of every protocol below is written per party: party
``i`` computes only on its own memory and on what arrived for it over the :class:`Network`.

Operations (all on fixed-point encodings, see :mod:`fixedpoint`):

* local: ``add``, ``sub``, ``add_public``, ``lincomb_public`` (multiply by public reals, then
  truncate), ``trunc``;
* Beaver: ``mul`` (elementwise), ``matmul``;
* ``owned_matmul``: a matrix one computing party holds in the clear times a shared vector;
* ``sigmoid``: a degree-3 polynomial (:mod:`sigmoid`), two Beaver multiplications;
* ``reveal``: the only way a value leaves shared form, logged in :class:`OpenLog` with what
  was opened and to whom.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import MpcProtocolError, TripleReused
from dataspace.federated.mpc.dealer import Dealer
from dataspace.federated.mpc.fixedpoint import FixedPoint, Ring, truncate_share
from dataspace.federated.mpc.net import Network, OpenLog
from dataspace.federated.mpc.rand import Csprng
from dataspace.federated.mpc.sigmoid import SIGMOID

PUBLIC_FRAC_BITS = 24  # precision of public real constants (learning rate, L2, coefficients)


@dataclass(frozen=True)
class Shared:
    key: str
    shape: tuple[int, ...]


class Party:
    """A node's view: its memory (shares, its own plaintext data) and its mailbox."""

    def __init__(self, name: str, net: Network) -> None:
        self.name = name
        self.net = net
        self.rng = Csprng()
        self.mem: dict[str, Ring] = {}
        self._used: set[str] = set()

    def send(self, to: str, tag: str, array: npt.NDArray[np.generic]) -> None:
        self.net.send(self.name, to, tag, array)

    def recv(self, frm: str, tag: str) -> Ring:
        return np.asarray(self.net.recv(self.name, frm, tag), dtype=np.uint64)

    def take(self, dealer: str, tid: str, parts: str) -> list[Ring]:
        """Consume the parts of triple ``tid`` the dealer sent; a second use raises."""
        if tid in self._used:
            raise TripleReused(tid, self.name)
        self._used.add(tid)
        return [self.recv(dealer, f"triple/{tid}/{p}") for p in parts]


class Mpc:
    """One session between two computing parties and a dealer."""

    def __init__(
        self,
        p0: Party,
        p1: Party,
        dealer: Dealer,
        fp: FixedPoint | None = None,
        log: OpenLog | None = None,
    ) -> None:
        if p0.net is not p1.net or dealer.net is not p0.net:
            raise MpcProtocolError("the parties and the dealer must share one network")
        self.parties = (p0, p1)
        self.dealer = dealer
        self.net = p0.net
        self.fp = fp or FixedPoint()
        self.log = log or OpenLog()
        self._counter = 0
        self._owned: dict[tuple[str, str], str] = {}

    # -- bookkeeping -------------------------------------------------------------------
    def _key(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}#{self._counter}"

    def _other(self, i: int) -> Party:
        return self.parties[1 - i]

    def index(self, party: Party | str) -> int | None:
        name = party if isinstance(party, str) else party.name
        for i, p in enumerate(self.parties):
            if p.name == name:
                return i
        return None

    def _new(self, prefix: str, shares: Sequence[Ring]) -> Shared:
        key = self._key(prefix)
        for p, s in zip(self.parties, shares, strict=True):
            p.mem[key] = s
        return Shared(key, tuple(shares[0].shape))

    def shares(self, x: Shared) -> tuple[Ring, Ring]:
        """Both shares — for tests and debugging only; protocols never call it."""
        return self.parties[0].mem[x.key], self.parties[1].mem[x.key]

    def free(self, *values: Shared) -> None:
        for x in values:
            for p in self.parties:
                p.mem.pop(x.key, None)

    # -- input and output ----------------------------------------------------------------
    def share(self, owner: Party, x: Ring, prefix: str = "in") -> Shared:
        """``owner`` (a computing party or an outside data party) secret-shares ``x``."""
        x = np.asarray(x, dtype=np.uint64)
        mask = owner.rng.ring(x.shape)
        key = self._key(prefix)
        i = self.index(owner)
        if i is None:
            owner.send(self.parties[0].name, f"share/{key}", x - mask)
            owner.send(self.parties[1].name, f"share/{key}", mask)
            for p in self.parties:
                p.mem[key] = p.recv(owner.name, f"share/{key}")
        else:
            other = self._other(i)
            owner.mem[key] = x - mask
            owner.send(other.name, f"share/{key}", mask)
            other.mem[key] = other.recv(owner.name, f"share/{key}")
        return Shared(key, tuple(x.shape))

    def public(self, x: Ring, prefix: str = "pub") -> Shared:
        """A value both parties know, as a trivial sharing ``(x, 0)``."""
        x = np.asarray(x, dtype=np.uint64)
        return self._new(prefix, [x.copy(), np.zeros_like(x)])

    def copy(self, x: Shared) -> Shared:
        return self._new("copy", [p.mem[x.key].copy() for p in self.parties])

    def reveal(self, x: Shared, to: Sequence[Party | str], what: str) -> Ring:
        """Open ``x`` to the parties named in ``to`` (computing parties or outsiders)."""
        names = tuple(t if isinstance(t, str) else t.name for t in to)
        result: Ring | None = None
        for name in names:
            i = self.index(name)
            if i is None:
                for p in self.parties:
                    p.send(name, f"open/{x.key}", p.mem[x.key])
                got = [np.asarray(self.net.recv(name, p.name, f"open/{x.key}"), dtype=np.uint64)
                       for p in self.parties]
                value = got[0] + got[1]
            else:
                me, other = self.parties[i], self._other(i)
                other.send(me.name, f"open/{x.key}", other.mem[x.key])
                value = me.mem[x.key] + me.recv(other.name, f"open/{x.key}")
            result = value
        if result is None:
            raise MpcProtocolError("reveal needs at least one recipient")
        self.log.opened(what, names, x.shape)
        return result

    # -- local operations ------------------------------------------------------------------
    def add(self, a: Shared, b: Shared) -> Shared:
        return self._new("add", [p.mem[a.key] + p.mem[b.key] for p in self.parties])

    def sub(self, a: Shared, b: Shared) -> Shared:
        return self._new("sub", [p.mem[a.key] - p.mem[b.key] for p in self.parties])

    def add_public(self, a: Shared, c: Ring) -> Shared:
        c = np.asarray(c, dtype=np.uint64)
        s0, s1 = self.shares(a)
        return self._new("addp", [s0 + c, s1.copy()])

    def sub_own(self, a: Shared, owner: Party, c: Ring) -> Shared:
        """``a - c`` where ``c`` is known to computing party ``owner`` alone."""
        i = self.index(owner)
        if i is None:
            raise MpcProtocolError(f"{owner.name} is not a computing party")
        shares = [p.mem[a.key] for p in self.parties]
        shares[i] = shares[i] - np.asarray(c, dtype=np.uint64)
        return self._new("subo", shares)

    def trunc(self, a: Shared, bits: int | None = None) -> Shared:
        bits = self.fp.frac_bits if bits is None else bits
        return self._new(
            "trunc", [truncate_share(p.mem[a.key], bits, i) for i, p in enumerate(self.parties)]
        )

    def lincomb_public(
        self,
        terms: Sequence[tuple[Shared, float | npt.NDArray[np.float64]]],
        constant: float = 0.0,
    ) -> Shared:
        """``sum(c_k * x_k) + constant`` for public reals ``c_k`` (one truncation)."""
        out: list[Ring] = []
        for i, p in enumerate(self.parties):
            acc: Ring | None = None
            for x, c in terms:
                term = p.mem[x.key] * self.fp.encode(c, PUBLIC_FRAC_BITS)
                acc = term if acc is None else acc + term
            assert acc is not None
            share = truncate_share(acc, PUBLIC_FRAC_BITS, i)
            if i == 0 and constant:
                share = share + self.fp.encode(constant)
            out.append(share)
        return self._new("lin", out)

    # -- multiplications ------------------------------------------------------------------
    def mul(self, a: Shared, b: Shared, truncate: bool = True) -> Shared:
        """Elementwise product with one Beaver triple."""
        p0, p1 = self.parties
        tid = self.dealer.triple(p0.name, p1.name, a.shape)
        return self._beaver(a, b, tid, lambda x, y: x * y, truncate)

    def matmul(self, a: Shared, b: Shared, truncate: bool = True) -> Shared:
        """Matrix product ``a @ b`` (a: m x k, b: k or k x n) with one matrix triple."""
        p0, p1 = self.parties
        tid = self.dealer.matrix_triple(p0.name, p1.name, (a.shape[0], a.shape[1]), b.shape)
        return self._beaver(a, b, tid, lambda x, y: x @ y, truncate)

    def _beaver(
        self, a: Shared, b: Shared, tid: str, f: Callable[[Ring, Ring], Ring], truncate: bool
    ) -> Shared:
        triples = [p.take(self.dealer.name, tid, "abc") for p in self.parties]
        for i, p in enumerate(self.parties):
            ta, tb, _ = triples[i]
            other = self._other(i).name
            p.send(other, f"beaver/{tid}/e", p.mem[a.key] - ta)
            p.send(other, f"beaver/{tid}/f", p.mem[b.key] - tb)
        out = []
        for i, p in enumerate(self.parties):
            ta, tb, tc = triples[i]
            other = self._other(i).name
            e = p.mem[a.key] - ta + p.recv(other, f"beaver/{tid}/e")
            g = p.mem[b.key] - tb + p.recv(other, f"beaver/{tid}/f")
            z = tc + f(e, tb) + f(ta, g)
            if i == 0:
                z = z + f(e, g)
            out.append(truncate_share(z, self.fp.frac_bits, i) if truncate else z)
        self.log.masked(math.prod(a.shape) + math.prod(b.shape))
        return self._new("mul", out)

    def register_owned(self, owner: Party, key: str) -> None:
        """Set up the reusable mask for matrix ``owner.mem[key]`` (held in the clear)."""
        i = self.index(owner)
        if i is None:
            raise MpcProtocolError(f"{owner.name} is not a computing party")
        peer = self._other(i)
        matrix = owner.mem[key]
        mid = self.dealer.owned_mask(owner.name, tuple(matrix.shape))
        mask = owner.recv(self.dealer.name, f"mask/{mid}/U")
        owner.send(peer.name, f"masked/{mid}", matrix - mask)
        peer.mem[f"E:{mid}"] = peer.recv(owner.name, f"masked/{mid}")
        self._owned[(owner.name, key)] = mid

    def owned_matmul(
        self, owner: Party, key: str, v: Shared, rows: slice | None = None,
        transpose: bool = False,
    ) -> Shared:
        """``X[rows] @ v`` (or ``X[rows].T @ v``) for ``X = owner.mem[key]``, not truncated:
        the result carries the matrix's fractional bits on top of ``v``'s."""
        i = self.index(owner)
        mid = self._owned.get((owner.name, key))
        if i is None or mid is None:
            raise MpcProtocolError(f"matrix {key!r} of {owner.name} was not registered")
        rows = rows if rows is not None else slice(None)
        peer = self._other(i)
        tid = self.dealer.cross_triple(mid, owner.name, peer.name, rows, v.shape, transpose)
        vv, c_peer = peer.take(self.dealer.name, tid, "vc")
        peer.send(owner.name, f"cross/{tid}/f", peer.mem[v.key] - vv)
        masked = peer.mem[f"E:{mid}"][rows]
        peer_out = (masked.T @ vv if transpose else masked @ vv) + c_peer
        (c_owner,) = owner.take(self.dealer.name, tid, "c")
        g = owner.mem[v.key] + owner.recv(peer.name, f"cross/{tid}/f")
        matrix = owner.mem[key][rows]
        owner_out = (matrix.T @ g if transpose else matrix @ g) + c_owner
        self.log.masked(math.prod(v.shape))
        shares = [owner_out, peer_out] if i == 0 else [peer_out, owner_out]
        return self._new("omm", shares)

    # -- functions ----------------------------------------------------------------------
    def sigmoid(self, z: Shared) -> Shared:
        """``SIGMOID.c0 + c1*z + c3*z^3`` (see :mod:`sigmoid` for its error)."""
        z2 = self.mul(z, z)
        z3 = self.mul(z2, z)
        out = self.lincomb_public([(z, SIGMOID.c1), (z3, SIGMOID.c3)], constant=SIGMOID.c0)
        self.free(z2, z3)
        return out
