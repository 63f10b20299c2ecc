"""FedAvg over secure aggregation: gain on a shared mechanism, none under concept shift, DP."""

from __future__ import annotations

import numpy as np
import pytest

from dataspace.errors import UsageError
from dataspace.federated.fedavg import (
    DpFedAvg,
    FedAvgConfig,
    Model,
    fedavg,
    local_mean,
    local_only,
)
from dataspace.federated.hfl_synth import make_horizontal

CONFIG = FedAvgConfig(rounds=15)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_federated_beats_average_local_model_on_a_shared_mechanism(kind: str) -> None:
    clients = make_horizontal(5, rows=60, seed=1)
    model = Model(kind, 10)
    fed = fedavg(clients, model, CONFIG)
    local = local_only(clients, model, CONFIG)
    assert fed.evaluation.mean("auc") >= local_mean(local, "auc")
    assert fed.evaluation.mean("loss") <= local_mean(local, "loss")
    assert set(fed.evaluation.per_client) == {f"client{i}" for i in range(1, 6)}
    assert "auc" in fed.evaluation.overall and fed.clipped == 0


def test_concept_shift_shows_no_federated_gain() -> None:
    # documented outcome (docs/fedavg.md): each client's own model wins by a wide margin
    clients = make_horizontal(5, rows=300, concept_shift=True, seed=1)
    model = Model("logistic", 10)
    fed = fedavg(clients, model, CONFIG)
    local = local_only(clients, model, CONFIG)
    assert fed.evaluation.mean("auc") < local_mean(local, "auc") - 0.05


def test_linear_regression_trains() -> None:
    clients = make_horizontal(5, rows=60, seed=2)
    fed = fedavg(clients, Model("linear", 10), FedAvgConfig(rounds=5, learning_rate=0.05))
    assert fed.loss_per_round[-1] < fed.loss_per_round[0]


def test_dp_fedavg_is_within_stated_loss_of_non_dp() -> None:
    clients = make_horizontal(50, rows=40, test_rows=100, seed=2)
    base = FedAvgConfig(rounds=8, secagg="additive")
    plain = fedavg(clients, Model("logistic", 10), base)
    # The noise comes from OpenDP's sampler and cannot be seeded, so one run's loss varies
    # (measured: 0.469-0.521 over 20 runs against 0.480 without DP). The median of five runs
    # within 0.05 fails with probability well under 1e-4.
    runs = [
        fedavg(
            clients,
            Model("logistic", 10),
            FedAvgConfig(
                rounds=8, secagg="additive", dp=DpFedAvg(clip=0.5, noise_multiplier=5.0)
            ),
        )
        for _ in range(5)
    ]
    private = runs[0]
    assert private.epsilon is not None and private.epsilon < 7.0
    assert private.delta == 1e-5
    losses = sorted(r.evaluation.overall["loss"] for r in runs)
    assert losses[2] <= plain.evaluation.overall["loss"] + 0.05


def test_providers_noise_shares_add_up_to_the_noise_the_accounting_assumes() -> None:
    """Across nodes each of P providers adds N(0, σ²/(P − 1)) to its own clipped update
    (σ = zC): a provider that takes its own share out of the step (it learns θ) still faces
    N(0, σ²) from the other P − 1, what dp_epsilon accounts for; no node ever holds an
    un-noised sum."""
    from dataspace.federated.fedavg import noise_share

    dpc = DpFedAvg(clip=0.5, noise_multiplier=2.0)
    share = noise_share(dpc, 4)
    assert share.scale == pytest.approx(2.0 * 0.5 / np.sqrt(3))
    assert share.encoded_bound == pytest.approx(0.5 + 8 * share.scale)
    updates = np.full(4000, 0.5)
    others = sum(share.apply(updates) for _ in range(3)) - 3 * updates
    assert np.std(others) == pytest.approx(dpc.noise_multiplier * dpc.clip, rel=0.05)
    with pytest.raises(UsageError, match="two providers"):
        noise_share(dpc, 1)
    assert abs(float(np.mean(others))) < 0.08  # 5 standard errors of the mean
    assert np.all(np.abs(share.apply(updates)) <= share.encoded_bound)
