"""Vertical linear regression across nodes (``--model vlinreg``): each node's role and the
label party's evaluation.

The schedule, transport and replication are vertical LR's (:mod:`.train_roles`): every node runs
the same data-independent program of :mod:`dataspace.federated.vlinreg` with placeholders for
the other parties' data; only messages addressed to a node reach it. Differences from vlr:

* the target is continuous (any finite number); the label party standardises it at home and
  keeps the scaling with its part (``target``: mean and scale of its training rows);
* the validation loss is the mean squared error of the standardised target, not the Brier
  score; early stopping on it (``patience``) is vlr's: the label party decides after each
  epoch, every node follows, the best epoch's weights are kept;
* the held-out metrics are the mean absolute error, the root mean squared error and R², in
  the target's units, per coalition; contribution is the Shapley value of the MAE reduction;
* the label party keeps the held-out predictions of every coalition in a parquet file under
  its data dir (``predictions/<job>.heldout.parquet``) — nothing about them leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.federated import vlinreg, vlr
from dataspace.federated.metrics import regression_metrics
from dataspace.federated.plan import TrainConfig
from dataspace.services.train_net import Mailbox
from dataspace.services.train_roles import (
    Local,
    Spec,
    split_rows,
    vertical_run,
    vlr_config,
    vlr_part,
)

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
    """vlr's configuration with vlinreg's defaults: with ``patience``, early stopping on the
    validation squared error (the label party decides, every node follows, the best epoch is
    kept); without it every epoch runs and the last is kept, the same at every node."""
    return vlr_config(spec, coalition, DEFAULTS)


def run(
    mb: Mailbox, spec: Spec, index: int, coalition: Sequence[str], local: Local
) -> dict[str, Any]:
    """Train on ``coalition`` and predict the held-out rows; returns this node's view."""
    cfg = config(spec, coalition)
    out, result = vertical_run(
        mb,
        spec,
        index,
        coalition,
        local,
        cfg,
        train=lambda parties, decide: vlinreg.train(parties, cfg, decide=decide),
        placeholder=lambda name, scaler: vlinreg.LinearPartyModel(
            name,
            (),
            np.zeros(scaler.mean.size),
            scaler,
            0.0 if name == spec.label else None,
            vlinreg.Target(0.0, 1.0) if name == spec.label else None,
        ),
        predict=lambda models, features: vlinreg.predict(
            models, features, label_party=spec.label
        ).values,
    )
    if mb.me == spec.label:
        out.update(validation=[r.validation_mse for r in result.validation])
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
