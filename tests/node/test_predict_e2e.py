"""Prediction with a trained vertical model (LR, SecureBoost GBDT) across real nodes on
loopback: the bank trains with a tax bureau and a power grid, then scores firms it never
trained on (a second PSI align job); each part stays at its owner and only the bank sees the
scores."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataspace.cli.main import app
from dataspace.client import Client
from dataspace.federated import sgb
from dataspace.federated.metrics import auc
from dataspace.federated.synth import make_vertical
from dataspace.samples.generate import make_uscc
from dataspace.services import datasets, multiparty, predict, training
from dataspace.services import models as model_store
from dataspace.services.mp_wire import MultipartyFailed
from dataspace.services.node import open_node
from helpers.agreements import make_agreements
from helpers.ledger import payloads
from helpers.vertical import vertical_offers, write_party_csv

BANK, TAX, GRID = "bank", "tax-bureau", "grid"
KEY = "credit_code:uscc"
N_TRAIN, N_NEW = 700, 300
COLS = {
    BANK: ["loans", "overdue", "balance", "tenure"],
    TAX: ["vat", "income", "payroll", "filings"],
    GRID: ["kwh", "peak", "bills", "growth"],
}


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from helpers.cluster import start_space

    root = tmp_path_factory.mktemp("predict")
    total = N_TRAIN + N_NEW
    data = make_vertical(total, {BANK: 4, TAX: 4, GRID: 4}, seed=5)
    rng = random.Random(11)
    codes = sorted({make_uscc(rng, "110108") for _ in range(total + 300)})[:total]
    train_rows = list(range(N_TRAIN))
    new_rows = list(range(N_TRAIN, total))
    random.Random("train").shuffle(train_rows)
    random.Random("new").shuffle(new_rows)
    # the providers know every firm but a few of the new ones
    provider_rows = {TAX: list(range(total - 10)), GRID: list(range(5, total))}
    running = start_space(root, [BANK, TAX, GRID], serve=False, dealer=True)
    nodes = {n: running.nodes[n].open() for n in (BANK, TAX, GRID)}
    try:
        for name, rows in (("companies", train_rows), ("new-firms", new_rows)):
            path = write_party_csv(
                root / f"bank-{name}.csv",
                [codes[i] for i in rows],
                COLS[BANK],
                data.blocks[BANK][rows],
                data.labels[rows],
            )
            datasets.add(nodes[BANK], path, name=name, actor="t")
        ids = {}
        for peer in (TAX, GRID):
            rows = provider_rows[peer][:]
            random.Random(peer).shuffle(rows)
            path = write_party_csv(
                root / f"{peer}.csv", [codes[i] for i in rows], COLS[peer], data.blocks[peer][rows]
            )
            ids[peer] = datasets.add(nodes[peer], path, name="companies", actor="t")["id"]
        agreements = make_agreements(
            nodes[BANK],
            {peer: nodes[peer] for peer in (TAX, GRID)},
            ids,
            vertical_offers(),
            purpose="credit-risk",
        )
    finally:
        for n in nodes.values():
            n.close()
    running.start()
    bank = open_node(running.nodes[BANK].root)

    def align(dataset: str) -> list[str]:
        return [
            multiparty.run_psi(
                bank,
                agreements=[agreements[(peer, "psi")]],
                peers=[peer],
                dataset=dataset,
                key=KEY,
                mode="align",
            )["id"]
            for peer in (TAX, GRID)
        ]

    try:
        model = training.run_train(
            bank,
            agreements=[agreements[(TAX, "train")], agreements[(GRID, "train")]],
            peers=[TAX, GRID],
            model="vlr",
            label="defaulted",
            features={k: list(v) for k, v in COLS.items()},
            align=align("companies"),
            params={"epochs": 6, "batch_size": 256},
            contribution=False,
        )
        assert model["state"] == "SUCCEEDED", model
        gbdt_model = training.run_train(
            bank,
            agreements=[agreements[(TAX, "gbdt")], agreements[(GRID, "gbdt")]],
            peers=[TAX, GRID],
            model="vgbdt",
            label="defaulted",
            features={k: list(v) for k, v in COLS.items()},
            align=align("companies"),
            params={"trees": 6, "max_depth": 3, "bins": 16},
            contribution=False,
        )
        assert gbdt_model["state"] == "SUCCEEDED", gbdt_model
        yield {
            "space": running,
            "bank": bank,
            "data": data,
            "new_rows": new_rows,
            "model": model,
            "gbdt": gbdt_model,
            "rows": align("new-firms"),
            "provider_rows": provider_rows,
        }
    finally:
        bank.close()
        running.stop()


def _parts(env: dict[str, Any], model_id: str) -> dict[str, Any]:
    """Each node's stored part of the model, read from its own store (the test's view)."""
    out = {}
    for name in (BANK, TAX, GRID):
        node = open_node(env["space"].nodes[name].root)
        try:
            out[name] = predict.part_model(model_store.load_part(node, model_id))
        finally:
            node.close()
    return out


def _assert_predicted_everywhere(
    env: dict[str, Any], job_id: str, model_id: str, rows: int
) -> None:
    """``model.predicted`` in every node's ledger; each provider metered and SUCCEEDED, and
    the scores kept at the bank only."""
    for name in (BANK, TAX, GRID):
        node = open_node(env["space"].nodes[name].root)
        try:
            [entry] = [e for e in payloads(node, "model.predicted") if e["job_id"] == job_id]
            assert entry["model_id"] == model_id and entry["rows"] == rows
            if name != BANK:
                assert entry["usage_id"]
                assert predict.get_job(node, job_id)["state"] == "SUCCEEDED"
                assert not (node.data_dir / predict.PREDICTIONS_DIR).exists()
        finally:
            node.close()


def test_predict_on_new_aligned_rows_matches_the_plaintext_model(
    space: dict[str, Any], tmp_path: Path
) -> None:
    env = space
    model_id = env["model"]["id"]
    out = tmp_path / "scores.parquet"
    args = ["--node", str(env["space"].nodes[BANK].root), "predict", "--model", model_id]
    for r in env["rows"]:
        args += ["--rows", r]
    t0 = time.perf_counter()
    shown = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    seconds = time.perf_counter() - t0
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    assert view["state"] == "SUCCEEDED" and view["result"]["scores_file"] == str(out)
    scores = pq.read_table(out).sort_by("order")
    positions = scores.column("position").to_numpy()
    got = scores.column("score").to_numpy()
    # the rows the bank scored: its new-firms positions known to both providers
    entities = np.asarray(env["new_rows"])[positions]
    known = set(env["provider_rows"][TAX]) & set(env["provider_rows"][GRID])
    assert set(entities.tolist()) == known & set(env["new_rows"])
    assert got.size == len(known & set(env["new_rows"])) == view["result"]["rows"]
    # the plaintext model: every node's stored weight block, combined here
    parts = _parts(env, model_id)
    data = env["data"]
    plain = sum(parts[p].partial_score(data.blocks[p][entities]) for p in (BANK, TAX, GRID))
    assert np.max(np.abs(got - plain)) < 1e-3, np.max(np.abs(got - plain))
    new_auc = auc(got, data.labels[entities])
    trained_auc = float(env["model"]["result"]["metrics"]["auc"])
    assert abs(new_auc - trained_auc) < 0.08, (new_auc, trained_auc)
    # logged and metered at every node; the scores only at the bank
    _assert_predicted_everywhere(env, view["id"], model_id, got.size)
    print(
        f"\npredict {got.size} new rows: {seconds:.2f}s, "
        f"AUC {new_auc:.4f} (trained {trained_auc:.4f})"
    )


def test_rows_missing_a_providers_align_job_say_why_each_one_does_not_fit(
    space: dict[str, Any],
) -> None:
    """It said "none of the align jobs [...] was run with X" even of a job that was no align
    job at all; each job's own reason is given now."""
    from dataspace.errors import UsageError

    env = space
    only_tax = env["rows"][0]
    with pytest.raises(UsageError) as info:
        predict.run_predict(env["bank"], model=env["model"]["id"], rows=[only_tax])
    message = info.value.message
    assert message.startswith(f"no align job for {GRID} among ['{only_tax}']: ")
    assert f"align job {only_tax} was not run with {GRID}" in message
    assert "--reveal align" in str(info.value.hint)


def test_a_prediction_is_not_retried_and_says_so(space: dict[str, Any]) -> None:
    """`job retry` of a prediction said "no multi-party job ... started by this node"."""
    from dataspace.errors import UsageError
    from dataspace.services import mp_store as ms
    from dataspace.services import multiparty

    env = space
    job = "job-a-prediction-001"
    ms.create_row(env["bank"], job_id=job, role=ms.INITIATOR, agreement_id="agr", peer=TAX,
                  action=predict.ACTION, request={}, state="FAILED")
    with pytest.raises(UsageError, match=f"job {job} is a prediction: predictions are not "
                       "retried") as info:
        multiparty.retry(env["bank"], job)
    assert "dataspace predict" in str(info.value.hint)


def test_a_provider_without_its_part_refuses_and_the_job_fails_everywhere(
    space: dict[str, Any],
) -> None:
    env = space
    bank, model_id = env["bank"], env["model"]["id"]
    grid_root = env["space"].nodes[GRID].root
    grid = open_node(grid_root)
    try:
        part = grid.data_dir / model_store.get_model(grid, model_id)["part_file"]
    finally:
        grid.close()
    shutil.move(part, part.with_suffix(".gone"))
    try:
        with pytest.raises(MultipartyFailed) as info:
            predict.run_predict(bank, model=model_id, rows=env["rows"])
    finally:
        shutil.move(part.with_suffix(".gone"), part)
    assert GRID in info.value.message
    for name in (BANK, TAX, GRID):
        node = open_node(env["space"].nodes[name].root)
        try:
            failed = [e for e in payloads(node, "job.failed") if e.get("action") == predict.ACTION]
            assert failed, name
            assert predict.get_job(node, failed[-1]["job_id"])["state"] == "FAILED"
            assert not [
                e for e in payloads(node, "model.predicted") if e["job_id"] == failed[-1]["job_id"]
            ]
        finally:
            node.close()


def _csv_values(x: np.ndarray) -> np.ndarray:
    """The values as the nodes read them back from the CSV files (6 decimals)."""
    return np.vectorize(lambda v: float(f"{v:.6f}"))(x)


def test_vgbdt_predict_through_the_api_equals_the_in_process_model(
    space: dict[str, Any],
) -> None:
    env = space
    model_id = env["gbdt"]["id"]
    bank = env["space"].nodes[BANK]
    t0 = time.perf_counter()
    with Client(bank.url, bank.admin_token) as client:
        view = client.predict(model_id, env["rows"])
        listed = {m["id"]: m for m in client.models()}
    seconds = time.perf_counter() - t0
    assert view["state"] == "SUCCEEDED", view
    result = view["result"]
    assert result["family"] == "vgbdt" and listed[model_id]["family"] == "vgbdt"
    scores = pq.read_table(result["scores_file"]).sort_by("order")
    entities = np.asarray(env["new_rows"])[scores.column("position").to_numpy()]
    got = scores.column("score").to_numpy()
    assert got.size == result["rows"] > 0
    # the in-process SecureBoost model from every node's stored part, on the same rows
    parts = {}
    for name in (BANK, TAX, GRID):
        node = open_node(env["space"].nodes[name].root)
        try:
            parts[name] = model_store.load_part(node, model_id)
        finally:
            node.close()
    model = predict.sgb_model(parts, BANK)
    owned = model.owners()
    assert owned[TAX] + owned[GRID] > 0  # some splits are held by the providers
    blocks = {p: _csv_values(env["data"].blocks[p][entities]) for p in (BANK, TAX, GRID)}
    expected = sgb.predict(model, blocks)
    assert np.array_equal(got, expected), np.max(np.abs(got - expected))
    assert result["split_nodes_asked"] > 0 and "owner" in result["leakage"]
    assert np.allclose(scores.column("probability").to_numpy(), 1 / (1 + np.exp(-got)))
    new_auc = auc(got, env["data"].labels[entities])
    assert new_auc > 0.6, new_auc
    # logged and metered at every provider under its (pseudonymized-output) agreement
    _assert_predicted_everywhere(env, view["id"], model_id, got.size)
    print(f"\nvgbdt predict {got.size} new rows: {seconds:.2f}s, AUC {new_auc:.4f}")


def test_a_vgbdt_provider_with_an_altered_part_refuses_and_the_job_fails_everywhere(
    space: dict[str, Any],
) -> None:
    env = space
    bank, model_id = env["bank"], env["gbdt"]["id"]
    tax = open_node(env["space"].nodes[TAX].root)
    try:
        part = tax.data_dir / model_store.get_model(tax, model_id)["part_file"]
    finally:
        tax.close()
    original = part.read_bytes()
    altered = original.replace(b'"book": [', b'"book": [[0, "0.0"], ', 1)
    assert altered != original
    part.write_bytes(altered)
    try:
        with pytest.raises(MultipartyFailed) as info:
            predict.run_predict(bank, model=model_id, rows=env["rows"])
    finally:
        part.write_bytes(original)
    assert TAX in info.value.message
    for name in (BANK, TAX, GRID):
        node = open_node(env["space"].nodes[name].root)
        try:
            failed = [e for e in payloads(node, "job.failed") if e.get("action") == predict.ACTION]
            assert failed, name
            job_id = failed[-1]["job_id"]
            assert predict.get_job(node, job_id)["state"] == "FAILED"
            assert not [e for e in payloads(node, "model.predicted") if e["job_id"] == job_id]
        finally:
            node.close()
