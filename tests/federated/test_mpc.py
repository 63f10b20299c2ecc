"""Known-answer tests of the secret-sharing engine: sharing, Beaver products, truncation,
the sigmoid polynomial, triple consumption and the wire format."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dataspace.federated.errors import MalformedMessage, MpcProtocolError, TripleReused
from dataspace.federated.mpc import (
    SIGMOID,
    Dealer,
    FixedPoint,
    Mpc,
    Network,
    Party,
    Shared,
    truncation_failure_bound,
)
from dataspace.federated.mpc.fixedpoint import pack_fields, truncate_share, unpack_fields
from dataspace.federated.mpc.rand import Csprng, SeededStream, expand
from dataspace.federated.mpc.wire import (
    Message,
    decode,
    encode,
    encode_arrays,
    pack_arrays,
    unpack_arrays,
)

FP = FixedPoint()
ULP = 2.0**-FP.frac_bits


@pytest.fixture
def mpc() -> Mpc:
    net = Network()
    return Mpc(Party("bank", net), Party("tax", net), Dealer("operator", net))


def test_encode_decode_round_trip_within_half_ulp() -> None:
    x = np.array([-3.25, 0.0, 1e-6, 12345.678, -0.5])
    assert np.abs(FP.decode(FP.encode(x)) - x).max() <= ULP / 2


def test_shares_reconstruct_and_each_share_alone_looks_random(mpc: Mpc) -> None:
    x = FP.encode(np.linspace(-5, 5, 1000))
    shared = mpc.share(mpc.parties[0], x)
    s0, s1 = mpc.shares(shared)
    assert np.array_equal(s0 + s1, x)
    assert not np.array_equal(s1, x)
    assert 0.4 < float(np.mean(s1 >> np.uint64(63))) < 0.6  # top bit of a uniform word


def test_reveal_is_logged_with_recipients(mpc: Mpc) -> None:
    x = FP.encode([1.5, -2.0])
    shared = mpc.share(mpc.parties[1], x)
    opened = mpc.reveal(shared, ["bank"], "test value")
    assert np.array_equal(opened, x)
    [opening] = mpc.log.openings
    assert (opening.what, opening.to, opening.shape) == ("test value", ("bank",), (2,))


def test_truncation_is_within_one_ulp_for_values_in_range() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1000, 20000)  # |v| < 2^14 real, 2^46 in the ring at 2f bits
    raw = np.rint(values * 2.0 ** (2 * FP.frac_bits)).astype(np.int64).astype(np.uint64)
    r = Csprng().ring(raw.shape)
    t = truncate_share(raw - r, FP.frac_bits, 0) + truncate_share(r, FP.frac_bits, 1)
    assert np.abs(FP.decode(t) - values).max() <= 2 * ULP
    assert truncation_failure_bound(46) == 2.0**-17


def test_truncation_fails_catastrophically_when_shares_wrap() -> None:
    """The stated failure mode: party 1's share lands in the window (0, v] of width |v|
    (probability |v| / 2^64), so the sum of the shifted shares wraps."""
    x = FP.encode([1.0], 2 * FP.frac_bits)
    r = np.ones(1, dtype=np.uint64)
    t = truncate_share(x - r, FP.frac_bits, 0) + truncate_share(r, FP.frac_bits, 1)
    assert abs(FP.decode(t)[0] - 1.0) > 1e9


def test_elementwise_product_matches_plaintext(mpc: Mpc) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 3, (50, 4)), rng.normal(0, 3, (50, 4))
    prod = mpc.mul(mpc.share(mpc.parties[0], FP.encode(a)), mpc.share(mpc.parties[1], FP.encode(b)))
    got = FP.decode(mpc.reveal(prod, ["bank"], "product"))
    assert np.abs(got - a * b).max() < 8 * 3 * ULP * 3  # encoding error x |operand| + 1 ulp


def test_matrix_product_matches_plaintext(mpc: Mpc) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 6)), rng.normal(size=(6, 3))
    prod = mpc.matmul(
        mpc.share(mpc.parties[0], FP.encode(a)), mpc.share(mpc.parties[1], FP.encode(b))
    )
    got = FP.decode(mpc.reveal(prod, ["tax"], "matrix product"))
    assert np.abs(got - a @ b).max() < 6 * 4 * ULP


@pytest.mark.parametrize("transpose", [False, True])
def test_owned_matrix_times_shared_vector(mpc: Mpc, transpose: bool) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 5))
    v = rng.normal(size=40 if transpose else 5)
    owner = mpc.parties[1]
    owner.mem["X"] = FP.encode(x, FP.data_frac_bits)
    mpc.register_owned(owner, "X")
    shared_v = mpc.share(mpc.parties[0], FP.encode(v))
    for rows in (slice(None), slice(10, 30)):
        vv = shared_v if not transpose or rows == slice(None) else mpc.share(
            mpc.parties[0], FP.encode(v[rows])
        )
        raw = mpc.owned_matmul(owner, "X", vv, rows, transpose=transpose)
        got = FP.decode(mpc.reveal(mpc.trunc(raw, FP.data_frac_bits), ["bank"], "product"))
        xs = x[rows]
        want = xs.T @ v[rows] if transpose else xs @ v
        tolerance = 2.0**-FP.data_frac_bits * np.abs(v).sum() + 1e-3
        assert np.abs(got - want).max() < tolerance


def test_peer_sees_only_the_masked_matrix(mpc: Mpc) -> None:
    owner, peer = mpc.parties
    x = FP.encode(np.ones((8, 3)), FP.data_frac_bits)
    owner.mem["X"] = x
    mpc.register_owned(owner, "X")
    [masked] = [v for k, v in peer.mem.items() if k.startswith("E:")]
    assert not np.array_equal(masked, x)
    assert len(np.unique(masked)) == masked.size  # a uniform mask, not a constant shift


def test_sigmoid_on_shares_matches_the_polynomial_and_its_stated_error(mpc: Mpc) -> None:
    z = np.linspace(-8, 8, 161)
    s = mpc.sigmoid(mpc.share(mpc.parties[0], FP.encode(z)))
    got = FP.decode(mpc.reveal(s, ["bank"], "sigmoid"))
    assert np.abs(got - SIGMOID(z)).max() < 1e-3
    exact = 1.0 / (1.0 + np.exp(-z))
    assert np.abs(got - exact).max() <= SIGMOID.max_error() + 1e-3
    assert SIGMOID.max_error() < 0.115
    assert SIGMOID.max_error(2.0) < 0.1


def test_a_triple_is_consumed_once(mpc: Mpc) -> None:
    p0, p1 = mpc.parties
    tid = mpc.dealer.triple(p0.name, p1.name, (3,))
    p0.take(mpc.dealer.name, tid, "abc")
    with pytest.raises(TripleReused) as excinfo:
        p0.take(mpc.dealer.name, tid, "abc")
    assert excinfo.value.details["triple_id"] == tid


def test_dealer_never_issues_the_same_triple_id_twice(mpc: Mpc) -> None:
    p0, p1 = mpc.parties
    ids = {mpc.dealer.triple(p0.name, p1.name, (1,)) for _ in range(50)}
    assert len(ids) == 50


def test_wire_round_trip_and_header() -> None:
    arr = np.arange(12, dtype=np.uint64).reshape(3, 4)
    data = encode(Message("bank", "tax", "beaver/t1/e", arr, seq=7))
    assert data[:4] == b"DSMP"
    msg = decode(data)
    assert (msg.sender, msg.recipient, msg.tag, msg.seq) == ("bank", "tax", "beaver/t1/e", 7)
    assert np.array_equal(msg.array, arr)


@pytest.mark.parametrize("bad", [b"", b"XXXX" + bytes(20), "truncate"])
def test_malformed_messages_are_rejected(bad: bytes | str) -> None:
    if bad == "truncate":
        bad = encode(Message("a", "b", "t", np.zeros(4, dtype=np.uint64)))[:-3]
    assert isinstance(bad, bytes)
    with pytest.raises(MalformedMessage):
        decode(bad)


def test_a_message_with_the_wrong_tag_is_refused() -> None:
    net = Network()
    net.send("bank", "tax", "share/x", np.zeros(2, dtype=np.uint64))
    with pytest.raises(MalformedMessage, match="expected 'share/y'"):
        net.recv("tax", "bank", "share/y")


@pytest.mark.parametrize("frac_bits", [16, 26])
def test_cube_from_one_opening_matches_plaintext(mpc: Mpc, frac_bits: int) -> None:
    z = np.linspace(-8, 8, 641)
    cubed = mpc.cube(mpc.share(mpc.parties[1], FP.encode(z, frac_bits)), frac_bits=frac_bits)
    got = FP.decode(mpc.reveal(cubed, ["bank"], "cube"), 33)  # 3 x 11 fractional bits
    # z is cubed at 11 fractional bits: error <= 3 z^2 * 2^-10, 0.2 at |z| = 8
    assert np.abs(got - z**3).max() <= 3 * 64 * 2.0**-10
    assert np.abs(got - z**3)[np.abs(z) <= 1].max() < 5e-3
    assert mpc.log.masked_openings == 1  # one masked opening, no second round


def test_the_cube_truncates_its_input_exactly_where_the_local_one_wraps(mpc: Mpc) -> None:
    """Party 1's share next to 0 (or 2^64) would wrap a local truncation of z."""
    z = np.array([1.5, -1.5, 7.0, -7.0])
    x = FP.encode(z, 26)
    for s1 in (np.ones(4), np.full(4, 2**64 - 1), np.full(4, 2**40)):
        s1 = s1.astype(np.uint64)
        cubed = mpc.cube(_with_shares(mpc, x - s1, s1), frac_bits=26)
        got = FP.decode(mpc.reveal(cubed, ["bank"], "cube"), 33)
        assert np.abs(got - z**3).max() <= 3 * 49 * 2.0**-10


def test_a_cube_of_values_without_spare_fraction_bits_is_refused(mpc: Mpc) -> None:
    with pytest.raises(MpcProtocolError, match="cannot cube"):
        mpc.deal_cube((3,), frac_bits=11)


def test_triples_dealt_in_one_bundle_arrive_as_one_message_per_party(mpc: Mpc) -> None:
    p0, p1 = mpc.parties
    before = mpc.net.links[("operator", "bank")].messages
    with mpc.dealer.batch() as bundle:
        tids = [mpc.dealer.triple(p0.name, p1.name, (4,)) for _ in range(3)]
        cube = mpc.deal_cube((5,))
    assert mpc.net.links[("operator", "bank")].messages == before + 1
    for p in mpc.parties:
        p.accept(mpc.dealer.name, bundle)
    a0, b0, c0 = p0.take(mpc.dealer.name, tids[1], "abc")
    a1, b1, c1 = p1.take(mpc.dealer.name, tids[1], "abc")
    assert np.array_equal((a0 + a1) * (b0 + b1), c0 + c1)
    _check_cube_tuple(*(p.take(mpc.dealer.name, cube, "rl23f") for p in mpc.parties), 5)
    with pytest.raises(TripleReused):
        p0.take(mpc.dealer.name, tids[1], "abc")


def _check_cube_tuple(q0: list[np.ndarray], q1: list[np.ndarray], bits: int) -> None:
    """The parts reconstruct r, l, l^2, l^3 in the ring and t, t l, t l^2 mod 2^(bits+1)."""
    r, low, l2, l3 = (a + b for a, b in zip(q0[:4], q1[:4], strict=True))
    assert np.array_equal(low, (r & np.uint64(2**63 - 1)) >> np.uint64(bits))
    assert np.array_equal(l2, low * low) and np.array_equal(l3, low * low * low)
    mask = np.uint64(2 ** (bits + 1) - 1)
    fields = [
        (a + b) & mask
        for a, b in zip(unpack_fields(q0[4], 3, bits + 1), unpack_fields(q1[4], 3, bits + 1),
                        strict=True)
    ]
    t = r >> np.uint64(63)
    assert [f.tolist() for f in fields] == [(v & mask).tolist() for v in (t, t * low, t * l2)]


def test_a_bundle_that_does_not_match_its_layout_is_refused(mpc: Mpc) -> None:
    p0, p1 = mpc.parties
    with mpc.dealer.batch() as bundle:
        mpc.dealer.triple(p0.name, p1.name, (2,))
    bundle.layout["tax"].append(("t999", [((2,), False)] * 3))  # expects more than arrived
    with pytest.raises(MalformedMessage, match="layout"):
        p1.accept(mpc.dealer.name, bundle)


def test_a_bundle_whose_parts_do_not_have_the_agreed_shapes_is_refused(mpc: Mpc) -> None:
    p0, p1 = mpc.parties
    with mpc.dealer.batch() as bundle:
        tid = mpc.dealer.triple(p0.name, p1.name, (2,))
    bundle.layout["tax"] = [(tid, [((3,), False)] * 3)]
    with pytest.raises(MalformedMessage, match="shape"):
        p1.accept(mpc.dealer.name, bundle)


def test_in_a_bundle_the_first_party_gets_a_seed_instead_of_its_uniform_shares(
    mpc: Mpc,
) -> None:
    with mpc.dealer.batch() as bundle:
        cube = mpc.deal_cube((1000,))
    box0 = mpc.net._boxes[("operator", "bank")][-1]
    box1 = mpc.net._boxes[("operator", "tax")][-1]
    assert len(box0) < 200  # header and a 32-byte seed
    # l, l^2, l^3 and one word of packed narrow fields (its share of r is seeded too)
    assert 4 * 1000 * 8 < len(box1) < 5 * 1000 * 8
    seed = unpack_arrays(decode(box0).array)[0].tobytes()
    assert len(seed) == 32 and seed not in box1
    for p in mpc.parties:
        p.accept(mpc.dealer.name, bundle)
    bits = FP.frac_bits - 11
    _check_cube_tuple(*(p.take(mpc.dealer.name, cube, "rl23f") for p in mpc.parties), bits)
    with mpc.dealer.batch() as again:
        mpc.deal_cube((1000,))
    fresh = unpack_arrays(decode(mpc.net._boxes[("operator", "bank")][-1]).array)[0]
    assert fresh.tobytes() != seed
    for p in mpc.parties:
        p.accept(mpc.dealer.name, again)


def test_a_bundle_seed_of_the_wrong_size_is_refused(mpc: Mpc) -> None:
    p0, p1 = mpc.parties
    with mpc.dealer.batch() as bundle:
        mpc.dealer.triple(p0.name, p1.name, (2,))
    box = mpc.net._boxes[("operator", "bank")]
    message = decode(box.pop())
    short_seed = pack_arrays([np.zeros(3, dtype=np.uint64)])
    box.append(encode(Message(message.sender, message.recipient, message.tag, short_seed)))
    with pytest.raises(MalformedMessage, match="seed"):
        p0.accept(mpc.dealer.name, bundle)


def test_several_owned_products_in_one_exchange_match_plaintext(mpc: Mpc) -> None:
    rng = np.random.default_rng(5)
    bank, tax = mpc.parties
    xb, xt = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    bank.mem["Xb"], tax.mem["Xt"] = (FP.encode(x, FP.data_frac_bits) for x in (xb, xt))
    mpc.register_owned(bank, "Xb")
    mpc.register_owned(tax, "Xt")
    wb, wt, r = rng.normal(size=4), rng.normal(size=3), rng.normal(size=10)
    shared = [mpc.share(bank, FP.encode(v)) for v in (wb, wt, r)]
    rows = slice(5, 15)
    before = mpc.net.links[("bank", "tax")].messages
    out = mpc.owned_matmuls([
        (bank, "Xb", shared[0], None, False),
        (tax, "Xt", shared[1], None, False),
        (bank, "Xb", shared[2], rows, True),
        (tax, "Xt", shared[2], rows, True),
    ])
    assert mpc.net.links[("bank", "tax")].messages == before + 1  # all its f's at once
    want = [xb @ wb, xt @ wt, xb[rows].T @ r, xt[rows].T @ r]
    for got, w in zip(out, want, strict=True):
        value = FP.decode(mpc.reveal(mpc.trunc(got, FP.data_frac_bits), ["bank"], "product"))
        assert np.abs(value - w).max() < 1e-2


def test_packed_arrays_round_trip_and_bad_lengths_are_refused() -> None:
    arrays = [np.arange(6, dtype=np.uint64).reshape(2, 3), np.zeros(0, dtype=np.uint64),
              np.array(7, dtype=np.uint64)]
    back = unpack_arrays(pack_arrays(arrays))
    assert [a.shape for a in back] == [(2, 3), (0,), ()]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back, strict=True))
    packed = pack_arrays(arrays)
    for bad in (packed[:-1], np.r_[packed, np.uint64(0)], np.array([], dtype=np.uint64),
                np.array([1, 9], dtype=np.uint64)):
        with pytest.raises(MalformedMessage):
            unpack_arrays(bad)


def test_a_seeded_stream_equals_one_expansion_of_its_seed() -> None:
    stream = SeededStream()
    draws = [stream.ring((n,)) for n in (3, 5, 1, 7)]  # odd lengths: AES blocks split
    assert np.array_equal(np.concatenate(draws), expand(stream.seed, 0, (16,)))
    assert SeededStream().seed != stream.seed


def test_seed_expansion_is_deterministic_and_streams_differ() -> None:
    seed = bytes(range(32))
    a = expand(seed, 0, (5, 3))
    out = np.empty((5, 3), dtype=np.uint64)
    assert np.array_equal(expand(seed, 0, (5, 3), out=out), a)
    assert np.array_equal(expand(seed, 0, (15,))[:7], a.ravel()[:7])  # odd length: tail too
    assert not np.array_equal(expand(seed, 1, (5, 3)), a)
    with pytest.raises(ValueError):
        expand(seed, 0, (5, 3), out=np.empty((3, 5), dtype=np.uint64).T)


def test_square_from_one_opening_matches_plaintext(mpc: Mpc) -> None:
    x = np.linspace(-3, 3, 301)
    squared = mpc.square(mpc.share(mpc.parties[0], FP.encode(x)))
    got = FP.decode(mpc.reveal(squared, ["tax"], "square"))
    assert np.abs(got - x**2).max() < 8 * ULP
    assert mpc.log.masked_openings == 1


def test_the_payload_is_aligned_so_the_receiver_computes_in_place() -> None:
    for tag in ("t", "tag/of/another/length", "x1"):
        data = encode(Message("bank", "tax", tag, np.arange(5, dtype=np.uint64)))
        msg = decode(data)
        assert msg.array.flags.aligned and np.array_equal(msg.array, np.arange(5))
    unpadded = bytearray(encode(Message("a", "b", "t", np.arange(3, dtype=np.uint64))))
    unpadded[7] = 2  # an unknown flag
    with pytest.raises(MalformedMessage):
        decode(bytes(unpadded))


def _with_shares(mpc: Mpc, s0: np.ndarray, s1: np.ndarray) -> Shared:
    return mpc._new("test", [s0.astype(np.uint64), s1.astype(np.uint64)])


@pytest.mark.parametrize("bits", [1, 10, 17, 37, 61])
def test_exact_truncation_is_floor_or_one_above_over_the_whole_range(mpc: Mpc, bits: int) -> None:
    rng = np.random.default_rng(bits)
    edges = [-(2**62), -(2**62) + 1, -1, 0, 1, 2**62 - 1, 2**bits, -(2**bits)]
    values = np.concatenate([rng.integers(-(2**62), 2**62, 20000), edges]).astype(np.int64)
    shared = mpc.share(mpc.parties[0], values.view(np.uint64))
    got = mpc.reveal(mpc.trunc_exact(shared, bits), ["bank"], "truncated").view(np.int64)
    assert set(np.unique(got - (values >> bits)).tolist()) <= {0, 1}


def test_exact_truncation_is_right_where_the_local_one_wraps(mpc: Mpc) -> None:
    """Party 1's share in the window next to 0 is local truncation's failure case (see
    test_truncation_fails_catastrophically_when_shares_wrap); the exact one does not care."""
    x = FP.encode(np.array([1.0, -1.0, 2.0**20, -(2.0**20)]), 2 * FP.frac_bits)
    for s1 in (np.ones(4), np.full(4, 2**63), np.full(4, 2**64 - 1)):
        s1 = s1.astype(np.uint64)
        shared = _with_shares(mpc, x - s1, s1)
        got = FP.decode(mpc.reveal(mpc.trunc_exact(shared, FP.frac_bits), ["tax"], "t"))
        assert np.abs(got - FP.decode(x, 2 * FP.frac_bits)).max() <= ULP


class _Recording(Network):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, np.ndarray]] = []

    def recv(self, recipient: str, sender: str, tag: str) -> np.ndarray:
        array = super().recv(recipient, sender, tag)
        self.seen.append((tag, np.asarray(array)))
        return array


@pytest.mark.parametrize(
    ("step", "values", "run"),
    [
        ("trunc/", [0, 2**40, -(2**61)], lambda mpc, x: mpc.trunc_exact(x, 20)),
        ("cube/", [FP.encode(v, 26)[()] for v in (0.0, 3.0, -7.5)],
         lambda mpc, x: mpc.cube(x, frac_bits=26)),
    ],
)
def test_what_an_exact_truncation_opens_is_uniform_whatever_the_value(
    step: str, values: list[int], run: Any
) -> None:
    net = _Recording()
    mpc = Mpc(Party("bank", net), Party("tax", net), Dealer("operator", net))
    for value in values:
        x = np.full(4000, value, dtype=np.int64 if value < 0 else np.uint64).view(np.uint64)
        net.seen.clear()
        run(mpc, mpc.share(mpc.parties[0], x))
        opened = [a for tag, a in net.seen if tag.startswith(step)]
        assert len(opened) == 2  # one masked share each way, nothing else
        c = opened[0] + opened[1]  # what both parties then know
        mask = c - np.uint64(2**62) - x  # the dealer's r: it must span the whole ring
        for word in (opened[0], c, mask):
            for bit in (0, 31, 40, 62, 63):
                assert 0.45 < float(np.mean((word >> np.uint64(bit)) & np.uint64(1))) < 0.55


def test_a_truncation_pair_is_consumed_once_and_bad_widths_are_refused(mpc: Mpc) -> None:
    shared = mpc.share(mpc.parties[0], FP.encode([1.0, 2.0]))
    tid = mpc.deal_trunc((2,), 5)
    mpc.trunc_exact(shared, 5, tid)
    with pytest.raises(TripleReused):
        mpc.trunc_exact(shared, 5, tid)
    for bits in (0, 62, 70):
        with pytest.raises(MpcProtocolError, match="not supported"):
            mpc.trunc_exact(shared, bits)


def test_in_a_bundle_a_truncation_pair_sends_two_corrections_to_one_party(mpc: Mpc) -> None:
    with mpc.dealer.batch() as bundle:
        tid = mpc.deal_trunc((1000,), 16)
    first = decode(mpc.net._boxes[("operator", "bank")][-1]).array
    second = unpack_arrays(decode(mpc.net._boxes[("operator", "tax")][-1]).array)
    assert first.size < 40  # the seed and the header
    assert [a.shape for a in second] == [(4,), (1000,), (1000,)]  # seed, top bit, low bits
    for p in mpc.parties:
        p.accept(mpc.dealer.name, bundle)
    (r0, t0, l0), (r1, t1, l1) = (p.take(mpc.dealer.name, tid, "rtl") for p in mpc.parties)
    r = r0 + r1
    assert np.array_equal(t0 + t1, r >> np.uint64(63))
    assert np.array_equal(l0 + l1, (r & np.uint64(2**63 - 1)) >> np.uint64(16))


def test_exact_linear_combination_with_public_reals(mpc: Mpc) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 4, 500), rng.normal(0, 100, 500)
    xa = mpc.share(mpc.parties[0], FP.encode(a))
    xb = mpc.share(mpc.parties[1], FP.encode(b, 26))  # e.g. a product with 26 fraction bits
    coef = rng.uniform(-1e-3, 1e-3, 500)
    got = FP.decode(mpc.reveal(mpc.lincomb_exact([(xa, coef, 16), (xb, 2.5e-5, 26)], 56),
                               ["bank"], "combination"))
    assert np.abs(got - (coef * a + 2.5e-5 * b)).max() <= 2 * ULP


def test_sigmoid_of_raw_scores_is_truncated_exactly_in_two_openings(mpc: Mpc) -> None:
    z = np.linspace(-10, 10, 401)
    raw = mpc.share(mpc.parties[1], FP.encode(z, 26))
    before = mpc.log.masked_openings
    got = FP.decode(mpc.reveal(mpc.sigmoid(raw, frac_bits=26), ["bank"], "sigmoid"))
    assert np.abs(got - SIGMOID(z)).max() < 2e-3  # the cube's 11-bit input at |z| = 10
    assert np.abs(got - SIGMOID(z))[np.abs(z) <= 4].max() < 1e-3
    assert mpc.log.masked_openings - before == 2  # the cube and the exact truncation


def test_an_untruncated_square_carries_twice_the_fraction_bits(mpc: Mpc) -> None:
    x = np.linspace(-3, 3, 301)
    squared = mpc.square(mpc.share(mpc.parties[0], FP.encode(x)), truncate=False)
    got = FP.decode(mpc.reveal(squared, ["tax"], "square"), 2 * FP.frac_bits)
    assert np.abs(got - x**2).max() < 8 * ULP


def test_concat_and_split_are_local_and_inverse(mpc: Mpc) -> None:
    a, b = FP.encode([1.0, -2.0]), FP.encode([3.5, 4.0, -0.25])
    xa, xb = mpc.share(mpc.parties[0], a), mpc.share(mpc.parties[1], b)
    sent = mpc.net.total_bytes()
    back = mpc.split(mpc.concat([xa, xb]), [2, 3])
    assert mpc.net.total_bytes() == sent
    for x, v in zip(back, (a, b), strict=True):
        assert np.array_equal(mpc.reveal(x, ["bank"], "part"), v)
    with pytest.raises(MpcProtocolError, match="cannot split"):
        mpc.split(mpc.concat([xa, xb]), [2, 2])


def test_several_arrays_encode_as_one_packed_message_with_one_copy() -> None:
    arrays = [np.arange(6, dtype=np.uint64).reshape(2, 3), np.zeros(0, dtype=np.uint64),
              np.arange(5, dtype=np.uint64)[::2]]  # a strided view too
    packed = encode(Message("operator", "bank", "bundle/b1", pack_arrays(arrays), 7))
    assert encode_arrays("operator", "bank", "bundle/b1", arrays, 7) == packed
    net = Network()
    net.send_arrays("operator", "bank", "bundle/b1", arrays)
    back = unpack_arrays(net.recv("bank", "operator", "bundle/b1"))
    assert [a.tolist() for a in back] == [a.tolist() for a in arrays]


@pytest.mark.parametrize("width", [1, 6, 16, 21, 22, 32, 64])
def test_packed_fields_round_trip_mod_their_width(width: int) -> None:
    rng = np.random.default_rng(width)
    fields = [rng.integers(0, 2**63, 50, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
              for _ in range(3)]
    words = pack_fields(fields, width)
    assert words.shape == (-(-3 // (64 // width)), 50)
    mask = np.uint64(2**width - 1) if width < 64 else np.uint64(2**64 - 1)
    back = unpack_fields(words, 3, width)
    assert all(np.array_equal(b, f & mask) for b, f in zip(back, fields, strict=True))


@pytest.mark.parametrize("frac_bits", [12, 30, 42])
def test_cube_is_right_at_every_supported_shift(mpc: Mpc, frac_bits: int) -> None:
    z = np.linspace(-6, 6, 241)
    x = FP.encode(z, frac_bits) if frac_bits < 40 else _encode_wide(z, frac_bits)
    cubed = mpc.cube(mpc.share(mpc.parties[0], x), frac_bits=frac_bits)
    got = FP.decode(mpc.reveal(cubed, ["bank"], "cube"), 33)
    assert np.abs(got - z**3).max() <= 3 * 36 * 2.0**-10
    with pytest.raises(MpcProtocolError, match="cannot cube"):
        mpc.deal_cube((2,), frac_bits=43)  # shift 32: 2^(2 (63 - 32)) is no longer 0


def _encode_wide(z: np.ndarray, frac_bits: int) -> np.ndarray:
    return np.array([round(float(v) * 2**frac_bits) % 2**64 for v in z], dtype=np.uint64)


def test_local_truncation_of_a_public_negative_value_is_wrong_and_exact_is_right(
    mpc: Mpc,
) -> None:
    """The documented limit of Mpc.trunc: a trivial sharing (x, 0) puts party 1's share in
    the failure window whenever x < 0."""
    x = mpc.public(FP.encode([-1.5, 2.0], 2 * FP.frac_bits))
    local = FP.decode(mpc.reveal(mpc.trunc(x), ["bank"], "local"))
    exact = FP.decode(mpc.reveal(mpc.trunc_exact(x, FP.frac_bits), ["bank"], "exact"))
    assert abs(local[0] + 1.5) > 1e9 and abs(local[1] - 2.0) <= ULP
    assert np.abs(exact - [-1.5, 2.0]).max() <= ULP
