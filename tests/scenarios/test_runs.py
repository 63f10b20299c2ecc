"""Runnable scenarios end to end on real nodes at size small; training ones are skipped."""

from __future__ import annotations

import pytest

from dataspace import scenarios
from dataspace.scenarios.training import MESSAGE, available

# weather, carbon, health and agriculture run in test_sector_runs.py (with their own checks)
COVERED = ("weather", "carbon", "health", "agriculture")
# Scenarios with a test file of their own (test_<name>.py) are not run twice.
OWN_TESTS = ("finance", "manufacturing", "science", "urban", "commerce", "transport")
RUNNABLE = [n for n in scenarios.names()
            if not scenarios.get(n).needs_training and n not in COVERED and n not in OWN_TESTS]
TRAINING = [n for n in scenarios.names() if scenarios.get(n).needs_training]


@pytest.mark.parametrize("name", RUNNABLE)
def test_scenario_runs_and_shows_its_documented_ordering(name: str, tmp_path: object) -> None:
    from dataspace.scenarios.runner import run

    report = run(scenarios.get(name), size="small", seed=1, seeds=1, show_progress=False)
    assert report.metric.ordering_holds, report.metric
    assert all(c.passed for c in report.metric.controls), report.metric.controls
    # No raw row crossed nodes: no transfer entry in any node's ledger.
    assert report.row_transfers == []
    assert report.proof["verified"] and report.proof["action"] in (
        "mp.completed", "job.result_received")
    assert report.bills and all(b["currency"] == "CNY" for b in report.bills if b["jobs"])


@pytest.mark.parametrize("name", [n for n in TRAINING if n not in OWN_TESTS])
def test_training_scenario(name: str) -> None:
    if not available():
        pytest.skip(MESSAGE)
    if scenarios.get(name).pending:
        pytest.skip(scenarios.get(name).pending)
    from dataspace.scenarios.runner import run

    report = run(scenarios.get(name), size="small", seed=1, seeds=1, show_progress=False)
    assert report.metric.ordering_holds
