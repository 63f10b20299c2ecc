"""Vertical LR on secret shares: parity with plaintext LR, value of fusion, what is opened."""

from __future__ import annotations

import numpy as np
import pytest

from dataspace.federated import (
    PartyData,
    TrainConfig,
    VflResult,
    auc,
    fit_newton,
    make_vertical,
    predict,
    train,
    train_plain,
)
from dataspace.federated.baseline import prepare
from dataspace.federated.errors import InvalidTrainingInput, MpcProtocolError
from dataspace.federated.plan import make_plan

ROWS, HELD_OUT = 5000, 1000
CONFIG = TrainConfig(epochs=15, batch_size=256, seed=3)


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]:
    d = make_vertical(ROWS + HELD_OUT, {"bank": 5, "tax": 5, "grid": 5}, seed=11)
    train_blocks = {k: v[:ROWS] for k, v in d.blocks.items()}
    test_blocks = {k: v[ROWS:] for k, v in d.blocks.items()}
    return train_blocks, d.labels[:ROWS], test_blocks, d.labels[ROWS:]


def _parties(blocks: dict[str, np.ndarray], labels: np.ndarray) -> list[PartyData]:
    return [PartyData(k, v, labels if k == "bank" else None) for k, v in blocks.items()]


@pytest.fixture(scope="module")
def fused(data) -> VflResult:  # type: ignore[no-untyped-def]
    blocks, labels, _, _ = data
    return train(_parties(blocks, labels), CONFIG)


def _held_out_auc(result: VflResult, data) -> float:  # type: ignore[no-untyped-def]
    _, _, test, test_labels = data
    features = {k: test[k] for k in result.models}
    return auc(predict(result.models, features, label_party="bank").scores, test_labels)


def _plain_auc(data, names: list[str]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    blocks, labels, test, test_labels = data
    chosen = [blocks[k] for k in names]
    w, b, _ = train_plain(chosen, labels, CONFIG)
    plan = make_plan(ROWS, CONFIG)
    pooled, scalers = prepare(chosen, plan, CONFIG.clip)
    x_test = np.hstack([s.transform(test[k]) for s, k in zip(scalers, names, strict=True)])
    wn, bn = fit_newton(pooled[plan.train], labels[plan.train], CONFIG.l2)
    return auc(x_test @ w + b, test_labels), auc(x_test @ wn + bn, test_labels)


def test_auc_is_within_0_005_of_plaintext_lr_on_the_same_rows(fused: VflResult, data) -> None:  # type: ignore[no-untyped-def]
    vfl = _held_out_auc(fused, data)
    same_schedule, converged = _plain_auc(data, ["bank", "tax", "grid"])
    assert abs(vfl - same_schedule) < 0.005
    assert abs(vfl - converged) < 0.005
    assert vfl > 0.75


def test_fused_model_beats_the_bank_alone_on_held_out_rows(fused: VflResult, data) -> None:  # type: ignore[no-untyped-def]
    blocks, labels, _, _ = data
    bank_tax = train(_parties({k: blocks[k] for k in ("bank", "tax")}, labels), CONFIG)
    bank_only, _ = _plain_auc(data, ["bank"])
    assert bank_only + 0.03 < _held_out_auc(bank_tax, data) < _held_out_auc(fused, data)


def test_only_the_validation_score_is_opened_during_training(fused: VflResult) -> None:
    during = [o for o in fused.openings if o.step.startswith("epoch")]
    assert len(during) == fused.epochs_run
    assert all(o.shape == (1,) and "Brier" in o.what for o in during)
    assert all(o.to == fused.compute_parties for o in during)
    assert fused.masked_openings > fused.iterations


def test_each_weight_block_is_opened_to_its_owner_only(fused: VflResult) -> None:
    released = [o for o in fused.openings if o.step == "release"]
    assert sorted(o.to for o in released) == [("bank",), ("grid",), ("tax",)]
    assert fused.models["bank"].intercept is not None
    assert fused.models["tax"].intercept is None
    assert fused.models["grid"].weights.shape == (5,)


def test_the_grid_computes_nothing_and_the_dealer_is_an_outsider(fused: VflResult) -> None:
    assert fused.compute_parties == ("bank", "tax")
    assert fused.dealer not in fused.models
    grid_sent = {k: v for k, v in fused.bytes_by_link.items() if k.startswith("grid->")}
    assert set(grid_sent) == {"grid->bank", "grid->tax"}  # its shares, once


def test_early_stopping_keeps_the_best_epoch(data) -> None:  # type: ignore[no-untyped-def]
    blocks, labels, _, _ = data
    config = TrainConfig(epochs=40, batch_size=512, learning_rate=2.0, lr_decay=0.0,
                         patience=2, min_delta=1e-3)
    result = train(_parties(blocks, labels), config)
    briers = [e.validation_brier for e in result.validation]
    assert result.epochs_run < 40
    assert result.epochs_run - 1 - result.best_epoch == config.patience
    assert briers[result.best_epoch] <= min(briers) + config.min_delta


def test_prediction_is_revealed_only_to_the_requester(fused: VflResult, data) -> None:  # type: ignore[no-untyped-def]
    _, _, test, _ = data
    pred = predict(fused.models, test, label_party="bank", to="tax")
    [opening] = pred.openings
    assert opening.to == ("tax",)
    local = sum(m.partial_score(test[k]) for k, m in fused.models.items())
    assert np.abs(pred.scores - local).max() < 1e-3
    assert ((pred.probabilities > 0) & (pred.probabilities < 1)).all()


def test_misaligned_rows_are_refused(data) -> None:  # type: ignore[no-untyped-def]
    blocks, labels, _, _ = data
    parties = [PartyData("bank", blocks["bank"], labels), PartyData("tax", blocks["tax"][:-1])]
    with pytest.raises(InvalidTrainingInput, match="align"):
        train(parties, CONFIG)


def test_labels_at_two_parties_are_refused(data) -> None:  # type: ignore[no-untyped-def]
    blocks, labels, _, _ = data
    parties = [PartyData("bank", blocks["bank"], labels), PartyData("tax", blocks["tax"], labels)]
    with pytest.raises(InvalidTrainingInput, match="exactly one party"):
        train(parties, CONFIG)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(InvalidTrainingInput):
        TrainConfig(validation_fraction=0.0)
    with pytest.raises(InvalidTrainingInput, match="at most 28"):
        TrainConfig(frac_bits=24, data_frac_bits=16)  # no room left for the step size


def test_a_step_too_small_for_the_fixed_point_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    blocks, labels, _, _ = data
    config = TrainConfig(epochs=10, batch_size=4096, learning_rate=0.005, lr_decay=1.0)
    with pytest.raises(InvalidTrainingInput, match="learning_rate / batch size"):
        train(_parties(blocks, labels), config)


def test_the_most_precise_settings_train_like_plaintext(fused: VflResult, data) -> None:  # type: ignore[no-untyped-def]
    """frac_bits + data_frac_bits at the limit (28): the step keeps its 30 bits, and the
    validation squares (2 x 20 bits) are truncated exactly before they are summed."""
    blocks, labels, test, test_labels = data
    config = TrainConfig(epochs=6, batch_size=256, seed=3, frac_bits=20, data_frac_bits=8)
    result = train(_parties(blocks, labels), config)
    features = {k: test[k] for k in result.models}
    vfl = auc(predict(result.models, features, label_party="bank").scores, test_labels)
    names = list(blocks)
    w, b, _ = train_plain([blocks[k] for k in names], labels, config)
    plan = make_plan(ROWS, config)
    _, scalers = prepare([blocks[k] for k in names], plan, config.clip)
    x_test = np.hstack([s.transform(test[k]) for s, k in zip(scalers, names, strict=True)])
    assert abs(vfl - auc(x_test @ w + b, test_labels)) < 0.005
    # the same schedule as the default-precision run: the same validation curve
    precise = [e.validation_brier for e in result.validation]
    default = [e.validation_brier for e in fused.validation][: len(precise)]
    assert np.allclose(precise, default, atol=1e-3)


def test_an_impossible_validation_loss_fails_the_run_instead_of_being_kept(
    data, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from dataspace.federated import vlr

    blocks, labels, _, _ = data
    monkeypatch.setattr(vlr._Session, "validation_loss", lambda self, w, d=None: -7.5e7)
    with pytest.raises(MpcProtocolError, match="cannot be"):  # was: kept as the best epoch
        train(_parties(blocks, labels), TrainConfig(epochs=1, batch_size=1024, seed=3))


def test_validation_squares_truncated_to_make_room_give_the_same_score(
    data, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """A very large validation split at high precision truncates the squares (exactly) before
    summing them; forced here by claiming 30 bits of headroom for each square."""
    from dataspace.federated import vlr

    blocks, labels, _, _ = data
    config = TrainConfig(epochs=2, batch_size=512, seed=3, frac_bits=20, data_frac_bits=8)
    plain = [e.validation_brier for e in train(_parties(blocks, labels), config).validation]
    monkeypatch.setattr(vlr, "SQUARE_BITS", 30)  # shift = 40 + 30 + 10 - 61 = 19 bits
    shifted = train(_parties(blocks, labels), config)
    assert np.allclose([e.validation_brier for e in shifted.validation], plain, atol=1e-5)
    assert plain[0] != plain[1]  # two different scores, both reproduced
