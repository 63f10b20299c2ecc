"""Generators: valid check characters, 60–80% overlap, no label copy, determinism, stable hash."""

from __future__ import annotations

import numpy as np
import pytest

from dataspace import scenarios
from dataspace.samples.generate import id_check, uscc_check
from dataspace.scenarios.base import params_hash
from dataspace.scenarios.stats import label_copy_flags


def _keys(gen: scenarios.base.Generated, party: str) -> set[str]:
    return {str(k) for _, t in gen.tables[party] for k in t.column("entity_id").to_pylist()}


def test_every_sector_of_the_action_plan_has_one_scenario() -> None:
    assert len({s.sector for s in scenarios.all()}) == len(scenarios.all()) >= 9


def test_credit_codes_and_id_numbers_carry_valid_check_characters() -> None:
    fin = scenarios.get("finance").generate("small", 3)
    for code in _keys(fin, "bank"):
        assert code[-1] == uscc_check(code[:17])
    urban = scenarios.get("urban").generate("small", 3)
    for code in _keys(urban, "civil-affairs"):
        assert len(code) == 18 and code[-1] == id_check(code[:17])
    emg = scenarios.get("emergency").generate("small", 3)
    for code in emg.tables["emergency-bureau"][0][1].column("credit_code").to_pylist():
        assert code[-1] == uscc_check(code[:17])


@pytest.mark.parametrize("name", ["finance", "transport", "urban"])
def test_providers_cover_sixty_to_eighty_percent_of_the_consumers_entities(name: str) -> None:
    s = scenarios.get(name)
    gen = s.generate("default", 5)
    parties = s.parties()
    mine = _keys(gen, parties[0].name)
    for p in parties[1:]:
        share = len(mine & _keys(gen, p.name)) / len(mine)
        assert 0.6 <= share <= 0.8, (p.name, share)


def test_emergency_grid_serves_sixty_to_eighty_percent_of_ordered_plants() -> None:
    gen = scenarios.get("emergency").generate("default", 2)
    share = float(np.mean(gen.heldout["served"]))
    assert 0.6 <= share <= 0.8


@pytest.mark.parametrize("name", scenarios.names())
def test_generation_is_deterministic_by_seed_and_the_params_hash_is_stable(name: str) -> None:
    s = scenarios.get(name)
    a, b, c = s.generate("small", 7), s.generate("small", 7), s.generate("small", 8)
    for party, tables in a.tables.items():
        for (n1, t1), (n2, t2) in zip(tables, b.tables[party], strict=True):
            assert n1 == n2 and t1.equals(t2)
    assert a.params_sha256 == b.params_sha256 == c.params_sha256
    assert a.params_sha256 == params_hash({"version": a.version, **a.params})
    assert len(a.params_sha256) == 64


@pytest.mark.parametrize("name", [n for n in scenarios.names() if scenarios.get(n).needs_training])
def test_no_single_feature_copies_the_label(name: str) -> None:
    s = scenarios.get(name)
    gen = s.generate("default", 1)
    consumer = s.parties()[0].name
    label = getattr(s, "label", None) or s.spec.label  # type: ignore[attr-defined]
    table = gen.tables[consumer][0][1]
    feats = {c: np.asarray(table.column(c).to_pylist(), float)
             for c in table.column_names if c not in ("entity_id", label)}
    assert label_copy_flags(feats, np.asarray(table.column(label).to_pylist(), float)) == []


def test_a_planted_label_copy_column_is_caught_and_flagged() -> None:
    s = scenarios.get("finance")
    table = s.generate("default", 1).tables["bank"][0][1]
    y = np.asarray(table.column("delinquent_90d").to_pylist(), float)
    rng = np.random.default_rng(0)
    feats = {"account_flow": np.asarray(table.column("account_flow").to_pylist(), float),
             "planted_copy": y + rng.normal(0, 0.01, len(y))}
    assert label_copy_flags(feats, y) == ["planted_copy"]


def test_fit_logistic_recovers_known_weights() -> None:
    import numpy as np

    from dataspace.scenarios.common import fit_logistic

    rng = np.random.default_rng(5)
    x = rng.normal(size=(20_000, 2))
    truth = np.array([-1.0, 2.0, -0.5])
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(truth[0] + x @ truth[1:])))).astype(float)
    assert np.allclose(fit_logistic(x, y), truth, atol=0.08)


def test_emergency_placebo_weeks_are_each_plants_weeks_before_its_order() -> None:
    gen = scenarios.get("emergency").generate("small", 3)
    (_, orders), (_, placebo) = gen.tables["emergency-bureau"]
    first = {}
    for code, week in zip(orders.column("credit_code").to_pylist(),
                          orders.column("week").to_pylist(), strict=True):
        first[code] = min(first.get(code, week), week)
    for code, week in zip(placebo.column("credit_code").to_pylist(),
                          placebo.column("week").to_pylist(), strict=True):
        assert "2026-W06" <= week < first[code]  # drawn from week 6 on, before the order
