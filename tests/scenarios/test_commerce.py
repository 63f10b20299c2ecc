"""The commerce scenario (商贸流通), end to end on real nodes at size small: brand, retailer,
logistics and the operator as dealer; PSI align on the store-SKU key, vertical LR with every
coalition, next-week stock-out AUC brand-only vs fused."""

from __future__ import annotations

from dataspace import scenarios
from dataspace.scenarios.runner import run


def test_commerce_runs_fused_beats_brand_only_and_no_raw_row_crossed() -> None:
    report = run(scenarios.get("commerce"), size="small", seed=1, show_progress=False)
    m = report.metric
    assert report.seeds == [1, 2]
    assert m.ordering_holds, m
    brand, fused = m.estimate("brand only"), m.estimate("brand + retailer + logistics")
    assert brand.value < fused.value
    assert brand.high < fused.low  # the CIs over both seeds do not overlap
    # No raw row crossed nodes: no transfer entry in any node's ledger (operator included).
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"psi", "federated-train"}
    # Each provider's contribution and bill; the final result's inclusion proof verified.
    shapley = m.extra["contribution (exact Shapley of held-out AUC, mean over seeds)"]
    assert "retailer" in shapley and "logistics" in shapley
    billed = {(b["provider"], b["amount"]) for b in report.bills}
    assert {("retailer", "200.00"), ("logistics", "200.00")} <= billed
    assert report.proof["verified"] and report.proof["action"] == "mp.completed"
    assert all(r["aligned"] > 300 for r in report.released)
