"""Data grading after GB/T 43697-2024 (数据安全技术 数据分类分级规则).

Three levels — 核心数据 (core), 重要数据 (important), 一般数据 (general) — with general data
split into four sublevels by the harm its leak would do to individuals or organisations
(Annex H): 4级 serious, 3级 ordinary, 2级 slight, 1级 none.

Grades come from a rule table (``grading_rules.toml``, package data) that an operator can
extend or override, per domain too. Each column gets the highest grade of the rules that
match one of its classifier findings, naming the rule; the dataset gets the highest column
grade, naming the column and rule. Pure: no I/O except reading the rule files.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dataspace.catalog.classify import CATEGORIES, PI_CLASSES, Finding
from dataspace.errors import InputError, UsageError

DOMAINS: tuple[str, ...] = (
    "finance", "health", "energy", "transport", "government", "tax", "agriculture",
    "commerce", "manufacturing", "meteorology", "culture-tourism", "emergency", "urban",
    "science", "environment", "general",
)

LEVELS: tuple[str, ...] = ("general", "important", "core")
GENERAL_SUBLEVELS = (1, 2, 3, 4)
_LEVEL_ZH = {"general": "一般数据", "important": "重要数据", "core": "核心数据"}
_HARM = {1: "no harm", 2: "slight harm", 3: "ordinary harm", 4: "serious harm"}

DEFAULT_RULE_ID = "default"
_RULES_FILE = "grading_rules.toml"


@dataclass(frozen=True)
class Grade:
    """A level, with a sublevel 1–4 for general data."""

    level: str
    sublevel: int | None = None

    @property
    def rank(self) -> int:
        """general 1–4 → 1–4, important → 5, core → 6."""
        if self.level == "general":
            return self.sublevel or 1
        return 5 if self.level == "important" else 6

    @property
    def label(self) -> str:
        if self.level == "general":
            return f"一般数据 {self.sublevel}级 (general, level {self.sublevel})"
        return f"{_LEVEL_ZH[self.level]} ({self.level})"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "sublevel": self.sublevel, "rank": self.rank,
                "label": self.label}


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    grade: Grade
    basis: str = ""
    categories: frozenset[str] = frozenset()
    pi_classes: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    min_rows: int = 0
    min_individuals: int = 0
    min_confidence: float = 0.0

    def matches(self, finding: Finding, *, domain: str, rows: int, individuals: int) -> bool:
        return (
            (not self.categories or finding.category in self.categories)
            and (not self.pi_classes or finding.pi_class in self.pi_classes)
            and (not self.domains or domain in self.domains)
            and rows >= self.min_rows
            and individuals >= self.min_individuals
            and finding.confidence >= self.min_confidence
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "description": self.description,
                                "level": self.grade.level}
        if self.grade.sublevel is not None:
            body["sublevel"] = self.grade.sublevel
        if self.basis:
            body["basis"] = self.basis
        for key, value in (("categories", self.categories), ("pi_class", self.pi_classes),
                           ("domains", self.domains)):
            if value:
                body[key] = sorted(value)
        for key, num in (("min_rows", self.min_rows), ("min_individuals", self.min_individuals),
                         ("min_confidence", self.min_confidence)):
            if num:
                body[key] = num
        return body


@dataclass(frozen=True)
class DomainRules:
    rules: tuple[Rule, ...] = ()
    disable: frozenset[str] = frozenset()
    default: Rule | None = None


@dataclass(frozen=True)
class RuleTable:
    """The effective grading rules: packaged table merged with operator overrides."""

    rules: tuple[Rule, ...]
    default: Rule
    domains: Mapping[str, DomainRules] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def for_domain(self, domain: str) -> tuple[tuple[Rule, ...], Rule]:
        """The rules and default that apply to datasets of ``domain``."""
        over = self.domains.get(domain, DomainRules())
        rules = [r for r in _merge(self.rules, over.rules) if r.id not in over.disable]
        return tuple(rules), over.default or self.default

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": self.default.to_dict(),
            "rules": [r.to_dict() for r in self.rules],
            "domains": {
                name: {
                    "rules": [r.to_dict() for r in d.rules],
                    "disable": sorted(d.disable),
                    "default": d.default.to_dict() if d.default else None,
                }
                for name, d in sorted(self.domains.items())
            },
        }

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical table, to record which rules graded a dataset."""
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ColumnFindings:
    """A column and what the classifier (or the operator) found in it."""

    column: str
    findings: tuple[Finding, ...] = ()

    def __init__(self, column: str, findings: Iterable[Finding] = ()) -> None:
        object.__setattr__(self, "column", column)
        object.__setattr__(self, "findings", tuple(findings))


@dataclass(frozen=True)
class ColumnGrade:
    column: str
    grade: Grade
    rule: str
    reason: str
    category: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, **self.grade.to_dict(), "rule": self.rule,
                "category": self.category, "reason": self.reason}


@dataclass(frozen=True)
class DatasetGrade:
    domain: str
    rows: int
    individuals: int
    grade: Grade
    column: str | None
    rule: str
    reason: str
    columns: tuple[ColumnGrade, ...]
    rules_digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.grade.to_dict(),
            "domain": self.domain,
            "rows": self.rows,
            "individuals": self.individuals,
            "column": self.column,
            "rule": self.rule,
            "reason": self.reason,
            "rules_digest": self.rules_digest,
            "columns": [c.to_dict() for c in self.columns],
        }


# --- grading ---------------------------------------------------------------------------


def _grade_column(
    col: ColumnFindings, rules: Sequence[Rule], default: Rule, *, domain: str, rows: int,
    individuals: int,
) -> ColumnGrade:
    best: tuple[Rule, Finding] | None = None
    for rule in rules:  # table order breaks ties: the first rule at the top grade wins
        for finding in col.findings:
            if rule.matches(finding, domain=domain, rows=rows, individuals=individuals) and (
                best is None or rule.grade.rank > best[0].grade.rank
            ):
                best = (rule, finding)
    if best is None:
        why = "no findings" if not col.findings else "no rule matches its findings"
        return ColumnGrade(col.column, default.grade, default.id,
                           f"{default.description}; {why}")
    rule, finding = best
    reason = (f"{rule.description} — {finding.label}, confidence {finding.confidence:.2f} "
              f"({finding.source})")
    return ColumnGrade(col.column, rule.grade, rule.id, reason, finding.category)


def grade_dataset(
    columns: Sequence[ColumnFindings],
    *,
    domain: str,
    rows: int,
    rules: RuleTable,
    individuals: int | None = None,
) -> DatasetGrade:
    """Grade every column and roll up to the dataset (the highest column grade).

    ``individuals`` is the number of people the data is about; when unknown the row count
    stands in for it, which can only over-grade (several rows per person), never under-grade.
    """
    if domain not in DOMAINS:
        raise UsageError(f"unknown domain '{domain}'", hint="domains: " + ", ".join(DOMAINS))
    if rows < 0 or (individuals is not None and individuals < 0):
        raise UsageError("rows and individuals must not be negative")
    people = rows if individuals is None else individuals
    active, default = rules.for_domain(domain)
    graded = tuple(
        _grade_column(c, active, default, domain=domain, rows=rows, individuals=people)
        for c in columns
    )
    top: ColumnGrade | None = None
    for g in graded:  # the first column at the top grade determines the dataset
        if top is None or g.grade.rank > top.grade.rank:
            top = g
    if top is None:
        return DatasetGrade(domain, rows, people, default.grade, None, default.id,
                            f"{default.description}; no columns", graded,
                            rules.digest)
    reason = f"column '{top.column}' is {top.grade.label} by rule '{top.rule}': {top.reason}"
    return DatasetGrade(domain, rows, people, top.grade, top.column, top.rule, reason, graded,
                        rules.digest)


# --- loading and validating rule files -------------------------------------------------

_RULE_KEYS = {"id", "description", "basis", "level", "sublevel", "categories", "pi_class",
              "domains", "min_rows", "min_individuals", "min_confidence"}
_DEFAULT_KEYS = {"level", "sublevel", "description"}
_DOMAIN_KEYS = {"rule", "disable", "default"}
_TOP_KEYS = {"version", "default", "rule", "domain"}


def _bad(source: str, key: str, problem: str) -> InputError:
    return InputError(
        f"{source}: {key}: {problem}",
        hint="fix the grading rules file; the format is described in docs/classification.md",
        file=source, key=key,
    )


def _check_keys(data: Mapping[str, Any], allowed: set[str], source: str, where: str) -> None:
    for key in data:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            allowed_text = ", ".join(sorted(allowed))
            raise _bad(source, f"{prefix}{key}", f"unknown key; allowed: {allowed_text}")


def _grade(data: Mapping[str, Any], source: str, where: str) -> Grade:
    level = data.get("level")
    if level not in LEVELS:
        raise _bad(source, f"{where}.level", f"must be one of {', '.join(LEVELS)}, got {level!r}")
    sub = data.get("sublevel")
    if level == "general":
        if type(sub) is not int or sub not in GENERAL_SUBLEVELS:
            raise _bad(source, f"{where}.sublevel", f"general data needs sublevel 1–4, got {sub!r}")
        return Grade(level, sub)
    if sub is not None:
        raise _bad(source, f"{where}.sublevel", f"only general data has sublevels ({level})")
    return Grade(level)


def _strings(data: Mapping[str, Any], key: str, allowed: Iterable[str], source: str,
             where: str) -> frozenset[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(source, f"{where}.{key}", "must be a list of strings")
    known = set(allowed)
    for v in value:
        if v not in known:
            known_text = ", ".join(sorted(known))
            raise _bad(source, f"{where}.{key}", f"unknown value {v!r}; known: {known_text}")
    return frozenset(value)


def _int(data: Mapping[str, Any], key: str, source: str, where: str) -> int:
    value = data.get(key, 0)
    if type(value) is not int or value < 0:
        raise _bad(source, f"{where}.{key}", f"must be a non-negative integer, got {value!r}")
    return value


def _text(data: Mapping[str, Any], key: str, source: str, where: str, *, required: bool) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        problem = "must be a non-empty string" if required else "must be a string"
        raise _bad(source, f"{where}.{key}", problem)
    return value


def _parse_rule(data: Any, source: str, where: str) -> Rule:
    if not isinstance(data, dict):
        raise _bad(source, where, "must be a table")
    _check_keys(data, _RULE_KEYS, source, where)
    rule_id = _text(data, "id", source, where, required=True)
    if rule_id == DEFAULT_RULE_ID:
        raise _bad(source, f"{where}.id", f"'{DEFAULT_RULE_ID}' is reserved; use a [default] table")
    conf = data.get("min_confidence", 0.0)
    if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1:
        raise _bad(source, f"{where}.min_confidence", f"must be a number in [0, 1], got {conf!r}")
    return Rule(
        id=rule_id,
        description=_text(data, "description", source, where, required=True),
        grade=_grade(data, source, where),
        basis=_text(data, "basis", source, where, required=False),
        categories=_strings(data, "categories", CATEGORIES, source, where),
        pi_classes=_strings(data, "pi_class", PI_CLASSES, source, where),
        domains=_strings(data, "domains", DOMAINS, source, where),
        min_rows=_int(data, "min_rows", source, where),
        min_individuals=_int(data, "min_individuals", source, where),
        min_confidence=float(conf),
    )


def _parse_rules(data: Any, source: str, where: str) -> tuple[Rule, ...]:
    if not isinstance(data, list):
        raise _bad(source, where, "must be an array of tables ([[rule]])")
    rules = tuple(_parse_rule(item, source, f"{where}[{i}]") for i, item in enumerate(data))
    seen: set[str] = set()
    for i, r in enumerate(rules):
        if r.id in seen:
            raise _bad(source, f"{where}[{i}].id", f"duplicate rule id '{r.id}'")
        seen.add(r.id)
    return rules


def _parse_default(data: Any, source: str, where: str) -> Rule:
    if not isinstance(data, dict):
        raise _bad(source, where, "must be a table")
    _check_keys(data, _DEFAULT_KEYS, source, where)
    return Rule(DEFAULT_RULE_ID, _text(data, "description", source, where, required=True),
                _grade(data, source, where))


def _parse(data: Mapping[str, Any], source: str) -> tuple[tuple[Rule, ...], Rule | None,
                                                           dict[str, DomainRules]]:
    _check_keys(data, _TOP_KEYS, source, "")
    if data.get("version", 1) != 1:
        raise _bad(source, "version", f"unsupported version {data.get('version')!r}; expected 1")
    rules = _parse_rules(data.get("rule", []), source, "rule")
    default = _parse_default(data["default"], source, "default") if "default" in data else None
    domains: dict[str, DomainRules] = {}
    sections = data.get("domain", {})
    if not isinstance(sections, dict):
        raise _bad(source, "domain", "must be a table of [domain.<name>] tables")
    for name, body in sections.items():
        where = f"domain.{name}"
        if name not in DOMAINS:
            raise _bad(source, where, f"unknown domain; known: {', '.join(DOMAINS)}")
        if not isinstance(body, dict):
            raise _bad(source, where, "must be a table")
        _check_keys(body, _DOMAIN_KEYS, source, where)
        disable = body.get("disable", [])
        if not isinstance(disable, list) or not all(isinstance(d, str) for d in disable):
            raise _bad(source, f"{where}.disable", "must be a list of rule ids")
        domains[name] = DomainRules(
            rules=_parse_rules(body.get("rule", []), source, f"{where}.rule"),
            disable=frozenset(disable),
            default=_parse_default(body["default"], source, f"{where}.default")
            if "default" in body else None,
        )
    return rules, default, domains


def _merge(base: Sequence[Rule], extra: Sequence[Rule]) -> tuple[Rule, ...]:
    """Rules of ``extra`` replace same-id rules of ``base`` in place; new ones go last."""
    by_id = {r.id: r for r in extra}
    merged = [by_id.pop(r.id, r) for r in base]
    merged.extend(r for r in extra if r.id in by_id)
    return tuple(merged)


def _read(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML: {exc}",
                         hint="fix the TOML syntax at the line given", file=source) from exc


def load_rules(override_path: Path | None = None) -> RuleTable:
    """The packaged rule table, merged with an operator's TOML file if one is given.

    In the operator file, ``[[rule]]`` entries with an existing id replace that rule and new
    ids are added; ``[default]`` replaces the default; ``[domain.<name>]`` sections add or
    replace rules (``[[domain.<name>.rule]]``), ``disable`` rule ids or set a ``default``
    for datasets of that domain only. Raises :class:`InputError` naming the file and key.
    """
    package = resources.files("dataspace.catalog").joinpath(_RULES_FILE)
    source = f"dataspace/catalog/{_RULES_FILE}"
    rules, default, domains = _parse(_read(package.read_text(encoding="utf-8"), source), source)
    if default is None:
        raise _bad(source, "default", "the packaged table needs a [default] table")
    sources = [source]
    if override_path is not None:
        src = str(override_path)
        try:
            text = Path(override_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{src}: cannot read grading rules: {exc}",
                             hint="check the path and that the file is UTF-8 text",
                             file=src) from exc
        o_rules, o_default, o_domains = _parse(_read(text, src), src)
        rules = _merge(rules, o_rules)
        default = o_default or default
        for name, over in o_domains.items():
            base = domains.get(name, DomainRules())
            domains[name] = DomainRules(
                rules=_merge(base.rules, over.rules),
                disable=base.disable | over.disable,
                default=over.default or base.default,
            )
        sources.append(src)
    known = {r.id for r in rules}
    for name, d in domains.items():
        unknown = d.disable - known - {r.id for r in d.rules}
        if unknown:
            raise _bad(sources[-1], f"domain.{name}.disable",
                       f"unknown rule id(s): {', '.join(sorted(unknown))}")
    return RuleTable(rules, default, domains, tuple(sources))
