"""Federated training across real node processes on loopback: a bank (labels, loan history),
a tax bureau and a power grid align on 统一社会信用代码 by PSI and train vertical LR and
SecureBoost-style GBDT; the space operator's node deals the correlated randomness."""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from dataspace.cli.main import app
from dataspace.errors import Conflict, NotFound, UsageError
from dataspace.federated import sgb, vlr
from dataspace.federated.baseline import prepare, train_plain
from dataspace.federated.metrics import auc
from dataspace.federated.plan import make_plan
from dataspace.federated.sgb_tree import train_central
from dataspace.federated.synth import make_vertical
from dataspace.metering.revenue import split
from dataspace.samples.generate import make_uscc
from dataspace.services import datasets, multiparty, predict, training
from dataspace.services import models as model_store
from dataspace.services import usage as usage_service
from dataspace.services.mp_wire import MultipartyFailed
from dataspace.services.node import open_node
from dataspace.services.train_roles import sgb_params, split_rows, vlr_config
from dataspace.store.models_federated import FederatedModelRow
from helpers.agreements import make_agreement, make_agreements
from helpers.ledger import payloads
from helpers.vertical import vertical_offers, write_party_csv

BANK, TAX, GRID = "bank", "tax-bureau", "grid"
KEY = "credit_code:uscc"
N = 900
COLS = {
    BANK: ["loans", "overdue", "balance", "tenure"],
    TAX: ["vat", "income", "payroll", "filings"],
    GRID: ["kwh", "peak", "bills", "growth"],
}
VLR = {"epochs": 6, "batch_size": 256}
SHARE_TERMS = {"currency": "CNY", "per_job": "10.00 CNY", "contribution_share": True}
GBDT = {"trees": 12, "max_depth": 2, "bins": 16}  # min_child_rows: the default, 10


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from helpers.cluster import start_space

    root = tmp_path_factory.mktemp("train")
    data = make_vertical(N + 200, {BANK: 4, TAX: 4, GRID: 4}, seed=5)
    rng = random.Random(11)
    codes = sorted({make_uscc(rng, "110108") for _ in range(N + 400)})[: N + 200]
    # The bank knows the first N + 100 companies, tax and grid all but a few of them.
    own = {
        BANK: list(range(0, N + 100)),
        TAX: list(range(40, N + 200)),
        GRID: list(range(0, N + 150)),
    }
    running = start_space(root, [BANK, TAX, GRID], serve=False, dealer=True)
    nodes = {n: running.nodes[n].open() for n in (BANK, TAX, GRID)}
    ids = {}
    try:
        for name in (BANK, TAX, GRID):
            rows = own[name]
            shuffled = rows[:]
            random.Random(name).shuffle(shuffled)
            path = write_party_csv(
                root / f"{name}.csv",
                [codes[i] for i in shuffled],
                COLS[name],
                data.blocks[name][shuffled],
                data.labels[shuffled] if name == BANK else None,
            )
            ids[name] = datasets.add(nodes[name], path, name="companies", actor="t")["id"]
        agreements = make_agreements(
            nodes[BANK],
            {peer: nodes[peer] for peer in (TAX, GRID)},
            ids,
            vertical_offers(),
            purpose="credit-risk",
        )
        for peer in (TAX, GRID):  # offers that also charge a share of the revenue pool
            agreements[(peer, "share")] = make_agreement(
                nodes[peer], BANK, consumer=nodes[BANK], dataset_id=ids[peer],
                purpose="credit-risk", offer=vertical_offers()["train"], price_terms=SHARE_TERMS)
    finally:
        for n in nodes.values():
            n.close()
    running.start()
    bank = open_node(running.nodes[BANK].root)
    aligned = [
        multiparty.run_psi(
            bank,
            agreements=[agreements[(peer, "psi")]],
            peers=[peer],
            dataset="companies",
            key=KEY,
            mode="align",
        )["id"]
        for peer in (TAX, GRID)
    ]
    try:
        yield {
            "space": running,
            "agreements": agreements,
            "align": aligned,
            "bank": bank,
            "data": data,
            "codes": codes,
            "own": own,
        }
    finally:
        bank.close()
        running.stop()


def _features() -> dict[str, list[str]]:
    return {k: list(v) for k, v in COLS.items()}


def _pooled(env: dict[str, Any], job: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray]:
    """The same aligned rows, in the job's order, pooled in the clear (the test's view)."""
    common = sorted(set(env["own"][BANK]) & set(env["own"][TAX]) & set(env["own"][GRID]))
    # the job orders rows by the bank's dataset position; recover that order
    bank_rows = env["own"][BANK][:]
    random.Random(BANK).shuffle(bank_rows)
    position = {entity: i for i, entity in enumerate(bank_rows)}
    ordered = sorted(common, key=lambda e: position[e])
    data = env["data"]
    return [data.blocks[p][ordered] for p in (BANK, TAX, GRID)], data.labels[ordered]


def test_vertical_lr_across_three_nodes_beats_the_bank_alone_and_matches_plaintext(
    space: dict[str, Any],
) -> None:
    env = space
    bank = env["bank"]
    events: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    view = training.run_train(
        bank,
        agreements=[env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]],
        peers=[TAX, GRID],
        model="vlr",
        label="defaulted",
        features=_features(),
        align=env["align"],
        params=VLR,
        progress=lambda e, p: events.append(e),
    )
    seconds = time.perf_counter() - t0
    assert view["state"] == "SUCCEEDED", view
    result = view["result"]
    metrics = result["metrics"]
    assert metrics["auc_label_party_only"] < metrics["auc"]
    # parity with plaintext LR on the same rows, split and schedule
    blocks, labels = _pooled(env, view)
    spec = training.get_job(bank, view["id"])
    fit, test = split_rows(len(labels), 0.25, 0)
    config = vlr_config(
        training.Spec.from_dict(
            "x",
            result["parts"]
            and {
                "family": "vlr",
                "parties": [BANK, TAX, GRID],
                "widths": {BANK: 4, TAX: 4, GRID: 4},
                "columns": {},
                "dealer": "operator",
                "rows": len(labels),
                "params": VLR,
            },
        ),
        (BANK, TAX),
    )
    w, b, _ = train_plain([x[fit] for x in blocks], labels[fit], config)
    _, scalers = prepare([x[fit] for x in blocks], make_plan(fit.size, config), config.clip)
    pooled_test = np.hstack([s.transform(x[test]) for s, x in zip(scalers, blocks, strict=True)])
    plain = auc(pooled_test @ w + b, labels[test])
    assert abs(metrics["auc"] - plain) < 0.005, (metrics["auc"], plain)
    assert spec["state"] == "SUCCEEDED"
    # contribution: exact Shapley over the two providers, efficient
    contribution = result["contribution"]
    assert contribution["method"] == "exact" and set(contribution["values"]) == {TAX, GRID}
    total = sum(contribution["values"].values())
    assert abs(total - (metrics["auc"] - metrics["auc_label_party_only"])) < 1e-9
    # each part stays with its owner; every node's ledger has model.trained; providers metered
    model = model_store.get_model(bank, view["id"])
    assert set(model["parts"]) == {BANK, TAX, GRID, "operator"}
    assert "weights" in model_store.load_part(bank, view["id"])
    for name in (TAX, GRID, "operator"):
        node = open_node(env["space"].nodes[name].root)
        try:
            there = model_store.get_model(node, view["id"])
            assert there["part_sha256"] == model["parts"][name]["sha256"]
            [trained] = [e for e in payloads(node, "model.trained") if e["model_id"] == view["id"]]
            assert float(trained["metrics"]["auc"]) == pytest.approx(metrics["auc"])
            if name != "operator":
                [done] = [e for e in payloads(node, "job.completed") if e["job_id"] == view["id"]]
                assert done["usage_id"] and done["action"] == "federated-train"
                part = model_store.load_part(node, view["id"])
                assert part["columns"] == COLS[name] and part["intercept"] is None
        finally:
            node.close()
    assert any(e["name"].startswith("run ") for e in events)
    print(
        f"\nVFL LR 3 nodes, {metrics['train_rows']} train rows: {seconds:.2f}s, "
        f"AUC {metrics['auc']:.4f} (plain {plain:.4f}, bank only "
        f"{metrics['auc_label_party_only']:.4f}), shapley {contribution['values']}"
    )
    # the CLI shows it
    shown = CliRunner().invoke(
        app, ["--node", str(env["space"].nodes[BANK].root), "model", "show", view["id"]]
    )
    assert shown.exit_code == 0, shown.output
    assert TAX in shown.output and "auc" in shown.output.lower()
    # and the job commands follow a training job as they do any multi-party job
    root = str(env["space"].nodes[BANK].root)
    for command in (["job", "show", view["id"]], ["job", "watch", view["id"], "--interval", "0.1"]):
        shown = CliRunner().invoke(app, ["--node", root, *command])
        assert shown.exit_code == 0, shown.output
        assert "federated-train" in shown.output and "SUCCEEDED" in shown.output
        assert TAX in shown.output and "sql:" not in shown.output


def test_a_peer_killed_mid_training_fails_the_job_everywhere_and_retry_succeeds(
    space: dict[str, Any],
) -> None:
    env = space
    bank = env["bank"]
    killed = threading.Event()

    def kill_grid(event: dict[str, Any], progress: dict[str, Any]) -> None:
        if event.get("name", "").startswith("run ") and not killed.is_set():
            killed.set()
            env["space"].nodes[GRID].stop()

    agreements = [env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]]
    with pytest.raises(MultipartyFailed) as info:
        training.run_train(
            bank,
            agreements=agreements,
            peers=[TAX, GRID],
            model="vlr",
            label="defaulted",
            features=_features(),
            align=env["align"],
            params=VLR,
            progress=kill_grid,
        )
    assert GRID in info.value.message
    job = training.list_jobs(bank, state="FAILED")[0]
    assert job["state"] == "FAILED" and job["result"] is None
    assert info.value.details["job_id"] == job["id"]  # the hint names the job to retry
    assert f"`dataspace job retry {job['id']}`" in str(info.value.hint)
    with bank.store.read() as session:
        assert session.get(FederatedModelRow, job["id"]) is None  # nothing at the initiator
    for name in (TAX, "operator"):
        node = open_node(env["space"].nodes[name].root)
        try:
            there = training.get_job(node, job["id"])
            assert there["state"] == "FAILED"
            with node.store.read() as session:
                row = session.get(FederatedModelRow, job["id"])
                assert row is None or row.state != model_store.FINAL
        finally:
            node.close()
    env["space"].nodes[GRID].start()
    grid = open_node(env["space"].nodes[GRID].root)
    try:  # its part, cut off by the stop, ended when its server came back (it stayed RUNNING)
        there = training.get_job(grid, job["id"])
        assert there["state"] == "FAILED" and "server stopped" in there["error"]["message"]
    finally:
        grid.close()
    again = training.retry(bank, job["id"])
    assert again["state"] == "SUCCEEDED" and again["retry_of"] == job["id"]
    with pytest.raises(Conflict, match="retried already"):  # one retry per job
        training.retry(bank, job["id"])


def test_a_commit_that_fails_leaves_no_usable_model_at_any_node(space: dict[str, Any]) -> None:
    """The dealer goes down after its part of the work: the providers commit, the dealer's
    commit fails, the job fails, and the providers revoke what they committed."""
    env = space
    bank = env["bank"]
    stopped = threading.Event()

    def stop_dealer(event: dict[str, Any], progress: dict[str, Any]) -> None:
        finished = event.get("node") == "operator" and event.get("name") == "finish"
        if finished and not stopped.is_set():
            stopped.set()
            env["space"].nodes["operator"].stop()

    try:
        with pytest.raises(MultipartyFailed):
            training.run_train(
                bank,
                agreements=[env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]],
                peers=[TAX, GRID],
                model="vlr",
                label="defaulted",
                features=_features(),
                align=env["align"],
                params=VLR,
                progress=stop_dealer,
            )
    finally:
        env["space"].nodes["operator"].start()
    job = training.list_jobs(bank, state="FAILED")[0]
    assert job["result"] is None
    assert job["id"] not in {m["id"] for m in model_store.list_models(bank)}
    assert not any(p.get("model_id") == job["id"] for p in payloads(bank, "model.trained"))
    with pytest.raises(NotFound):
        predict.run_predict(bank, model=job["id"], rows=env["align"])
    for name in (TAX, GRID):
        node = open_node(env["space"].nodes[name].root)
        try:
            assert training.get_job(node, job["id"])["state"] == "FAILED"
            with node.store.read() as session:
                row = session.get(FederatedModelRow, job["id"])
                assert row is not None and row.state == model_store.REVOKED
                assert not (node.data_dir / row.part_file).exists()
            assert any(p.get("model_id") == job["id"] for p in payloads(node, "model.revoked"))
        finally:
            node.close()


def test_vertical_gbdt_needs_every_policy_to_name_it_and_matches_plaintext(
    space: dict[str, Any],
) -> None:
    env = space
    bank = env["bank"]
    common = dict(
        peers=[TAX, GRID],
        model="vgbdt",
        label="defaulted",
        features=_features(),
        align=env["align"],
        params=GBDT,
    )
    with pytest.raises(MultipartyFailed) as info:  # the plain federated-train policy: refused
        training.run_train(
            bank,
            agreements=[env["agreements"][(TAX, "train")], env["agreements"][(GRID, "gbdt")]],
            **common,
        )
    assert TAX in info.value.message
    t0 = time.perf_counter()
    view = training.run_train(
        bank,
        agreements=[env["agreements"][(TAX, "gbdt")], env["agreements"][(GRID, "gbdt")]],
        **common,
    )
    seconds = time.perf_counter() - t0
    metrics = view["result"]["metrics"]
    blocks, labels = _pooled(env, view)
    fit, test = split_rows(len(labels), 0.25, 0)
    spec = training.Spec.from_dict(
        "x",
        {
            "family": "vgbdt",
            "parties": [BANK],
            "widths": {},
            "columns": {},
            "dealer": "operator",
            "rows": 0,
            "params": GBDT,
        },
    )
    model = train_central(np.hstack([x[fit] for x in blocks]), labels[fit], sgb_params(spec))
    plain = auc(model.decision_function(np.hstack([x[test] for x in blocks])), labels[test])
    assert metrics["auc_label_party_only"] < metrics["auc"]
    assert abs(metrics["auc"] - plain) <= 0.01, (metrics["auc"], plain)
    print(
        f"\nVFL GBDT 3 nodes: {seconds:.2f}s, AUC {metrics['auc']:.4f} (plain {plain:.4f}, "
        f"bank only {metrics['auc_label_party_only']:.4f})"
    )
    assert sgb and vlr and secrets


def test_vertical_lr_stops_early_on_its_validation_split_and_keeps_the_best_epoch(
    space: dict[str, Any],
) -> None:
    import json

    from dataspace.client import Client
    from dataspace.services.predict import part_model

    env = space
    bank_root = str(env["space"].nodes[BANK].root)
    features = " ".join(f"{k}:{','.join(v)}" for k, v in COLS.items())
    args = ["--node", bank_root, "train", "--model", "vlr", "--label", "defaulted"]
    for peer in (TAX, GRID):
        args += ["--agreement", env["agreements"][(peer, "train")], "--with", peer]
    args += ["--features", features, "--align", env["align"][0], "--align", env["align"][1]]
    params = {"epochs": 30, "batch_size": 256, "min_delta": 0.002}
    args += ["--params", json.dumps(params), "--patience", "2", "--validation", "0.25"]
    shown = CliRunner().invoke(app, [*args, "--seed", "7", "--no-contribution", "--json"])
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    assert view["state"] == "SUCCEEDED", view
    metrics = view["result"]["metrics"]
    stopping = metrics["stopping"]
    assert stopping["early_stopping"] and stopping["reason"] == "patience", metrics
    best, run = int(metrics["best_epoch"]), int(metrics["epochs_run"])
    assert run < 30 and run == best + 1 + 2  # two epochs without improvement, then stop
    curve = [float(v) for v in metrics["validation_brier"]]
    assert len(curve) == run and all(v > curve[best] - 0.002 for v in curve[best + 1 :])
    assert metrics["seed"] == 7 and metrics["validation_rows"] == round(
        metrics["train_rows"] * 0.25
    )
    model = model_store.get_model(env["bank"], view["id"])
    assert model["params"]["seed"] == 7 and model["params"]["params"]["patience"] == 2
    # every node followed the bank's decision and holds the best epoch's weights: the same job
    # through the API (seed, validation; no early stopping) for exactly best + 1 epochs ends
    # with the same weights; one more epoch's weights differ
    node = env["space"].nodes[BANK]

    def weights(model_id: str) -> dict[str, np.ndarray]:
        out = {}
        for name in (BANK, TAX):
            there = open_node(env["space"].nodes[name].root)
            try:
                out[name] = part_model(model_store.load_part(there, model_id)).weights
            finally:
                there.close()
        return out

    kept = weights(view["id"])
    with Client(node.url, node.admin_token) as client:
        for epochs, same in ((best + 1, True), (best + 2, False)):
            started = client.train(
                [env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]],
                peers=[TAX, GRID],
                label="defaulted",
                features=_features(),
                align=env["align"],
                params={"epochs": epochs, "batch_size": 256},
                validation=0.25,
                seed=7,
                contribution=False,
            )
            done = client.wait_train(started["id"], timeout=120)
            assert done["state"] == "SUCCEEDED", done
            assert client.model(started["id"])["metrics"]["stopping"]["reason"] == "max_epochs"
            other = weights(started["id"])
            gap = max(float(np.max(np.abs(kept[p] - other[p]))) for p in (BANK, TAX))
            assert (gap < 2e-3) is same, (epochs, gap)
    shown = CliRunner().invoke(app, ["--node", bank_root, "model", "show", view["id"]])
    assert shown.exit_code == 0, shown.output
    assert "seed 7" in shown.output and f"kept epoch {best + 1}" in shown.output
    assert "stopped: patience" in shown.output


def test_a_revenue_pool_is_split_by_contribution_and_each_provider_bills_its_share(
    space: dict[str, Any],
) -> None:
    env = space
    bank = env["bank"]
    agreements = [env["agreements"][(TAX, "share")], env["agreements"][(GRID, "share")]]
    common = {"agreements": agreements, "peers": [TAX, GRID], "model": "vlr",
              "label": "defaulted", "features": _features(), "align": env["align"],
              "params": VLR}
    with pytest.raises(MultipartyFailed, match="revenue pool"):  # the offers need one
        training.run_train(bank, **common)
    view = training.run_train(bank, **common, revenue_pool="1000 CNY")
    assert view["state"] == "SUCCEEDED", view
    contribution = view["result"]["contribution"]
    revenue = contribution["revenue"]
    assert revenue["pool"] == "1000.00 CNY"
    expected = split(Decimal("1000.00"), contribution["values"])
    assert {k: Decimal(v) for k, v in revenue["shares"].items()} == expected
    assert sum(expected.values()) == Decimal("1000.00")
    for name in (TAX, GRID):  # each provider metered its own share, from the same values
        node = open_node(env["space"].nodes[name].root)
        try:
            [usage] = [u for u in usage_service.list_usage(node) if u["job_id"] == view["id"]]
            assert Decimal(usage["amount"]) == Decimal("10.00") + expected[name]
            [done] = [e for e in payloads(node, "job.completed") if e["job_id"] == view["id"]]
            assert done["revenue"]["share"] == str(expected[name])
        finally:
            node.close()
    shown = CliRunner().invoke(
        app, ["--node", str(env["space"].nodes[BANK].root), "model", "show", view["id"]]
    )
    assert "revenue pool 1000.00 CNY" in shown.output


def test_align_jobs_over_different_bank_datasets_are_refused(
    space: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each align job's positions index its own dataset: the first job's dataset was kept and
    the others' positions intersected as if they pointed into it (firm A's features met firm
    B's label), and nothing refused, since each provider's row count still matched."""
    env = space
    aligned = training._aligned

    def grid_on_another(node: Any, job_id: str, peer: str) -> tuple[str, Any]:
        dataset, positions = aligned(node, job_id, peer)
        return (f"{dataset}-elsewhere" if peer == GRID else dataset), positions

    monkeypatch.setattr(training, "_aligned", grid_on_another)
    with pytest.raises(UsageError, match="different datasets"):
        training.run_train(
            env["bank"],
            agreements=[env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]],
            peers=[TAX, GRID], model="vlr", label="defaulted", features=_features(),
            align=env["align"], params=VLR,
        )
