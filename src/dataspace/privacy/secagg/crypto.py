"""Primitives for secure aggregation, all from ``cryptography``.

* key agreement: X25519, then HKDF-SHA256 bound to the session, the purpose and the
  unordered pair of party indices (so both ends derive the same key);
* share encryption: AES-256-GCM, random 96-bit nonce, the routing header as associated data;
* PRG: the AES-256-CTR keystream under a 32-byte seed (zero nonce; every seed is fresh per
  session), read as little-endian ``uint64``.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dataspace.privacy.secagg.encoding import UintVector
from dataspace.privacy.secagg.errors import SecAggError, ShareRejected

__all__ = [
    "KEY_BYTES",
    "decrypt",
    "encrypt",
    "load_private",
    "load_public",
    "pair_key",
    "prg",
    "private_bytes",
    "public_bytes",
]

KEY_BYTES = 32
NONCE_BYTES = 12
DOMAIN = b"dataspace/secagg/v1/"


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def load_public(raw: bytes) -> X25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise SecAggError(f"an X25519 public key is {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def load_private(raw: bytes) -> X25519PrivateKey:
    if len(raw) != KEY_BYTES:
        raise SecAggError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def pair_key(
    mine: X25519PrivateKey, theirs: X25519PublicKey, purpose: bytes, session: bytes, a: int, b: int
) -> bytes:
    """32 bytes shared by parties ``a`` and ``b``: HKDF(X25519(mine, theirs))."""
    try:
        shared = mine.exchange(theirs)
    except ValueError as exc:  # all-zero output: a low-order public key
        raise SecAggError("key agreement with a degenerate public key", hint=str(exc)) from exc
    lo, hi = sorted((a, b))
    info = DOMAIN + purpose + b"/" + struct.pack(">II", lo, hi)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=session, info=info).derive(shared)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Authenticated decryption; a tampered, truncated or misrouted ciphertext is refused."""
    if len(ciphertext) < NONCE_BYTES + 16:
        raise ShareRejected("a share ciphertext is truncated", hint="the message was damaged")
    try:
        return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ShareRejected(
            "a share ciphertext fails AES-GCM authentication",
            hint="it was tampered with, garbled or routed to the wrong party; abort the round",
        ) from None


def prg(seed: bytes, length: int) -> UintVector:
    """``length`` pseudo-random uint64 from the AES-256-CTR keystream under ``seed``."""
    if len(seed) != KEY_BYTES:
        raise SecAggError(f"a PRG seed is {KEY_BYTES} bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=True)
