"""The default scenario, finance (电力看信贷), end to end on real nodes at size small: bank, tax
bureau, power grid and the operator as dealer; PSI align, vertical LR with every coalition."""

from __future__ import annotations

from dataspace import scenarios
from dataspace.scenarios.runner import run


def test_finance_runs_fused_beats_bank_only_and_no_raw_row_crossed() -> None:
    report = run(scenarios.get("finance"), size="small", seed=1, show_progress=False)
    m = report.metric
    assert report.seeds == [1, 2]
    assert m.ordering_holds, m
    assert m.estimate("bank only").value < m.estimate("bank + tax + grid").value
    # No raw row crossed nodes: no transfer entry in any node's ledger (operator included).
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"psi", "federated-train"}
    # Each provider's contribution and bill; the final result's inclusion proof verified.
    assert "tax-bureau" in m.extra["contribution (exact Shapley of held-out AUC, mean over seeds)"]
    billed = {(b["provider"], b["amount"]) for b in report.bills}
    assert {("tax-bureau", "200.00"), ("power-grid", "200.00")} <= billed
    assert report.proof["verified"] and report.proof["action"] == "mp.completed"
    assert all(r["aligned"] > 300 for r in report.released)
