"""The weather, carbon, health and agriculture scenarios end to end on real nodes (size small,
one seed): the documented ordering, no raw row across nodes (from the ledgers), and what each
scenario promises beyond that (DP error stated, provenance in the ledger, real public data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataspace import scenarios
from dataspace.scenarios.base import ScenarioError
from dataspace.scenarios.runner import Report, run

from .conftest import assert_steps_follow_the_ordering

MINE = ("weather", "carbon", "health", "agriculture")


def _run(name: str, data: str = "synthetic", seeds: int = 1) -> Report:
    return run(scenarios.get(name), size="small", seed=1, seeds=seeds, data=data,
               show_progress=False)


def _no_rows_crossed(report: Report) -> None:
    assert report.row_transfers == []  # no transfer entry in any node's ledger
    assert report.proof["verified"]
    assert all(b["currency"] == "CNY" for b in report.bills if b["jobs"])


def test_primary_data_via_secure_aggregation_beats_secondary_factors() -> None:
    report = _run("carbon")
    assert report.metric.ordering_holds, report.metric
    assert_steps_follow_the_ordering(report.metric, 2)
    assert all(c.passed for c in report.metric.controls), report.metric.controls
    _no_rows_crossed(report)


@pytest.mark.parametrize("interchangeable", [False, True])
def test_carbon_placebo_fails_when_any_products_data_would_do(interchangeable: bool) -> None:
    """The placebo gives each product its neighbour's fused footprint. With footprints that
    differ by product it is worse than the secondary factors (the gain is each product's own
    primary data); with interchangeable products it is as good as the real thing and the
    control fails -- the fused gain would then be a level correction, not primary data."""
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    truth = np.full(12, 10.0) if interchangeable else rng.uniform(2, 40, 12)
    per_supplier = {"s": truth}
    released = {"secondary": list(truth * 1.3), "partial": list(truth * 1.1),
                "fused": list(truth * 1.01), "products": 12}
    generated = SimpleNamespace(heldout={"truth": truth, "per_supplier": per_supplier})
    metric = scenarios.get("carbon").metric([(1, generated, released)])
    placebo = [c for c in metric.controls if c.name.startswith("placebo")]
    assert len(placebo) == 1 and placebo[0].passed is (not interchangeable)


def test_weather_index_lowers_basis_risk_and_misses_fewer_big_losses() -> None:
    report = _run("weather")
    assert report.metric.ordering_holds, report.metric
    assert_steps_follow_the_ordering(report.metric, 1)
    assert all(c.passed for c in report.metric.controls), report.metric.controls
    own, fused, placebo = report.metric.estimates
    assert fused.value > own.value
    # another season's weather gains nothing over the insurer's own index
    assert placebo.low <= 0 and placebo.value < fused.value - own.value
    missed = {k: float(v.split()[0]) for k, v in report.metric.extra.items()
              if k.startswith("missed-big-loss")}
    assert missed["missed-big-loss rate, fused index (stations + bureau losses)"] <= min(
        missed.values())
    _no_rows_crossed(report)


def test_test_recognition_states_dp_error_and_needs_id_normalisation() -> None:
    report = _run("health")
    m = report.metric
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 3)
    assert any("DP counts" in k and "bound" in v for k, v in m.extra.items())
    assert all(c.passed for c in m.controls), m.controls  # raw IDs miss C's spaced ones
    _no_rows_crossed(report)
    dp_rows = [r for r in report.left_nodes if r["action"] == "dp-query"]
    assert {r["node"] for r in dp_rows} == {"hospital-b", "hospital-c"}


def test_residue_sampling_ranks_better_and_records_the_plan_provenance() -> None:
    # two seeds, as the docs page: with weights fitted on the lab history, not hand-picked,
    # the governed-SQL prior's gain over the PSI flags is a few lots out of 31 per seed
    report = _run("agriculture", seeds=2)
    m = report.metric
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 2)
    assert all(c.passed for c in m.controls)
    _no_rows_crossed(report)
    released = report.released[0]
    prov = json.loads(released["provenance"])
    assert prov["prov:wasDerivedFrom"][0] == "market_lots_s1"
    assert [j["kind"] for j in prov["jobs"]] == ["psi", "psi", "governed-query"]
    assert all(len(j["result_sha256"]) == 64 for j in prov["jobs"])


@pytest.mark.parametrize("name", ["health", "agriculture"])
def test_real_public_data_shows_the_lift(name: str) -> None:
    pytest.importorskip("sklearn")
    report = _run(name, data="public")
    m = report.metric
    assert "scikit-learn" in m.metric
    assert m.ordering_holds, m
    assert_steps_follow_the_ordering(m, 1)
    _no_rows_crossed(report)


def test_public_data_is_refused_clearly_where_there_is_none() -> None:
    with pytest.raises(ScenarioError, match="synthetic data only"):
        scenarios.get("weather").generate("small", 1, "public")


def test_public_data_without_scikit_learn_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from dataspace.scenarios import public

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ScenarioError) as info:
        public.load("load_diabetes")
    assert "scikit-learn" in str(info.value.hint)


def test_identifiers_carry_valid_check_characters() -> None:
    from dataspace.samples.generate import id_check, uscc_check

    gen = scenarios.get("health").generate("small", 4)
    orders = gen.tables["hospital-a"][0][1]
    for code in orders.column("patient_id").to_pylist():
        assert len(code) == 18 and code[-1] == id_check(code[:17])
    agri = scenarios.get("agriculture").generate("small", 4)
    batches = dict(agri.tables["agri-bureau"])["farm_batches"]
    for code in batches.column("producer_code").to_pylist():
        assert code[-1] == uscc_check(code[:17])
