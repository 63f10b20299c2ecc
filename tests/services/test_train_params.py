"""Training requests: the per-run seed, early-stopping parameters, clear refusals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from dataspace.errors import UsageError
from dataspace.federated import vlr
from dataspace.federated.mpc.net import Network
from dataspace.federated.plan import TrainConfig, make_plan
from dataspace.federated.synth import make_vertical
from dataspace.services import train_linreg
from dataspace.services.train_net import using
from dataspace.services.train_roles import Spec, check_params, split_rows, vlr_config
from dataspace.services.training import _early_params


def _spec(family: str = "vlr", seed: int = 0, **params: Any) -> Spec:
    return Spec(
        job_id="j",
        family=family,
        parties=("bank", "tax"),
        widths={"bank": 2, "tax": 2},
        columns={"bank": ["a", "b"], "tax": ["c", "d"]},
        dealer="operator",
        rows=500,
        seed=seed,
        params=params,
    )


def test_without_patience_every_node_runs_all_epochs_and_keeps_the_last() -> None:
    config = vlr_config(_spec(epochs=5), ("bank", "tax"))
    assert config.patience == 5 and config.min_delta == -math.inf
    assert config.validation_fraction == 0.2


def test_patience_and_validation_reach_the_core_config() -> None:
    config = vlr_config(
        _spec(epochs=9, patience=2, validation=0.3, min_delta=0.01, seed=5), ("bank", "tax")
    )
    assert (config.patience, config.min_delta, config.validation_fraction) == (2, 0.01, 0.3)
    assert config.seed == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(epoch=3), "unknown vlr parameter"),
        (_spec(patience=0), "patience must be"),
        (_spec(patience=1.5), "patience must be"),
        (_spec(patience=True), "patience must be"),
        (_spec(validation=0.95), "validation_fraction"),
        (_spec(epochs="many"), "bad vlr parameters"),
        (_spec("vlinreg", epoch=3), "unknown vlinreg parameter"),
        (_spec("vlinreg", patience=0), "patience must be"),
        (_spec("vlinreg", patience=2.5), "patience must be"),
        (_spec("vlinreg", validation=0.95), "validation_fraction"),
        (_spec("vlinreg", epochs="many"), "bad vlinreg parameters"),
        (_spec("vgbdt", depth=3), "unknown vgbdt parameter"),
        (_spec("vgbdt", bins=1), "bins"),
        (_spec(seed=-1), "seed must be"),
    ],
)
def test_bad_parameters_are_refused_before_any_node_is_asked(spec: Spec, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_params(spec)


@pytest.mark.parametrize("family", ["vlr", "vlinreg"])
def test_patience_and_validation_are_accepted_for_the_families_that_stop_early(
    family: str,
) -> None:
    assert _early_params(family, {"epochs": 4}, 2, 0.25) == {
        "epochs": 4,
        "patience": 2,
        "validation": 0.25,
    }
    check_params(_spec(family, epochs=4, patience=2, validation=0.25, min_delta=0.01))


@pytest.mark.parametrize("family", ["vgbdt", "fedavg"])
def test_patience_is_refused_for_other_families(family: str) -> None:
    for patience, validation in ((2, None), (None, 0.25)):
        with pytest.raises(UsageError, match="vlr and vlinreg only"):
            _early_params(family, {}, patience, validation)


def test_patience_is_refused_when_given_twice() -> None:
    with pytest.raises(UsageError, match="twice"):
        _early_params("vlr", {"patience": 3}, 2, None)
    with pytest.raises(UsageError, match="twice"):
        _early_params("vlinreg", {"validation": 0.3}, None, 0.25)


@pytest.mark.parametrize("params", [{}, {"epochs": 5, "l2": 0.01, "batch_size": 64}])
def test_vlinreg_without_patience_keeps_its_defaults_and_the_last_epoch(
    params: dict[str, Any],
) -> None:
    """vlr's config with vlinreg's defaults: without ``patience`` exactly the configuration
    vlinreg had before early stopping (every epoch runs, the last is kept)."""
    p = {**train_linreg.DEFAULTS, **params}
    config = train_linreg.config(_spec("vlinreg", seed=3, **params), ("bank", "tax"))
    assert config == TrainConfig(
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        learning_rate=0.1,
        lr_decay=0.1,
        l2=p["l2"],
        patience=p["epochs"],
        min_delta=-math.inf,
        seed=3,
        dealer="operator",
        helper="tax",
    )


def test_vlinreg_patience_and_validation_reach_the_core_config() -> None:
    config = train_linreg.config(
        _spec("vlinreg", epochs=9, patience=2, validation=0.3, min_delta=0.01, seed=5),
        ("bank", "tax"),
    )
    assert (config.patience, config.min_delta, config.validation_fraction) == (2, 0.01, 0.3)
    assert (config.epochs, config.learning_rate, config.seed) == (9, 0.1, 5)


def test_the_seed_draws_the_public_splits_only() -> None:
    a, b = split_rows(500, 0.25, 1), split_rows(500, 0.25, 1)
    c = split_rows(500, 0.25, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    p1, p2 = (
        make_plan(400, vlr_config(_spec(seed=s, batch_size=16), ("bank", "tax"))) for s in (1, 2)
    )
    assert not np.array_equal(p1.validation, p2.validation)
    assert not np.array_equal(p1.train[:16], p2.train[:16])  # batch composition
    assert not np.array_equal(p1.batch_order(0, 1), p1.batch_order(0, 2))  # SGD shuffling


class _Recorder(Network):
    def __init__(self) -> None:
        super().__init__()
        self.from_dealer: list[bytes] = []

    def _send(self, sender: str, recipient: str, make: Any) -> int:
        size = super()._send(sender, recipient, make)
        if sender == "operator":
            self.from_dealer.append(self._boxes[(sender, recipient)][-1])
        return size


def test_the_same_seed_never_repeats_the_dealers_masks_or_triples() -> None:
    data = make_vertical(300, {"bank": 2, "tax": 2}, seed=2)
    parties = [
        vlr.PartyData(k, v, data.labels if k == "bank" else None) for k, v in data.blocks.items()
    ]
    config = vlr_config(_spec(epochs=2, batch_size=128, seed=9), ("bank", "tax"))
    runs = []
    for _ in range(2):
        net = _Recorder()
        with using(net):
            result = vlr.train(parties, config)
        runs.append((net.from_dealer, result))
    (masks1, r1), (masks2, r2) = runs
    assert len(masks1) == len(masks2) > 0
    assert not set(masks1) & set(masks2)  # fresh CSPRNG randomness, whatever the seed
    # ... while the seeded schedule is the same: the models agree up to fixed-point rounding
    w1, w2 = r1.models["bank"].weights, r2.models["bank"].weights
    assert np.max(np.abs(w1 - w2)) < 1e-2
