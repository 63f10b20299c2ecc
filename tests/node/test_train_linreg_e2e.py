"""Vertical linear regression (``--model vlinreg``) across real node processes on loopback: the
bank, the tax bureau and the grid of test_train_e2e (same fixture, a fresh space) regress the
bank's ``tenure`` column on every party's columns; the operator deals the randomness. The job
matches plaintext SGD on the same rows and schedule, each part stays with its owner, the
held-out predictions stay at the bank, and ``dataspace predict`` maps scores to the target."""

from __future__ import annotations

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
from dataspace.services.train_linreg import config as linreg_config
from dataspace.services.train_roles import Spec, split_rows
from node.test_train_e2e import BANK, COLS, GRID, TAX, _pooled, space  # noqa: F401

PARAMS = {"epochs": 10, "batch_size": 128}
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
