"""Claimed steps of a scenario's ordering: paired gains, their CIs and how a report states them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from dataspace.scenarios.base import Estimate, MetricResult, signed, step_verdict
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
    """The gain is 0 on the first 100 entities and 1 on the other 100: its pooled mean is the
    share of the second group in a resample — always one half when each stratum is resampled
    on its own, anything from about 0.4 to 0.6 when the two are resampled together."""
    shift = np.r_[np.zeros(100), np.ones(100)]
    stats = _means({"a": np.zeros(200), "b": shift})
    [step] = paired_steps(stats, [("a", "b")], 200, [0] * 100 + [1] * 100, seed=2,
                          lower_is_better=False, reps=100)
    assert step.value == step.low == step.high == pytest.approx(0.5)
    [pooled] = paired_steps(stats, [("a", "b")], 200, [0] * 200, seed=2, lower_is_better=False,
                            reps=100)
    assert pooled.low < 0.45 and pooled.high > 0.55


def _metric(steps: list[Estimate]) -> MetricResult:
    return MetricResult(
        metric="AUC", lower_is_better=False,
        estimates=[Estimate("a", 0.6, 0.55, 0.65, 100), Estimate("b", 0.7, 0.65, 0.75, 100)],
        ordering="a < b", ordering_holds=True, seeds=[1], steps=steps,
    )


def test_significance_names_every_step_not_established_and_why() -> None:
    strong = Estimate("step: a → b", 0.1, 0.04, 0.16, 100)
    weak = Estimate("step: b → c", 0.02, -0.01, 0.05, 100)
    # a lower bound above 0 by less than twice its Monte Carlo error at 2000 resamples
    # (0.0597 bootstrap SDs; the SD here 0.166 / 3.92): another seed may put it below 0
    edge = Estimate("step: c → d", 0.082, 0.0003, 0.1663, 130)
    broken = Estimate("step: d → e", 0.01, float("nan"), float("nan"), 100)
    assert step_verdict(strong) == "significant" and _metric([strong]).steps_significant
    assert step_verdict(weak) == "paired 95% CI reaches 0"
    assert step_verdict(edge).startswith("borderline") and "(±0.0051)" in step_verdict(edge)
    assert step_verdict(Estimate("x", 0.082, 0.006, 0.1663, 130)) == "significant"
    assert step_verdict(broken) == "no finite CI"
    assert _metric([strong]).significance() == (
        "the claimed step is significant (paired 95% CI above 0)")
    assert _metric([strong, strong]).significance() == (
        "all 2 claimed steps are significant (paired 95% CI above 0)")
    m = _metric([strong, weak, edge, broken])
    assert not m.steps_significant
    assert m.significance() == (
        "3 of 4 claimed steps not established at this size: "
        "step: b → c +0.020 [-0.010, +0.050] (paired 95% CI reaches 0); "
        "step: c → d +0.082 [+0.0003, +0.166] (borderline: the CI's lower bound is within its "
        "Monte Carlo error (±0.0051) of 0); step: d → e +0.010 [+nan, +nan] (no finite CI)")
    assert not _metric([]).steps_significant
    assert not _metric([broken]).steps_significant
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
    assert "1 of 1 claimed steps not established at this size" in text


@pytest.mark.parametrize(("x", "text"), [
    (0.0, "+0.000"), (0.1234, "+0.123"), (-0.0104, "-0.010"), (1175.63, "+1175.630"),
    (0.00031, "+0.00031"), (-0.00049, "-0.00049"), (0.0004999, "+0.0005"),
])
def test_a_bound_just_off_zero_never_prints_as_zero(x: float, text: str) -> None:
    assert signed(x) == text
