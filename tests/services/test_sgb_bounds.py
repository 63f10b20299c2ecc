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

from dataspace.federated import sgb_route
from dataspace.federated.errors import MalformedMessage
from dataspace.federated.synth import make_vertical
from dataspace.services import predict
from dataspace.services.train_net import NodeNetwork
from dataspace.services.train_roles import Local, Spec, sgb_run

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
