"""Every template round-trips through JSON-LD and evaluates as documented."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from dataspace.policy import (
    Policy,
    PolicyError,
    PolicyType,
    Price,
    evaluate,
    from_template,
    lint_policy,
    list_templates,
    parse_policy,
    to_jsonld,
)

from .helpers import NOW, req

EXPIRES = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
COMMON: dict[str, Any] = {"purposes": ["finance"], "price": "100.00 CNY", "max_jobs": 50,
                          "region": "CN", "uid": "urn:offer:1", "target": "urn:ds:1"}
PARAMS: dict[str, dict[str, Any]] = {
    "aggregate-only": {"min_group_size": 20, "fields": ["income", "district"]},
    "dp-stats": {"epsilon": 2.0, "delta": 1e-6, "fields": "income,district"},
    "psi-only": {"max_peer_set": 200_000},
    "federated-train": {"epsilon": "3"},
    "secure-aggregate": {"epsilon": "2", "min_group_size": 3},
    "raw-transfer": {"expires": EXPIRES.isoformat(), "fields": ["income"]},
}
# a request each template allows
GOOD: dict[str, dict[str, Any]] = {
    "aggregate-only": {"action": "governed-query", "fields": {"income"},
                       "output": "aggregate-only"},
    "dp-stats": {"action": "dp-query", "fields": {"income"}, "output": "aggregate-only",
                 "epsilon": 0.5, "epsilon_spent": 1.5, "delta": 0, "delta_spent": 1e-6},
    "psi-only": {"action": "psi", "output": "aggregate-only"},
    "federated-train": {"action": "federated-train", "output": "aggregate-only",
                        "epsilon": 1, "epsilon_spent": 0},
    "secure-aggregate": {"action": "secure-aggregate", "output": "aggregate-only",
                         "epsilon": 1, "epsilon_spent": 0, "fields": {"income"}},
    "raw-transfer": {"action": "transfer", "fields": {"income"}, "output": "raw"},
}
FACTS = {"purpose": "credit-risk", "region": "CN-31", "jobs_run": 3, "now": NOW,
         "target": "urn:ds:1"}


def _build(name: str) -> Policy:
    return from_template(name, **COMMON, **PARAMS[name])


def test_every_template_is_listed_with_a_description() -> None:
    names = [t.name for t in list_templates()]
    assert names == ["aggregate-only", "dp-stats", "psi-only", "federated-train",
                     "secure-aggregate", "raw-transfer"]
    assert all(t.description and "\n" not in t.description for t in list_templates())
    assert set(PARAMS) == set(names)


@pytest.mark.parametrize("name", list(PARAMS))
def test_template_round_trips_and_is_lint_clean(name: str) -> None:
    policy = _build(name)
    assert policy.type is PolicyType.OFFER
    assert parse_policy(to_jsonld(policy)) == policy
    assert lint_policy(policy) == ()


@pytest.mark.parametrize("name", list(PARAMS))
def test_template_allows_its_request(name: str) -> None:
    decision = evaluate(_build(name), req(**FACTS, **GOOD[name]))
    assert decision.allowed, [r.message for r in decision.failures]
    assert decision.enforcement is not None
    assert decision.enforcement.price == Price(Decimal("100.00"), "CNY")
    assert decision.enforcement.jobs_remaining == 47
    assert [o.action for o in decision.obligations] == ["compensate"]


@pytest.mark.parametrize("name", list(PARAMS))
@pytest.mark.parametrize(("change", "value"), [
    ("purpose", "marketing"), ("region", "HK"), ("jobs_run", 50), ("purpose", None),
])
def test_template_denies_wrong_purpose_region_or_count(name: str, change: str,
                                                       value: Any) -> None:
    facts = {**FACTS, **GOOD[name], change: value}
    assert not evaluate(_build(name), req(**facts)).allowed


@pytest.mark.parametrize("name", list(PARAMS))
def test_template_denies_other_actions(name: str) -> None:
    for action in ("governed-query", "dp-query", "psi", "federated-train", "transfer"):
        if action != GOOD[name]["action"]:
            facts = {**FACTS, **GOOD[name], "action": action}
            assert not evaluate(_build(name), req(**facts)).allowed, action


def test_aggregate_only_enforcement() -> None:
    decision = evaluate(_build("aggregate-only"), req(**FACTS, **GOOD["aggregate-only"]))
    e = decision.enforcement
    assert e is not None
    assert (e.min_group_size, e.max_output, e.allowed_fields) == (
        20, "aggregate-only", {"income", "district"})
    assert not evaluate(_build("aggregate-only"),
                        req(**FACTS, **{**GOOD["aggregate-only"], "output": "raw"})).allowed
    assert not evaluate(_build("aggregate-only"),
                        req(**FACTS, **{**GOOD["aggregate-only"], "fields": {"name"}})).allowed


def test_dp_stats_budget() -> None:
    e = evaluate(_build("dp-stats"), req(**FACTS, **GOOD["dp-stats"])).enforcement
    assert e is not None
    assert (e.epsilon_budget, e.epsilon_remaining, e.min_group_size) == (2.0, 0.5, 10)
    over = {**GOOD["dp-stats"], "epsilon": 0.6}
    assert not evaluate(_build("dp-stats"), req(**FACTS, **over)).allowed


def test_raw_transfer_expires_and_may_be_pseudonymized() -> None:
    policy = _build("raw-transfer")
    late = {**FACTS, "now": datetime(2027, 1, 1, tzinfo=UTC)}
    assert not evaluate(policy, req(**late, **GOOD["raw-transfer"])).allowed
    e = evaluate(policy, req(**FACTS, **GOOD["raw-transfer"])).enforcement
    assert e is not None and e.expires_at == EXPIRES and e.max_output == "raw"
    pseudo = from_template("raw-transfer", purposes=["finance"], expires=EXPIRES,
                           output="pseudonymized")
    facts = {**FACTS, **GOOD["raw-transfer"]}
    assert not evaluate(pseudo, req(**facts)).allowed
    assert evaluate(pseudo, req(**{**facts, "output": "pseudonymized"})).allowed


def test_minimal_template_has_no_price_and_no_limits() -> None:
    policy = from_template("psi-only", purposes="research")
    decision = evaluate(policy, req("psi", purpose="academic-research", output="aggregate-only"))
    assert decision.allowed and decision.obligations == ()
    assert decision.enforcement is not None and decision.enforcement.price is None


@pytest.mark.parametrize(("name", "params", "message"), [
    ("raw-dump", {}, "unknown template 'raw-dump'"),
    ("dp-stats", {"purposes": ["finance"]}, "needs parameter 'epsilon'"),
    ("dp-stats", {"purposes": ["finance"], "epsilon": 1, "k": 5}, "no parameter 'k'"),
    ("aggregate-only", {}, "needs parameter 'purposes'"),
    ("aggregate-only", {"purposes": ["astrology"]}, "unknown purpose"),
    ("aggregate-only", {"purposes": "finance", "min_group_size": 0}, "'min_group_size'"),
    ("aggregate-only", {"purposes": "finance", "min_group_size": "many"}, "'min_group_size': "
     "'many' is invalid: expected a positive integer such as 10"),  # not int()'s own words
    ("aggregate-only", {"purposes": "finance", "min_group_size": 1e400}, "'min_group_size'"),
    ("aggregate-only", {"purposes": "finance", "min_group_size": True}, "'min_group_size'"),
    ("dp-stats", {"purposes": "finance", "epsilon": -1}, "'epsilon'"),
    ("dp-stats", {"purposes": "finance", "epsilon": "inf"}, "'epsilon'"),
    ("dp-stats", {"purposes": "finance", "epsilon": 0}, "'epsilon': 0 is invalid: expected a "
     "positive number"),
    ("dp-stats", {"purposes": "finance", "epsilon": 1, "delta": 1}, "'delta': 1 is invalid: "
     "expected a number from 0 up to (not including) 1"),
    ("dp-stats", {"purposes": "finance", "epsilon": 1, "delta": -0.1}, "'delta'"),
    ("psi-only", {"purposes": "finance", "price": "lots"}, "'price'"),
    ("psi-only", {"purposes": "finance", "price": "-1 CNY"}, "'price'"),
    ("psi-only", {"purposes": "finance", "region": "MARS"}, "'region'"),
    ("psi-only", {"purposes": "finance", "output": "everything"}, "'output'"),
    ("psi-only", {"purposes": []}, "'purposes'"),
    ("raw-transfer", {"purposes": "finance", "expires": "2026-12-31T00:00:00"}, "'expires'"),
    ("raw-transfer", {"purposes": "finance", "expires": "soon"}, "'expires': 'soon' is invalid: "
     "expected an ISO 8601 date-time with its UTC offset"),
])
def test_template_errors_are_clear(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as info:
        from_template(name, **params)
    assert message in info.value.message


def test_unknown_template_and_parameter_list_the_valid_ones() -> None:
    with pytest.raises(PolicyError) as info:
        from_template("nope")
    assert info.value.hint is not None and "dp-stats" in info.value.hint
    with pytest.raises(PolicyError) as info:
        from_template("dp-stats", purposes="finance", epsilon=1, colour="red")
    assert info.value.hint is not None and "min_group_size" in info.value.hint
