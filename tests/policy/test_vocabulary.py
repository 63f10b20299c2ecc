"""The vocabulary is consistent and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dataspace.policy import LEFT_OPERANDS
from dataspace.policy.jsonld import compact, expand
from dataspace.policy.vocabulary import (
    ACTIONS,
    NS,
    ODRL,
    PURPOSES,
    REGIONS,
    REQUEST_ACTIONS,
    Hierarchy,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
SECTORS = ["finance", "health", "transport", "energy", "agriculture", "commerce",
           "manufacturing", "meteorology", "culture-tourism", "emergency", "urban-governance",
           "science", "green-low-carbon"]


def test_sectors_and_cross_cutting_purposes_are_top_level() -> None:
    for top in [*SECTORS, "research", "statistics", "marketing"]:
        assert PURPOSES.parent(top) == "any-purpose", top
    assert PURPOSES.is_part_of("credit-risk", "finance")
    assert not PURPOSES.is_part_of("targeted-advertising", "finance")
    assert PURPOSES.ancestors("credit-risk") == ("credit-risk", "finance", "any-purpose")


def test_region_tree() -> None:
    assert REGIONS.is_part_of("CN-31", "CN")
    assert not REGIONS.is_part_of("HK", "CN")
    assert REGIONS.is_part_of("DE", "EU")
    assert len(REGIONS.children("CN")) == 31


def test_action_tree_leaves_are_the_request_actions() -> None:
    leaves = {a for a in ACTIONS if not ACTIONS.children(a)}
    assert leaves == REQUEST_ACTIONS
    assert all(ACTIONS.is_part_of(a, "use") for a in ACTIONS)


def test_hierarchy_rejects_dangling_parents() -> None:
    with pytest.raises(ValueError, match="not a term"):
        Hierarchy("x", {"a": "missing"})


@pytest.mark.parametrize("name", list(LEFT_OPERANDS))
def test_left_operand_iris_normalise_to_compact_names(name: str) -> None:
    iri = LEFT_OPERANDS[name].iri
    assert iri.startswith((NS, ODRL))
    assert compact(iri) == name
    prefix = "odrl:" if iri.startswith(ODRL) else "ds:"
    assert expand(prefix + name) == iri
    assert compact(prefix + name) == name


def test_unknown_terms_are_kept() -> None:
    assert compact("odrl:transfer") == "odrl:transfer"  # ODRL's transfer is not ours
    assert compact("partner") == "partner"
    assert compact("odrl:payAmount") == "price"


def test_docs_table_lists_every_left_operand_and_iri() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", text, re.M))
    assert set(rows) == set(LEFT_OPERANDS)
    for name, lo in LEFT_OPERANDS.items():
        assert rows[name] == lo.iri.replace(NS, "ds:").replace(ODRL, "odrl:")


def test_docs_show_the_trees() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert ACTIONS.render() in text
    for top in PURPOSES.children("any-purpose"):
        assert top in text


def test_docs_json_examples_are_the_templates_and_lint_clean() -> None:
    import json

    from dataspace.policy import from_template, lint_policy, parse_policy

    uid = "urn:uuid:6f1c2a9e-0000-4000-8000-00000000000{}".format
    calls = [
        from_template("aggregate-only", uid=uid(1), purposes=["finance"],
                      fields=["district", "industry", "tax_paid"], price="50.00 CNY"),
        from_template("dp-stats", uid=uid(2), purposes=["credit-risk", "anti-fraud"],
                      epsilon=2.0, delta=1e-6, max_jobs=100, region="CN"),
        from_template("psi-only", uid=uid(4), purposes=["anti-fraud"]),
        from_template("federated-train", uid=uid(5), purposes=["credit-risk"], epsilon=8),
        from_template("raw-transfer", uid=uid(3), purposes=["public-health"],
                      expires="2026-12-31T23:59:59+08:00", output="pseudonymized", region="CN"),
    ]
    blocks = re.findall(r"^```json\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) == len(calls)
    for block, built in zip(blocks, calls, strict=True):
        policy = parse_policy(json.loads(block))
        assert policy == built
        assert lint_policy(policy) == ()
