"""Vertical linear regression on secret shares: parity with plaintext least squares and
numpy SGD on the same schedule, value of fusion, what is opened, bad input refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dataspace.federated import vlinreg
from dataspace.federated.errors import InvalidTrainingInput
from dataspace.federated.metrics import regression_metrics
from dataspace.federated.plan import TrainConfig
from dataspace.federated.vlr import PartyData

ROWS, HELD_OUT = 3000, 600
CONFIG = TrainConfig(epochs=20, batch_size=256, learning_rate=0.1, lr_decay=0.1, seed=4)
NAMES = ("rail", "port", "trucking")


def _make(seed: int = 21) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Six latent factors, two seen (noisily) by each party; the target (hours) depends on
    all six plus a shock nobody sees."""
    rng = np.random.default_rng(seed)
    n = ROWS + HELD_OUT
    z = rng.normal(size=(n, 6))
    blocks = {}
    for k, name in enumerate(NAMES):
        view = z[:, 2 * k : 2 * k + 2] @ rng.normal(size=(2, 3)) + rng.normal(0, 0.4, (n, 3))
        blocks[name] = view * rng.uniform(1.0, 40.0, 3) + rng.normal(0, 50.0, 3)
    y = 72.0 + z @ np.array([6.0, 4.0, 9.0, 5.0, 6.0, 5.0]) + rng.normal(0, 4.0, n)
    return blocks, y


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    return _make()


@pytest.fixture(scope="module")
def fused(data: tuple[dict[str, np.ndarray], np.ndarray]) -> vlinreg.LinregResult:
    blocks, y = data
    parties = [PartyData(k, v[:ROWS], y[:ROWS] if k == "rail" else None) for k, v in blocks.items()]
    return vlinreg.train(parties, CONFIG)


def _held_out(blocks: dict[str, np.ndarray], names: tuple[str, ...]) -> list[np.ndarray]:
    return [blocks[k][ROWS:] for k in names]


def test_secret_shared_linear_regression_matches_plaintext_sgd_and_least_squares(
    data: tuple[dict[str, np.ndarray], np.ndarray], fused: vlinreg.LinregResult
) -> None:
    blocks, y = data
    prediction = vlinreg.predict(
        fused.models, {k: v[ROWS:] for k, v in blocks.items()}, label_party="rail"
    )
    vfl = regression_metrics(prediction.values, y[ROWS:])
    plain = vlinreg.train_plain_linear([blocks[k][:ROWS] for k in NAMES], y[:ROWS], CONFIG)
    same_schedule = regression_metrics(plain.predict(_held_out(blocks, NAMES)), y[ROWS:])
    # ordinary least squares on the pooled raw columns, solved exactly
    design = np.column_stack([np.ones(ROWS), *(blocks[k][:ROWS] for k in NAMES)])
    beta = np.linalg.lstsq(design, y[:ROWS], rcond=None)[0]
    test_design = np.column_stack([np.ones(HELD_OUT), *_held_out(blocks, NAMES)])
    ols = regression_metrics(test_design @ beta, y[ROWS:])
    assert abs(vfl["rmse"] - same_schedule["rmse"]) < 0.01, (vfl, same_schedule)
    assert abs(vfl["rmse"] - ols["rmse"]) < 0.05 * ols["rmse"], (vfl, ols)
    # row by row the predictions equal the plaintext model's within fixed-point error
    assert np.max(np.abs(prediction.values - plain.predict(_held_out(blocks, NAMES)))) < 0.05
    # the validation curve is the plaintext one (MSE of the standardised target)
    curve = [e.validation_mse for e in fused.validation]
    assert np.allclose(curve, plain.validation[: len(curve)], atol=2e-3)
    assert fused.target.mean == pytest.approx(plain.target.mean)


def test_fused_beats_the_label_party_alone(
    data: tuple[dict[str, np.ndarray], np.ndarray], fused: vlinreg.LinregResult
) -> None:
    blocks, y = data
    alone = vlinreg.train_plain_linear([blocks["rail"][:ROWS]], y[:ROWS], CONFIG)
    rail = regression_metrics(alone.predict(_held_out(blocks, ("rail",))), y[ROWS:])
    prediction = vlinreg.predict(
        fused.models, {k: v[ROWS:] for k, v in blocks.items()}, label_party="rail"
    )
    both = regression_metrics(prediction.values, y[ROWS:])
    assert both["mae"] < 0.7 * rail["mae"], (both, rail)
    assert both["r2"] > rail["r2"] + 0.2


def test_only_the_validation_error_and_each_owners_weights_are_opened(
    data: tuple[dict[str, np.ndarray], np.ndarray], fused: vlinreg.LinregResult
) -> None:
    blocks, _ = data
    during = [o for o in fused.openings if o.step.startswith("epoch")]
    assert {o.what for o in during} == {"validation squared error (sum)"}
    assert all(o.shape == (1,) and set(o.to) == set(fused.compute_parties) for o in during)
    released = [o for o in fused.openings if o.step == "release"]
    assert sorted((o.what, o.to) for o in released) == sorted(
        (f"weights of {p} (to its owner)", (p,)) for p in NAMES
    )
    assert fused.masked_openings > 0
    # the target scaling stays with the label party's part; the others hold none
    assert fused.models["rail"].target is not None and fused.models["rail"].intercept is not None
    assert all(fused.models[p].target is None for p in ("port", "trucking"))
    prediction = vlinreg.predict(
        fused.models, {k: v[ROWS:] for k, v in blocks.items()}, label_party="rail"
    )
    assert [o.to for o in prediction.openings] == [("rail",)]


def test_bad_targets_are_refused_with_a_clear_error(
    data: tuple[dict[str, np.ndarray], np.ndarray],
) -> None:
    blocks, y = data
    x = {k: v[:200] for k, v in blocks.items()}
    bad = y[:200].copy()
    bad[3] = np.nan
    with pytest.raises(InvalidTrainingInput, match="missing or infinite"):
        vlinreg.train([PartyData("rail", x["rail"], bad), PartyData("port", x["port"])], CONFIG)
    with pytest.raises(InvalidTrainingInput, match="exactly one party"):
        vlinreg.train(
            [PartyData("rail", x["rail"], y[:200]), PartyData("port", x["port"], y[:200])], CONFIG
        )
    with pytest.raises(InvalidTrainingInput, match="rows"):
        vlinreg.train(
            [PartyData("rail", x["rail"], y[:200]), PartyData("port", blocks["port"][:150])],
            CONFIG,
        )


def test_predict_needs_the_label_partys_target_scaling(
    data: tuple[dict[str, np.ndarray], np.ndarray], fused: vlinreg.LinregResult
) -> None:
    blocks, _ = data
    stripped = {**fused.models, "rail": replace(fused.models["rail"], target=None)}
    with pytest.raises(InvalidTrainingInput, match="target scaling"):
        vlinreg.predict(stripped, {k: v[ROWS:] for k, v in blocks.items()}, label_party="rail")


def test_decide_overrides_the_stopping_rule_and_the_best_epoch_is_kept(
    data: tuple[dict[str, np.ndarray], np.ndarray],
) -> None:
    """``decide`` (across nodes: the label party's decisions) sees each epoch's validation
    squared error and its (loss, improved, stop) is followed: here epoch 0 is the best and the
    run stops after epoch 2, so the weights opened are epoch 0's, not the last epoch's."""
    blocks, y = data
    parties = [PartyData(k, v[:ROWS], y[:ROWS] if k == "rail" else None) for k, v in blocks.items()]
    seen: list[float] = []

    def decide(loss: float) -> tuple[float, bool, bool]:
        seen.append(loss)
        return loss, len(seen) == 1, len(seen) == 3

    stopped = vlinreg.train(parties, CONFIG, decide=decide)
    assert (stopped.epochs_run, stopped.best_epoch) == (3, 0)
    assert [e.validation_mse for e in stopped.validation] == seen
    assert seen[2] < seen[0]  # still improving: only ``decide`` made it stop and keep epoch 0
    one = vlinreg.train(parties, replace(CONFIG, epochs=1))
    three = vlinreg.train(parties, replace(CONFIG, epochs=3))
    for name in NAMES:
        kept = stopped.models[name].weights
        assert np.allclose(kept, one.models[name].weights, atol=2e-3)
        assert not np.allclose(kept, three.models[name].weights, atol=2e-3)
