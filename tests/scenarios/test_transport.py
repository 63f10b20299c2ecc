"""The transport scenario (交通运输), end to end on real nodes at size small: rail, port,
trucking and the operator as dealer; PSI align on the one-waybill number, governed SQL on the
port's terminals, vertical linear regression (vlinreg) with every coalition; ETA error
rail-only vs fused, on an evaluator split of waybills made before PSI."""

from __future__ import annotations

import itertools
import random

import pytest

from dataspace import scenarios
from dataspace.scenarios.runner import Report, run
from dataspace.scenarios.sectors import transport
from dataspace.scenarios.sectors.transport import luhn_digit, waybill_number
from dataspace.scenarios.sectors.vertical import evaluator_split

from .conftest import assert_steps_follow_the_ordering


def test_waybill_numbers_carry_a_valid_luhn_check_digit() -> None:
    rng = random.Random(3)
    numbers = [waybill_number(rng, d) for d in range(28)]
    assert all(n.startswith("YD24") and len(n) == 18 for n in numbers)
    assert all(luhn_digit(n[:-1]) == n[-1] for n in numbers)
    changed = numbers[0][:-2] + str((int(numbers[0][-2]) + 1) % 10) + numbers[0][-1]
    assert luhn_digit(changed[:-1]) != changed[-1]  # one altered digit is caught


@pytest.fixture(scope="module")
def report() -> Report:
    return run(scenarios.get("transport"), size="small", seed=1, show_progress=False)


def _ids(table: object) -> set[str]:
    return {str(x) for x in table.column("entity_id").to_pylist()}  # type: ignore[attr-defined]


def test_fused_beats_rail_only_on_the_held_out_waybills(report: Report) -> None:
    m = report.metric
    assert report.seeds == [1, 2]
    assert m.lower_is_better
    rail, fused = m.estimate("rail only"), m.estimate("rail + port + trucking (VFL)")
    ported = m.estimate("rail + port (VFL)")
    assert fused.value < rail.value
    assert fused.high < rail.low  # the CIs over both seeds do not overlap
    assert ported.value < rail.value
    assert rail.n == ported.n == fused.n == m.estimate(transport.SQL).n  # the same waybills
    cut = m.estimate("MAE reduction: rail only − rail + port + trucking (VFL)")
    assert cut.value == pytest.approx(rail.value - fused.value)
    assert cut.low > 0, cut  # the paired 95% CI of the MAE reduction excludes 0
    # each link of the chain, as the MAE the better variant saves over the one before it
    chain = [transport.ALONE, transport.SQL, transport.PORTED, transport.FUSED]
    for (a, b), step in zip(itertools.pairwise(chain), m.steps, strict=True):
        assert step.variant == f"step: {a} → {b}"
        assert step.value == pytest.approx(m.estimate(a).value - m.estimate(b).value)
    assert m.steps_significant, m.steps
    assert_steps_follow_the_ordering(m, 3)
    # The rail-only baseline is the training job's own: fitted at home on the job's rows with
    # its schedule, it predicts the job's validation rows exactly as the job's own baseline did.
    assert all(r["baseline_gap"] < 1e-6 for r in report.released)


def test_held_out_waybills_never_enter_the_training_psi_or_training(report: Report) -> None:
    s = scenarios.get("transport")
    for r in report.released:
        seed = r["seed"]
        gen = s.generate("small", seed)
        (_, waybills), (_, en_route) = gen.tables["rail"]
        held = set(gen.heldout["entity_id"])
        # The split is the evaluator's keyed hash of the waybill number, made before any PSI.
        keys = sorted(_ids(waybills) | _ids(en_route))
        mask = evaluator_split(keys, transport.HOLDOUT, transport.evaluator_key(seed))
        assert {k for k, m in zip(keys, mask, strict=True) if m} == held == _ids(en_route)
        assert not held & _ids(waybills)
        assert transport.LABEL not in en_route.column_names  # held-out labels: evaluator only
        # The nodes' own job records: training PSI and both training jobs read waybills only,
        # scoring PSI read en_route only.
        assert r["train_psi_datasets"] == r["train_job_datasets"] == f"waybills_s{seed}"
        assert r["score_psi_datasets"] == f"en_route_s{seed}"
        port, trucks = _ids(gen.tables["port"][0][1]), _ids(gen.tables["trucking"][0][1])
        assert r["aligned"] == r["job_rows"] == len(_ids(waybills) & port & trucks)
        assert r["port_aligned"] == len(_ids(waybills) & port)
        assert r["evaluated"] == r["scored"] == len(held & port & trucks)
        assert r["port_scored"] == len(held & port)
        assert r["fit_rows"] == r["job_rows"] - round(r["job_rows"] * transport.VALIDATION)
        insured = _ids(gen.tables["insurer"][0][1])
        assert r["control_aligned"] == len(_ids(waybills) & insured)
        assert r["control_scored"] == len(held & insured)  # the population of its own control
    control = next(c for c in report.metric.controls if c.name.startswith("held-out"))
    assert control.passed, control


def test_an_irrelevant_party_does_not_reduce_the_error(report: Report) -> None:
    m = report.metric
    reduction = m.estimate(transport.CONTROL_REDUCTION)
    assert reduction.low <= 0, reduction  # no significant MAE reduction on the same rows
    fused = m.estimate("MAE reduction: rail only − rail + port + trucking (VFL)")
    assert reduction.value < fused.low
    control = next(c for c in m.controls if c.name.startswith("irrelevant party"))
    assert control.passed and "covers 0" in control.observed, control
    assert all(r["control_aligned"] > r["aligned"] for r in report.released)
    assert reduction.n == sum(r["control_scored"] for r in report.released)  # its own population


def test_no_raw_row_crossed_nodes_and_every_provider_is_billed(report: Report) -> None:
    m = report.metric
    # No raw row crossed nodes: no transfer entry in any node's ledger (operator included).
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"psi", "federated-train", "governed-query"}
    # Each provider's contribution and bill; the final result's inclusion proof verified.
    shapley = m.extra[
        "contribution (exact Shapley of the MAE reduction on the job's validation split, "
        "hours, mean over seeds)"
    ]
    assert "port" in shapley and "trucking" in shapley
    # Per seed and provider: 2 PSI jobs (training, scoring) at 20 CNY; the port is in both
    # models (2 trainings, 2 predictions at 200 CNY) and answers one SQL query (10 CNY), the
    # trucking platform is in the fused model.
    billed = {(b["provider"], b["jobs"], b["amount"]) for b in report.bills}
    assert {("port", 2, "40.00"), ("port", 4, "800.00"), ("port", 1, "10.00")} <= billed, billed
    assert {("trucking", 2, "40.00"), ("trucking", 2, "400.00")} <= billed, billed
    assert {("insurer", 2, "40.00"), ("insurer", 2, "400.00")} <= billed, billed
    assert report.proof["verified"] and report.proof["action"] == "mp.completed"
    assert all(r["aligned"] > 300 and r["sql_groups"] == 6 for r in report.released)
    print(
        "\n"
        + "\n".join(f"{e.variant}: {e.value:.2f} [{e.low:.2f}, {e.high:.2f}] n={e.n}"
                    for e in m.estimates)
        + "\n"
        + "\n".join(f"{k}: {v}" for k, v in m.extra.items())
        + f"\nordering holds: {m.ordering_holds}; {report.seconds:.0f} s"
        + f"\nbills: {sorted(billed)}"
    )
