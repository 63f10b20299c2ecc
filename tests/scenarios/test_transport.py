"""The transport scenario (交通运输), end to end on real nodes at size small: rail, port,
trucking and the operator as dealer; PSI align on the one-waybill number, governed SQL on the
port's terminals, vertical linear regression (vlinreg) with every coalition; ETA error
rail-only vs fused."""

from __future__ import annotations

import random

from dataspace import scenarios
from dataspace.scenarios.runner import run
from dataspace.scenarios.sectors.transport import luhn_digit, waybill_number


def test_waybill_numbers_carry_a_valid_luhn_check_digit() -> None:
    rng = random.Random(3)
    numbers = [waybill_number(rng, d) for d in range(28)]
    assert all(n.startswith("YD24") and len(n) == 18 for n in numbers)
    assert all(luhn_digit(n[:-1]) == n[-1] for n in numbers)
    changed = numbers[0][:-2] + str((int(numbers[0][-2]) + 1) % 10) + numbers[0][-1]
    assert luhn_digit(changed[:-1]) != changed[-1]  # one altered digit is caught


def test_transport_runs_fused_beats_rail_only_and_no_raw_row_crossed() -> None:
    report = run(scenarios.get("transport"), size="small", seed=1, show_progress=False)
    m = report.metric
    assert report.seeds == [1, 2]
    assert m.lower_is_better
    rail, fused = m.estimate("rail only"), m.estimate("rail + port + trucking (VFL)")
    assert fused.value < rail.value
    assert fused.high < rail.low  # the CIs over both seeds do not overlap
    assert m.estimate("rail + port (VFL)").value < rail.value
    # No raw row crossed nodes: no transfer entry in any node's ledger (operator included).
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"psi", "federated-train", "governed-query"}
    # Each provider's contribution and bill; the final result's inclusion proof verified.
    shapley = m.extra["contribution (exact Shapley of the MAE reduction, hours, mean over seeds)"]
    assert "port" in shapley and "trucking" in shapley
    billed = {(b["provider"], b["amount"]) for b in report.bills}
    assert {("port", "200.00"), ("trucking", "200.00")} <= billed
    assert report.proof["verified"] and report.proof["action"] == "mp.completed"
    assert all(r["aligned"] > 300 and r["sql_groups"] == 6 for r in report.released)
    print(
        "\n"
        + "\n".join(f"{e.variant}: {e.value:.2f} [{e.low:.2f}, {e.high:.2f}] n={e.n}"
                    for e in m.estimates)
        + "\n"
        + "\n".join(f"{k}: {v}" for k, v in m.extra.items())
        + f"\nordering holds: {m.ordering_holds}; {report.seconds:.0f} s"
    )
