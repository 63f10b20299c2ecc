"""Fixed-point numbers in the ring Z_2^64, held as numpy ``uint64`` (arithmetic wraps).

A real ``x`` is encoded as ``round(x * 2^f) mod 2^64``; negative numbers are the upper half of
the ring. Additive shares of such encodings add and subtract locally. A product of two
encodings carries ``2f`` fractional bits and is brought back with :func:`truncate_share`,
SecureML's *local* probabilistic truncation (Mohassel & Zhang 2017, Theorem 1): party 0 shifts
its share, party 1 shifts the negation of its share (logical shifts on ``uint64``). If the
true value ``v`` (before the shift) satisfies ``|v| < 2^l``, the result is ``v / 2^s`` off by at
most one unit in the last place, except when party 1's share falls in a window of width
``|v|`` next to 0 — probability ``|v| / 2^64 <= 2^(l + 1 - 64)`` — and then it is off by about
``2^(64 - s)`` (a catastrophic error). :func:`truncation_failure_bound` states that bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ring = npt.NDArray[np.uint64]
RING_BITS = 64
LOW_63 = np.uint64((1 << 63) - 1)  # all but the top bit of a ring element


@dataclass(frozen=True)
class FixedPoint:
    """The encoding: ``frac_bits`` fractional bits for shared values (weights, scores,
    residuals) and ``data_frac_bits`` for feature matrices (which only ever multiply)."""

    frac_bits: int = 16
    data_frac_bits: int = 10

    @property
    def scale(self) -> float:
        return float(1 << self.frac_bits)

    def encode(self, x: npt.ArrayLike, frac_bits: int | None = None) -> Ring:
        f = self.frac_bits if frac_bits is None else frac_bits
        values = np.rint(np.asarray(x, dtype=np.float64) * float(1 << f))
        if values.size and (values.max() >= 2.0**62 or values.min() <= -(2.0**62)):
            raise OverflowError(f"value too large for fixed point with {f} fractional bits")
        return np.asarray(values.astype(np.int64)).view(np.uint64)

    def decode(self, x: Ring, frac_bits: int | None = None) -> npt.NDArray[np.float64]:
        f = self.frac_bits if frac_bits is None else frac_bits
        return np.asarray(x, dtype=np.uint64).astype(np.int64).astype(np.float64) / float(1 << f)


def truncate_share(share: Ring, bits: int, party_index: int) -> Ring:
    """One party's half of SecureML's local truncation by ``bits`` (no communication)."""
    if party_index == 0:
        return share >> np.uint64(bits)
    out = np.negative(share, out=np.empty_like(share))  # mod 2^64
    out >>= np.uint64(bits)
    return np.negative(out, out=out)


def field_words(count: int, width: int) -> int:
    """How many 64-bit words hold ``count`` fields of ``width`` bits (:func:`pack_fields`)."""
    per = RING_BITS // width
    return -(-count // per)


def pack_fields(fields: list[Ring], width: int) -> Ring:
    """``fields`` (each taken mod ``2^width``) side by side in words: field ``j`` in word
    ``j // (64 // width)`` at bit ``(j % (64 // width)) * width``; shape ``(words, *shape)``."""
    per, mask = RING_BITS // width, np.uint64((1 << width) - 1)
    words = np.zeros((field_words(len(fields), width), *fields[0].shape), dtype=np.uint64)
    for j, field in enumerate(fields):
        words[j // per] |= (field & mask) << np.uint64((j % per) * width)
    return words


def unpack_fields(words: Ring, count: int, width: int) -> list[Ring]:
    """The ``count`` fields :func:`pack_fields` put in ``words``."""
    per, mask = RING_BITS // width, np.uint64((1 << width) - 1)
    return [(words[j // per] >> np.uint64((j % per) * width)) & mask for j in range(count)]


def truncation_failure_bound(magnitude_bits: int) -> float:
    """Probability that local truncation of a value with ``|v| < 2^magnitude_bits`` fails."""
    return float(2.0 ** (magnitude_bits + 1 - RING_BITS))
