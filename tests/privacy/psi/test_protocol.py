from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.privacy.psi import (
    Engine,
    Initiator,
    InvalidPoint,
    PsiMessageRefused,
    Responder,
    run_chain,
    run_local,
)
from dataspace.privacy.psi.messages import HEADER, Kind, pack, pack_json, unpack
from dataspace.samples.generate import uscc_check

from .conftest import usccs

A_IDS = [f"id{i}" for i in range(0, 60)]
B_IDS = [f"id{i}" for i in range(40, 100)]


def _pair(
    mode: str, a: Sequence[str | None], b: Sequence[str | None], **kw: object
) -> tuple[Initiator, Responder]:
    ia = Initiator("job-1", "text", mode=mode, chunk_points=16, **kw)  # type: ignore[arg-type]
    ia.load([pa.array(a)])
    rb = Responder("job-1", "text", chunk_points=16, **kw)  # type: ignore[arg-type]
    rb.load([pa.array(b)])
    return ia, rb


@settings(max_examples=25, deadline=None)
@given(
    st.sets(st.integers(0, 60), max_size=25),
    st.sets(st.integers(0, 60), max_size=25),
    st.sampled_from(["x25519", "ristretto255"]),
)
def test_intersection_equals_set_intersection(a: set[int], b: set[int], group: str) -> None:
    a_rows = [f"９１{x:03d}" if x % 3 == 0 else f" 91{x:03d}" for x in sorted(a)]
    b_rows = [f"91{x:03d}" for x in sorted(b)]
    ia = Initiator("j", "uscc", mode="both", group_name=group, chunk_points=7)
    ia.load([pa.array(a_rows, pa.string())])
    rb = Responder("j", "uscc", group_name=group, chunk_points=5)
    rb.load([pa.array(b_rows, pa.string())])
    ra, rr = run_local(ia, rb)
    want = a & b
    assert ra.size == len(want) == rr.size
    assert {sorted(a)[i] for i in ra.rows} == want  # type: ignore[union-attr]
    assert {sorted(b)[i] for i in rr.rows} == want  # type: ignore[union-attr]


def test_mode_me_only_initiator_learns_rows() -> None:
    ra, rb = run_local(*_pair("me", [*A_IDS, None, "id41"], B_IDS))
    assert ra.rows is not None
    assert ra.rows.tolist() == [*range(40, 60), 61]  # every row of a matched key
    assert ra.size == 20 and ra.peer_size == 60
    assert rb.rows is None and rb.size is None and rb.peer_size == 60


def test_mode_both_gives_each_side_its_own_rows() -> None:
    ra, rb = run_local(*_pair("both", A_IDS, B_IDS))
    assert ra.rows.tolist() == list(range(40, 60))  # type: ignore[union-attr]
    assert rb.rows.tolist() == list(range(0, 20))  # type: ignore[union-attr]


def test_mode_size_reveals_only_the_count() -> None:
    a, b = _pair("size", A_IDS, B_IDS)
    ra, rb = run_local(a, b)
    assert ra.size == 20 and ra.rows is None
    assert rb.size is None and rb.rows is None
    # B sent the replies sorted, so A cannot link them to its own points
    assert np.array_equal(np.sort(a._reply.view("V32").ravel()), a._reply.view("V32").ravel())


def test_mode_align_gives_both_sides_rows_in_one_order() -> None:
    ra, rb = run_local(*_pair("align", A_IDS, B_IDS))
    a_keys = [A_IDS[i] for i in ra.rows]  # type: ignore[union-attr]
    b_keys = [B_IDS[i] for i in rb.rows]  # type: ignore[union-attr]
    assert a_keys == b_keys and set(a_keys) == set(A_IDS) & set(B_IDS)
    assert a_keys != sorted(a_keys)  # the common order is the blinded values', not the ids'


def test_three_parties_on_uscc_with_overlap() -> None:
    rng = random.Random(7)
    pool = usccs(rng, 400)
    assert all(code[-1] == uscc_check(code[:17]) for code in pool)
    sets = [rng.sample(pool, 300) for _ in range(3)]  # 75% of the pool each
    sources = [lambda s=s: [pa.array([c.lower() for c in s])] for s in sets]
    with Engine(2, batch_size=64) as engine:
        result = run_chain("job-3", "uscc", sources, engine=engine)
    want = set(sets[0]) & set(sets[1]) & set(sets[2])
    assert {sets[0][i] for i in result.rows} == want  # type: ignore[union-attr]
    assert 0.5 < len(want) / 300 < 0.8


def test_composite_key_from_record_batches() -> None:
    a = pa.record_batch({"name": ["Ａ", "b", "c"], "tel": ["+86 13800138000", "1", "2"]})
    b = pa.record_batch({"who": ["A", "b"], "phone": ["13800138000", "9"]})
    ia = Initiator("j", "name:text,tel:phone", mode="both")
    ia.load([a])
    rb = Responder("j", "who:text,phone:phone")
    rb.load([b])
    ra, rr = run_local(ia, rb)
    assert ra.rows.tolist() == [0] and rr.rows.tolist() == [0]  # type: ignore[union-attr]


# --- refusals -----------------------------------------------------------------------------


def _started(mode: str = "me") -> tuple[Initiator, Responder, list[bytes]]:
    a, b = _pair(mode, A_IDS, B_IDS)
    for reply in b.receive(a.hello()):
        a.receive(reply)
    return a, b, list(a.outgoing())


def test_out_of_order_chunk_is_refused() -> None:
    _, b, chunks = _started()
    with pytest.raises(PsiMessageRefused, match="#1 where #0"):
        list(b.receive(chunks[1]))


def test_replayed_chunk_is_refused() -> None:
    _, b, chunks = _started()
    list(b.receive(chunks[0]))
    with pytest.raises(PsiMessageRefused, match="#0 where #1"):
        list(b.receive(chunks[0]))


def test_truncated_message_is_refused() -> None:
    _, b, chunks = _started()
    with pytest.raises(PsiMessageRefused, match=r"truncated|announces"):
        list(b.receive(chunks[0][:-5]))
    with pytest.raises(PsiMessageRefused, match="shorter than its header"):
        list(b.receive(chunks[0][: HEADER.size - 1]))


def test_message_of_another_session_is_refused() -> None:
    _, b, chunks = _started()
    forged = chunks[0][:6] + bytes(16) + chunks[0][22:]
    with pytest.raises(PsiMessageRefused, match="another PSI session"):
        list(b.receive(forged))


def test_points_before_hello_are_refused() -> None:
    _, b = _pair("me", A_IDS, B_IDS)
    with pytest.raises(PsiMessageRefused, match="did not expect A_POINTS"):
        list(b.receive(pack(Kind.A_POINTS, bytes(16), 0, bytes(32), last=True)))


def test_mode_not_allowed_is_refused() -> None:
    a, _ = _pair("both", A_IDS, B_IDS)
    b = Responder("job-1", "text", allow=("size",))
    b.load([pa.array(B_IDS)])
    with pytest.raises(PsiMessageRefused, match="not allowed"):
        list(b.receive(a.hello()))


def test_a_size_query_over_fewer_than_k_identifiers_is_refused() -> None:
    """With one identifier, the count says whether B holds it. B answers a count only over
    at least ``min_peer`` of A's distinct identifiers (the node passes k in size mode)."""
    for ids, answered in ((["x1"], False), (["x1", "x1", "x2"], False), (["x1", "x2", "x3"],
                                                                         True)):
        a = Initiator("job-1", "text", mode="size")
        a.load([pa.array(ids)])
        b = Responder("job-1", "text", allow=("size",), min_peer=3)
        b.load([pa.array(B_IDS)])
        if answered:
            assert run_local(a, b)[0].size is not None
        else:
            with pytest.raises(PsiMessageRefused, match="answers sets of at least 3"):
                list(b.receive(a.hello()))


def test_a_size_query_must_not_repeat_a_point() -> None:
    """min_peer counts distinct keys: a deviating A sending one point k times is refused."""
    a = Initiator("job-1", "text", mode="size")
    a.load([pa.array(["x1"])])
    b = Responder("job-1", "text", allow=("size",), min_peer=3)
    b.load([pa.array(B_IDS)])
    hello = unpack(a.hello())
    forged = pack_json(Kind.HELLO, hello.session, {**hello.json(), "n": 3})
    [accept] = list(b.receive(forged))
    a.receive(accept)
    [points] = [unpack(m) for m in a.outgoing()]
    with pytest.raises(PsiMessageRefused, match="repeats a point"):
        list(b.receive(pack(Kind.A_POINTS, points.session, points.seq, points.payload * 3,
                            last=True)))


def test_a_version_1_message_is_refused_by_name() -> None:
    """Version 1 hashed onto the curve and its twist: its points never match version 2's, so
    a mixed pair must fail, not return an empty intersection."""
    a, b = _pair("me", A_IDS, B_IDS)
    hello = bytearray(a.hello())
    hello[4] = 1
    with pytest.raises(PsiMessageRefused, match="version 1, this node speaks 2"):
        list(b.receive(bytes(hello)))


def test_hello_for_another_job_is_refused() -> None:
    a, _ = _pair("me", A_IDS, B_IDS)
    b = Responder("job-2", "text")
    b.load([pa.array(B_IDS)])
    with pytest.raises(PsiMessageRefused, match="another job"):
        list(b.receive(a.hello()))


@pytest.mark.parametrize(
    ("group", "bad"),
    [
        ("x25519", b"\xff" * 32),  # top bit set
        ("x25519", b"\xee" + b"\xff" * 30 + b"\x7f"),  # u >= p
        ("x25519", bytes(32)),  # u = 0, low order
        ("ristretto255", b"\xff" * 32),  # not a ristretto255 encoding
    ],
)
def test_points_off_the_group_are_refused(group: str, bad: bytes) -> None:
    a, b = _pair("me", ["x"], ["y"], group_name=group)
    b.receive(a.hello())
    session = a._session
    with pytest.raises(InvalidPoint):
        list(b.receive(pack(Kind.A_POINTS, session, 0, bad, last=True)))


def test_match_indices_past_2_63_are_refused_not_wrapped() -> None:
    """MATCHES carries unsigned 64-bit indices; 2^64 - 1 must not become -1 (the last point)."""
    from dataspace.privacy.psi.messages import unpack

    a, b = _pair("both", A_IDS, B_IDS)
    hello = a.hello()
    for reply in b.receive(hello):
        a.receive(reply)
    for chunk in a.outgoing():
        list(b.receive(chunk))
    wrapped = np.array([2**64 - 1, 2**64 - 4], dtype="<u8").tobytes()
    forged = pack(Kind.MATCHES, unpack(hello).session, 0, wrapped, last=True)
    with pytest.raises(PsiMessageRefused, match="outside B_POINTS"):
        list(b.receive(forged))


def test_a_peer_set_beyond_the_limit_is_refused_at_hello(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataspace.privacy.psi import protocol

    monkeypatch.setattr(protocol, "MAX_PEER_SET", len(A_IDS) - 1)
    a, b = _pair("size", A_IDS, B_IDS)
    with pytest.raises(PsiMessageRefused, match="no valid set size"):
        list(b.receive(a.hello()))


def test_a_responder_answers_initiator_sets_up_to_its_max_peer() -> None:
    a, b = _pair("me", A_IDS, B_IDS)
    b.max_peer = len(A_IDS) - 1
    with pytest.raises(PsiMessageRefused, match=f"at most {len(A_IDS) - 1}"):
        list(b.receive(a.hello()))
    a, b = _pair("me", A_IDS, B_IDS)
    b.max_peer = len(A_IDS)
    assert list(b.receive(a.hello()))  # ACCEPT


@pytest.mark.parametrize("n", [10**12, 2**64, True, -1])
def test_an_accepted_set_size_beyond_the_limit_is_refused_at_the_initiator(n: object) -> None:
    """The size in ACCEPT sets what the initiator allocates: bounded as HELLO's is."""
    from dataspace.privacy.psi.messages import pack_json, unpack

    a, _ = _pair("both", A_IDS, B_IDS)
    hello = a.hello()
    with pytest.raises(PsiMessageRefused, match="no valid set size"):
        a.receive(pack_json(Kind.ACCEPT, unpack(hello).session, {"n": n}))
