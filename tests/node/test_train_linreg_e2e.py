"""Vertical linear regression (``--model vlinreg``) across real node processes on loopback: the
bank, the tax bureau and the grid of test_train_e2e (same fixture, a fresh space) regress the
bank's ``tenure`` column on every party's columns; the operator deals the randomness. The job
matches plaintext SGD on the same rows and schedule, each part stays with its owner, the
held-out predictions stay at the bank, and ``dataspace predict`` maps scores to the target."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataspace.cli.main import app
from dataspace.federated.metrics import regression_metrics
from dataspace.federated.vlinreg import train_plain_linear
from dataspace.services import models as model_store
from dataspace.services import predict, training
from dataspace.services.node import open_node
from dataspace.services.predict import part_model
from dataspace.services.train_linreg import config as linreg_config
from dataspace.services.train_roles import Spec, split_rows
from node.test_train_e2e import BANK, COLS, GRID, TAX, _pooled, space  # noqa: F401

PARAMS = {"epochs": 10, "batch_size": 128}
# Early stopping with a clear decision at every epoch: on the fixture's rows (seed 0) the
# validation MSE of the standardised target falls by ~0.098 after epoch 0 (improved: by
# ~0.038 more than MIN_DELTA) and by ~0.028 after epoch 1 (not improved: ~0.032 short of it),
# so with patience 1 the run stops after epoch 2 and keeps epoch 1 — each decision is ~30
# times the fixed-point error of the opened loss away from the threshold.
PATIENCE, MIN_DELTA, MARGIN = 1, 0.06, 0.01
TARGET = "tenure"
OWN = [c for c in COLS[BANK] if c != TARGET]


def test_vertical_linear_regression_across_nodes_matches_plaintext_and_predicts(
    space: dict[str, Any],  # noqa: F811
) -> None:
    env = space
    bank = env["bank"]
    features = {BANK: OWN, TAX: COLS[TAX], GRID: COLS[GRID]}
    view = training.run_train(
        bank,
        agreements=[env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]],
        peers=[TAX, GRID],
        model="vlinreg",
        label=TARGET,
        features=features,
        align=env["align"],
        params=PARAMS,
    )
    assert view["state"] == "SUCCEEDED", view
    result = view["result"]
    metrics = result["metrics"]
    assert result["family"] == "vlinreg" and "auc" not in metrics
    # plaintext linear regression on the same rows, split and schedule (the test's view)
    blocks, _ = _pooled(env, view)
    target = blocks[0][:, COLS[BANK].index(TARGET)]
    pooled = [blocks[0][:, [COLS[BANK].index(c) for c in OWN]], blocks[1], blocks[2]]
    spec = Spec.from_dict("x", model_store.get_model(bank, view["id"])["params"])
    fit, test = split_rows(spec.rows, spec.holdout, spec.seed)
    plain = train_plain_linear(
        [b[fit] for b in pooled], target[fit], linreg_config(spec, (BANK, TAX))
    )
    expected = regression_metrics(plain.predict([b[test] for b in pooled]), target[test])
    assert metrics["mae"] == pytest.approx(expected["mae"], rel=0.01), (metrics, expected)
    assert metrics["r2"] == pytest.approx(expected["r2"], abs=0.01)
    assert set(metrics["mae_by_coalition"]) == {BANK, f"{BANK}+{TAX}", f"{BANK}+{GRID}",
                                                f"{BANK}+{GRID}+{TAX}"}
    # Shapley of the MAE reduction: efficient over the two providers
    contribution = result["contribution"]
    assert contribution["metric"] == "-mae"
    total = sum(contribution["values"].values())
    assert total == pytest.approx(metrics["mae_label_party_only"] - metrics["mae"], abs=1e-9)
    # the held-out predictions stay at the bank: its file, the target and every coalition
    held = pq.read_table(bank.data_dir / metrics["heldout_file"])
    assert held.num_rows == metrics["held_out_rows"] == test.size
    assert np.allclose(held.column("target").to_numpy(), target[test])
    # parts: the bank's carries the target scaling, the providers' only their weights
    part = model_store.load_part(bank, view["id"])
    assert part["target"] and part["intercept"] is not None and part["columns"] == OWN
    for name in (TAX, GRID):
        node = open_node(env["space"].nodes[name].root)
        try:
            there = model_store.load_part(node, view["id"])
            assert there["columns"] == COLS[name] and there["target"] is None
            assert there["intercept"] is None
        finally:
            node.close()
    # prediction on the aligned rows: the bank gets values in the target's units
    done = predict.run_predict(bank, model=view["id"], rows=env["align"])
    assert done["state"] == "SUCCEEDED", done
    scores = pq.read_table(done["result"]["scores_file"])
    assert "prediction" in scores.column_names and "probability" not in scores.column_names
    every = plain.predict(pooled)
    assert np.max(np.abs(scores.column("prediction").to_numpy() - every)) < 0.05 * target.std()
    # the CLI shows the regression metrics and the contribution in MAE terms
    shown = CliRunner().invoke(
        app, ["--node", str(env["space"].nodes[BANK].root), "model", "show", view["id"]]
    )
    assert shown.exit_code == 0, shown.output
    assert "mae" in shown.output and "MAE reduction" in shown.output


def test_a_binary_only_family_refuses_a_continuous_target(space: dict[str, Any]) -> None:  # noqa: F811
    env = space
    from dataspace.errors import UsageError
    from dataspace.services.mp_wire import MultipartyFailed

    with pytest.raises((UsageError, MultipartyFailed), match="0 and 1"):
        training.run_train(
            env["bank"],
            agreements=[env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]],
            peers=[TAX, GRID],
            model="vlr",
            label=TARGET,
            features={BANK: OWN, TAX: COLS[TAX], GRID: COLS[GRID]},
            align=env["align"],
            params=PARAMS,
        )


def test_vertical_linear_regression_stops_early_and_keeps_the_best_epoch(
    space: dict[str, Any],  # noqa: F811
) -> None:
    """With ``patience`` the bank decides on the validation squared error (computed on shares,
    the helper's opened copy) and every node follows: the run stops early and every party's
    part holds the best epoch's weights — as plaintext SGD with the same early stopping."""
    env = space
    bank = env["bank"]
    params = {**PARAMS, "min_delta": MIN_DELTA}
    view = training.run_train(
        bank,
        agreements=[env["agreements"][(TAX, "train")], env["agreements"][(GRID, "train")]],
        peers=[TAX, GRID],
        model="vlinreg",
        label=TARGET,
        features={BANK: OWN, TAX: COLS[TAX], GRID: COLS[GRID]},
        align=env["align"],
        params=params,
        patience=PATIENCE,
        contribution=False,
    )
    assert view["state"] == "SUCCEEDED", view
    metrics = view["result"]["metrics"]
    stopping = metrics["stopping"]
    assert stopping["early_stopping"] and stopping["reason"] == "patience", metrics
    assert (stopping["patience"], stopping["min_delta"]) == (PATIENCE, MIN_DELTA)
    assert stopping["kept"] == "best epoch"
    run, best = int(metrics["epochs_run"]), int(metrics["best_epoch"])
    curve = [float(v) for v in metrics["validation_mse"]]
    assert len(curve) == run < PARAMS["epochs"] and run == best + 1 + PATIENCE, metrics
    assert best >= 1, curve  # the kept epoch is neither the first nor the last
    # every decision is far from the threshold (so rounding of the shared loss cannot flip it)
    for epoch in range(1, best + 1):
        assert curve[epoch] < curve[epoch - 1] - MIN_DELTA - MARGIN, curve
    for epoch in range(best + 1, run):
        assert curve[epoch] > curve[best] - MIN_DELTA + MARGIN, curve
    assert metrics["validation_rows"] == round(metrics["train_rows"] * 0.2)
    # the same early stopping in float64 on the pooled rows: the same curve, stop and model
    blocks, _ = _pooled(env, view)
    target = blocks[0][:, COLS[BANK].index(TARGET)]
    pooled = [blocks[0][:, [COLS[BANK].index(c) for c in OWN]], blocks[1], blocks[2]]
    spec = Spec.from_dict("x", model_store.get_model(bank, view["id"])["params"])
    fit, test = split_rows(spec.rows, spec.holdout, spec.seed)
    cfg = linreg_config(spec, (BANK, TAX))
    assert (cfg.patience, cfg.min_delta) == (PATIENCE, MIN_DELTA)
    plain = train_plain_linear([b[fit] for b in pooled], target[fit], cfg)
    assert np.allclose(curve, plain.validation, atol=1e-3), (curve, plain.validation)
    expected = regression_metrics(plain.predict([b[test] for b in pooled]), target[test])
    assert metrics["mae"] == pytest.approx(expected["mae"], rel=0.01), (metrics, expected)
    # every party's part holds the best epoch's weights, not the last epoch's
    last = train_plain_linear(
        [b[fit] for b in pooled],
        target[fit],
        replace(cfg, epochs=run, patience=run, min_delta=-math.inf),  # no early stopping
    )
    offsets = {BANK: 0, TAX: len(OWN), GRID: len(OWN) + len(COLS[TAX])}
    for name, width in ((BANK, len(OWN)), (TAX, len(COLS[TAX])), (GRID, len(COLS[GRID]))):
        node = bank if name == BANK else open_node(env["space"].nodes[name].root)
        try:
            kept = part_model(model_store.load_part(node, view["id"])).weights
        finally:
            if node is not bank:
                node.close()
        block = slice(offsets[name], offsets[name] + width)
        assert np.allclose(kept, plain.weights[block], atol=2e-3), (name, kept)
        assert np.max(np.abs(kept - last.weights[block])) > 10 * 2e-3, (name, kept)
    # model show says which epoch was kept and why training stopped
    shown = CliRunner().invoke(
        app, ["--node", str(env["space"].nodes[BANK].root), "model", "show", view["id"]]
    )
    assert shown.exit_code == 0, shown.output
    assert f"kept epoch {best + 1}" in shown.output and "stopped: patience" in shown.output
