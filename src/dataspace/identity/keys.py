"""Ed25519 node keys on disk.

The private key is written once, PKCS#8 PEM, file mode 0600, created with O_EXCL so an
existing key is never overwritten; it is never printed or logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dataspace.errors import SignatureError, UsageError

PRIVATE_KEY_MODE = 0o600


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, PRIVATE_KEY_MODE)  # in case a umask widened nothing but a chmod'd parent did


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"private key {path} is missing",
            hint="restore it from backup; a node cannot sign without it",
        ) from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UsageError(
            f"private key {path} is readable by others (mode {mode:o})",
            hint=f"run: chmod 600 {path}",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise SignatureError(f"private key {path} is not a valid PEM key",
                             hint="the key file is damaged: restore it from backup; a node "
                             "cannot sign without it") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"private key {path} is not an Ed25519 key")
    return key


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
