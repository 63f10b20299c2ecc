"""SecureBoost inference routed level by level through the split owners (sgb_route)."""

from __future__ import annotations

import numpy as np
import pytest

from dataspace.federated import make_vertical
from dataspace.federated.errors import MalformedMessage
from dataspace.federated.sgb import SecureBoost, SgbModel, SplitBook, predict
from dataspace.federated.sgb_route import (
    answer,
    decode_request,
    encode_request,
    pack_bits,
    predict_levels,
    unpack_bits,
)
from dataspace.federated.sgb_tree import SgbParams
from dataspace.federated.vlr import PartyData


class _Owners:
    """Each owner answers at once from its own book and rows (in-process), counting asks."""

    def __init__(self, model: SgbModel, blocks: dict[str, np.ndarray]) -> None:
        self.model, self.blocks = model, blocks
        self.pending: dict[str, np.ndarray] = {}
        self.asks: dict[str, int] = {}

    def ask(self, owner: str, request: np.ndarray) -> None:
        self.asks[owner] = self.asks.get(owner, 0) + 1
        self.pending[owner] = answer(self.model.books[owner], self.blocks[owner], request)

    def bits(self, owner: str) -> np.ndarray:
        return self.pending.pop(owner)


@pytest.fixture(scope="module")
def trained() -> tuple[SgbModel, dict[str, np.ndarray]]:
    data = make_vertical(1500, {"bank": 3, "tax": 3, "grid": 3}, seed=4)
    fit = {k: v[:1000] for k, v in data.blocks.items()}
    new = {k: v[1000:] for k, v in data.blocks.items()}
    parties = [PartyData(k, v, data.labels[:1000] if k == "bank" else None) for k, v in fit.items()]
    params = SgbParams(trees=8, max_depth=3, bins=16)
    model = SecureBoost(params, allow_secureboost_leakage=True).fit(parties)
    return model, new


def test_level_routing_equals_the_in_process_prediction(
    trained: tuple[SgbModel, dict[str, np.ndarray]],
) -> None:
    model, new = trained
    owners = _Owners(model, new)
    rows = new["bank"].shape[0]
    book = model.books["bank"]
    got, asked = predict_levels(
        model.trees, model.base, rows, "bank", lambda r, i: book.left(r, new["bank"][i]), owners
    )
    assert np.array_equal(got, predict(model, new))
    owned = model.owners()
    assert asked <= owned["tax"] + owned["grid"] and asked > 0
    # one request per owner and level, whatever the number of trees
    assert set(owners.asks) <= {"tax", "grid"}
    assert max(owners.asks.values()) <= model.params.max_depth


def test_an_owner_refuses_requests_outside_its_rows_or_splits() -> None:
    book = SplitBook()
    book.add(0, 0.5)
    x = np.array([[0.1], [0.9], [0.4]])
    good = encode_request([(0, np.array([0, 1, 2]))])
    assert unpack_bits(answer(book, x, good), 3).tolist() == [True, False, True]
    with pytest.raises(MalformedMessage, match="record"):
        answer(book, x, encode_request([(1, np.array([0]))]))
    with pytest.raises(MalformedMessage, match="rows outside"):
        answer(book, x, encode_request([(0, np.array([3]))]))
    with pytest.raises(MalformedMessage, match="add up"):
        answer(book, x, good[:-1])
    with pytest.raises(MalformedMessage, match="int64"):
        decode_request(good.astype(np.float64), 3, 1)
    assert decode_request(encode_request([]), 3, 1) == []


def test_a_wrong_number_of_bits_from_an_owner_is_refused(
    trained: tuple[SgbModel, dict[str, np.ndarray]],
) -> None:
    model, new = trained

    class Short(_Owners):
        def bits(self, owner: str) -> np.ndarray:
            return super().bits(owner)[1:]

    book = model.books["bank"]
    with pytest.raises(MalformedMessage, match="uint64 words"):
        predict_levels(
            model.trees,
            model.base,
            new["bank"].shape[0],
            "bank",
            lambda r, i: book.left(r, new["bank"][i]),
            Short(model, new),
        )


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 200])
def test_bits_travel_packed_in_whole_words(count: int) -> None:
    bits = np.random.default_rng(count).random(count) < 0.5
    words = pack_bits(bits)
    assert words.dtype == np.uint64 and words.size == -(-count // 64)
    assert np.array_equal(unpack_bits(words, count), bits)
    if count % 64:  # the very last bit of the last word is padding
        bad = words.copy()
        bad.view(np.uint8)[-1] |= 1
        with pytest.raises(MalformedMessage, match="padding"):
            unpack_bits(bad, count)
