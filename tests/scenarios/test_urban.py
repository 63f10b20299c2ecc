"""城市治理 care alerts end to end on real nodes at size small: PSI flags from the grid and the
water utility, the civil-affairs anomaly model, DP dashboards; no raw row crosses a node."""

from __future__ import annotations

from dataspace import scenarios
from dataspace.scenarios.runner import run

from .conftest import assert_steps_follow_the_ordering


def test_urban_power_rule_is_beaten_and_only_flags_and_dp_counts_leave() -> None:
    report = run(scenarios.get("urban"), size="small", seed=1, show_progress=False)
    m = report.metric
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 2)
    rule = m.estimate("fixed rule (power low 2 days)").value
    assert rule < m.estimate("anomaly model (power + water)").value
    assert rule < m.estimate("fixed rule (power or water low 2 days)").value
    assert all(c.passed for c in m.controls), m.controls
    # No raw row crossed nodes: no transfer entry in any ledger; only PSI and DP jobs ran.
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"psi", "dp-query"}
    assert report.proof["verified"]
    billed = {b["provider"] for b in report.bills if b["jobs"]}
    assert billed == {"power-grid", "water-utility"}


def test_the_dp_calibration_control_fails_without_noise_or_with_too_much() -> None:
    import numpy as np

    from dataspace.scenarios.sectors.urban import _dp_calibration

    laplace = np.abs(np.random.default_rng(0).laplace(0, 1, 60)) / np.log(20)  # bound: 95%
    assert _dp_calibration(laplace.tolist()).passed
    assert not _dp_calibration([0.0] * 60).passed  # no noise added
    assert not _dp_calibration((laplace * 3).tolist()).passed  # 3x the stated scale
    assert not _dp_calibration([]).passed
