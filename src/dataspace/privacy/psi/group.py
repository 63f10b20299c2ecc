"""The prime-order groups DH-PSI runs in, from libraries: X25519 (``cryptography``) and
ristretto255 (libsodium through ``pysodium``).

Every function works on *batches*: points travel as one ``bytes`` of 32-byte rows, never as
one Python object per identifier longer than the loop that computes it.

Hash to group, with domain separation::

    prefix = lp("dataspace/psi/v2") || lp(job id) || lp(key spec)     lp = 4-byte length prefix
    X25519:       u = SHA-512(prefix || item || c)[0:32], top bit cleared, for the first
                  counter byte c = 0, 1, … whose u is on the curve (x-coordinate, RFC 7748)
    ristretto255: P = from_hash(SHA-512(prefix || item))              (RFC 9496 one-way map)

X25519 is the default: measured on the reference machine (AMD EPYC, 2 cores), one X25519
exchange through ``cryptography`` costs ~23 µs (as ``openssl speed`` does; libsodium 1.0.18's
is ~30 µs), while ristretto255 needs ~11 µs for ``from_hash`` plus ~38 µs per scalar
multiplication; a party does two multiplications per identifier, so X25519 is ~1.8x faster
end to end. X25519 hashes onto the curve only, never its twist: half of all u-coordinates lie
on the twist, x-only multiplication keeps a point on the curve it is on, and anyone can tell
which (the Legendre symbol of u³ + Au² + u) — so a hash onto both would show the receiver of
``H(x)^α`` one public bit of every ``x`` it does not share, a fresh bit per job. The test
costs ~3 µs per try (GMP through ``gmpy2``), two tries on average. The clamped scalar (a
multiple of the cofactor) then maps the point into the prime-order subgroup, and x-only
multiplication commutes, which is all DH-PSI needs. ristretto255 stays available by name for
a strict prime-order group.

A party's own hashed points are blinded eight at a time through Intel's multi-buffer library
where it is installed (:mod:`~dataspace.privacy.psi.x25519_mb`, ≈ 5x faster); points received
from a peer always go through ``cryptography`` (:meth:`X25519.blind_own`, :meth:`X25519.blind`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence

import gmpy2
import numpy as np
import pysodium
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from dataspace.privacy.psi import x25519_mb
from dataspace.privacy.psi.errors import InvalidPoint, PsiConfigError

_log = logging.getLogger(__name__)

__all__ = [
    "DOMAIN",
    "GROUPS",
    "POINT_SIZE",
    "X25519",
    "Group",
    "Ristretto255",
    "domain_prefix",
    "group",
    "on_curve25519",
]

POINT_SIZE = 32
DOMAIN = b"dataspace/psi/v2"  # v2: X25519 hashes onto the curve only (v1 also onto the twist)

_P25519 = gmpy2.mpz(2**255 - 19)
_A25519 = 486662
_LOW_255 = (1 << 255) - 1
_COUNTERS = [bytes([c]) for c in range(256)]
SPOT_CHECK = 256  # one output in this many is recomputed through the reference library


def on_curve25519(u: int) -> bool:
    """Is ``u`` the x-coordinate of a point of curve25519 of more than order 2 (not the
    twist): is u³ + Au² + u a nonzero square mod p?"""
    x = gmpy2.mpz(u)
    return bool(gmpy2.legendre((x * x + _A25519 * x + 1) * x % _P25519, _P25519) == 1)


def _lp(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part


def domain_prefix(job_id: str, key_spec: str) -> bytes:
    """The hash prefix binding every point to this protocol version, job and key spec."""
    return _lp(DOMAIN) + _lp(job_id.encode()) + _lp(key_spec.encode())


def as_rows(points: bytes) -> np.ndarray:
    """View a buffer of points as an (n, 32) uint8 array (no copy)."""
    if len(points) % POINT_SIZE:
        raise InvalidPoint(
            f"point buffer of {len(points)} bytes is not a multiple of {POINT_SIZE}",
            hint="the message was truncated or corrupted; restart the job",
        )
    return np.frombuffer(points, dtype=np.uint8).reshape(-1, POINT_SIZE)


class Group(ABC):
    """A group with a hash onto it and commutative exponentiation."""

    name: str

    @abstractmethod
    def new_key(self) -> bytes:
        """A fresh secret scalar from the library's RNG (one per job and party)."""

    @abstractmethod
    def hash_blind(self, key: bytes, prefix: bytes, items: Sequence[bytes]) -> bytes:
        """``H(item)^key`` for every item, concatenated."""

    @abstractmethod
    def blind(self, key: bytes, points: bytes) -> bytes:
        """``P^key`` for every received point; raises :class:`InvalidPoint` on a bad one."""


class X25519(Group):
    name = "x25519"
    _P_LOW = 0xED  # p = 2^255 - 19: little-endian ed ff .. ff 7f

    def new_key(self) -> bytes:
        return X25519PrivateKey.generate().private_bytes_raw()

    def hash_blind(self, key: bytes, prefix: bytes, items: Sequence[bytes]) -> bytes:
        return self.blind_own(key, self.hash_u(prefix, items))

    @staticmethod
    def hash_u(prefix: bytes, items: Sequence[bytes]) -> bytes:
        """For every item, ``SHA-512(prefix || item || c)[0:32]`` with the top bit cleared for
        the first counter byte ``c`` that gives a point on the curve (see the module doc).
        Each try succeeds with probability ~1/2; 256 failures in a row have probability
        2^-256."""
        base = hashlib.sha512(prefix)
        out = bytearray()
        for item in items:
            h = base.copy()
            h.update(item)
            for counter in _COUNTERS:
                g = h.copy()
                g.update(counter)
                u = int.from_bytes(g.digest()[:POINT_SIZE], "little") & _LOW_255
                if on_curve25519(u):
                    out += u.to_bytes(POINT_SIZE, "little")
                    break
            else:  # pragma: no cover - probability 2^-256
                raise PsiConfigError("no counter hashes this item onto the curve")
        return bytes(out)

    @staticmethod
    def blind_u(key: bytes, points: bytes) -> bytes:
        """X25519(key, u) for every 32-byte u (already checked); low order is refused."""
        exchange = X25519PrivateKey.from_private_bytes(key).exchange
        load = X25519PublicKey.from_public_bytes
        out = []
        try:
            for i in range(0, len(points), POINT_SIZE):
                out.append(exchange(load(points[i : i + POINT_SIZE])))
        except ValueError as exc:  # all-zero output: a low-order point
            raise InvalidPoint(
                "a received point has low order",
                hint="the peer sent a point outside the prime-order group; restart the job",
                index=len(out),
            ) from exc
        return b"".join(out)

    @classmethod
    def blind_own(cls, key: bytes, points: bytes) -> bytes:
        """X25519(key, u) for this party's own hashed points: eight at a time through
        :mod:`~dataspace.privacy.psi.x25519_mb` where it is available, else as
        :meth:`blind_u`. Only our own hash outputs go this way — uniform points no peer can
        choose: the multi-buffer library computes some crafted inputs wrongly (see
        docs/psi.md), so received points always take :meth:`blind_u`. A random sample of
        the outputs (one in :data:`SPOT_CHECK`) is recomputed through ``cryptography``; a
        mismatch, or an error the library reports, turns it off for this process and redoes
        the batch."""
        fast = x25519_mb.backend()
        if fast is None or not points:
            return cls.blind_u(key, points)
        try:
            out = fast.exchange(key, points)
        except x25519_mb.LowOrderInput as exc:  # a hash output of low order: p ~ 2^-252
            raise InvalidPoint(
                "an identifier hashed to a point of low order",
                hint="start a new job: a new job id changes every hash",
                index=exc.index,
            ) from None
        except RuntimeError as exc:  # any other status the library reports
            return cls._without_library(key, points, str(exc))
        n = len(points) // POINT_SIZE
        for i in {secrets.randbelow(n) for _ in range(max(1, n // SPOT_CHECK))}:
            row = slice(i * POINT_SIZE, (i + 1) * POINT_SIZE)
            if cls.blind_u(key, points[row]) != out[row]:
                return cls._without_library(
                    key, points, "its X25519 disagreed with cryptography's on a spot check"
                )
        return out

    @classmethod
    def _without_library(cls, key: bytes, points: bytes, why: str) -> bytes:
        _log.error("not using crypto_mb's X25519 any more in this process: %s", why)
        x25519_mb.disable(why)
        return cls.blind_u(key, points)

    def check(self, points: bytes) -> None:
        """Refuse non-canonical encodings (top bit set, or u >= p)."""
        rows = as_rows(points)
        bad = (rows[:, 31] & 0x80) != 0
        top = (rows[:, 31] == 0x7F) & np.all(rows[:, 1:31] == 0xFF, axis=1)
        bad |= top & (rows[:, 0] >= self._P_LOW)
        if bad.any():
            raise InvalidPoint(
                f"{int(bad.sum())} received point(s) are not canonical X25519 u-coordinates",
                hint="the peer sent malformed points; the job must be restarted",
                index=int(np.argmax(bad)),
            )

    def blind(self, key: bytes, points: bytes) -> bytes:
        self.check(points)
        return self.blind_u(key, points)


class Ristretto255(Group):
    name = "ristretto255"

    def new_key(self) -> bytes:
        return bytes(pysodium.crypto_core_ristretto255_scalar_random())

    def hash_blind(self, key: bytes, prefix: bytes, items: Sequence[bytes]) -> bytes:
        base = hashlib.sha512(prefix)
        from_hash = pysodium.crypto_core_ristretto255_from_hash
        mult = pysodium.crypto_scalarmult_ristretto255
        out = bytearray()
        for item in items:
            h = base.copy()
            h.update(item)
            out += mult(key, from_hash(h.digest()))
        return bytes(out)

    def blind(self, key: bytes, points: bytes) -> bytes:
        as_rows(points)
        valid = pysodium.crypto_core_ristretto255_is_valid_point
        mult = pysodium.crypto_scalarmult_ristretto255
        out = bytearray()
        for i in range(0, len(points), POINT_SIZE):
            point = points[i : i + POINT_SIZE]
            if not valid(point):
                raise InvalidPoint(
                    "a received point is not a valid ristretto255 encoding",
                    hint="the peer sent malformed points; the job must be restarted",
                    index=i // POINT_SIZE,
                )
            try:
                out += mult(key, point)
            except ValueError as exc:  # identity result
                raise InvalidPoint("a received point is the identity", index=i // 32) from exc
        return bytes(out)


GROUPS: dict[str, Group] = {g.name: g for g in (X25519(), Ristretto255())}


def group(name: str) -> Group:
    try:
        return GROUPS[name]
    except KeyError:
        raise PsiConfigError(
            f"unknown PSI group '{name}'", hint="choose one of: " + ", ".join(GROUPS)
        ) from None
