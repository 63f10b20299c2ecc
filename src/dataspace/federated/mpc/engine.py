"""Two-party additive secret sharing over Z_2^64 with a dealer (semi-honest, no collusion).

A :class:`Shared` value is a handle; its two shares live in the memories of the two computing
:class:`Party` objects, and every step of every protocol below is written per party: party
``i`` computes only on its own memory and on what arrived for it over the :class:`Network`.

Operations (all on fixed-point encodings, see :mod:`fixedpoint`):

* local: ``add``, ``sub``, ``add_public``, ``sub_own``, ``trunc`` (SecureML's local
  truncation: fails with probability ``|x| / 2^64``, :mod:`fixedpoint`);
* ``trunc_exact``: truncation with a dealer's pair and one masked opening, right to one unit
  for every ``|x| < 2^62`` — for values whose size would make the local truncation's failure
  likely over a training; ``lincomb_exact`` multiplies by public reals and truncates so;
* Beaver: ``mul`` (elementwise), ``matmul``;
* ``owned_matmul``: a matrix one computing party holds in the clear times a shared vector;
  ``owned_matmuls`` does several at once (one dealer bundle and one message each way);
* ``cube``: ``z^3`` of ``z`` truncated exactly, from one cube tuple and one masked opening;
  ``square``: ``z^2`` from one square tuple and one masked opening;
* ``sigmoid``: a degree-3 polynomial (:mod:`sigmoid`) — one ``cube``, no other product, and
  one exact truncation (two openings);
* ``reveal``: the only way a value leaves shared form, logged in :class:`OpenLog` with what
  was opened and to whom.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import MalformedMessage, MpcProtocolError, TripleReused
from dataspace.federated.mpc.dealer import Bundle, Dealer
from dataspace.federated.mpc.fixedpoint import (
    LOW_63,
    FixedPoint,
    Ring,
    truncate_share,
    unpack_fields,
)
from dataspace.federated.mpc.net import Network, OpenLog
from dataspace.federated.mpc.rand import Csprng, expand
from dataspace.federated.mpc.sigmoid import SIGMOID
from dataspace.federated.mpc.wire import pack_arrays, unpack_arrays

CUBE_FRAC_BITS = 11  # z is cubed with 11 fractional bits: |z| <= 8 stays below 2^42 at 33 bits
# the sigmoid's c1*z + c3*z^3 is summed at 53 fractional bits before its one exact truncation:
# exact while |c1*z + c3*z^3| < 2^9, i.e. |z| < 66 (the cubic is useless beyond 9.7 anyway)
SIGMOID_ACC_BITS = 53
EXACT_OFFSET = np.uint64(1 << 62)  # trunc_exact makes x nonnegative: x + 2^62 < 2^63


@dataclass(frozen=True)
class Shared:
    key: str
    shape: tuple[int, ...]


# (owner, key of the owner's matrix, shared vector, rows or None for all, transpose)
OwnedProduct = tuple["Party", str, Shared, "slice | None", bool]
# the same with the vector's shape only (to deal the cross triple ahead)
OwnedSpec = tuple["Party", str, tuple[int, ...], "slice | None", bool]


class Party:
    """A node's view: its memory (shares, its own plaintext data) and its mailbox."""

    def __init__(self, name: str, net: Network) -> None:
        self.name = name
        self.net = net
        self.rng = Csprng()
        self.mem: dict[str, Ring] = {}
        self._used: set[str] = set()
        self._pool: dict[str, list[Ring]] = {}  # triples that arrived in a bundle, by id

    def send(self, to: str, tag: str, array: npt.NDArray[np.generic]) -> None:
        self.net.send(self.name, to, tag, array)

    def recv(self, frm: str, tag: str) -> Ring:
        return np.asarray(self.net.recv(self.name, frm, tag), dtype=np.uint64)

    def take(self, dealer: str, tid: str, parts: str) -> list[Ring]:
        """Consume the parts of triple ``tid`` the dealer sent; a second use raises."""
        if tid in self._used:
            raise TripleReused(tid, self.name)
        self._used.add(tid)
        got = self._pool.pop(tid, None)
        if got is None:
            got = unpack_arrays(self.recv(dealer, f"triple/{tid}"))
        if len(got) != len(parts):
            raise MalformedMessage(f"triple {tid} has {len(got)} parts, expected {len(parts)}")
        return got

    def accept(self, dealer: str, bundle: Bundle) -> None:
        """Receive this party's ``bundle/<bid>`` message and file its triples for :meth:`take`:
        the seeded parts are expanded from the bundle's seed (one keystream, in dealing
        order), the others read from the message."""
        layout = bundle.layout.get(self.name)
        if not layout:
            return
        arrays = unpack_arrays(self.recv(dealer, f"bundle/{bundle.bid}"))
        seeded = [math.prod(shape) for _tid, parts in layout for shape, s in parts if s]
        sent = sum(1 for _tid, parts in layout for _shape, s in parts if not s)
        if len(arrays) != sent + (1 if seeded else 0):
            raise MalformedMessage(f"bundle {bundle.bid} does not match its layout")
        stream: Ring | None = None
        if seeded:
            seed = arrays.pop(0)
            if seed.shape != (4,):
                raise MalformedMessage(f"bundle {bundle.bid}: the seed is not 32 bytes")
            stream = expand(seed.astype("<u8").tobytes(), 0, (sum(seeded),))
        explicit, pos = iter(arrays), 0
        for tid, parts in layout:
            got = []
            for shape, from_seed in parts:
                if from_seed:
                    assert stream is not None
                    size = math.prod(shape)
                    got.append(stream[pos : pos + size].reshape(shape))
                    pos += size
                    continue
                array = next(explicit)
                if array.shape != shape:
                    raise MalformedMessage(f"bundle {bundle.bid}: part of {tid} has shape "
                                           f"{array.shape}, expected {shape}")
                got.append(array)
            self._pool[tid] = got


def _public_part(c: Ring, bits: int) -> tuple[Ring, Ring]:
    """For an opened ``c = x + 2^62 + r``: the public part of ``x >> bits``,
    ``c_63 2^(63-bits) + ((c mod 2^63) >> bits) - 2^(62-bits)``, and ``c_63``."""
    c_top = c >> np.uint64(63)
    public = c & LOW_63
    public >>= np.uint64(bits)
    public += c_top << np.uint64(63 - bits)
    public -= np.uint64(1 << (62 - bits))
    return public, c_top


def _masked_part(top: Ring, low: Ring, c_top: Ring, bits: int) -> Ring:
    """A share of the rest of ``x >> bits``: ``(1 - 2 c_63) t 2^(63-bits) - l`` from shares
    of ``t`` and ``l`` (``(c_63 xor t) - c_63`` is ``(1 - 2 c_63) t``)."""
    sign = np.uint64(1) - (c_top << np.uint64(1))
    share = top * sign
    share <<= np.uint64(63 - bits)
    share -= low
    return share


def _encoded_array(c: float | npt.NDArray[np.float64], frac_bits: int) -> Ring:
    if isinstance(c, float | int):
        return _encoded(float(c), frac_bits)
    return FixedPoint().encode(c, frac_bits)


@functools.lru_cache(maxsize=256)
def _encoded(c: float, frac_bits: int) -> Ring:
    encoded = FixedPoint().encode(c, frac_bits)
    encoded.flags.writeable = False  # shared by every call with the same constant
    return encoded


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

    def concat(self, parts: Sequence[Shared]) -> Shared:
        """Vectors joined end to end (local): one exact truncation then serves them all."""
        return self._new("cat", [np.concatenate([p.mem[x.key] for x in parts])
                                 for p in self.parties])

    def split(self, x: Shared, sizes: Sequence[int]) -> list[Shared]:
        """The inverse of :meth:`concat` (local)."""
        if sum(sizes) != x.shape[0]:
            raise MpcProtocolError(f"cannot split {x.shape[0]} values into {list(sizes)}")
        out, start = [], 0
        for size in sizes:  # slices, not np.split: these are a few dozen weights
            out.append(self._new("part", [p.mem[x.key][start : start + size].copy()
                                          for p in self.parties]))
            start += size
        return out

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
        """SecureML's local truncation (no communication): wrong by about ``2^(64 - bits)``
        with probability ``|x| / 2^64`` for uniformly random shares, and always for a trivial
        sharing of a negative value (:meth:`public`); training uses :meth:`trunc_exact`."""
        bits = self.fp.frac_bits if bits is None else bits
        return self._new(
            "trunc", [truncate_share(p.mem[a.key], bits, i) for i, p in enumerate(self.parties)]
        )

    def trunc_exact(self, x: Shared, bits: int, tid: str | None = None) -> Shared:
        """``x / 2^bits`` rounded down (or one unit higher), for every ``|x| < 2^62``.

        With the dealer's pair (shares of a uniform ``r``, its top bit ``t`` and
        ``r' = (r mod 2^63) >> bits``; :meth:`Dealer.trunc_pair`) the parties open
        ``c = x + 2^62 + r`` — uniform, so it says nothing of ``x``. Write ``u = x + 2^62``
        (in ``[0, 2^63)``) and ``r = t 2^63 + l``; ``u + l`` does not wrap, and its top bit
        is ``w = c_63 xor t``, linear in the shares of ``t`` once ``c`` is public. Then
        ``u = (c mod 2^63) - l + w 2^63``, so ``u >> bits`` is
        ``((c mod 2^63) >> bits) - r' + w 2^(63 - bits)`` less a borrow (0 or 1) from the
        low bits, which is dropped: that is the one unit.
        (Escudero et al., CRYPTO 2020, probabilistic truncation over Z_2^k, with a dealer.)"""
        if not 0 < bits < 62:
            raise MpcProtocolError(f"exact truncation by {bits} bits is not supported")
        tid = self.deal_trunc(x.shape, bits) if tid is None else tid
        pairs = [p.take(self.dealer.name, tid, "rtl") for p in self.parties]
        opened = self._open_offset(x, [r for r, _t, _l in pairs], f"trunc/{tid}/c")
        out = []
        for i, (c, (_r, top, low)) in enumerate(zip(opened, pairs, strict=True)):
            public, c_top = _public_part(c, bits)
            share = _masked_part(top, low, c_top, bits)
            if i == 0:
                share += public
            out.append(share)
        self.log.masked(math.prod(x.shape))
        return self._new("tx", out)

    def _open_offset(self, x: Shared, masks: Sequence[Ring], tag: str) -> list[Ring]:
        """Both parties open ``c = x + 2^62 + r`` (``masks``: their shares of ``r``); each
        party's copy of ``c``."""
        mine = []
        for i, p in enumerate(self.parties):
            c = p.mem[x.key] + masks[i]
            if i == 0:
                c += EXACT_OFFSET
            p.send(self._other(i).name, tag, c)
            mine.append(c)
        for i, p in enumerate(self.parties):
            mine[i] += p.recv(self._other(i).name, tag)
        return mine

    def deal_trunc(self, shape: tuple[int, ...], bits: int) -> str:
        """A truncation pair for :meth:`trunc_exact` by ``bits``, dealt ahead."""
        p0, p1 = self.parties
        return self.dealer.trunc_pair(p0.name, p1.name, shape, bits)

    def lincomb_exact(
        self,
        terms: Sequence[tuple[Shared, float | npt.NDArray[np.float64], int]],
        acc_bits: int,
        tid: str | None = None,
    ) -> Shared:
        """``sum(c_k * x_k)`` for public reals ``c_k`` and shared ``x_k`` carrying ``f_k``
        fractional bits (``terms``: ``(x_k, c_k, f_k)``): each ``c_k`` is encoded at
        ``acc_bits - f_k`` bits, so every product carries ``acc_bits``, and the sum is brought
        to :attr:`FixedPoint.frac_bits` with one :meth:`trunc_exact` — exact while the sum's
        magnitude stays below ``2^(62 - acc_bits)``. ``tid``: a pair from :meth:`deal_trunc`
        by ``acc_bits - frac_bits``."""
        out: list[Ring] = []
        coefficients = [_encoded_array(c, acc_bits - f) for _, c, f in terms]
        for p in self.parties:
            acc: Ring | None = None
            for (x, _, _), c in zip(terms, coefficients, strict=True):
                term = p.mem[x.key] * c
                if acc is None:
                    acc = term
                else:
                    acc += term
            assert acc is not None
            out.append(acc)
        raw = self._new("linx", out)
        result = self.trunc_exact(raw, acc_bits - self.fp.frac_bits, tid)
        self.free(raw)
        return result

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
        for i, p in enumerate(self.parties):  # e and f travel in one message
            ta, tb, _ = triples[i]
            masked = pack_arrays([p.mem[a.key] - ta, p.mem[b.key] - tb])
            p.send(self._other(i).name, f"beaver/{tid}/ef", masked)
        out = []
        for i, p in enumerate(self.parties):
            ta, tb, tc = triples[i]
            theirs = unpack_arrays(p.recv(self._other(i).name, f"beaver/{tid}/ef"))
            if len(theirs) != 2:
                raise MalformedMessage(f"Beaver opening {tid} has {len(theirs)} parts, not 2")
            e = p.mem[a.key] - ta + theirs[0]
            g = p.mem[b.key] - tb + theirs[1]
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
        seed = owner.recv(self.dealer.name, f"mask/{mid}/seed").tobytes()
        masked = expand(seed, 0, tuple(matrix.shape))
        np.subtract(matrix, masked, out=masked)
        owner.send(peer.name, f"masked/{mid}", masked)
        peer.mem[f"E:{mid}"] = peer.recv(owner.name, f"masked/{mid}")
        self._owned[(owner.name, key)] = mid

    def owned_matmul(
        self, owner: Party, key: str, v: Shared, rows: slice | None = None,
        transpose: bool = False,
    ) -> Shared:
        """``X[rows] @ v`` (or ``X[rows].T @ v``) for ``X = owner.mem[key]``, not truncated:
        the result carries the matrix's fractional bits on top of ``v``'s."""
        return self.owned_matmuls([(owner, key, v, rows, transpose)])[0]

    def deal_owned(self, specs: Sequence[OwnedSpec]) -> list[str]:
        """The dealer's cross triples for products of these shapes (``v``'s shape in place of
        ``v``); inside :meth:`Dealer.batch` they travel with the rest of the bundle."""
        tids = []
        for owner, key, v_shape, rows, transpose in specs:
            i = self.index(owner)
            mid = self._owned.get((owner.name, key))
            if i is None or mid is None:
                raise MpcProtocolError(f"matrix {key!r} of {owner.name} was not registered")
            tids.append(self.dealer.cross_triple(
                mid, owner.name, self._other(i).name,
                rows if rows is not None else slice(None), v_shape, transpose,
            ))
        return tids

    def owned_matmuls(
        self, products: Sequence[OwnedProduct], tids: Sequence[str] | None = None
    ) -> list[Shared]:
        """Several :meth:`owned_matmul` products at once: the dealer's cross triples for all
        of them travel as one bundle per party (or were dealt ahead, ``tids`` from
        :meth:`deal_owned`), and each computing party sends the other one message with its
        masked shares ``f`` for every product in which it is the peer."""
        if tids is None:
            specs = [(o, k, v.shape, rows, t) for o, k, v, rows, t in products]
            with self.dealer.batch() as bundle:
                tids = self.deal_owned(specs)
            for p in self.parties:
                p.accept(self.dealer.name, bundle)
        if len(tids) != len(products):
            raise MpcProtocolError("one cross triple per product")
        plan = []
        for (owner, key, v, rows, transpose), tid in zip(products, tids, strict=True):
            i = self.index(owner)
            mid = self._owned.get((owner.name, key))
            if i is None or mid is None:
                raise MpcProtocolError(f"matrix {key!r} of {owner.name} was not registered")
            plan.append((i, key, mid, v, rows if rows is not None else slice(None), transpose,
                         tid))
        tag = f"cross/{tids[0]}/f" if tids else "cross/-/f"
        peer_out: dict[int, Ring] = {}
        for me, p in enumerate(self.parties):  # as the peer: f = <v> - vv, then E[rows] vv
            fs = []
            for k, (i, _key, mid, v, rows, transpose, tid) in enumerate(plan):
                if i == me:
                    continue
                vv, c_peer = p.take(self.dealer.name, tid, "vc")
                fs.append(p.mem[v.key] - vv)
                masked = p.mem[f"E:{mid}"][rows]
                out = masked.T @ vv if transpose else masked @ vv
                out += c_peer
                peer_out[k] = out
            if fs:  # one product: the array itself; several: packed
                p.send(self._other(me).name, tag, fs[0] if len(fs) == 1 else pack_arrays(fs))
        owner_out: dict[int, Ring] = {}
        for me, p in enumerate(self.parties):  # as the owner: X[rows] (<v> + f)
            mine = [k for k, item in enumerate(plan) if item[0] == me]
            if not mine:
                continue
            got = p.recv(self._other(me).name, tag)
            fs = [got] if len(mine) == 1 else unpack_arrays(got)
            if len(fs) != len(mine):
                raise MalformedMessage(f"{tag}: {len(fs)} masked shares, expected {len(mine)}")
            for k, f in zip(mine, fs, strict=True):
                _, key, _mid, v, rows, transpose, tid = plan[k]
                (c_owner,) = p.take(self.dealer.name, tid, "c")
                g = p.mem[v.key] + f
                matrix = p.mem[key][rows]
                out = matrix.T @ g if transpose else matrix @ g
                out += c_owner
                owner_out[k] = out
        result = []
        for k, (i, *_rest, v, _rows, _transpose, _tid) in enumerate(plan):
            self.log.masked(math.prod(v.shape))
            shares = [owner_out[k], peer_out[k]] if i == 0 else [peer_out[k], owner_out[k]]
            result.append(self._new("omm", shares))
        return result

    # -- functions ----------------------------------------------------------------------
    def deal_square(self, shape: tuple[int, ...]) -> str:
        """A square tuple for :meth:`square`, dealt ahead."""
        p0, p1 = self.parties
        return self.dealer.square_tuple(p0.name, p1.name, shape)

    def square(self, x: Shared, tid: str | None = None, truncate: bool = True) -> Shared:
        """``x^2`` with one square tuple ``(a, a^2)``: ``e = x - a`` is opened (uniform), then
        ``x^2 = e^2 + 2ea + a^2`` is linear in the shares. ``truncate=False`` leaves it at
        twice the fractional bits (no truncation, so no chance of its failure)."""
        tid = self.deal_square(x.shape) if tid is None else tid
        tuples = [p.take(self.dealer.name, tid, "aa") for p in self.parties]
        for i, p in enumerate(self.parties):
            p.send(self._other(i).name, f"square/{tid}/e", p.mem[x.key] - tuples[i][0])
        out = []
        for i, p in enumerate(self.parties):
            a, a2 = tuples[i]
            e = p.mem[x.key] - a
            e += p.recv(self._other(i).name, f"square/{tid}/e")
            share = e * a
            share *= np.uint64(2)
            share += a2
            if i == 0:
                share += e * e
            out.append(truncate_share(share, self.fp.frac_bits, i) if truncate else share)
        self.log.masked(math.prod(x.shape))
        return self._new("sq", out)

    def deal_cube(self, shape: tuple[int, ...], frac_bits: int | None = None) -> str:
        """A cube tuple for :meth:`cube` of values carrying ``frac_bits`` (default
        :attr:`FixedPoint.frac_bits`), dealt ahead (e.g. inside :meth:`Dealer.batch`)."""
        f = self.fp.frac_bits if frac_bits is None else frac_bits
        shift = f - CUBE_FRAC_BITS
        if not 0 < shift <= 31:  # the tuple's algebra needs 2^(2 (63 - shift)) = 0 in the ring
            raise MpcProtocolError(f"cannot cube values with {f} fractional bits")
        p0, p1 = self.parties
        return self.dealer.cube_tuple(p0.name, p1.name, shape, shift)

    def cube(self, z: Shared, tid: str | None = None, *, frac_bits: int | None = None) -> Shared:
        """``z'^3`` at ``3 *`` :data:`CUBE_FRAC_BITS` (33) fractional bits, where ``z'`` is
        ``z`` (carrying ``frac_bits``, default :attr:`FixedPoint.frac_bits`) truncated to
        :data:`CUBE_FRAC_BITS` exactly — both with one opening and one cube tuple
        (:meth:`Dealer.cube_tuple`). The opened ``c = z + 2^62 + r`` is uniform; it makes
        ``z' = e + a`` with ``e`` public (:func:`_public_part`) and ``a = ±t T - l``, the sign
        ``c``'s top bit; ``a``, ``a^2`` and ``a^3`` are linear in the dealt shares of ``l``,
        ``l^2``, ``l^3``, ``t``, ``t l`` and ``t l^2``, and so is
        ``z'^3 = e^3 + 3e^2 a + 3e a^2 + a^3``. No truncation here can fail; ``z'^3`` stays
        below 2^42 for ``|z| <= 8`` (the caller brings it down)."""
        f = self.fp.frac_bits if frac_bits is None else frac_bits
        shift = f - CUBE_FRAC_BITS
        tid = self.deal_cube(z.shape, f) if tid is None else tid
        tuples = [p.take(self.dealer.name, tid, "rl23f") for p in self.parties]
        opened = self._open_offset(z, [parts[0] for parts in tuples], f"cube/{tid}/c")
        out = []
        for i, (c, parts) in enumerate(zip(opened, tuples, strict=True)):
            _r, low, l2, l3, fields = parts
            top, top_low, top_l2 = unpack_fields(fields, 3, shift + 1)
            e, c_top = _public_part(c, shift)
            sign = np.uint64(1) - (c_top << np.uint64(1))  # ±1: which candidate a is
            a = _masked_part(top, low, c_top, shift)
            top_low *= sign  # a^2 = l^2 - 2T (±t l), a^3 = 3T (±t l^2) - l^3 (Dealer.cube_tuple)
            top_low <<= np.uint64(64 - shift)
            a2 = l2 - top_low
            top_l2 *= sign * np.uint64(3)
            top_l2 <<= np.uint64(63 - shift)
            a3 = top_l2 - l3
            share = e * a
            share += a2
            share *= e
            share *= np.uint64(3)
            share += a3
            if i == 0:
                e2 = e * e
                e2 *= e
                share += e2
            out.append(share)
        self.log.masked(math.prod(z.shape))
        return self._new("cube", out)

    def deal_sigmoid(
        self, shape: tuple[int, ...], frac_bits: int | None = None
    ) -> tuple[str, str]:
        """The cube tuple and the truncation pair of one :meth:`sigmoid` of values carrying
        ``frac_bits``, dealt ahead."""
        return self.deal_cube(shape, frac_bits), self.deal_trunc(
            shape, SIGMOID_ACC_BITS - self.fp.frac_bits
        )

    def sigmoid(
        self, z: Shared, tids: tuple[str, str] | None = None, *, frac_bits: int | None = None
    ) -> Shared:
        """``SIGMOID.c0 + c1*z + c3*z^3`` (see :mod:`sigmoid` for its error) at
        :attr:`FixedPoint.frac_bits`, for ``z`` carrying ``frac_bits`` (default the same).
        ``c1*z`` and ``c3*z^3`` (:meth:`cube`, left at 33 bits) are summed at
        :data:`SIGMOID_ACC_BITS` and truncated once, exactly: nothing in it can fail. Two
        openings. ``tids``: from :meth:`deal_sigmoid`."""
        f = self.fp.frac_bits if frac_bits is None else frac_bits
        cube_tid, trunc_tid = self.deal_sigmoid(z.shape, f) if tids is None else tids
        z3 = self.cube(z, cube_tid, frac_bits=f)
        terms = [(z, SIGMOID.c1, f), (z3, SIGMOID.c3, 3 * CUBE_FRAC_BITS)]
        out = self.lincomb_exact(terms, SIGMOID_ACC_BITS, trunc_tid)
        self.free(z3)
        self.parties[0].mem[out.key] += _encoded(SIGMOID.c0, self.fp.frac_bits)
        return out
