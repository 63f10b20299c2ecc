"""X25519 eight at a time: Intel's multi-buffer library (``crypto_mb``, AVX-512 IFMA).

An optional backend for the DH-PSI group :class:`~dataspace.privacy.psi.group.X25519`:
the same function (RFC 7748 X25519, clamped scalar, x-only ladder), so its outputs are byte
for byte those of ``cryptography`` and parties with different backends interoperate. It is
used when the ``ipp`` extra is installed (``pip install -e '.[ipp]'``: the ``ipp-crypto``
wheel with ``libcrypto_mb`` and the compiler runtime it links against), the CPU has AVX-512
IFMA, and the library reproduces the RFC 7748 known answers at load; otherwise
:func:`backend` is ``None`` and :func:`unavailable_reason` says why. Setting
``DATASPACE_X25519=cryptography`` turns it off.

Why: one ``mbx_x25519_mb8`` call computes eight independent exchanges in the 52-bit lanes
of AVX-512 IFMA, ≈ 5× the throughput of one-at-a-time X25519 on this machine (figures in
docs/psi.md); DH-PSI is four such exchanges per identifier.

Only for points no peer chose: the library computes some crafted canonical inputs wrongly
(``u = p - 100`` for every key, ``u = p - 5`` for about half of all keys), so the group gives
it a party's own hash outputs only and spot-checks those (docs/psi.md, Group).

The library flags a low-order input per lane (its all-zero output, which RFC 7748 §6.1 asks
a protocol to refuse); :class:`LowOrderInput` carries the first such point's index.
"""

from __future__ import annotations

import ctypes
import os
import threading
from importlib import metadata

import numpy as np

__all__ = [
    "ENV_X25519",
    "LowOrderInput",
    "MultiBuffer",
    "backend",
    "describe",
    "disable",
    "reset",
    "unavailable_reason",
]

ENV_X25519 = "DATASPACE_X25519"  # "cryptography": never use the multi-buffer library
LANES = 8
POINT_SIZE = 32

# The compiler runtime libcrypto_mb.so is linked against (its DT_NEEDED), loaded first so the
# dynamic linker finds them by soname: neither wheel puts its libraries on the search path.
_RUNTIME = ("libintlc.so.5", "libimf.so", "libirng.so", "libsvml.so")

# RFC 7748 §5.2: (scalar, u, X25519(scalar, u)).
_KNOWN_ANSWERS = (
    (
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    ),
    (
        "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    ),
)


_LOW_ORDER = 4  # MBX_STATUS_LOW_ORDER_ERR, one 4-bit status per lane


class LowOrderInput(ValueError):
    """An input point of low order (X25519 would output all zeros)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"point {index} has low order")
        self.index = index


class MultiBuffer:
    """``mbx_x25519_mb8`` behind a batch call: one scalar, many u-coordinates."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._mb8 = library.mbx_x25519_mb8
        self._mb8.restype = ctypes.c_uint32
        self._mb8.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]

    def exchange(self, key: bytes, points: bytes) -> bytes:
        """X25519(key, u) for every 32-byte u in ``points``, concatenated; raises
        :class:`LowOrderInput` for the first point of low order."""
        if len(key) != POINT_SIZE or len(points) % POINT_SIZE:
            raise ValueError("a 32-byte key and whole 32-byte points are needed")
        n = len(points) // POINT_SIZE
        if n == 0:
            return b""
        source = np.frombuffer(points, dtype=np.uint8)
        if n % LANES:  # fill the last group of eight with copies of the last point
            padded = np.empty(-(-n // LANES) * LANES * POINT_SIZE, dtype=np.uint8)
            padded[: len(source)] = source
            padded[len(source) :].reshape(-1, POINT_SIZE)[:] = source[-POINT_SIZE:]
            source = padded
        groups = len(source) // (POINT_SIZE * LANES)
        out = np.empty(len(source), dtype=np.uint8)
        key_buffer = np.frombuffer(key, dtype=np.uint8)
        keys = np.full(LANES, key_buffer.ctypes.data, dtype=np.uint64)
        # One row of eight pointers per call: into the inputs and into the outputs.
        steps = np.arange(groups * LANES, dtype=np.uint64) * np.uint64(POINT_SIZE)
        inputs = steps + np.uint64(source.ctypes.data)
        outputs = steps + np.uint64(out.ctypes.data)
        keys_at = keys.ctypes.data
        row_bytes = LANES * 8
        in_at, out_at = inputs.ctypes.data, outputs.ctypes.data
        mb8 = self._mb8
        for g in range(groups):
            status = mb8(out_at + g * row_bytes, keys_at, in_at + g * row_bytes)
            if status:
                _refuse(status, g * LANES)
        return out[: n * POINT_SIZE].tobytes()


def _refuse(status: int, first: int) -> None:
    lanes = [(status >> (4 * lane)) & 0xF for lane in range(LANES)]
    for lane, code in enumerate(lanes):
        if code == _LOW_ORDER:
            raise LowOrderInput(first + lane)
    raise RuntimeError(f"crypto_mb mbx_x25519_mb8 failed (status {status:#x})")


def _library_path(distribution: str, name: str) -> str:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise OSError(f"the {distribution} package is not installed") from None
    for file in files:
        if file.name == name:
            return str(file.locate())
    raise OSError(f"{name} is not in the {distribution} package")


def _load() -> MultiBuffer:
    for name in _RUNTIME:
        ctypes.CDLL(_library_path("intel-cmplr-lib-rt", name))  # found by soname, kept local
    library = ctypes.CDLL(_library_path("ipp-crypto", "libcrypto_mb.so"))
    library.mbx_is_crypto_mb_applicable.argtypes = [ctypes.c_uint64]
    if not library.mbx_is_crypto_mb_applicable(0):
        raise OSError("this CPU lacks AVX-512 IFMA, which crypto_mb needs")
    multi = MultiBuffer(library)
    for scalar, u, want in _KNOWN_ANSWERS:
        got = multi.exchange(bytes.fromhex(scalar), bytes.fromhex(u) * 3)
        if got != bytes.fromhex(want) * 3:
            raise OSError("crypto_mb failed the RFC 7748 known-answer test")
    return multi


_state: tuple[MultiBuffer | None, str] | None = None
_lock = threading.Lock()


def _loaded() -> tuple[MultiBuffer | None, str]:
    global _state
    with _lock:
        if _state is None:
            if os.environ.get(ENV_X25519, "").strip().lower() == "cryptography":
                _state = None, f"turned off by {ENV_X25519}=cryptography"
            else:
                try:
                    _state = _load(), ""
                except (OSError, AttributeError) as exc:  # no wheel or symbol, CPU, answers
                    _state = None, str(exc)
        return _state


def backend() -> MultiBuffer | None:
    """The multi-buffer backend, or ``None`` (see :func:`unavailable_reason`)."""
    return _loaded()[0]


def unavailable_reason() -> str:
    """Why :func:`backend` is ``None``; empty when it is not."""
    return _loaded()[1]


def describe() -> str:
    """One line for an operator: which X25519 blinds this party's own points, and why."""
    if backend() is not None:
        return "own points eight at a time (crypto_mb, AVX-512 IFMA), received ones one by one"
    return f"one at a time through cryptography (crypto_mb not used: {unavailable_reason()})"


def disable(reason: str) -> None:
    """Stop using the library in this process (a result disagreed with the reference)."""
    global _state
    with _lock:
        _state = None, reason


def reset() -> None:
    """Forget the outcome of loading, so the next call decides again (tests)."""
    global _state
    with _lock:
        _state = None
