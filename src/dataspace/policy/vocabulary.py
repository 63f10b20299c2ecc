"""Our policy vocabulary: left operands, actions, purposes, regions, output modes.

Terms have IRIs; ODRL's own terms (``use``, ``dateTime``, ``purpose``, ...) keep ODRL's IRIs,
ours live under :data:`NS`. Compact names are used everywhere in the model and in JSON-LD.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dataspace.policy.model import Operator

ODRL = "http://www.w3.org/ns/odrl/2/"
NS = "https://w3id.org/dataspace/policy#"
PREFIXES: Mapping[str, str] = MappingProxyType({"odrl": ODRL, "ds": NS})


class Hierarchy:
    """A tree of terms: ``is_part_of(child, ancestor)`` is reflexive and transitive."""

    def __init__(self, name: str, parents: Mapping[str, str | None]) -> None:
        self.name = name
        self._parent = dict(parents)
        for term, parent in self._parent.items():
            if parent is not None and parent not in self._parent:
                raise ValueError(f"{name}: parent {parent!r} of {term!r} is not a term")

    def __contains__(self, term: object) -> bool:
        return term in self._parent

    def __iter__(self) -> Iterator[str]:
        return iter(self._parent)

    def parent(self, term: str) -> str | None:
        return self._parent[term]

    def ancestors(self, term: str) -> tuple[str, ...]:
        """``term`` and everything it is part of, nearest first."""
        chain = [term]
        parent = self._parent[term]
        while parent is not None:
            chain.append(parent)
            parent = self._parent[parent]
        return tuple(chain)

    def is_part_of(self, term: str, ancestor: str) -> bool:
        return ancestor in self.ancestors(term)

    def children(self, term: str | None) -> tuple[str, ...]:
        return tuple(t for t, p in self._parent.items() if p == term)

    def extended(self, parents: Mapping[str, str | None]) -> Hierarchy:
        """A new hierarchy with more terms (e.g. a space's own purposes)."""
        return Hierarchy(self.name, {**self._parent, **parents})

    def render(self) -> str:
        """An indented text tree (used by the docs)."""
        lines: list[str] = []

        def walk(term: str, depth: int) -> None:
            lines.append("  " * depth + term)
            for child in self.children(term):
                walk(child, depth + 1)

        for root in self.children(None):
            walk(root, 0)
        return "\n".join(lines)


def _tree(root: str, groups: Mapping[str, Iterable[str]]) -> dict[str, str | None]:
    parents: dict[str, str | None] = {root: None}
    for group, members in groups.items():
        parents.setdefault(group, root)
        for member in members:
            parents[member] = group
    return parents


# --- actions ----------------------------------------------------------------------------------

ACTIONS = Hierarchy(
    "action",
    _tree(
        "use",
        {
            "query": ("governed-query", "dp-query"),
            "compute": ("psi", "federated-train", "secure-aggregate"),
            "transfer": (),
        },
    ),
)
#: Actions a request may name (the leaves); ``use``, ``query``, ``compute`` only group them.
REQUEST_ACTIONS = frozenset({"governed-query", "dp-query", "psi", "federated-train",
                             "secure-aggregate", "transfer"})
#: Duty actions this node can see fulfilled: ``compensate`` (billed by metering), ``inform``
#: (every use is a ledger entry the provider reads), ``delete`` (passed to the consumer).
DUTY_ACTIONS = frozenset({"compensate", "inform", "delete"})

# --- purposes ---------------------------------------------------------------------------------

PURPOSES = Hierarchy(
    "purpose",
    _tree(
        "any-purpose",
        {
            "finance": ("credit-risk", "anti-fraud", "anti-money-laundering", "insurance",
                        "supply-chain-finance", "inclusive-finance"),
            "health": ("clinical-research", "public-health", "diagnosis-support",
                       "drug-development", "health-insurance", "medical-quality"),
            "transport": ("traffic-management", "logistics", "route-planning",
                          "mobility-services"),
            "energy": ("grid-dispatch", "load-forecasting", "energy-efficiency",
                       "renewables-integration"),
            "agriculture": ("crop-yield", "precision-farming", "agri-insurance",
                            "agri-supply-chain"),
            "commerce": ("demand-forecasting", "supply-chain", "site-selection",
                         "cross-border-trade"),
            "manufacturing": ("predictive-maintenance", "quality-control",
                              "production-planning", "supplier-collaboration"),
            "meteorology": ("weather-forecasting", "climate-risk", "disaster-warning"),
            "culture-tourism": ("visitor-flow", "tourism-planning", "cultural-heritage"),
            "emergency": ("disaster-response", "risk-monitoring", "rescue-dispatch"),
            "urban-governance": ("urban-planning", "public-services",
                                 "environmental-monitoring"),
            "science": ("scientific-research", "model-development"),
            "green-low-carbon": ("carbon-accounting", "emissions-monitoring", "green-finance"),
            "research": ("academic-research", "product-research"),
            "statistics": ("official-statistics", "business-statistics"),
            "marketing": ("targeted-advertising", "customer-profiling", "market-research"),
            "operations": ("service-improvement", "security-audit"),
        },
    ),
)

# --- regions ----------------------------------------------------------------------------------

#: Mainland provincial-level divisions by GB/T 2260 code (CN-11 Beijing ... CN-65 Xinjiang).
_CN_PROVINCES = (
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65",
)
_EU = ("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
       "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE")
_OTHER = ("HK", "MO", "SG", "JP", "KR", "US", "GB", "CH", "NO", "AU", "NZ", "CA", "RU", "IN",
          "BR", "ZA", "AE", "SA", "MY", "TH", "VN", "ID", "PH", "KZ")


def _regions() -> dict[str, str | None]:
    parents: dict[str, str | None] = {"WORLD": None, "CN": "WORLD", "EU": "WORLD"}
    parents.update({f"CN-{code}": "CN" for code in _CN_PROVINCES})
    parents.update(dict.fromkeys(_EU, "EU"))
    parents.update(dict.fromkeys(_OTHER, "WORLD"))
    return parents


#: Where results may go. ``CN`` is the mainland (the 2024 cross-border rules treat HK and MO as
#: outside it); ``CN-31`` (Shanghai) isPartOf ``CN`` isPartOf ``WORLD``.
REGIONS = Hierarchy("region", _regions())

# --- output modes -----------------------------------------------------------------------------

#: Output modes, least to most disclosing; comparisons (lt, lteq, ...) follow this order.
OUTPUT_MODES: tuple[str, ...] = ("aggregate-only", "pseudonymized", "raw")

# --- left operands ----------------------------------------------------------------------------

_SET_OPS = frozenset({Operator.EQ, Operator.NEQ, Operator.IS_PART_OF, Operator.IS_ANY_OF,
                      Operator.IS_ALL_OF, Operator.IS_NONE_OF})
_ORDER_OPS = frozenset({Operator.EQ, Operator.NEQ, Operator.GT, Operator.GTEQ, Operator.LT,
                        Operator.LTEQ})
_LOWER_BOUND_OPS = frozenset({Operator.EQ, Operator.GT, Operator.GTEQ})
_UPPER_BOUND_OPS = frozenset({Operator.EQ, Operator.LT, Operator.LTEQ})


@dataclass(frozen=True)
class LeftOperand:
    """One left operand this node evaluates."""

    name: str
    iri: str
    type: str
    operators: frozenset[Operator]
    meaning: str
    fact: str  # the Request attribute(s) it reads


LEFT_OPERANDS: Mapping[str, LeftOperand] = MappingProxyType(
    {
        lo.name: lo
        for lo in (
            LeftOperand("purpose", ODRL + "purpose", "term (purpose tree)", _SET_OPS,
                        "the consumer's stated purpose; hierarchy-aware", "purpose"),
            LeftOperand("assignee", NS + "assignee", "party (id + groups)", _SET_OPS,
                        "who acts: the participant id or a membership group it belongs to",
                        "assignee, groups"),
            LeftOperand("dateTime", ODRL + "dateTime", "dateTime (with offset)", _ORDER_OPS,
                        "the time of the request", "now"),
            LeftOperand("elapsedTime", ODRL + "elapsedTime", "duration (ISO 8601)", _ORDER_OPS,
                        "time since the agreement was signed (calendar-aware)",
                        "now, agreed_at"),
            LeftOperand("count", ODRL + "count", "integer", _ORDER_OPS,
                        "uses (jobs and transfers) under the agreement including this one",
                        "jobs_run"),
            LeftOperand("action", NS + "action", "term (action tree)", _SET_OPS,
                        "the requested action; hierarchy-aware", "action"),
            LeftOperand("fields", NS + "fields", "set of column names", _SET_OPS,
                        "the columns the job reads", "fields"),
            LeftOperand("minGroupSize", NS + "minGroupSize", "integer", _LOWER_BOUND_OPS,
                        "least contributors per released group; enforced by the compute layer",
                        "min_group_size (optional)"),
            LeftOperand("peerSetSize", NS + "peerSetSize", "integer", _UPPER_BOUND_OPS,
                        "most identifiers the initiator of a PSI job may bring; enforced by "
                        "the PSI protocol", "peer_set_size (optional)"),
            LeftOperand("epsilon", NS + "epsilon", "decimal", _ORDER_OPS,
                        "total ε over the agreement: spent so far + this job",
                        "epsilon, epsilon_spent"),
            LeftOperand("delta", NS + "delta", "decimal", _ORDER_OPS,
                        "total δ over the agreement: spent so far + this job",
                        "delta, delta_spent"),
            LeftOperand("output", NS + "output", "ordinal (output modes)",
                        _ORDER_OPS | {Operator.IS_ANY_OF, Operator.IS_NONE_OF},
                        "what leaves: aggregate-only < pseudonymized < raw", "output"),
            LeftOperand("region", NS + "region", "term (region tree)", _SET_OPS,
                        "where results go; hierarchy-aware", "region"),
            LeftOperand("price", NS + "price", "money (amount, unit = currency)", _ORDER_OPS,
                        "price per job; in a compensate duty it is the amount to pay",
                        "price"),
        )
    }
)

#: ODRL names we read as ours (``payAmount`` is ODRL's price).
ALIASES: Mapping[str, str] = MappingProxyType({"payAmount": "price"})

#: Compact name -> IRI for every term we normalise to compact form.
TERMS: Mapping[str, str] = MappingProxyType(
    {
        **{lo.name: lo.iri for lo in LEFT_OPERANDS.values()},
        **{a: (ODRL + a if a == "use" else NS + a) for a in ACTIONS},
        **{a: ODRL + a for a in DUTY_ACTIONS},
    }
)


@dataclass(frozen=True)
class Vocabulary:
    """The hierarchies the evaluator consults; extend them per space if needed."""

    purposes: Hierarchy = PURPOSES
    regions: Hierarchy = REGIONS
    actions: Hierarchy = ACTIONS


DEFAULT_VOCABULARY = Vocabulary()
