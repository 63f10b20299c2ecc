"""What a vgbdt provider answers a label party that deviates from the protocol: no more than
the honest protocol asks. The real roles (``train_roles.sgb_run``, ``predict._sgb_owner``) run
in threads; only the HTTP mailbox is replaced by in-process queues."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dataspace.federated import sgb_route, sgb_share
from dataspace.federated.errors import MalformedMessage
from dataspace.federated.synth import make_vertical
from dataspace.services import predict
from dataspace.services.train_net import NodeNetwork
from dataspace.services.train_roles import CTL, Local, Spec, sgb_run, split_rows

BANK, TAX, OP = "bank", "tax", "operator"
N, NEW = 400, 120


class _Hub:
    def __init__(self) -> None:
        self.queues: dict[tuple[str, str, str], queue.Queue[bytes]] = collections.defaultdict(
            queue.Queue
        )


class _Mailbox:
    """The slice of train_net.Mailbox that NodeNetwork uses, over in-process queues."""

    def __init__(self, hub: _Hub, me: str) -> None:
        self.hub, self.me, self.job_id = hub, me, "job"
        self.bytes_out = self.bytes_in = 0

    def post(self, run: str, recipient: str, data: bytes) -> None:
        self.hub.queues[(run, self.me, recipient)].put(data)

    wait = 30.0

    def take(self, run: str, sender: str) -> bytes:
        return self.hub.queues[(run, sender, self.me)].get(timeout=self.wait)

    def flush(self) -> None:
        pass


def _spawn(fn: Callable[..., Any], *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    """An honest three-node training: the provider's stored part, the label party's."""
    data = make_vertical(N + NEW, {BANK: 3, TAX: 3}, seed=1)
    spec = Spec("job", "vgbdt", (BANK, TAX), {BANK: 3, TAX: 3},
                {BANK: ["a", "b", "c"], TAX: ["x", "y", "z"]}, OP, N,
                params={"trees": 4, "max_depth": 3, "bins": 16}, contribution=False)
    hub = _Hub()
    tax, tax_out = _spawn(sgb_run, _Mailbox(hub, TAX), spec, 0, spec.parties,
                          Local(data.blocks[TAX][:N]))
    dealer, _ = _spawn(sgb_run, _Mailbox(hub, OP), spec, 0, spec.parties, Local())
    bank = sgb_run(_Mailbox(hub, BANK), spec, 0, spec.parties,
                   Local(data.blocks[BANK][:N], data.labels[:N]))
    tax.join(30)
    dealer.join(30)
    assert "error" not in tax_out
    return {"spec": spec, "tax": dict(tax_out["result"]["model"]), "bank": bank["model"],
            "new_tax": data.blocks[TAX][N:], "new_bank": data.blocks[BANK][N:]}


def _owner(trained: dict[str, Any]) -> tuple[NodeNetwork, threading.Thread, dict[str, Any]]:
    hub = _Hub()
    thread, out = _spawn(predict._sgb_owner, _Mailbox(hub, TAX), trained["spec"],
                         trained["tax"], trained["new_tax"])
    return NodeNetwork(_Mailbox(hub, BANK), "predict", replicate=False), thread, out


def _ask(net: NodeNetwork, items: list[tuple[int, np.ndarray]]) -> None:
    net.send(BANK, TAX, sgb_route.REQUEST, sgb_route.encode_request(items))


def test_honest_routing_is_answered(trained: dict[str, Any]) -> None:
    net, thread, out = _owner(trained)
    own = predict.split_book(trained["bank"])

    class Owners:
        def ask(self, owner: str, request: np.ndarray) -> None:
            net.send(BANK, owner, sgb_route.REQUEST, request)

        def bits(self, owner: str) -> np.ndarray:
            return np.asarray(net.recv(BANK, owner, sgb_route.ANSWER))

    scores, asked = sgb_route.predict_levels(
        predict.trees(trained["bank"]), 0.0, NEW, BANK,
        lambda record, rows: own.left(record, trained["new_bank"][rows]), Owners())
    net.send(BANK, TAX, sgb_route.REQUEST, np.array([sgb_route.DONE], dtype=np.int64))
    thread.join(10)
    assert "error" not in out and scores.shape == (NEW,) and asked > 0


def test_a_split_asked_twice_is_refused(trained: dict[str, Any]) -> None:
    """Asked again, the owner would tell the same rows' sides again for another request's
    purposes; each split is answered once per prediction."""
    net, thread, out = _owner(trained)
    rows = np.arange(NEW, dtype=np.int64)
    _ask(net, [(0, rows)])
    net.recv(BANK, TAX, sgb_route.ANSWER)
    _ask(net, [(0, rows)])
    thread.join(10)
    assert isinstance(out.get("error"), MalformedMessage)


def test_more_requests_than_the_trees_are_deep_are_refused(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    net, thread, out = _owner(trained)
    records = len(trained["tax"]["book"])
    assert records > 3  # enough splits to ask one per request past the depth
    for record in range(3):
        _ask(net, [(record, np.arange(NEW, dtype=np.int64))])
        net.recv(BANK, TAX, sgb_route.ANSWER)
    _ask(net, [(3, np.arange(NEW, dtype=np.int64))])
    thread.join(10)
    assert isinstance(out.get("error"), MalformedMessage)
    monkeypatch.setattr(_Mailbox, "wait", 0.5)
    with pytest.raises(queue.Empty):  # the fourth request got no answer
        net.recv(BANK, TAX, sgb_route.ANSWER)


def test_every_split_for_every_row_at_once_is_refused(trained: dict[str, Any]) -> None:
    """One request naming each of the owner's splits with every row: a row can sit at one node
    of each tree per level, so it may be named at most once per tree (4 here)."""
    net, thread, out = _owner(trained)
    records = len(trained["tax"]["book"])
    assert records > trained["spec"].params["trees"]
    rows = np.arange(NEW, dtype=np.int64)
    _ask(net, [(record, rows) for record in range(records)])
    thread.join(10)
    assert isinstance(out.get("error"), MalformedMessage)


def test_rows_named_twice_in_one_split_are_refused(trained: dict[str, Any]) -> None:
    net, thread, out = _owner(trained)
    _ask(net, [(0, np.array([1, 1, 2], dtype=np.int64))])
    thread.join(10)
    assert isinstance(out.get("error"), MalformedMessage)


# --- training: a label party asking a provider (and the dealer) past what its trees need -----


def _deviant_training(params: dict[str, int]) -> dict[str, Any]:
    """A provider and the dealer running their real roles of a vgbdt training, and the
    label party's network end for the test to deviate on (trees·(2^d − 1) splits, trees·d
    histogram levels, levels 2^(d−1) nodes wide)."""
    data = make_vertical(N, {BANK: 3, TAX: 3}, seed=2)
    spec = Spec("job", "vgbdt", (BANK, TAX), {BANK: 3, TAX: 3},
                {BANK: ["a", "b", "c"], TAX: ["x", "y", "z"]}, OP, N, params=params,
                contribution=False)
    hub = _Hub()
    tax, tax_out = _spawn(sgb_run, _Mailbox(hub, TAX), spec, 0, spec.parties,
                          Local(data.blocks[TAX][:N]))
    dealer, dealer_out = _spawn(sgb_run, _Mailbox(hub, OP), spec, 0, spec.parties, Local())
    net = NodeNetwork(_Mailbox(hub, BANK), "0/train", replicate=False)
    sizes = [int(s) for s in net.recv(BANK, TAX, "sgb/sizes")]
    share = sgb_share.ShareLabel(BANK, net, TAX, sizes)
    share.setup()
    fit, _ = split_rows(N, spec.holdout, spec.seed)
    return {"net": net, "share": share, "rows": fit.size, "tax": (tax, tax_out),
            "dealer": (dealer, dealer_out)}


def _split(net: NodeNetwork, rows: int) -> np.ndarray:
    net.send(BANK, TAX, CTL, np.array([2], dtype=np.int64))
    net.send(BANK, TAX, "sgb/split", np.array([0, 0]))
    net.send(BANK, TAX, "sgb/split/rows", np.arange(rows, dtype=np.int64))
    return np.asarray(net.recv(BANK, TAX, "sgb/split/left"))


def _level(run: dict[str, Any], call: int) -> None:
    """One honest histogram level, one node wide, through the provider and the dealer."""
    net = run["net"]
    net.send(BANK, OP, CTL, np.array([1, 0, call, 1], dtype=np.int64))
    net.send(BANK, TAX, CTL, np.array([1, call], dtype=np.int64))
    x = np.ones((run["rows"], 1), dtype=np.uint64)
    seed = run["share"].send_masked(OP, f"{TAX}/{call}", x)
    run["share"].collect(f"{TAX}/{call}", seed, 1)


def _refused(party: tuple[threading.Thread, dict[str, Any]], what: str) -> None:
    thread, out = party
    thread.join(10)
    assert isinstance(out.get("error"), MalformedMessage), out
    assert what in str(out["error"])


def _finish(run: dict[str, Any], *parties: str) -> None:
    for name in parties:
        ctl = np.zeros(4 if name == OP else 1, dtype=np.int64)
        run["net"].send(BANK, name, CTL, ctl)
        thread, out = run["tax" if name == TAX else "dealer"]
        thread.join(10)
        assert "error" not in out, out


def test_a_training_within_the_caps_is_answered() -> None:
    """The deviations below are refused, not every request: the same steps, up to the caps,
    are answered and the provider returns its part."""
    run = _deviant_training({"trees": 1, "max_depth": 1, "bins": 8})
    assert _split(run["net"], run["rows"]).shape == (run["rows"] + 1,)
    _level(run, 1)
    _finish(run, TAX, OP)
    assert len(run["tax"][1]["result"]["model"]["book"]) == 1


def test_a_split_past_what_the_trees_can_have_is_refused() -> None:
    run = _deviant_training({"trees": 1, "max_depth": 1, "bins": 8})  # one split at most
    _split(run["net"], run["rows"])
    run["net"].send(BANK, TAX, CTL, np.array([2], dtype=np.int64))
    _refused(run["tax"], "more splits")
    _finish(run, OP)


def test_a_histogram_level_past_the_trees_depth_is_refused_by_provider_and_dealer() -> None:
    run = _deviant_training({"trees": 1, "max_depth": 1, "bins": 8})  # one level at most
    _level(run, 1)
    run["net"].send(BANK, TAX, CTL, np.array([1, 2], dtype=np.int64))
    _refused(run["tax"], "more histogram levels")
    run["net"].send(BANK, OP, CTL, np.array([1, 0, 2, 1], dtype=np.int64))
    _refused(run["dealer"], "beyond what the job's trees need")


def test_a_level_wider_than_the_trees_is_refused_by_the_dealer() -> None:
    run = _deviant_training({"trees": 2, "max_depth": 2, "bins": 8})  # 2 nodes wide at most
    run["net"].send(BANK, OP, CTL, np.array([1, 0, 1, 3], dtype=np.int64))
    _refused(run["dealer"], "beyond what the job's trees need")
    _finish(run, TAX)


@pytest.mark.parametrize("second", ["same split", "same row twice", "row past the end"])
def test_held_out_routes_are_answered_once_per_split_for_distinct_rows(second: str) -> None:
    run = _deviant_training({"trees": 1, "max_depth": 2, "bins": 8})
    net, held = run["net"], N - run["rows"]
    _split(net, run["rows"])
    _split(net, run["rows"])
    net.send(BANK, TAX, CTL, np.array([3], dtype=np.int64))
    net.send(BANK, TAX, "sgb/route", np.r_[0, np.arange(held)].astype(np.int64))
    assert np.asarray(net.recv(BANK, TAX, "sgb/route/left")).shape == (held,)
    record, rows = {"same split": (0, [0, 1]), "same row twice": (1, [3, 3]),
                    "row past the end": (1, [held])}[second]
    net.send(BANK, TAX, CTL, np.array([3], dtype=np.int64))
    net.send(BANK, TAX, "sgb/route", np.r_[record, rows].astype(np.int64))
    _refused(run["tax"], "a route must name a split once")
    _finish(run, OP)


@pytest.mark.parametrize("shape", ["wider than dealt", "other rows"])
def test_a_masked_level_that_does_not_fit_the_dealers_is_refused(shape: str) -> None:
    """The provider sums what the label party sends against the dealer's correlation; a
    message of another shape is refused by name, not met with an index error."""
    run = _deviant_training({"trees": 2, "max_depth": 2, "bins": 8})
    net = run["net"]
    net.send(BANK, OP, CTL, np.array([1, 0, 1, 1], dtype=np.int64))
    net.send(BANK, TAX, CTL, np.array([1, 1], dtype=np.int64))
    net.recv(BANK, OP, f"sgb/{TAX}/1/seed")
    wide, rows = {"wider than dealt": (2, run["rows"]), "other rows": (1, run["rows"] - 1)}[shape]
    net.send(BANK, TAX, f"sgb/{TAX}/1/m", np.zeros((wide, rows), dtype=np.uint64))
    _refused(run["tax"], "does not fit the dealer's")
    _finish(run, OP)
