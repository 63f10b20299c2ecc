"""Checks every scenario test makes of a metric."""

from __future__ import annotations

from dataspace.scenarios.base import MetricResult


def assert_steps_follow_the_ordering(m: MetricResult) -> None:
    """The claimed steps are reported, and with the ordering holding on the point estimates each
    step's gain is positive: the steps measure the ordering's own comparisons, the right way."""
    assert m.steps, m
    for step in m.steps:
        assert step.variant.startswith("step: ") and step.value > 0, step
        assert step.low <= step.value <= step.high, step
