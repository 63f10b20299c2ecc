"""Horizontal FedAvg across five real nodes on loopback: the initiator (a client itself and
the coordinator) and four providers, each holding its own rows with the same schema; every
round's updates pass through secure aggregation as signed multi-party steps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dataspace.federated.fedavg import Client, DpFedAvg, dp_epsilon
from dataspace.federated.hfl_synth import make_horizontal
from dataspace.policy import from_template
from dataspace.services import datasets, training
from dataspace.services import models as model_store
from dataspace.services.node import open_node
from dataspace.store.models_federated import FederatedModelRow
from helpers.agreements import make_agreement
from helpers.ledger import payloads

HUB = "hub"
PROVIDERS = ["clinic-2", "clinic-3", "clinic-4", "clinic-5"]
COLS = [f"x{i}" for i in range(1, 11)]
FEATURES = {name: COLS for name in [HUB, *PROVIDERS]}
PARAMS = {"rounds": 15, "holdout_column": "is_test"}


def _write(path: Path, c: Client) -> Path:
    lines = [",".join([*COLS, "y", "is_test"])]
    for x, y, t in ((c.x, c.y, 0), (c.x_test, c.y_test, 1)):
        for row, label in zip(x, y, strict=True):
            lines.append(",".join([*(f"{v:.6f}" for v in row), str(int(label)), str(t)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from helpers.cluster import start_space

    root = tmp_path_factory.mktemp("fedavg")
    sets = {
        "shared": make_horizontal(5, rows=60, seed=0),
        "shift": make_horizontal(5, rows=300, concept_shift=True, seed=0),
    }
    running = start_space(root, [HUB, *PROVIDERS], serve=False)
    nodes = {n: running.nodes[n].open() for n in [HUB, *PROVIDERS]}
    agreements: dict[tuple[str, str], str] = {}
    policy = from_template("federated-train", purposes=["finance"])
    try:
        for kind, clients in sets.items():
            for name, client in zip([HUB, *PROVIDERS], clients, strict=True):
                path = _write(root / f"{name}-{kind}.csv", client)
                ds = datasets.add(nodes[name], path, name=f"loans-{kind}", actor="t")["id"]
                if name != HUB:
                    agreements[(name, kind)] = make_agreement(
                        nodes[name],
                        HUB,
                        consumer=nodes[HUB],
                        dataset_id=ds,
                        purpose="credit-risk",
                        offer=policy,
                    )
    finally:
        for n in nodes.values():
            n.close()
    running.start()
    hub = open_node(running.nodes[HUB].root)
    try:
        yield {"space": running, "agreements": agreements, "hub": hub}
    finally:
        hub.close()
        running.stop()


def _train(env: dict[str, Any], kind: str, **kw: Any) -> dict[str, Any]:
    params = {**PARAMS, **kw.pop("params", {})}
    return training.run_train(
        env["hub"],
        agreements=[env["agreements"][(p, kind)] for p in PROVIDERS],
        peers=PROVIDERS,
        model="fedavg",
        label="y",
        features=FEATURES,
        dataset=f"loans-{kind}",
        params=params,
        **kw,
    )


def test_fedavg_across_five_nodes_beats_the_average_local_model(space: dict[str, Any]) -> None:
    env = space
    view = _train(env, "shared")
    assert view["state"] == "SUCCEEDED"
    m = view["result"]["metrics"]
    assert m["clients"] == 5 and m["train_rows"] == 300
    assert set(m["per_node"]) == {HUB, *PROVIDERS}
    assert m["auc_federated_mean"] >= m["auc_local_mean"]
    assert m["overall"]["test_rows"] == 2000 and 0.6 < m["overall"]["auc"] < 1.0
    theta = np.asarray(model_store.load_part(env["hub"], view["id"])["theta"], dtype=float)
    for name in PROVIDERS:  # the same final model recorded at every node, usage metered
        node = open_node(env["space"].nodes[name].root)
        try:
            there = model_store.get_model(node, view["id"])
            assert there["family"] == "fedavg" and there["metrics"]["clients"] == 5
            there_theta = np.asarray(model_store.load_part(node, view["id"])["theta"], dtype=float)
            assert np.array_equal(there_theta, theta)
            [trained] = [e for e in payloads(node, "model.trained") if e["model_id"] == view["id"]]
            # its own held-out metrics and the overall ones, never another node's
            assert set(trained["metrics"]["per_node"]) == {name}
            assert set(there["metrics"]["per_node"]) == {name}
            done = [e for e in payloads(node, "job.completed") if e["job_id"] == view["id"]]
            assert done and done[0]["usage_id"] and done[0]["action"] == "federated-train"
        finally:
            node.close()
    assert any(e["model_id"] == view["id"] for e in payloads(env["hub"], "model.trained"))


def test_fedavg_gives_no_gain_under_concept_shift(space: dict[str, Any]) -> None:
    view = _train(space, "shift")
    m = view["result"]["metrics"]
    # the negative control (docs/fedavg.md): each client's own mechanism; its own model wins
    assert m["auc_local_mean"] - m["auc_federated_mean"] > 0.05


def test_dp_fedavg_reports_its_opendp_epsilon(space: dict[str, Any]) -> None:
    dp = {"clip": 0.5, "noise_multiplier": 5.0, "delta": 1e-5}
    view = _train(space, "shared", params={"rounds": 3, "dp": dp})
    got = view["result"]["metrics"]["dp"]
    assert got["epsilon"] == pytest.approx(dp_epsilon(DpFedAvg(0.5, 5.0, 1e-5), 3))


def test_a_client_killed_mid_training_fails_everywhere_and_retry_works(
    space: dict[str, Any],
) -> None:
    env = space
    victim = PROVIDERS[-1]
    killed = threading.Event()

    def kill(event: dict[str, Any], progress: dict[str, Any]) -> None:
        if event.get("name") == "round 2" and not killed.is_set():
            killed.set()
            env["space"].nodes[victim].stop()

    with pytest.raises(Exception) as info:
        _train(env, "shared", progress=kill)
    assert victim in str(info.value)
    job = training.list_jobs(env["hub"], state="FAILED")[0]
    assert job["result"] is None and job["params"]["model"] == "fedavg"
    with env["hub"].store.read() as session:
        assert session.get(FederatedModelRow, job["id"]) is None
    for name in PROVIDERS[:-1]:
        node = open_node(env["space"].nodes[name].root)
        try:
            assert training.get_job(node, job["id"])["state"] == "FAILED"
            with node.store.read() as session:
                assert session.get(FederatedModelRow, job["id"]) is None
        finally:
            node.close()
    env["space"].nodes[victim].start()
    again = training.retry(env["hub"], job["id"])
    assert again["state"] == "SUCCEEDED" and again["retry_of"] == job["id"]
    node = open_node(env["space"].nodes[victim].root)
    try:  # the pending abort reached the restarted node with the retry
        assert training.get_job(node, job["id"])["state"] == "FAILED"
    finally:
        node.close()


def test_a_commit_that_fails_leaves_no_model_at_the_clients_that_committed(
    space: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every client gets the whole model at commit: when the last commit fails (clinic-5 is
    unreachable at the very end), the clients that committed revoke it on the abort."""
    from dataspace.services import train_fedavg
    from dataspace.services.mp_wire import MultipartyFailed

    real = train_fedavg._Run.call

    def call(self: Any, peer: str, name: str, blobs: Any = (), **fields: Any) -> Any:
        if name == "commit" and peer == "clinic-5":
            raise MultipartyFailed("clinic-5 did not answer (ConnectError)", node="clinic-5")
        return real(self, peer, name, blobs, **fields)

    monkeypatch.setattr(train_fedavg._Run, "call", call)
    with pytest.raises(MultipartyFailed):
        _train(space, "shared", params={"rounds": 2})
    job = training.list_jobs(space["hub"], state="FAILED")[0]["id"]
    assert job not in {m["id"] for m in model_store.list_models(space["hub"])}
    for name in PROVIDERS:
        node = open_node(space["space"].nodes[name].root)
        try:
            assert training.get_job(node, job)["state"] == "FAILED"
            with node.store.read() as session:
                row = session.get(FederatedModelRow, job)
                assert row is None or row.state != model_store.FINAL
            assert job not in {m["id"] for m in model_store.list_models(node)}
        finally:
            node.close()
