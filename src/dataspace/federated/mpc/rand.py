"""Uniform ring elements from AES-256-CTR keyed from :mod:`secrets` (library crypto, no numpy
PRNG: masks and shares must be unpredictable to the other parties)."""

from __future__ import annotations

import math
import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dataspace.federated.mpc.fixedpoint import Ring


class Csprng:
    """A keystream read as little-endian ``uint64`` words; each party and the dealer own one."""

    CHUNK = 1 << 16  # words drawn at once for small requests (never reused once handed out)

    def __init__(self) -> None:
        cipher = Cipher(algorithms.AES(secrets.token_bytes(32)), modes.CTR(secrets.token_bytes(16)))
        self._enc = cipher.encryptor()
        self._buf = np.empty(0, dtype=np.uint64)
        self._pos = 0

    def _draw(self, count: int) -> Ring:
        out = np.empty(count + 2, dtype=np.uint64)  # update_into wants a block of slack
        self._enc.update_into(_zeros(8 * count), out.data.cast("B"))
        return out[:count]

    def ring(self, shape: tuple[int, ...]) -> Ring:
        count = math.prod(shape)
        rest = self._buf[self._pos :]
        if count > rest.size:
            if count - rest.size > self.CHUNK // 4:  # large: draw exactly what is missing
                self._buf, self._pos = np.empty(0, dtype=np.uint64), 0
                return np.concatenate([rest, self._draw(count - rest.size)]).reshape(shape)
            self._buf, self._pos = np.concatenate([rest, self._draw(self.CHUNK)]), 0
        out = self._buf[self._pos : self._pos + count]
        self._pos += count
        return out.reshape(shape)


class SeededStream:
    """Uniform ring elements from a fresh seed, drawn in order (AES-256-CTR, label 0):
    :func:`expand` of the same seed gives the concatenation of every draw."""

    def __init__(self) -> None:
        self.seed = secrets.token_bytes(32)
        self._enc = Cipher(algorithms.AES(self.seed), modes.CTR(bytes(16))).encryptor()

    def ring(self, shape: tuple[int, ...]) -> Ring:
        count = math.prod(shape)
        out = np.empty(count + 2, dtype=np.uint64)  # update_into wants a block of slack
        self._enc.update_into(_zeros(8 * count), out.data.cast("B"))
        return out[:count].reshape(shape)


def expand(seed: bytes, label: int, shape: tuple[int, ...], out: Ring | None = None) -> Ring:
    """Deterministic uniform ring elements from a 32-byte ``seed`` (AES-256-CTR, nonce =
    ``label``): two parties holding the same seed get the same array without sending it.
    Written into ``out`` if given (a contiguous ``uint64`` array of ``shape``)."""
    # label in the nonce's high half, the block counter in its low half: streams never overlap
    nonce = label.to_bytes(8, "big") + bytes(8)
    enc = Cipher(algorithms.AES(seed), modes.CTR(nonce)).encryptor()
    count = math.prod(shape)
    if out is None:
        out = np.empty(shape, dtype=np.uint64)
    elif out.shape != shape or out.dtype != np.uint64 or not out.flags.c_contiguous:
        raise ValueError("out must be a contiguous uint64 array of the requested shape")
    raw = out.reshape(-1).data.cast("B")
    whole = (8 * count) // 16 * 16  # update_into needs room for a whole extra block
    enc.update_into(_zeros(whole), raw[:whole])
    if whole < 8 * count:
        raw[whole:] = enc.update(bytes(8 * count - whole))
    return out


def _zeros(size: int) -> memoryview:
    global _ZEROS
    zeros = _ZEROS  # one read: another thread may swap in a shorter buffer meanwhile
    if len(zeros) < size + 16:
        zeros = _ZEROS = bytes(max(size + 16, 2 * len(zeros)))
    return memoryview(zeros)[:size]


_ZEROS = b""
