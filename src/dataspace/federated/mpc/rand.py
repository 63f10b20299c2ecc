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

    def __init__(self) -> None:
        cipher = Cipher(algorithms.AES(secrets.token_bytes(32)), modes.CTR(secrets.token_bytes(16)))
        self._enc = cipher.encryptor()

    def ring(self, shape: tuple[int, ...]) -> Ring:
        count = math.prod(shape)
        data = self._enc.update(bytes(8 * count))
        return np.frombuffer(data, dtype="<u8").reshape(shape).astype(np.uint64, copy=False)
