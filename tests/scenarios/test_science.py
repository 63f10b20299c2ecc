"""科技创新 (science, QSAR) end to end on real nodes at size small: three labs, FedAvg with secure
aggregation; AUC-PR per lab, alone vs federated, the mean over labs improving — and not under
concept shift (the negative control)."""

from __future__ import annotations

from dataspace import scenarios
from dataspace.scenarios.runner import run

from .conftest import assert_steps_follow_the_ordering


def test_science_federated_beats_alone_on_mean_auc_pr_and_no_raw_row_crossed() -> None:
    report = run(scenarios.get("science"), size="small", seed=1, show_progress=False)
    m = report.metric
    assert report.seeds == [1, 2]
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 1)
    labs = ("lab-a", "lab-b", "lab-c")
    alone = sum(m.estimate(f"{lab} alone").value for lab in labs) / 3
    fed = sum(m.estimate(f"{lab} federated").value for lab in labs) / 3
    assert alone < fed
    # the negative control: labs whose mechanisms differ gain nothing from averaging
    [control] = m.controls
    assert control.passed, control
    s_alone = sum(m.estimate(f"concept shift: {lab} alone").value for lab in labs) / 3
    s_fed = sum(m.estimate(f"concept shift: {lab} federated").value for lab in labs) / 3
    assert s_fed <= s_alone
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"federated-train"}
    billed = {(b["provider"], b["amount"]) for b in report.bills}
    assert {("lab-b", "150.00"), ("lab-c", "150.00")} <= billed
    assert report.proof["verified"] and report.proof["action"] == "mp.completed"
