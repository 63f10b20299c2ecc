"""The commerce scenario (商贸流通), end to end on real nodes at size small: brand, retailer,
logistics and the operator as dealer; an evaluator split of store-SKUs before PSI, PSI align on
the store-SKU key, vertical LR (brand + retailer + logistics with every coalition, and
brand + retailer), scoring of the held-out store-SKUs, stock-out AUC brand-only vs fused; an
irrelevant review site as the negative control."""

from __future__ import annotations

import pytest

from dataspace import scenarios
from dataspace.scenarios.runner import Report, run
from dataspace.scenarios.sectors import commerce
from dataspace.scenarios.sectors.vertical import evaluator_split

from .conftest import assert_steps_follow_the_ordering


@pytest.fixture(scope="module")
def report() -> Report:
    return run(scenarios.get("commerce"), size="small", seed=1, show_progress=False)


def _ids(table: object) -> set[str]:
    return {str(x) for x in table.column("entity_id").to_pylist()}  # type: ignore[attr-defined]


def test_fused_beats_brand_only_on_the_held_out_store_skus(report: Report) -> None:
    m = report.metric
    assert report.seeds == [1, 2]
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 2)
    brand, retailed, fused = (
        m.estimate(v) for v in ("brand only", "brand + retailer", "brand + retailer + logistics")
    )
    assert brand.value < retailed.value and brand.value < fused.value
    assert brand.n == retailed.n == fused.n  # the same held-out store-SKUs
    assert brand.high < fused.low  # the CIs over both seeds do not overlap
    lift = m.estimate("step: brand only → brand + retailer + logistics")
    assert lift.value == pytest.approx(fused.value - brand.value)
    assert lift.low > 0, lift  # the paired 95% CI of the lift excludes 0
    assert m.steps_significant, m.steps  # brand + retailer's step too
    # The brand-only baseline is the training job's own: trained at home on the job's rows with
    # its schedule, it scores the job's validation rows exactly as the job's own baseline did.
    assert all(r["baseline_gap"] < 1e-9 for r in report.released)


def test_held_out_store_skus_never_enter_the_training_psi_or_training(report: Report) -> None:
    s = scenarios.get("commerce")
    for r in report.released:
        seed = r["seed"]
        gen = s.generate("small", seed)
        (_, shipments), (_, watchlist) = gen.tables["brand"]
        held = set(gen.heldout["entity_id"])
        # The split is the evaluator's keyed hash of the store-SKU key, made before any PSI.
        keys = sorted(_ids(shipments) | _ids(watchlist))
        mask = evaluator_split(keys, commerce.HOLDOUT, commerce.evaluator_key(seed))
        assert {k for k, m in zip(keys, mask, strict=True) if m} == held == _ids(watchlist)
        assert not held & _ids(shipments)
        assert commerce.LABEL not in watchlist.column_names  # held-out labels: evaluator only
        # The nodes' own job records: training PSI and both training jobs read shipments only,
        # scoring PSI read the watchlist only.
        assert r["train_psi_datasets"] == r["train_job_datasets"] == f"shipments_s{seed}"
        assert r["score_psi_datasets"] == f"watchlist_s{seed}"
        retailer = _ids(gen.tables["retailer"][0][1])
        logistics = _ids(gen.tables["logistics"][0][1])
        assert r["aligned"] == r["job_rows"] == len(_ids(shipments) & retailer & logistics)
        assert r["retailer_aligned"] == len(_ids(shipments) & retailer)
        assert r["evaluated"] == r["scored"] == len(held & retailer & logistics)
        assert r["retailer_scored"] == len(held & retailer)
        assert r["fit_rows"] == r["job_rows"] - round(r["job_rows"] * commerce.VALIDATION)
        reviews = _ids(gen.tables["reviews"][0][1])
        assert r["control_aligned"] == len(_ids(shipments) & reviews)
        assert r["control_scored"] == len(held & reviews)  # the population of its own control
    control = next(c for c in report.metric.controls if c.name.startswith("held-out"))
    assert control.passed, control


def test_an_irrelevant_party_shows_no_lift(report: Report) -> None:
    m = report.metric
    lift = m.estimate(commerce.CONTROL_LIFT)
    assert lift.low <= 0, lift  # no significant lift over brand only on the same rows
    assert lift.value < m.estimate("step: brand only → brand + retailer + logistics").low
    control = next(c for c in m.controls if c.name.startswith("irrelevant party"))
    assert control.passed and "covers 0" in control.observed, control
    # Its baseline is brand only fitted on the control job's own rows, not the fused job's.
    assert all(r["control_aligned"] > r["aligned"] for r in report.released)
    assert lift.n == sum(r["control_scored"] for r in report.released)  # its own population


def test_no_raw_row_crossed_nodes_and_every_provider_is_billed(report: Report) -> None:
    # No transfer entry in any node's ledger (operator included); only PSI and training jobs.
    assert report.row_transfers == []
    assert {r["action"] for r in report.left_nodes} <= {"psi", "federated-train"}
    # Per seed and provider: 2 PSI jobs (training, scoring) at 20 CNY; the retailer is in both
    # models (2 trainings, 2 predictions at 200 CNY), the logistics provider in the fused one.
    billed = {(b["provider"], b["jobs"], b["amount"]) for b in report.bills}
    assert ("retailer", 2, "40.00") in billed and ("logistics", 2, "40.00") in billed, billed
    assert ("retailer", 4, "800.00") in billed and ("logistics", 2, "400.00") in billed, billed
    assert {("reviews", 2, "40.00"), ("reviews", 2, "400.00")} <= billed, billed
    shapley = report.metric.extra[
        "contribution (exact Shapley of the job's validation AUC, mean over seeds)"
    ]
    assert "retailer" in shapley and "logistics" in shapley
    assert report.proof["verified"] and report.proof["action"] == "mp.completed"
    assert all(r["aligned"] > 300 for r in report.released)
    m = report.metric
    print("\n" + "\n".join(f"{e.variant}: {e.value:.3f} [{e.low:.3f}, {e.high:.3f}] n={e.n}"
                           for e in m.estimates) + "\n"
          + "\n".join(f"{k}: {v}" for k, v in m.extra.items()) + f"\n{report.seconds:.0f} s")
