"""Fixed-point encoding of float vectors into integers mod 2^k.

A value x becomes v = round(x · 2^f) (``f`` = ``scale_bits``), stored as v mod 2^k in a
``uint64`` array (two's complement; numpy's uint64 arithmetic wraps mod 2^64, and 2^k divides
2^64, so every sum is reduced mod 2^k only when it is decoded). Each party's values are
bounded, |x| ≤ ``bound``, so |v| ≤ B = ceil(bound · 2^f).

Overflow is ruled out *before* aggregation: n parties' sum satisfies |Σ v| ≤ n·B, which must
fit the signed range, n·B ≤ 2^(k-1) − 1 (:meth:`FixedPoint.check_capacity`, raising
:class:`OverflowRisk`). After aggregation the decoded sum is checked against ±n·B
(:meth:`FixedPoint.decode_sum`, raising :class:`AggregateOverflow`): a sum outside it means
a wrap-around (a party exceeded the bound) or a wrong unmasking, whose result is uniformly
random and lands inside the window with probability only about n·B / 2^(k-1).

Counts ride along as unscaled integers in [0, ``max_count``] per party.

Rounding error: at most 2^-(f+1) per value and party, so n · 2^-(f+1) on a sum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dataspace.errors import UsageError
from dataspace.privacy.secagg.errors import AggregateOverflow, OverflowRisk, ValueOutOfBound

__all__ = ["FixedPoint", "UintVector"]

UintVector = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class FixedPoint:
    """The agreed encoding: ``bound`` per party and value, ``scale_bits`` fractional bits,
    ``bits`` (k ≤ 64) of modulus, ``max_count`` per party."""

    bound: float
    scale_bits: int = 16
    bits: int = 64
    max_count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.bound, (int, float)) and math.isfinite(self.bound)):
            raise UsageError(f"bound must be a finite number, got {self.bound!r}")
        if self.bound <= 0:
            raise UsageError(f"bound must be positive, got {self.bound}")
        if not isinstance(self.bits, int) or not 8 <= self.bits <= 64:
            raise UsageError(f"bits must be an integer in [8, 64], got {self.bits!r}")
        if not isinstance(self.scale_bits, int) or not 0 <= self.scale_bits < self.bits:
            raise UsageError(
                f"scale_bits must be an integer in [0, {self.bits}), got {self.scale_bits!r}"
            )
        if not isinstance(self.max_count, int) or self.max_count < 1:
            raise UsageError(f"max_count must be a positive integer, got {self.max_count!r}")
        if not math.isfinite(self.bound * 2.0**self.scale_bits):
            raise OverflowRisk(
                f"bound {self.bound} at {self.scale_bits} fractional bits is beyond any encoding",
                hint="use a smaller bound or fewer scale_bits",
            )
        self.check_capacity(1)

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def max_encoded(self) -> int:
        """B: the largest |v| one party may contribute."""
        return math.ceil(self.bound * (1 << self.scale_bits))

    @property
    def resolution(self) -> float:
        """The value of one unit of the encoding, 2^-f."""
        return 2.0**-self.scale_bits

    def max_parties(self) -> int:
        """The most parties whose bounded sum still fits the signed range."""
        return min(
            ((1 << (self.bits - 1)) - 1) // self.max_encoded,
            ((1 << (self.bits - 1)) - 1) // self.max_count,
        )

    def check_capacity(self, parties: int) -> None:
        """Refuse, before anything is aggregated, a configuration whose sum could wrap."""
        limit = (1 << (self.bits - 1)) - 1
        if parties * self.max_encoded > limit or parties * self.max_count > limit:
            fits = max(0, math.floor(math.log2(limit / (parties * self.bound))))
            raise OverflowRisk(
                f"{parties} parties × bound {self.bound} at {self.scale_bits} fractional bits "
                f"can reach about 2^{(parties * self.max_encoded).bit_length()} units, beyond "
                f"the signed range of 2^{self.bits}",
                hint=f"use at most {fits} scale_bits, a smaller bound, or fewer parties",
                parties=parties,
                max_parties=self.max_parties(),
            )

    def error_bound(self, parties: int) -> float:
        """Worst-case error of a decoded sum over ``parties`` parties: each party's rounding
        to the grid, plus the float64 rounding of a sum as large as ``parties × bound``."""
        largest = parties * (self.max_encoded * self.resolution)
        return parties * self.resolution / 2 + math.ulp(largest) / 2

    def wrap(self, v: UintVector) -> UintVector:
        """Reduce mod 2^k in place (a no-op for k = 64)."""
        if self.bits < 64:
            v &= np.uint64(self.modulus - 1)
        return v

    def encode(self, values: Sequence[float] | npt.ArrayLike, count: int = 1) -> UintVector:
        """One party's values and count as ``uint64`` (count last); refuses out-of-bound input."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(x)):
            raise ValueOutOfBound("input contains NaN or infinite values", hint="clean the input")
        if x.size and float(np.max(np.abs(x))) > self.bound:
            # the refusal travels to the coordinator: it names the bound, never the value
            # (a party's input is exactly what it must not learn)
            raise ValueOutOfBound(
                f"an input value exceeds the agreed bound {self.bound}",
                hint="clip the values to the bound before aggregating, or agree a larger bound",
            )
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 0 <= count <= self.max_count
        ):
            raise ValueOutOfBound(  # not the count itself: the message reaches the coordinator
                f"count must be an integer in [0, {self.max_count}]"
            )
        scaled = np.rint(x * float(1 << self.scale_bits)).astype(np.int64)
        out = np.empty(x.size + 1, dtype=np.uint64)
        out[:-1] = scaled.view(np.uint64)
        out[-1] = np.uint64(count)
        return self.wrap(out)

    def signed(self, v: UintVector) -> npt.NDArray[np.int64]:
        """Residues mod 2^k as signed integers in [-2^(k-1), 2^(k-1))."""
        shift = np.uint64(64 - self.bits)
        extended: npt.NDArray[np.int64] = (v << shift).view(np.int64) >> np.int64(64 - self.bits)
        return extended

    def decode_sum(self, total: UintVector, parties: int) -> tuple[npt.NDArray[np.float64], int]:
        """The float sum and the total count of ``parties`` parties' encoded vectors."""
        s = self.signed(total)
        values, count = s[:-1], int(s[-1])
        # in Python integers: np.abs of the most negative int64 is itself, still negative
        worst = max(abs(int(values.max())), abs(int(values.min()))) if values.size else 0
        if worst > parties * self.max_encoded or not 0 <= count <= parties * self.max_count:
            raise AggregateOverflow(
                "the decoded sum lies outside ±parties × bound: wrap-around or wrong unmasking",
                hint="a party exceeded the agreed bound or a share was wrong; nothing is released",
            )
        return values.astype(np.float64) / float(1 << self.scale_bits), count
