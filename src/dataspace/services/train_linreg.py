"""Vertical linear regression across nodes (``--model vlinreg``): each node's role and the
label party's evaluation.

The schedule, transport and replication are vertical LR's (:mod:`.train_roles`): every node runs
the same data-independent program of :mod:`dataspace.federated.vlinreg` with placeholders for
the other parties' data; only messages addressed to a node reach it. Differences from vlr:

* the target is continuous (any finite number); the label party standardises it at home and
  keeps the scaling with its part (``target``: mean and scale of its training rows);
* the held-out metrics are the mean absolute error, the root mean squared error and R², in
  the target's units, per coalition; contribution is the Shapley value of the MAE reduction;
* the label party keeps the held-out predictions of every coalition in a parquet file under
  its data dir (``predictions/<job>.heldout.parquet``) — nothing about them leaves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.federated import vlinreg, vlr
from dataspace.federated.metrics import regression_metrics
from dataspace.federated.plan import Scaler, TrainConfig
from dataspace.services.train_net import Mailbox, NodeNetwork, using
from dataspace.services.train_roles import Local, Spec, split_rows, vlr_part

FAMILY = "vlinreg"
DEFAULTS: dict[str, Any] = {
    "epochs": 8,
    "batch_size": 256,
    "learning_rate": 0.1,
    "lr_decay": 0.1,
    "l2": 1e-3,
}
HELDOUT_DIR = "predictions"


def config(spec: Spec, coalition: Sequence[str]) -> TrainConfig:
    p = {**DEFAULTS, **spec.params}
    epochs = int(p["epochs"])
    return TrainConfig(
        epochs=epochs,
        batch_size=int(p["batch_size"]),
        learning_rate=float(p["learning_rate"]),
        lr_decay=float(p["lr_decay"]),
        l2=float(p["l2"]),
        patience=epochs,
        min_delta=-math.inf,  # the last epoch is kept, the same at every node (as vlr)
        seed=spec.seed,
        dealer=spec.dealer,
        helper=coalition[1],
    )


def _placeholder(spec: Spec, name: str, rows: int) -> np.ndarray:
    return np.zeros((rows, spec.widths[name]))


def run(
    mb: Mailbox, spec: Spec, index: int, coalition: Sequence[str], local: Local
) -> dict[str, Any]:
    """Train on ``coalition`` and predict the held-out rows; returns this node's view."""
    me = mb.me
    fit, test = split_rows(spec.rows, spec.holdout, spec.seed)
    parties = []
    for name in coalition:
        real = name == me and local.block is not None
        x = (
            local.block[fit]
            if real and local.block is not None
            else _placeholder(spec, name, fit.size)
        )
        y = None
        if name == spec.label:
            y = local.labels[fit] if real and local.labels is not None else np.zeros(fit.size)
        parties.append(vlr.PartyData(name, x, y, tuple(spec.columns.get(name, []))))
    cfg = config(spec, coalition)
    with using(NodeNetwork(mb, f"{index}/train", replicate=True)):
        result = vlinreg.train(parties, cfg)
    if me not in coalition:
        return {"seconds": result.seconds}
    models: dict[str, vlr.PartyModel] = dict(result.models)
    for name in coalition:  # placeholders of the others' parts, for the replicated prediction
        if name != me:
            width = spec.widths[name]
            models[name] = vlinreg.LinearPartyModel(
                name,
                (),
                np.zeros(width),
                Scaler(np.zeros(width), np.ones(width), cfg.clip),
                0.0 if name == spec.label else None,
                vlinreg.Target(0.0, 1.0) if name == spec.label else None,
            )
    assert local.block is not None
    features = {
        name: (local.block[test] if name == me else _placeholder(spec, name, test.size))
        for name in coalition
    }
    with using(NodeNetwork(mb, f"{index}/predict", replicate=True)):
        prediction = vlinreg.predict(models, features, label_party=spec.label)
    out: dict[str, Any] = {"model": result.models[me], "seconds": result.seconds}
    if me == spec.label:
        out.update(
            scores=prediction.values,
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            validation=[r.validation_mse for r in result.validation],
            bytes=result.bytes_total,
        )
    return out


def part(model: vlr.PartyModel) -> dict[str, Any]:
    """The stored part: vlr's fields, plus the target scaling at the label party."""
    out = vlr_part(model)
    target = getattr(model, "target", None)
    out["target"] = None if target is None else {"mean": target.mean, "scale": target.scale}
    return out


def target_of(part: dict[str, Any]) -> vlinreg.Target:
    t = part.get("target")
    if not isinstance(t, dict):
        raise ValueError("this part holds no target scaling (not the label party's vlinreg part)")
    return vlinreg.Target(float(t["mean"]), float(t["scale"]))


def alone(spec: Spec, local: Local) -> np.ndarray:
    """The label party's own linear regression, trained at home on its columns with the same
    rows, split and schedule; its held-out predictions (the contribution base)."""
    assert local.block is not None and local.labels is not None
    fit, test = split_rows(spec.rows, spec.holdout, spec.seed)
    cfg = config(spec, (spec.label, spec.label))
    model = vlinreg.train_plain_linear([local.block[fit]], local.labels[fit], cfg)
    return model.predict([local.block[test]])


def evaluate(
    spec: Spec,
    local: Local,
    coalitions: Sequence[tuple[str, ...]],
    outputs: Sequence[dict[str, Any]],
) -> tuple[dict[str, Any], dict[frozenset[str], float], dict[str, np.ndarray]]:
    """Held-out MAE / RMSE / R² per coalition (target units), the Shapley value function
    (minus the MAE: higher is better) and every coalition's held-out predictions."""
    assert local.labels is not None
    _, test = split_rows(spec.rows, spec.holdout, spec.seed)
    y = local.labels[test]
    preds: dict[str, np.ndarray] = {}
    values: dict[frozenset[str], float] = {}
    scores: dict[str, dict[str, float]] = {}

    def add(providers: Sequence[str], p: np.ndarray) -> None:
        key = "+".join([spec.label, *sorted(providers)])
        preds[key] = np.asarray(p, dtype=np.float64)
        scores[key] = regression_metrics(preds[key], y)
        values[frozenset(providers)] = -scores[key]["mae"]

    for coalition, out in zip(coalitions, outputs, strict=True):
        add(coalition[1:], out["scores"])
    add((), alone(spec, local))
    full = "+".join([spec.label, *sorted(spec.parties[1:])])
    metrics: dict[str, Any] = {
        "mae": scores[full]["mae"],
        "rmse": scores[full]["rmse"],
        "r2": scores[full]["r2"],
        "mae_label_party_only": scores[spec.label]["mae"],
        "r2_label_party_only": scores[spec.label]["r2"],
        "mae_by_coalition": {k: v["mae"] for k, v in scores.items()},
        "rmse_by_coalition": {k: v["rmse"] for k, v in scores.items()},
        "r2_by_coalition": {k: v["r2"] for k, v in scores.items()},
    }
    return metrics, values, preds


def write_heldout(
    data_dir: Path, job_id: str, positions: np.ndarray, spec: Spec, local: Local,
    preds: dict[str, np.ndarray],
) -> str:
    """The held-out rows' targets and each coalition's predictions, at the label party only:
    ``order`` (in the aligned rows), ``position`` (row of its dataset), ``target`` and one
    column per coalition (``rail+port``, ...). Returns the path relative to the data dir."""
    assert local.labels is not None
    _, test = split_rows(spec.rows, spec.holdout, spec.seed)
    columns: dict[str, Any] = {
        "order": test.astype(np.int64),
        "position": np.asarray(positions, dtype=np.int64)[test],
        "target": local.labels[test],
    }
    columns.update(preds)
    rel = f"{HELDOUT_DIR}/{job_id}.heldout.parquet"
    path = data_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return rel
