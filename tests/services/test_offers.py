"""Offers: templates, policy files, and every way an offer is refused."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dataspace.errors import NotFound, UsageError
from dataspace.policy import PolicyError, from_template, parse_policy, to_jsonld
from dataspace.samples import SAMPLES_DIR as SAMPLES
from dataspace.services import datasets, ledger, offers
from dataspace.services.node import Node


@pytest.fixture
def tax(node: Node) -> Iterator[Node]:
    datasets.add(node, SAMPLES / "tax_records.csv", name="tax-records", domain="finance",
                 actor="t")
    yield node


def _actions(node: Node) -> list[str]:
    return [e["entry"]["action"] for e in ledger.entries(node, limit=1000)]


def test_template_offer_is_bound_to_the_dataset_and_logged(tax: Node) -> None:
    view = offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                         params={"purposes": "finance", "fields": "所属行业,开票金额"},
                         price="100 CNY", auto_approve=True)
    policy = parse_policy(view["policy"])
    assert view["id"].startswith("urn:uuid:") and policy.uid == view["id"]
    assert policy.target == view["dataset"] and policy.assigner == tax.name
    assert view["price"] == {"currency": "CNY", "per_job": "100 CNY"}
    assert "offer.created" in _actions(tax)
    assert [o["id"] for o in offers.list_offers(tax)] == [view["id"]]


@pytest.mark.parametrize(("written", "shown"), [("1e3 CNY", "1000"), ("1E-7 CNY", "0.0000001")])
def test_a_price_in_exponent_form_is_shown_as_people_write_it(
    tax: Node, written: str, shown: str
) -> None:
    """`--price "1e3 CNY"` was shown as 1E+3 CNY in the offer, the catalog's policy and
    the agreement."""
    view = offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                         params={"purposes": "finance"}, price=written)
    assert view["price"]["per_job"] == f"{shown} CNY"
    duty = view["policy"]["permission"][0]["duty"][0]["constraint"][0]
    assert duty["rightOperand"] == shown and "E" not in json.dumps(view["price"])


def test_policy_file_offer(tax: Node) -> None:
    doc = to_jsonld(from_template("psi-only", purposes=["anti-fraud"]))
    view = offers.create(tax, "tax-records", actor="t", policy=doc)
    assert view["policy"]["permission"][0]["action"] == "psi"
    assert view["auto_approve"] is False


def test_bad_policy_names_the_json_path(tax: Node) -> None:
    doc: dict[str, Any] = {"@type": "Offer", "permission": [
        {"action": "governed-query",
         "constraint": [{"leftOperand": "purpose", "operator": "like", "rightOperand": "x"}]}]}
    with pytest.raises(PolicyError) as err:
        offers.create(tax, "tax-records", actor="t", policy=doc)
    assert "permission[0].constraint[0].operator" in err.value.message


def test_unevaluable_policy_is_refused(tax: Node) -> None:
    doc = {"@type": "Offer", "permission": [
        {"action": "use",
         "constraint": [{"leftOperand": "spatial", "operator": "eq", "rightOperand": "EU"}]}]}
    with pytest.raises(PolicyError, match="unknown left operand 'spatial'"):
        offers.create(tax, "tax-records", actor="t", policy=doc)


def _priced(*prices: Any) -> dict[str, Any]:
    """A governed-query offer with one compensate duty per price (a (amount, unit) pair)."""
    return {"@type": "Offer", "permission": [
        {"action": "governed-query",
         "constraint": [{"leftOperand": "purpose", "operator": "eq", "rightOperand": "finance"}],
         "duty": [{"action": "compensate", "constraint": [
             {"leftOperand": "price", "operator": "eq", "rightOperand": amount, "unit": unit}]}
                  for amount, unit in prices]}]}


def test_a_price_written_as_a_json_fraction_is_refused(tax: Node) -> None:
    """0.1000000000000000055511151231257827 and 0.1 are one binary float: the price the
    provider wrote cannot be known, so the offer is refused rather than stored as 0.1."""
    with pytest.raises(PolicyError, match=r'write it as a string, e\.g\. "12\.50"'):
        offers.create(tax, "tax-records", actor="t", policy=_priced((0.1, "CNY")))
    assert offers.list_offers(tax) == []
    view = offers.create(tax, "tax-records", actor="t", policy=_priced((12, "CNY")))
    assert view["price"]["per_job"] == "12 CNY"


def test_compensate_duties_asking_different_prices_are_refused(tax: Node) -> None:
    """Metering bills one per-job price an offer: a second price would never be billed."""
    for second in (("7", "USD"), ("6", "CNY")):
        with pytest.raises(PolicyError, match="bills one price per job") as err:
            offers.create(tax, "tax-records", actor="t", policy=_priced(("5", "CNY"), second))
        assert err.value.details["path"] == "permission[0].duty[1].constraint[0]"
    assert offers.list_offers(tax) == []
    view = offers.create(tax, "tax-records", actor="t",
                         policy=_priced(("5", "CNY"), ("5.00", "cny")))
    assert view["price"]["per_job"] == "5 CNY"


def test_an_offer_that_permits_nothing_or_has_already_ended_is_refused(tax: Node) -> None:
    with pytest.raises(PolicyError, match="no permission"):
        offers.create(tax, "tax-records", actor="t", policy={"@type": "Offer"})
    with pytest.raises(PolicyError, match="ended already"):
        offers.create(tax, "tax-records", actor="t", template="raw-transfer",
                      params={"purposes": "research", "expires": "2001-01-01T00:00:00+08:00"})
    with pytest.raises(PolicyError, match="not a number"):
        offers.create(tax, "tax-records", actor="t", template="dp-stats",
                      params={"purposes": "research", "epsilon": "abc"})
    assert offers.list_offers(tax) == []  # nothing was published


def test_unknown_dataset(node: Node) -> None:
    with pytest.raises(NotFound):
        offers.create(node, "nope", actor="t", template="aggregate-only",
                      params={"purposes": "finance"})


def test_unknown_field_is_refused_with_its_path(tax: Node) -> None:
    """A policy error like any other (exit 3), with the dataset's columns listed."""
    from dataspace.policy import PolicyError

    with pytest.raises(PolicyError,
                       match=r"permission\[0\]\.constraint\[3\].*'salary'") as refused:
        offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                      params={"purposes": "finance", "fields": "所属行业,salary"})
    assert refused.value.exit_code == 3 and "纳税人识别号" in str(refused.value.hint)


def test_dp_offer_needs_epsilon_and_numeric_bounds(tax: Node) -> None:
    dp = {"template": "dp-stats", "params": {"purposes": "finance", "epsilon": "2"}}
    with pytest.raises(UsageError, match="--dp-epsilon-per-query"):
        offers.create(tax, "tax-records", actor="t", **dp)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--dp-bounds"):
        offers.create(tax, "tax-records", actor="t", dp_epsilon_per_query=0.5,
                      **dp)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not numeric"):
        offers.create(tax, "tax-records", actor="t", dp_epsilon_per_query=0.5,
                      dp_bounds={"所属行业": (0, 1)}, **dp)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="exceeds the policy's ε budget"):
        offers.create(tax, "tax-records", actor="t", dp_epsilon_per_query=5,
                      dp_bounds={"开票金额": (0, 1e7)}, **dp)  # type: ignore[arg-type]
    view = offers.create(tax, "tax-records", actor="t", dp_epsilon_per_query=0.5,
                         dp_bounds={"开票金额": (0, 1e7)}, max_contributions=3,
                         **dp)  # type: ignore[arg-type]
    assert view["dp"]["bounds"] == {"开票金额": [0, 1e7]}
    assert view["dp"]["max_contributions"] == 3
    assert "contributor_column" not in view["dp"]  # the identifier column stands in (if any)
    with pytest.raises(UsageError, match="'企业', which the dataset lacks"):
        offers.create(tax, "tax-records", actor="t", dp_epsilon_per_query=0.5,
                      dp_bounds={"开票金额": (0, 1e7)}, contributor_column="企业",
                      **dp)  # type: ignore[arg-type]
    view = offers.create(tax, "tax-records", actor="t", dp_epsilon_per_query=0.5,
                         dp_bounds={"开票金额": (0, 1e7)}, contributor_column="纳税人识别号",
                         **dp)  # type: ignore[arg-type]
    assert view["dp"]["contributor_column"] == "纳税人识别号"


def test_a_dp_delta_no_agreement_could_pay_is_refused(tax: Node) -> None:
    """Without a δ budget (or a smaller one) every grouped query would fail at its first run
    with a misleading 'ask fewer queries'."""
    bounds = {"开票金额": (0, 1e7)}
    for params, budget in (({"purposes": "finance", "epsilon": "2"}, "(none: 0)"),
                           ({"purposes": "finance", "epsilon": "2", "delta": "1e-7"}, "1e-07")):
        with pytest.raises(UsageError, match=re.escape(f"δ budget {budget}")):
            offers.create(tax, "tax-records", actor="t", template="dp-stats", params=params,
                          dp_epsilon_per_query=0.5, dp_bounds=bounds, dp_delta=1e-6)
    ungrouped_only = offers.create(tax, "tax-records", actor="t", template="dp-stats",
                                   params={"purposes": "finance", "epsilon": "2"},
                                   dp_epsilon_per_query=0.5, dp_bounds=bounds)
    assert ungrouped_only["dp"]["delta"] == 0
    paid = offers.create(tax, "tax-records", actor="t", template="dp-stats",
                         params={"purposes": "finance", "epsilon": "2", "delta": "1e-5"},
                         dp_epsilon_per_query=0.5, dp_bounds=bounds, dp_delta=1e-6)
    assert paid["dp"]["delta"] == 1e-6


def test_dp_parameters_without_dp_query_are_refused(tax: Node) -> None:
    with pytest.raises(UsageError, match="does not permit dp-query"):
        offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                      params={"purposes": "finance"}, dp_epsilon_per_query=1.0)
    # the contributor column is no DP parameter: governed SQL counts k by it
    view = offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                         params={"purposes": "finance"}, contributor_column="纳税人识别号")
    assert view["dp"] == {"contributor_column": "纳税人识别号"}
    with pytest.raises(UsageError, match="'企业', which the dataset lacks"):
        offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                      params={"purposes": "finance"}, contributor_column="企业")


def test_policy_and_template_are_exclusive(tax: Node) -> None:
    with pytest.raises(UsageError):
        offers.create(tax, "tax-records", actor="t")


def test_withdraw_is_logged_and_not_repeatable(tax: Node) -> None:
    from dataspace.errors import Conflict

    view = offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                         params={"purposes": "finance"})
    assert offers.withdraw(tax, view["id"], actor="t")["state"] == "withdrawn"
    with pytest.raises(Conflict):
        offers.withdraw(tax, view["id"], actor="t")
    assert "offer.withdrawn" in _actions(tax)


def test_cli_style_parsers() -> None:
    assert offers.parse_bounds(["a=0:10"]) == {"a": (0.0, 10.0)}
    assert offers.parse_params(["min-group-size=5"]) == {"min_group_size": "5"}
    for bad in (["a0:10"], ["a=10:0"], ["a=x:1"]):
        with pytest.raises(UsageError):
            offers.parse_bounds(bad)


def test_an_offer_can_take_a_share_of_training_revenue_pools(tax: Node) -> None:
    view = offers.create(tax, "tax-records", actor="t", template="federated-train",
                         params={"purposes": "finance"}, price="10 CNY", contribution_share=True)
    assert view["price"] == {"currency": "CNY", "per_job": "10 CNY", "contribution_share": True}
    with pytest.raises(UsageError, match="needs the offer's currency"):
        offers.create(tax, "tax-records", actor="t", template="federated-train",
                      params={"purposes": "finance"}, contribution_share=True)
    floor = offers.create(tax, "tax-records", actor="t", template="federated-train",
                          params={"purposes": "finance"}, price="10 CNY",
                          contribution_share=True, min_revenue_pool="1000 CNY")
    assert floor["price"]["min_revenue_pool"] == "1000 CNY"
    with pytest.raises(PolicyError, match="min_revenue_pool is in USD"):
        offers.create(tax, "tax-records", actor="t", template="federated-train",
                      params={"purposes": "finance"}, price="10 CNY",
                      contribution_share=True, min_revenue_pool="5 USD")
    with pytest.raises(UsageError, match="needs --contribution-share"):
        offers.create(tax, "tax-records", actor="t", template="federated-train",
                      params={"purposes": "finance"}, price="10 CNY", min_revenue_pool="5 CNY")
    with pytest.raises(UsageError, match="permits no federated-train"):
        offers.create(tax, "tax-records", actor="t", template="aggregate-only",
                      params={"purposes": "finance"}, price="10 CNY", contribution_share=True)


DP_PARAMS = {"purposes": "finance", "epsilon": "2", "delta": "1e-5"}


def test_a_dp_offer_below_the_datas_rows_per_contributor_warns_its_provider(tax: Node) -> None:
    """Each firm has two returns in the sample: at m = 1 every DP query would count one of
    them, and the provider is told so (in the answer only, not in the published offer)."""
    dp = {"template": "dp-stats", "params": DP_PARAMS, "dp_epsilon_per_query": 0.5,
          "dp_delta": 1e-6, "dp_bounds": {"开票金额": (0, 1e7)}}  # fmt: skip
    view = offers.create(tax, "tax-records", actor="t", **dp)  # type: ignore[arg-type]
    [warning] = view["warnings"]
    assert "up to 2 rows per 纳税人识别号" in warning and "--max-contributions 2" in warning
    assert "warnings" not in offers.show(tax, view["id"])
    view = offers.create(tax, "tax-records", actor="t", max_contributions=2,
                         **dp)  # type: ignore[arg-type]
    assert "warnings" not in view
    view = offers.create(tax, "tax-records", actor="t", contributor_column="纳税人名称",
                         **dp)  # type: ignore[arg-type]
    assert "rows per 纳税人名称" in view["warnings"][0]
    before = len(offers.list_offers(tax))
    with pytest.raises(UsageError, match="max_contributions"):  # not quietly taken as 1
        offers.create(tax, "tax-records", actor="t", max_contributions=0,
                      **dp)  # type: ignore[arg-type]
    assert len(offers.list_offers(tax)) == before


def test_a_dp_offer_spending_no_delta_warns_that_grouped_queries_will_be_refused(
    tax: Node,
) -> None:
    view = offers.create(tax, "tax-records", actor="t", template="dp-stats",
                         params={"purposes": "finance", "epsilon": "2"}, max_contributions=2,
                         dp_epsilon_per_query=0.5, dp_bounds={"开票金额": (0, 1e7)})
    assert view["warnings"] == [
        "--dp-delta is 0: DP queries with GROUP BY will be refused (a group's key comes from "
        "the data; releasing it needs δ > 0), only overall figures run"]


def test_the_warning_scan_failing_does_not_undo_the_offer(tax: Node) -> None:
    from dataspace.services.job_policy import contributors_of

    with tax.store.read() as session:
        path = contributors_of(tax, session, "tax-records", None).path
    path.rename(path.with_suffix(".moved"))  # the file cannot be read for the count
    try:
        view = offers.create(tax, "tax-records", actor="t", template="dp-stats",
                             params={"purposes": "finance", "epsilon": "2", "delta": "1e-5"},
                             dp_epsilon_per_query=0.5, dp_delta=1e-6,
                             dp_bounds={"开票金额": (0, 1e7)})
    finally:
        path.with_suffix(".moved").rename(path)
    assert view["warnings"][0].startswith("could not count the rows per 纳税人识别号")
    assert offers.show(tax, view["id"])["id"] == view["id"]


def test_the_provider_is_told_which_of_several_identifiers_counts(
    node: Node, tmp_path: Path
) -> None:
    """Two identifier columns (a patient's and a doctor's ID): the heuristic picks one, and
    the provider, who knows which is the person, is told so it can name the other."""
    from dataspace.samples.generate import id_check

    def pid(n: int) -> str:
        first = f"3301061950{n % 12 + 1:02d}{n % 28 + 1:02d}{n:03d}"
        return first + id_check(first)

    lines = ["doctor_id,patient_id,diagnosis"]
    lines += [f"{pid(900 + n % 4)},{pid(n)},common" for n in range(200)]
    (tmp_path / "visits.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    datasets.add(node, tmp_path / "visits.csv", name="visits", actor="t")
    view = offers.create(node, "visits", actor="t", template="aggregate-only",
                         params={"purposes": "health"})
    assert view["warnings"] == ["k (and any DP cut) counts contributors by doctor_id, not by "
                                "patient_id: if another column identifies the person, name it "
                                "with --contributor-column"]  # fmt: skip
    named = offers.create(node, "visits", actor="t", template="aggregate-only",
                          params={"purposes": "health"}, contributor_column="patient_id")
    assert "warnings" not in named


def test_the_cut_warning_counts_rows_as_the_cut_does(node: Node, tmp_path: Path) -> None:
    """Five 'pending' rows are no person (the cut leaves them uncut): no warning that the
    data has 5 rows per person_id."""
    lines = ["person_id,amount"] + [f"P{n:04d},{n}" for n in range(40)] + ["pending,1"] * 5
    (tmp_path / "loans.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    datasets.add(node, tmp_path / "loans.csv", name="loans", actor="t")
    datasets.reclassify(node, "loans", column="person_id", category="id_card_cn", actor="t")
    dp = {"template": "dp-stats", "params": DP_PARAMS, "dp_epsilon_per_query": 0.5,
          "dp_delta": 1e-6, "dp_bounds": {"amount": (0, 100)}}  # fmt: skip
    assert "warnings" not in offers.create(node, "loans", actor="t", **dp)  # type: ignore[arg-type]
    (tmp_path / "loans.csv").write_text("\n".join([*lines, "P0001,2"]) + "\n", encoding="utf-8")
    datasets.add(node, tmp_path / "loans.csv", name="loans2", actor="t")
    datasets.reclassify(node, "loans2", column="person_id", category="id_card_cn", actor="t")
    [warning] = offers.create(node, "loans2", actor="t", **dp)["warnings"]  # type: ignore[arg-type]
    assert warning.startswith("the dataset has up to 2 rows per person_id")


@pytest.mark.parametrize("level", ["important", "core"])
def test_an_offer_of_important_data_keeps_results_in_china_and_core_data_is_not_offered(
    node: Node, tmp_path: Path, level: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('version = 1\n[[rule]]\nid = "ids"\ndescription = "resident IDs"\n'
                     f'level = "{level}"\ncategories = ["id_card_cn"]\n', encoding="utf-8")
    node.config["catalog"] = {"grading_rules": str(rules)}
    view = datasets.add(node, SAMPLES / "patients.jsonl", name="patients", actor="t")
    assert view["grading"]["level"] == level
    if level == "core":
        with pytest.raises(UsageError, match="graded core data"):
            offers.create(node, "patients", actor="t", template="aggregate-only",
                          params={"purposes": "finance", "region": "CN"})
        assert "offer.created" not in _actions(node)
        return
    for region in ("WORLD", "HK", None):
        params = {"purposes": "finance"} | ({"region": region} if region else {})
        with pytest.raises(PolicyError, match=r"permission\[0\]: .* important data .* mainland"):
            offers.create(node, "patients", actor="t", template="aggregate-only", params=params)
    for region in ("CN", "CN-31"):
        offers.create(node, "patients", actor="t", template="aggregate-only",
                      params={"purposes": "finance", "region": region})
    assert _actions(node).count("offer.created") == 2


def test_the_catalog_summary_never_shows_a_restricted_offer_as_open_to_any_purpose() -> None:
    """A purpose inside an `or` read as no purpose ('any'), and `isNoneOf marketing` as the
    purpose 'marketing'."""
    from dataspace.policy.model import Constraint, LogicalConstraint, LogicalOp, Operator
    from dataspace.services.catalog import _purposes

    assert _purposes([Constraint("purpose", Operator.IS_NONE_OF, ("marketing",))]) == [
        "not marketing"]
    either = LogicalConstraint(LogicalOp.OR, (Constraint("purpose", Operator.EQ, "finance"),
                                              Constraint("purpose", Operator.EQ, "health")))
    assert _purposes([either, Constraint("count", Operator.LTEQ, 5)]) == ["finance or health"]
    assert _purposes([Constraint("purpose", Operator.IS_ANY_OF, ("finance", "credit-risk"))]) \
        == ["finance", "credit-risk"]
