"""GB/T 43697-2024 grading: the rule table, overrides, and the roll-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataspace.catalog.classify import Finding, classify_column, override_finding
from dataspace.catalog.grading import (
    DOMAINS,
    ColumnFindings,
    Grade,
    grade_dataset,
    load_rules,
)
from dataspace.errors import InputError, UsageError

ID = classify_column("身份证号", ["11010519491231002X"] * 50)
MOBILE = classify_column("手机", ["13812345678"] * 50)
USCC = classify_column("信用代码", ["91350100M000100Y43"] * 50)
NAME_HINT_CONTRADICTED = classify_column("name", ["苹果", "香蕉", "手机", "电脑"] * 10)


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def grade(rules, findings, *, rows=100, domain="general", **kw):
    return grade_dataset([ColumnFindings("c", findings)], domain=domain, rows=rows,
                         rules=rules, **kw)


def test_grade_order_and_labels():
    order = [Grade("general", 1), Grade("general", 4), Grade("important"), Grade("core")]
    assert [g.rank for g in order] == [1, 4, 5, 6]
    assert Grade("general", 4).label == "一般数据 4级 (general, level 4)"
    assert Grade("important").label == "重要数据 (important)"


@pytest.mark.parametrize(
    ("findings", "rows", "rule", "level", "sublevel"),
    [
        ([], 10, "default", "general", 1),
        (USCC, 10, "organisation-id", "general", 2),
        (MOBILE, 10, "personal", "general", 3),
        (ID, 10, "sensitive-personal", "general", 4),
        (ID, 100_000, "sensitive-personal-scale", "important", None),
        (ID, 99_999, "sensitive-personal", "general", 4),
        (MOBILE, 999_999, "personal", "general", 3),
        (MOBILE, 1_000_000, "personal-scale", "important", None),
        (NAME_HINT_CONTRADICTED, 10, "default", "general", 1),
    ],
)
def test_each_packaged_rule_fires_where_it_should(rules, findings, rows, rule, level, sublevel):
    result = grade(rules, findings, rows=rows)
    col = result.columns[0]
    assert (col.rule, col.grade.level, col.grade.sublevel) == (rule, level, sublevel)
    assert result.rule == rule


def test_individuals_when_known_replace_the_row_count(rules):
    result = grade(rules, ID, rows=500_000, individuals=20_000)
    assert result.rule == "sensitive-personal" and result.individuals == 20_000


def test_roll_up_names_the_column_and_rule_that_decided(rules):
    cols = [ColumnFindings("org", USCC), ColumnFindings("id", ID), ColumnFindings("phone", MOBILE),
            ColumnFindings("amount", [])]
    result = grade_dataset(cols, domain="finance", rows=50, rules=rules)
    assert result.grade == Grade("general", 4)
    assert (result.column, result.rule) == ("id", "sensitive-personal")
    assert "column 'id'" in result.reason
    assert [c.rule for c in result.columns] == ["organisation-id", "sensitive-personal",
                                                "personal", "default"]
    data = json.loads(json.dumps(result.to_dict(), ensure_ascii=False))
    assert data["level"] == "general" and data["sublevel"] == 4
    assert data["columns"][1]["category"] == "id_card_cn"
    assert len(data["rules_digest"]) == 64


def test_empty_dataset_gets_the_default(rules):
    result = grade_dataset([], domain="general", rows=0, rules=rules)
    assert result.rule == "default" and result.column is None


def test_operator_override_finding_is_graded(rules):
    result = grade(rules, [override_finding("health")])
    assert result.rule == "sensitive-personal"


def test_unknown_domain_is_a_usage_error(rules):
    assert "culture-tourism" in DOMAINS
    with pytest.raises(UsageError):
        grade(rules, [], domain="space")


OVERRIDE = """
[default]
level = "general"
sublevel = 2
description = "unclassified internal data"

[[rule]]
id = "personal"
description = "personal information, graded up by this operator"
level = "general"
sublevel = 4
pi_class = ["personal"]

[[rule]]
id = "biometric-any-scale"
description = "biometric data is important data for this operator"
level = "important"
categories = ["biometric"]

[domain.finance]
disable = ["sensitive-personal-scale"]

[[domain.finance.rule]]
id = "finance-bank-cards"
description = "bank cards of 10,000+ individuals are important in finance"
level = "important"
categories = ["bank_card"]
min_individuals = 10000

[domain.health.default]
level = "general"
sublevel = 3
description = "health-sector data is at least level 3"
"""


def test_override_file_replaces_adds_and_overrides_per_domain(tmp_path: Path):
    path = tmp_path / "rules.toml"
    path.write_text(OVERRIDE, encoding="utf-8")
    rules = load_rules(path)
    assert rules.sources[-1] == str(path)
    # same id replaces (in place), new id adds, default replaced
    assert grade(rules, MOBILE).rule == "personal"
    assert grade(rules, MOBILE).grade == Grade("general", 4)
    assert grade(rules, [override_finding("biometric")]).grade == Grade("important")
    assert grade(rules, []).grade == Grade("general", 2)
    # domain sections apply only to their domain
    assert grade(rules, ID, rows=200_000, domain="finance").rule == "sensitive-personal"
    assert grade(rules, ID, rows=200_000, domain="tax").rule == "sensitive-personal-scale"
    card = [override_finding("bank_card")]
    assert grade(rules, card, rows=20_000, domain="finance").rule == "finance-bank-cards"
    assert grade(rules, card, rows=20_000, domain="energy").rule == "sensitive-personal"
    assert grade(rules, [], domain="health").grade == Grade("general", 3)
    assert rules.digest != load_rules().digest


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'secret'\n", "rule[0].level"),
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'general'\n", "rule[0].sublevel"),
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'core'\nsublevel = 2\n",
         "rule[0].sublevel"),
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'core'\ncategories = ['idcard']\n",
         "rule[0].categories"),
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'core'\nmin_rows = -1\n",
         "rule[0].min_rows"),
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'core'\ncolour = 'red'\n",
         "rule[0].colour"),
        ("[[rule]]\ndescription = 'd'\nlevel = 'core'\n", "rule[0].id"),
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'core'\n[[rule]]\nid = 'x'\n"
         "description = 'd'\nlevel = 'core'\n", "rule[1].id"),
        ("[domain.space]\ndisable = []\n", "domain.space"),
        ("[domain.finance]\ndisable = ['no-such-rule']\n", "domain.finance.disable"),
        ("version = 2\n", "version"),
        ("[[rule]]\nid = 'x'\ndescription = 'd'\nlevel = 'core'\nmin_confidence = 2\n",
         "rule[0].min_confidence"),
    ],
)
def test_bad_override_file_names_the_file_and_key(tmp_path: Path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_rules(path)
    assert err.value.details == {"file": str(path), "key": key}
    assert str(path) in str(err.value) and key in str(err.value)


def test_override_file_that_is_not_toml_or_missing(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text("[[rule]\nid =", encoding="utf-8")
    with pytest.raises(InputError, match="not valid TOML"):
        load_rules(path)
    with pytest.raises(InputError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_finding_without_rule_match_falls_back_to_default(rules):
    odd = Finding("none", "无", "none", 1.0, 1.0, "operator", "override")
    col = grade(rules, [odd]).columns[0]
    assert col.rule == "default" and "no rule matches" in col.reason


def test_the_override_example_in_the_docs_loads(tmp_path: Path):
    doc = Path(__file__).resolve().parents[2] / "docs" / "classification.md"
    block = doc.read_text(encoding="utf-8").split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(block, encoding="utf-8")
    rules = load_rules(path)
    assert grade(rules, MOBILE, rows=600_000).rule == "personal-scale"
    assert grade(rules, [override_finding("bank_card")], rows=20_000,
                 domain="finance").rule == "finance-bank-cards"
