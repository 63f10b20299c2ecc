"""Scenarios without a test file of their own, end to end on real nodes at size small."""

from __future__ import annotations

import pytest

from dataspace import scenarios

from .conftest import assert_steps_follow_the_ordering

# weather, carbon, health and agriculture run in test_sector_runs.py (with their own checks)
COVERED = ("weather", "carbon", "health", "agriculture")
# Scenarios with a test file of their own (test_<name>.py) are not run twice.
OWN_TESTS = ("finance", "manufacturing", "science", "urban", "commerce", "transport")
RUNNABLE = [n for n in scenarios.names() if n not in COVERED and n not in OWN_TESTS]
CLAIMED_STEPS = {"emergency": 2, "tourism": 1}  # random < rule < PSI; fused < one carrier


def test_every_scenario_is_run_by_some_test() -> None:
    assert set(RUNNABLE) | set(COVERED) | set(OWN_TESTS) == set(scenarios.names())


@pytest.mark.parametrize("name", RUNNABLE)
def test_scenario_runs_and_shows_its_documented_ordering(name: str, tmp_path: object) -> None:
    from dataspace.scenarios.runner import run

    report = run(scenarios.get(name), size="small", seed=1, seeds=1, show_progress=False)
    assert report.metric.ordering_holds, report.metric
    assert_steps_follow_the_ordering(report.metric, CLAIMED_STEPS[name])
    assert all(c.passed for c in report.metric.controls), report.metric.controls
    # No raw row crossed nodes: no transfer entry in any node's ledger.
    assert report.row_transfers == []
    assert report.proof["verified"] and report.proof["action"] in (
        "mp.completed", "job.result_received")
    assert report.bills and all(b["currency"] == "CNY" for b in report.bills if b["jobs"])
