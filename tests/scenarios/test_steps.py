"""Claimed steps of a scenario's ordering: paired gains, their CIs and how a report states them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from dataspace.scenarios.base import Estimate, MetricResult, signed
from dataspace.scenarios.common import estimates, paired_steps, step_name
from dataspace.scenarios.report import render
from dataspace.scenarios.runner import Report


def _means(columns: dict[str, np.ndarray]) -> dict[str, object]:
    return {k: (lambda idx, v=v: float(v[idx].mean())) for k, v in columns.items()}


def test_a_constant_shift_is_its_own_gain_with_a_zero_width_interval() -> None:
    base = np.random.default_rng(1).normal(size=400)
    stats = _means({"a": base, "b": base + 0.1})
    [step] = paired_steps(stats, [("a", "b")], 400, [0] * 400, seed=3, lower_is_better=False,
                          reps=200)
    assert step.variant == step_name("a", "b") == "step: a → b"
    assert step.value == pytest.approx(0.1)
    assert step.low == pytest.approx(0.1) and step.high == pytest.approx(0.1)
    assert step.n == 400


def test_pairing_separates_a_small_gain_that_unpaired_intervals_cannot() -> None:
    """Entities differ a lot (sd 1), the variants by 0.05 each: the per-variant CIs overlap, the
    paired CI of the difference lies above 0."""
    rng = np.random.default_rng(7)
    entity = rng.normal(size=1000)
    stats = _means({"a": entity, "b": entity + 0.05 + rng.normal(scale=0.05, size=1000)})
    strata = [0] * 1000
    a, b = estimates(stats, 1000, strata, seed=1)
    assert a.high > b.low  # the bars overlap
    [step] = paired_steps(stats, [("a", "b")], 1000, strata, seed=1, lower_is_better=False,
                          reps=500)
    assert 0 < step.low < 0.05 < step.high < 0.06


def test_lower_is_better_counts_a_fall_as_a_gain() -> None:
    errors = np.linspace(1.0, 2.0, 300)
    stats = _means({"worse": errors, "better": errors - 0.25})
    [step] = paired_steps(stats, [("worse", "better")], 300, [0] * 300, seed=0,
                          lower_is_better=True, reps=100)
    assert step.value == pytest.approx(0.25) and step.low > 0
    [wrong_way] = paired_steps(stats, [("better", "worse")], 300, [0] * 300, seed=0,
                               lower_is_better=True, reps=100)
    assert wrong_way.value == pytest.approx(-0.25) and wrong_way.high < 0


def test_resamples_stay_within_their_strata() -> None:
    """Two strata, the gain 0 in one and 1 in the other: a mean over strata is 0.5 on every
    resample, so a stratified paired CI has zero width."""
    x = np.zeros(200)
    shift = np.r_[np.zeros(100), np.ones(100)]
    strata = [0] * 100 + [1] * 100

    def over_strata(v: np.ndarray):  # type: ignore[no-untyped-def]
        labels = np.asarray(strata)
        return lambda idx: float(np.mean([v[idx][labels[idx] == g].mean() for g in (0, 1)]))

    stats = {"a": over_strata(x), "b": over_strata(x + shift)}
    [step] = paired_steps(stats, [("a", "b")], 200, strata, seed=2, lower_is_better=False,
                          reps=100)
    assert step.value == step.low == step.high == pytest.approx(0.5)


def _metric(steps: list[Estimate]) -> MetricResult:
    return MetricResult(
        metric="AUC", lower_is_better=False,
        estimates=[Estimate("a", 0.6, 0.55, 0.65, 100), Estimate("b", 0.7, 0.65, 0.75, 100)],
        ordering="a < b", ordering_holds=True, seeds=[1], steps=steps,
    )


def test_significance_names_every_step_whose_interval_reaches_zero() -> None:
    strong = Estimate("step: a → b", 0.1, 0.04, 0.16, 100)
    weak = Estimate("step: b → c", 0.02, -0.01, 0.05, 100)
    edge = Estimate("step: c → d", 0.03, 0.0, 0.06, 100)  # a CI touching 0 is not above it
    assert _metric([strong]).steps_significant
    assert _metric([strong]).significance() == (
        "the claimed step is significant (paired 95% CI above 0)")
    assert _metric([strong, strong]).significance() == (
        "all 2 claimed steps are significant (paired 95% CI above 0)")
    m = _metric([strong, weak, edge])
    assert not m.steps_significant
    assert m.significance() == (
        "2 of 3 claimed steps not significant at this size (paired 95% CI reaches 0): "
        "step: b → c +0.020 [-0.010, +0.050]; step: c → d +0.030 [+0.000, +0.060]")
    assert not _metric([]).steps_significant
    assert m.estimate("step: b → c") is weak  # steps are found by name like estimates


def test_the_printed_report_shows_the_steps_and_says_which_are_not_significant() -> None:
    metric = _metric([Estimate("step: a → b", 0.02, -0.01, 0.05, 100)])
    report = Report(
        scenario="x", size="small", seeds=[1], params_sha256={1: "0" * 64},
        generator_version="1", contributed=[], left_nodes=[], row_transfers=[], bills=[],
        metric=metric, checkpoint="checkpoint", urls={}, seconds=1.0,
        proof={"node": "n", "index": 0, "action": "a", "tree_size": 1},
    )
    out = io.StringIO()
    render(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "step: a → b" in text and "+0.020" in text and "[-0.010, +0.050]" in text
    assert "ordering a < b: holds on the point estimates" in text
    assert "1 of 1 claimed steps not significant at this size" in text


@pytest.mark.parametrize(("x", "text"), [
    (0.0, "+0.000"), (0.1234, "+0.123"), (-0.0104, "-0.010"), (1175.63, "+1175.630"),
    (0.00031, "+0.00031"), (-0.00049, "-0.00049"), (0.0004999, "+0.0005"),
])
def test_a_bound_just_off_zero_never_prints_as_zero(x: float, text: str) -> None:
    assert signed(x) == text
