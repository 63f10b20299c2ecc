"""The default scenario, finance (电力看信贷), end to end on real nodes at size small: bank, tax
bureau, power grid, an irrelevant ad-data vendor and the operator as dealer; an evaluator split
of firms before PSI, PSI align, vertical LR (bank + tax + grid, bank + tax, bank + ad vendor),
scoring of the held-out applicants, AUC and KS for bank only → bank + tax → fused."""

from __future__ import annotations

import numpy as np
import pytest

from dataspace import scenarios
from dataspace.scenarios.runner import Report, run
from dataspace.scenarios.sectors import finance
from dataspace.scenarios.sectors.vertical import evaluator_split

from .conftest import assert_steps_follow_the_ordering


@pytest.fixture(scope="module")
def report() -> Report:
    return run(scenarios.get("finance"), size="small", seed=1, show_progress=False)


def _ids(table: object) -> set[str]:
    return {str(x) for x in table.column("entity_id").to_pylist()}  # type: ignore[attr-defined]


def test_fused_beats_bank_only_in_auc_and_ks_on_the_held_out_firms(report: Report) -> None:
    m = report.metric
    assert report.seeds == [1, 2]
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 4)
    for metric in ("AUC", "KS"):
        alone, fused = (
            m.estimate(f"bank only · {metric}"),
            m.estimate(f"bank + tax + grid · {metric}"),
        )
        assert alone.value < fused.value
        assert alone.n == fused.n  # the same held-out firms
        lift = m.estimate(f"lift: fused − bank only · {metric}")
        assert lift.value == pytest.approx(fused.value - alone.value)
        assert lift.low > 0, lift  # the paired 95% CI of the lift excludes 0
        assert 0 <= alone.low <= alone.value <= alone.high <= 1
    # The bank-only baseline is the training job's own: trained at home on the job's rows with
    # its schedule, it scores the job's validation rows exactly as the job's own baseline did.
    assert all(r["baseline_gap"] < 1e-9 for r in report.released)


def test_each_step_adds_on_the_same_held_out_firms(report: Report) -> None:
    # bank only < bank + tax < bank + tax + grid, every row on the same held-out firms. In AUC
    # both steps are significant (paired 95% CI above 0); in KS, a noisier statistic, the
    # order holds on the point estimates. (Checked on 80 seed pairs of the plaintext twin of
    # this flow at size small: the AUC order and the KS order always hold, the CI of the tax
    # step's AUC lift excludes 0 in 75 and the grid's in 79; the tax step's KS lift only in 48.)
    m = report.metric
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 4)
    for metric in ("AUC", "KS"):
        alone, taxed, fused = (
            m.estimate(f"{v} · {metric}") for v in ("bank only", "bank + tax", "bank + tax + grid")
        )
        assert alone.value < taxed.value < fused.value
        assert alone.n == taxed.n == fused.n
        for name, high, low in (
            ("bank only → bank + tax", taxed, alone),
            ("bank + tax → bank + tax + grid", fused, taxed),
        ):
            lift = m.estimate(f"step: {name} · {metric}")
            assert lift.n == fused.n
            assert lift.value == pytest.approx(high.value - low.value)
            if metric == "AUC":
                assert lift.low > 0, lift  # the paired 95% CI of the step's lift excludes 0
    assert len(m.steps) == 4  # the two steps in AUC and in KS: what the ordering claims
    for r in report.released:
        # the population: the held-out firms all three models scored, i.e. the fused model's
        assert r["evaluated"] == r["scored"] < r["tax_scored"]
        assert r["aligned"] < r["tax_aligned"]  # bank + tax trains on the bank ∩ tax firms


def test_an_irrelevant_party_shows_no_lift(report: Report) -> None:
    m = report.metric
    for metric in ("AUC", "KS"):
        lift = m.estimate(f"control lift: + ad vendor · {metric}")
        assert lift.low <= 0, lift  # no significant lift over bank only on the same rows
        assert lift.value < m.estimate(f"lift: fused − bank only · {metric}").low
    control = next(c for c in m.controls if c.name.startswith("irrelevant party"))
    assert control.passed, control


def test_a_planted_label_copy_column_is_flagged_and_training_refused(report: Report) -> None:
    assert all(r["planted_flagged"] == finance.PLANTED for r in report.released)
    control = next(c for c in report.metric.controls if c.name.startswith("planted"))
    assert control.passed and "refused" in control.observed


def test_held_out_firms_never_enter_the_training_psi_or_training(report: Report) -> None:
    s = scenarios.get("finance")
    for r in report.released:
        seed = r["seed"]
        gen = s.generate("small", seed)
        (_, loans), (_, applicants) = gen.tables["bank"]
        held = set(gen.heldout["entity_id"])
        # The split is the evaluator's keyed hash of the firm's code, made before any PSI.
        codes = sorted(_ids(loans) | _ids(applicants))
        mask = evaluator_split(codes, finance.HOLDOUT, finance.evaluator_key(seed))
        assert {c for c, m in zip(codes, mask, strict=True) if m} == held == _ids(applicants)
        assert not held & _ids(loans)
        assert finance.LABEL not in applicants.column_names  # held-out labels: evaluator only
        # The nodes' own job records: training PSI and the three training jobs read loans only,
        # scoring PSI read applicants only.
        assert r["train_psi_datasets"] == r["train_job_datasets"] == f"loans_s{seed}"
        assert r["score_psi_datasets"] == f"applicants_s{seed}"
        # The training job's rows are exactly the training firms the tax bureau and the grid
        # know; the fused model scored exactly the held-out firms both know.
        tax, grid = _ids(gen.tables["tax-bureau"][0][1]), _ids(gen.tables["power-grid"][0][1])
        assert r["aligned"] == r["job_rows"] == len(_ids(loans) & tax & grid)
        assert r["scored"] == len(held & tax & grid)
        # the bank + tax job trained on the training firms the tax bureau knows, and its model
        # scored the held-out firms the tax bureau knows
        assert r["tax_aligned"] == len(_ids(loans) & tax)
        assert r["tax_scored"] == len(held & tax)
        assert r["tax_fit_rows"] == r["tax_aligned"] - round(r["tax_aligned"] * finance.VALIDATION)
        assert r["fit_rows"] == r["job_rows"] - round(r["job_rows"] * finance.VALIDATION)
    control = next(c for c in report.metric.controls if c.name.startswith("held-out firms"))
    assert control.passed, control


def test_no_raw_row_crossed_nodes_and_every_provider_is_billed(report: Report) -> None:
    # No transfer entry in any node's ledger (operator included); only PSI and training jobs.
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"psi", "federated-train"}
    # Per seed and provider: 2 PSI jobs (training, scoring) at 20 CNY; 2 jobs under the
    # federated-train agreement (training, prediction) at 200 CNY — 4 for the tax bureau, in
    # both the fused and the bank + tax model.
    billed = {(b["provider"], b["jobs"], b["amount"]) for b in report.bills}
    for provider in ("tax-bureau", "power-grid", "ad-vendor"):
        assert (provider, 2, "40.00") in billed, billed
    for provider in ("power-grid", "ad-vendor"):
        assert (provider, 2, "400.00") in billed, billed
    assert ("tax-bureau", 4, "800.00") in billed, billed
    shapley = report.metric.extra[
        "contribution (exact Shapley of the job's validation AUC, mean over seeds)"
    ]
    assert "tax-bureau" in shapley and "power-grid" in shapley
    assert report.proof["verified"] and report.proof["action"] == "mp.completed"
    assert all(r["aligned"] > 300 for r in report.released)


def test_ks_is_the_largest_gap_between_true_and_false_positive_rates() -> None:
    from dataspace.scenarios.stats import ks

    y = np.array([0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    # flagging scores >= 0.8 catches 2/3 of positives and no negative
    assert ks(s, y) == pytest.approx(2 / 3)
    assert ks(np.ones(6), y) == 0.0  # one tied score: no threshold separates anything
    assert ks(-s, y) == 0.0  # an inverted score never beats flagging nobody
