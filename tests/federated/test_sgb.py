"""SecureBoost-style vertical GBDT: refusal, parity with plaintext, bank-only < fused."""

from __future__ import annotations

import numpy as np
import pytest

from dataspace.federated import auc, make_vertical
from dataspace.federated.mpc.net import Network
from dataspace.federated.sgb import SecureBoost, SecureBoostNotAllowed, predict
from dataspace.federated.sgb_share import ShareDealer, ShareLabel, SharePassive, pack, unpack
from dataspace.federated.sgb_tree import Histograms, SgbParams, plain_histograms, train_central
from dataspace.federated.vlr import PartyData

PARAMS = SgbParams(trees=15, max_depth=3)


@pytest.fixture(scope="module")
def split() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    data = make_vertical(4000, {"bank": 5, "tax": 5, "grid": 5}, seed=3)
    n = 3000
    train = {k: v[:n] for k, v in data.blocks.items()}
    test = {k: v[n:] for k, v in data.blocks.items()}
    return train, test, data.labels[:n], data.labels[n:]


def _parties(train: dict[str, np.ndarray], y: np.ndarray) -> list[PartyData]:
    return [PartyData(k, v, y if k == "bank" else None) for k, v in train.items()]


def test_secureboost_refuses_without_the_leakage_flag(split) -> None:  # type: ignore[no-untyped-def]
    train, _, y, _ = split
    with pytest.raises(SecureBoostNotAllowed) as info:
        SecureBoost(PARAMS).fit(_parties(train, y))
    assert "instance space" in str(info.value)


def test_federated_auc_matches_plaintext_and_beats_bank_only(split) -> None:  # type: ignore[no-untyped-def]
    train, test, y, yt = split
    model = SecureBoost(PARAMS, allow_secureboost_leakage=True).fit(_parties(train, y))
    fused = auc(predict(model, test), yt)
    central = train_central(np.hstack(list(train.values())), y, PARAMS)
    plain = auc(central.decision_function(np.hstack(list(test.values()))), yt)
    bank = train_central(train["bank"], y, PARAMS)
    bank_only = auc(bank.decision_function(test["bank"]), yt)
    assert abs(fused - plain) <= 0.01
    assert bank_only < fused - 0.01
    owners = model.owners()
    assert owners["tax"] > 0 and owners["grid"] > 0
    assert len(model.books["tax"].records) == owners["tax"]  # thresholds stay at the owner


def test_passive_bin_sums_on_shares_equal_plaintext_sums() -> None:
    rng = np.random.default_rng(0)
    n, sizes = 500, [6, 4]
    bins = np.stack([rng.integers(0, 6, n), rng.integers(0, 4, n)], axis=1)
    g, h = rng.uniform(-1, 1, n), rng.uniform(0, 0.25, n)
    net = Network()
    dealer, passive = ShareDealer("op", net), SharePassive("tax", net, bins, sizes)
    label = ShareLabel("bank", net, "tax", sizes)
    dealer.setup("tax", n, 2)
    passive.setup("op", "bank")
    label.setup()
    x = pack(g, h, 18)[:, None]
    dealer.level("tax", "bank", "t", 1)
    seed = label.send_masked("op", "t", x)
    passive.level("op", "bank", "t")
    gs, hs = unpack(label.collect("t", seed, 1), 18)
    assert np.allclose(gs[:6, 0], np.bincount(bins[:, 0], weights=g, minlength=6), atol=1e-3)
    assert np.allclose(hs[6:, 0], np.bincount(bins[:, 1], weights=h, minlength=4), atol=1e-3)
    assert net.pending() == 0


def test_passive_sums_for_two_nodes_at_once_and_empty_bins() -> None:
    rng = np.random.default_rng(1)
    n, sizes = 400, [5, 3, 4]
    bins = np.stack([rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(1, 4, n)], 1)
    g, h = rng.uniform(-1, 1, n), rng.uniform(0, 0.25, n)
    nodes = [np.flatnonzero(rng.random(n) < 0.3), np.flatnonzero(rng.random(n) < 0.2)]
    x = np.zeros((n, 2), dtype=np.uint64)
    for c, rows in enumerate(nodes):
        x[rows, c] = pack(g, h, 18)[rows]
    net = Network()
    dealer, passive = ShareDealer("op", net), SharePassive("tax", net, bins, sizes)
    label = ShareLabel("bank", net, "tax", sizes)
    dealer.setup("tax", n, 3)
    passive.setup("op", "bank")
    label.setup()
    dealer.level("tax", "bank", "t", 2)
    seed = label.send_masked("op", "t", x)
    passive.level("op", "bank", "t")
    gs, hs = unpack(label.collect("t", seed, 2), 18)
    offsets = [0, 5, 8]
    for c, rows in enumerate(nodes):
        for j, (off, size) in enumerate(zip(offsets, sizes, strict=True)):
            want_g = np.bincount(bins[rows, j], weights=g[rows], minlength=size)
            want_h = np.bincount(bins[rows, j], weights=h[rows], minlength=size)
            assert np.allclose(gs[off : off + size, c], want_g, atol=1e-3)
            assert np.allclose(hs[off : off + size, c], want_h, atol=1e-3)
    assert gs[0 + 4, 0] == 0.0 and gs[8, 1] == 0.0  # empty bins sum to exactly zero
    assert net.pending() == 0


def test_sorted_histograms_equal_bincount_histograms() -> None:
    rng = np.random.default_rng(2)
    n, sizes = 3000, [7, 32, 2]
    bins = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    offsets = np.array([0, 7, 39])
    g, h = rng.normal(size=n), rng.uniform(0, 0.25, n)
    nodes = [np.arange(n), np.flatnonzero(rng.random(n) < 0.5), np.flatnonzero(rng.random(n) < 0.1)]
    fast = Histograms(bins, sizes)(nodes, g, h)
    slow = plain_histograms(bins, offsets, sum(sizes), nodes, g, h)
    for a, b in zip(fast, slow, strict=True):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("column", "k", "rows", "message"),
    [
        (5, 0, [0, 1, 2], "does not have"),  # no such column (it crashed the role before)
        (-1, 0, [0, 1, 2], "does not have"),  # wrapped to the last column before
        (0, -1, [0, 1, 2], "does not have"),  # stored the largest edge before
        (0, 0, [2, 1, 0], "distinct training rows"),
        (0, 0, [0, 0, 1], "distinct training rows"),
        (0, 0, [0, 1, 500], "distinct training rows"),
    ],
)
def test_a_passive_party_answers_only_splits_an_honest_label_party_asks(
    column: int, k: int, rows: list[int], message: str
) -> None:
    from dataspace.federated.errors import MalformedMessage
    from dataspace.federated.sgb import _Passive

    rng = np.random.default_rng(0)
    net = Network()
    passive = _Passive(PartyData("tax", rng.normal(size=(100, 2)), None), net, SgbParams(bins=8))
    net.send("bank", "tax", "sgb/split", np.array([column, k]))
    net.send("bank", "tax", "sgb/split/rows", np.asarray(rows, dtype=np.int64))
    with pytest.raises(MalformedMessage, match=message):
        passive.take_split("bank")
    assert passive.book.records == []


def test_no_tree_node_is_computed_over_fewer_than_min_child_rows() -> None:
    """With no hessian floor and deep trees, nodes of one row gave the label party each
    provider's bin of that row in every column; min_child_rows keeps every node at m+."""
    from dataspace.federated.sgb_tree import CentralSource, grow_tree, logistic_grad

    data = make_vertical(300, {"bank": 3, "tax": 3}, seed=5)
    x = np.hstack(list(data.blocks.values()))
    g, h = logistic_grad(np.full(300, 0.0), data.labels)

    class Watched(CentralSource):
        sizes: list[int]

        def histograms(self, nodes, g, h):  # type: ignore[no-untyped-def]
            self.sizes += [len(rows) for rows in nodes]
            return super().histograms(nodes, g, h)

    seen = {}
    for least in (1, 25):
        params = SgbParams(max_depth=8, min_child_weight=0.0, bins=32, min_child_rows=least)
        source = Watched(x, params)
        source.sizes = []
        grow_tree(source, g, h, params)
        seen[least] = min(source.sizes)
    assert seen[1] < 25 <= seen[25]


def test_a_passive_party_refuses_a_split_leaving_a_handful_of_rows() -> None:
    from dataspace.federated.sgb import _Passive, split_reply

    values = np.arange(100, dtype=np.float64).reshape(-1, 1)
    net = Network()
    passive = _Passive(PartyData("tax", values, None), net,
                       SgbParams(bins=100, min_child_rows=10))
    for k, refused in ((3, True), (40, False)):  # bin 3 keeps 4 rows on the left
        net.send("bank", "tax", "sgb/split", np.array([0, k]))
        net.send("bank", "tax", "sgb/split/rows", np.arange(100, dtype=np.int64))
        passive.take_split("bank")
        answer = split_reply(net.recv("bank", "tax", "sgb/split/left"))
        assert (answer is None) == refused
    assert len(passive.book.records) == 1  # a refused split records nothing


@pytest.mark.parametrize("params", [{"max_depth": 17}, {"min_child_rows": 0},
                                    {"min_child_rows": 2.5}])
def test_tree_limits_are_checked(params: dict[str, object]) -> None:
    from dataspace.federated.errors import InvalidTrainingInput

    with pytest.raises(InvalidTrainingInput):
        SgbParams(**params)  # type: ignore[arg-type]
