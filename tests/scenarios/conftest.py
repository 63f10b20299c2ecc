"""Checks every scenario test makes of a metric."""

from __future__ import annotations

import pytest

from dataspace.scenarios.base import MetricResult


def assert_steps_follow_the_ordering(m: MetricResult, count: int) -> None:
    """``count`` claimed steps are reported, each named "step: WORSE → BETTER" (with the metric
    after " · " where a scenario has two) after two of the metric's own variants, each gain is
    the difference of those variants' point estimates, the right way round, and — the ordering
    holding on the point estimates — positive."""
    assert len(m.steps) == count, m.steps
    value = {e.variant: e.value for e in m.estimates}
    sign = -1.0 if m.lower_is_better else 1.0
    for step in m.steps:
        worse, better = step.variant.removeprefix("step: ").split(" → ")
        if " · " in better:
            better, metric = better.rsplit(" · ", 1)
            worse, better = f"{worse} · {metric}", f"{better} · {metric}"
        assert worse in value and better in value, (step, sorted(value))
        assert step.value == pytest.approx(sign * (value[better] - value[worse])), step
        assert step.value > 0, step
