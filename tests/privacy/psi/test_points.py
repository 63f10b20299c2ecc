"""Point-set helpers (sort, deduplicate, intersect) and the X25519 group, against references."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.privacy.psi import Engine, Initiator, InvalidPoint, Responder, run_local
from dataspace.privacy.psi.group import X25519, domain_prefix
from dataspace.privacy.psi.messages import Kind, pack
from dataspace.privacy.psi.protocol import _intersect, _order, _unique

# Rows drawn from a tiny alphabet so that duplicates and equal 8-byte prefixes are common.
_row = st.lists(st.sampled_from([0, 1, 255]), min_size=32, max_size=32)
_rows = st.lists(_row, max_size=40).map(lambda r: np.array(r, dtype=np.uint8).reshape(-1, 32))


def _tie_heavy(rows: np.ndarray) -> np.ndarray:
    out = rows.copy()
    out[:, :8] = 7  # every row shares its first 8 bytes
    return out


@settings(max_examples=60, deadline=None)
@given(_rows, st.booleans())
def test_order_and_unique_match_numpy(rows: np.ndarray, ties: bool) -> None:
    rows = _tie_heavy(rows) if ties else rows
    ref = np.lexsort(rows.T[::-1])  # byte-wise order, stable
    assert np.array_equal(_order(rows), ref)
    uniq, first, inverse = _unique(rows)
    want, want_first, want_inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    assert np.array_equal(uniq, want)
    assert np.array_equal(first, want_first)
    assert np.array_equal(inverse, want_inverse.ravel())


@settings(max_examples=60, deadline=None)
@given(_rows, _rows, st.booleans())
def test_intersect_matches_the_set_intersection_in_sorted_order(
    a: np.ndarray, b: np.ndarray, ties: bool
) -> None:
    a, b = (_tie_heavy(a), _tie_heavy(b)) if ties else (a, b)
    a, b = _unique(a)[0], _unique(b)[0][::-1]  # duplicate-free, b in another order
    ia, ib = _intersect(a, b)
    assert np.array_equal(a[ia], b[ib])
    want = sorted({r.tobytes() for r in a} & {r.tobytes() for r in b})
    assert [a[i].tobytes() for i in ia] == want


def test_x25519_blinding_matches_rfc7748_vector() -> None:
    # RFC 7748 §5.2, first test vector
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    want = "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    assert X25519().blind(scalar, u).hex() == want
    assert X25519().blind(scalar, u * 3).hex() == want * 3


P25519, A25519 = 2**255 - 19, 486662


def _square_free_curve(u: int) -> bool:
    """Euler's criterion in plain Python: u is on curve25519 (not its twist, not order 2)."""
    v = (u**3 + A25519 * u * u + u) % P25519
    return pow(v, (P25519 - 1) // 2, P25519) == 1


def test_x25519_hash_to_u_is_the_documented_sha512_prefix_with_a_counter() -> None:
    prefix = domain_prefix("job-1", "uscc")
    assert prefix == (
        b"\x00\x00\x00\x10dataspace/psi/v2" + b"\x00\x00\x00\x05job-1" + b"\x00\x00\x00\x04uscc"
    )
    items = [b"\x00\x00\x00\x0291", b"", b"x" * 1000] + [str(i).encode() for i in range(200)]
    got = X25519.hash_u(prefix, items)
    counters = []
    for i, item in enumerate(items):
        for c in range(256):  # the first counter byte whose u is on the curve
            u = int.from_bytes(hashlib.sha512(prefix + item + bytes([c])).digest()[:32],
                               "little") & ((1 << 255) - 1)
            if _square_free_curve(u):
                break
        counters.append(c)
        assert got[32 * i : 32 * (i + 1)] == u.to_bytes(32, "little")
    assert 0.3 < counters.count(0) / len(items) < 0.7  # about half land at the first try


def test_blinded_hashes_show_no_curve_or_twist_bit() -> None:
    """A u-coordinate stays on the curve or the twist it is on under x-only multiplication,
    and anyone can tell which: had the hash landed on both, the receiver of H(x)^a would
    learn one bit of every x it does not share. Every hashed and blinded point is on the
    curve; a twist point (as the v1 hash made about half the time) is told apart."""
    group = X25519()
    items = [f"91110108MA01{i:06d}".encode() for i in range(300)]
    key = group.new_key()
    blinded = group.hash_blind(key, domain_prefix("job-2", "uscc"), items)
    again = group.blind(group.new_key(), blinded)
    for points in (group.hash_u(domain_prefix("job-2", "uscc"), items), blinded, again):
        rows = [int.from_bytes(points[i : i + 32], "little") for i in range(0, len(points), 32)]
        assert all(_square_free_curve(u) for u in rows)
    v1 = [int.from_bytes(hashlib.sha512(b"v1" + item).digest()[:32], "little") & ((1 << 255) - 1)
          for item in items]
    assert 0.35 < sum(map(_square_free_curve, v1)) / len(v1) < 0.65  # the test can tell


def test_pool_run_with_pipelined_blinding_equals_in_process_run() -> None:
    a_ids = [f"9111{i:014d}" for i in range(0, 3000)]
    b_ids = [f"9111{i:014d}" for i in range(2000, 4000)]
    with Engine(2, batch_size=500, piece_points=100) as engine:
        engine.start()
        a = Initiator("j", "uscc", mode="both", chunk_points=700, engine=engine)
        a.load([pa.array(a_ids)])
        b = Responder("j", "uscc", chunk_points=900, engine=engine)
        b.load([pa.array(b_ids)])
        ra, rb = run_local(a, b)
    assert ra.size == rb.size == 1000
    assert list(ra.rows) == list(range(2000, 3000))  # type: ignore[arg-type]
    assert list(rb.rows) == list(range(0, 1000))  # type: ignore[arg-type]


def test_a_low_order_point_is_refused_on_the_pool_too() -> None:
    with Engine(2, piece_points=64) as engine:
        a = Initiator("j", "uscc", chunk_points=4096, engine=engine)
        a.load([pa.array([f"9111{i:014d}" for i in range(600)])])
        b = Responder("j", "uscc", engine=engine)
        b.load([pa.array(["x"])])
        b.receive(a.hello())
        points = bytearray(X25519.hash_u(b"p", [str(i).encode() for i in range(600)]))
        points[32 * 599 : 32 * 600] = bytes(32)  # u = 0 among valid points
        with pytest.raises(InvalidPoint):
            list(b.receive(pack(Kind.A_POINTS, a._session, 0, bytes(points), last=False)))
