"""The shape every sector scenario has: parties, generator, offers, flow, metric.

A scenario is a plugin: a subclass of :class:`Scenario` registered by name in
``dataspace.scenarios``. The runner (``runner.py``) starts one node per party, loads what
``generate`` made, publishes ``offers()``, negotiates them, calls ``flow(ctx)`` — which may do
nothing except through the nodes' APIs — and then ``metric(...)`` on what the flow released.

What a scenario may touch:

* ``generate`` sees everything (it makes the world); it returns each party's tables and the
  evaluator's held-out truth, split by entity **before** any PSI.
* ``flow`` sees only what the consumer's node holds: its own tables, the results the platform
  released to it (PSI matches, governed SQL and DP answers, secure sums, transfers).
* ``metric`` compares the party-only baseline with the fused result on the evaluator's held-out
  entities, same population, same model family and tuning budget, with a bootstrap CI, and
  reports each step its ordering claims as a paired gain (``MetricResult.steps``).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dataspace.errors import DataspaceError

if TYPE_CHECKING:
    from dataspace.scenarios.runner import FlowContext

SIZES = ("small", "default", "large")

# The twelve sectors of the 数据要素× action plan (2024–2026) that the scenarios cover.
SECTORS = {
    "finance": "金融服务",
    "meteorology": "气象服务",
    "green": "绿色低碳",
    "manufacturing": "工业制造",
    "health": "医疗健康",
    "transport": "交通运输",
    "agriculture": "现代农业",
    "commerce": "商贸流通",
    "emergency": "应急管理",
    "tourism": "文化旅游",
    "urban": "城市治理",
    "science": "科技创新",
}


class ScenarioError(DataspaceError):
    """A scenario could not run: a step failed or its data did not fit."""

    code = "scenario_failed"


@dataclass(frozen=True)
class Party:
    """One organisation: a node name, its role and the datasets it holds."""

    name: str
    role: str  # provider | consumer | evaluator
    title: str  # e.g. 商业银行
    datasets: tuple[str, ...] = ()


@dataclass(frozen=True)
class OfferSpec:
    """What a provider publishes: a policy template with parameters, DP bounds, a price."""

    provider: str
    dataset: str
    template: str
    params: dict[str, Any]
    consumer: str
    purpose: str
    price: str | None = None
    dp_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    dp_epsilon_per_query: float | None = None
    dp_delta: float | None = None
    dp_max_contributions: int | None = None  # rows per contributor, enforced by DP queries
    dp_contributor: str | None = None  # the contributor column, if not the identifier column
    action: str | None = None  # override the template's action (e.g. secure-aggregate)
    key: str = ""  # name the flow uses to find the agreement; default provider/dataset/template

    @property
    def ref(self) -> str:
        return self.key or f"{self.provider}/{self.dataset}/{self.template}"


@dataclass
class Generated:
    """What ``generate`` made: each party's tables and the evaluator's held-out truth."""

    tables: dict[str, list[tuple[str, pa.Table]]]
    heldout: dict[str, Any]
    params: dict[str, Any]
    version: str
    reclassify: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def params_sha256(self) -> str:
        return params_hash({"version": self.version, **self.params})


def params_hash(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of generator parameters (sorted keys, no spaces)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Estimate:
    """One variant's metric with a 95% confidence interval."""

    variant: str
    value: float
    low: float
    high: float
    n: int


def signed(x: float) -> str:
    """``x`` with its sign and three decimals, or two significant digits when those three would
    show a value that is not 0 as 0 (a CI bound just above 0 must not read "+0.000")."""
    text = f"{x:+.3f}"
    return f"{x:+.2g}" if x != 0 and float(text) == 0 else text


# Resamples behind a claimed step's CI. Its bounds are the 2.5th and 97.5th percentiles of the
# resampled gains; their Monte Carlo error, sqrt(p(1 − p)/B)/φ(1.96) bootstrap standard
# deviations, is 0.15 at B = 300 and 0.06 at B = 2000.
STEP_REPS = 2000
_DENSITY_AT_Z = math.exp(-(1.96**2) / 2) / math.sqrt(2 * math.pi)  # φ(1.96)
_BOUND_ERROR = math.sqrt(0.025 * 0.975 / STEP_REPS) / _DENSITY_AT_Z
SIGNIFICANT = "significant"
STEPS_TITLE = "Each claimed step: the gain (positive = better), paired over the same resamples"


def step_verdict(step: Estimate) -> str:
    """Whether a claimed gain is established: its CI's lower bound above 0 by more than twice
    that bound's Monte Carlo error (the bootstrap SD read off the CI's width, 3.92 SDs); within
    it, another bootstrap seed could put the bound on either side of 0."""
    if not (math.isfinite(step.low) and math.isfinite(step.high)):
        return "no finite CI"
    margin = 2 * _BOUND_ERROR * (step.high - step.low) / 3.92
    if step.low > margin:
        return SIGNIFICANT
    if step.low >= -margin:
        return (f"borderline: the CI's lower bound is within its Monte Carlo error "
                f"(±{margin:.2g}) of 0")
    return "paired 95% CI reaches 0"


@dataclass(frozen=True)
class Control:
    """A negative control: what it tests, what was expected, what happened."""

    name: str
    expected: str
    observed: str
    passed: bool


@dataclass
class MetricResult:
    """The multiplier: baseline against fused, with CIs, the documented ordering and controls."""

    metric: str
    lower_is_better: bool
    estimates: list[Estimate]
    ordering: str
    ordering_holds: bool
    seeds: list[int]
    extra: dict[str, str] = field(default_factory=dict)
    controls: list[Control] = field(default_factory=list)
    # Each gain the ordering claims, as the improvement from one variant to the next
    # (positive = better, whichever way the metric runs) with a paired 95% CI: both variants
    # scored on the same resamples, so the CI is of the difference, not of two overlapping bars.
    steps: list[Estimate] = field(default_factory=list)

    @property
    def steps_significant(self) -> bool:
        """Every claimed gain's paired 95% CI lies above 0, clear of the Monte Carlo error of
        its bound (False when no step is given)."""
        return bool(self.steps) and all(step_verdict(s) == SIGNIFICANT for s in self.steps)

    def significance(self) -> str:
        """One line on the claimed gains: all significant, or which are not, and why."""
        if not self.steps:
            return "no paired steps reported"
        verdicts = [(s, step_verdict(s)) for s in self.steps]
        weak = [(s, verdict) for s, verdict in verdicts if verdict != SIGNIFICANT]
        if not weak:
            which = (
                "the claimed step is" if len(self.steps) == 1
                else f"all {len(self.steps)} claimed steps are"
            )
            return f"{which} significant (paired 95% CI above 0)"
        return f"{len(weak)} of {len(self.steps)} claimed steps not established at this size: " + (
            "; ".join(
                f"{s.variant} {signed(s.value)} [{signed(s.low)}, {signed(s.high)}] ({verdict})"
                for s, verdict in weak
            )
        )

    def estimate(self, variant: str) -> Estimate:
        return next(e for e in (*self.estimates, *self.steps) if e.variant == variant)


class Scenario(ABC):
    """One sector's use case; subclasses set the class attributes and implement the methods."""

    name: str
    sector: str  # a key of SECTORS
    use_case: str
    capability: str
    metric_name: str
    needs_training: bool = False  # federated training: the runner adds the operator as dealer
    public_data: str | None = None  # which real public data set `--data public` uses

    @property
    def sector_label(self) -> str:
        return SECTORS[self.sector]

    @abstractmethod
    def parties(self) -> list[Party]: ...

    @abstractmethod
    def generate(self, size: str, seed: int, data: str = "synthetic") -> Generated: ...

    @abstractmethod
    def offers(self) -> list[OfferSpec]: ...

    @abstractmethod
    def flow(self, ctx: FlowContext) -> dict[str, Any]:
        """Run the jobs through the platform; return what the consumer received."""

    @abstractmethod
    def metric(self, runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
        """The multiplier over every seed's (seed, generated, released) triple."""

    def consumer(self) -> str:
        return next(p.name for p in self.parties() if p.role == "consumer")

    def summary(self) -> str:
        return (
            f"{self.name:<20} {self.sector_label} {self.use_case} · {self.capability} · "
            f"{self.metric_name}"
        )
