"""Shamir t-of-n secret sharing over a prime field (Shamir 1979, textbook form).

A secret s ∈ GF(p) is the constant term of a random polynomial f of degree t − 1; party x
gets the share (x, f(x)) for x = 1..n. Any t shares give s by Lagrange interpolation at 0;
t − 1 shares are consistent with every secret, so they reveal nothing about it.

The default field is GF(2^256 + 297), the smallest prime above 2^256, so every 32-byte
string (X25519 private keys, mask seeds) is a field element; a share's value takes 33 bytes.
Coefficients come from :mod:`secrets`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dataspace.errors import UsageError
from dataspace.privacy.secagg.errors import SecAggError, TooFewSurvivors

__all__ = ["PRIME", "SHARE_BYTES", "Shamir", "Share"]

#: 2^256 + 297, the smallest prime greater than 2^256.
PRIME = (1 << 256) + 297
SHARE_BYTES = 33


@dataclass(frozen=True)
class Share:
    x: int
    y: int

    def y_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")


@dataclass(frozen=True)
class Shamir:
    """A t-of-n scheme over GF(``prime``); share x-coordinates are the party indices."""

    threshold: int
    prime: int = PRIME

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, int) or self.threshold < 1:
            raise UsageError(f"threshold must be a positive integer, got {self.threshold!r}")

    def split(self, secret: int, xs: Iterable[int]) -> dict[int, Share]:
        """Shares of ``secret`` for each x in ``xs`` (distinct, in [1, p))."""
        coefficients = [secrets.randbelow(self.prime) for _ in range(self.threshold - 1)]
        return self.split_with(secret, coefficients, xs)

    def split_with(
        self, secret: int, coefficients: Sequence[int], xs: Iterable[int]
    ) -> dict[int, Share]:
        """Deterministic split with the given higher coefficients (known-answer tests)."""
        if not 0 <= secret < self.prime:
            raise UsageError("the secret must be a field element, 0 <= secret < prime")
        if len(coefficients) != self.threshold - 1:
            raise UsageError(f"need {self.threshold - 1} coefficients, got {len(coefficients)}")
        points = list(xs)
        if len(set(points)) != len(points) or any(not 0 < x < self.prime for x in points):
            raise UsageError("share x-coordinates must be distinct and in [1, prime)")
        if len(points) < self.threshold:
            raise UsageError(f"{len(points)} shares cannot meet threshold {self.threshold}")
        poly = [secret, *coefficients]
        out: dict[int, Share] = {}
        for x in points:
            y = 0
            for c in reversed(poly):  # Horner
                y = (y * x + c) % self.prime
            out[x] = Share(x, y)
        return out

    def reconstruct(self, shares: Iterable[Share]) -> int:
        """The secret from at least ``threshold`` shares; refuses fewer."""
        unique = {s.x: s for s in shares}
        if len(unique) < self.threshold:
            raise TooFewSurvivors(
                f"{len(unique)} shares cannot reconstruct a {self.threshold}-of-n secret",
                hint="at least threshold parties must answer the unmasking round",
            )
        chosen = sorted(unique.values(), key=lambda s: s.x)[: self.threshold]
        return self.interpolate(chosen)

    def interpolate(self, shares: Sequence[Share]) -> int:
        """f(0) of the lowest-degree polynomial through ``shares`` (no threshold check)."""
        p = self.prime
        if any(not 0 < s.x < p or not 0 <= s.y < p for s in shares):
            raise SecAggError("a share is not a field element")
        if len({s.x for s in shares}) != len(shares):
            raise SecAggError("two shares have the same x-coordinate")
        total = 0
        for i, si in enumerate(shares):
            num, den = 1, 1
            for j, sj in enumerate(shares):
                if i != j:
                    num = num * (-sj.x) % p
                    den = den * (si.x - sj.x) % p
            total = (total + si.y * num * pow(den, -1, p)) % p
        return total

    @staticmethod
    def share_from(x: int, y_bytes: bytes) -> Share:
        if len(y_bytes) != SHARE_BYTES:
            raise SecAggError(f"a share value must be {SHARE_BYTES} bytes, got {len(y_bytes)}")
        return Share(x, int.from_bytes(y_bytes, "big"))
