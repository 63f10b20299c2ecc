"""Real public data for ``--data public``: data sets that ship inside a PyPI package and load
offline, their real columns split vertically across the scenario's parties.

=============  ===============================  =======================================
scenario       data set                         licence, source
=============  ===============================  =======================================
health         scikit-learn ``load_diabetes``   BSD-3-Clause (scikit-learn); Efron, Hastie,
               442 patients: age, sex, BMI,     Johnstone, Tibshirani, "Least Angle
               blood pressure, six blood-serum  Regression", Annals of Statistics 32 (2004)
               results, progression one year
               later
agriculture    scikit-learn ``load_wine``       BSD-3-Clause (scikit-learn); UCI Machine
               178 wines, 13 chemical assays,   Learning Repository "Wine" (Forina et al.),
               cultivar (three, one region)     CC BY 4.0
=============  ===============================  =======================================

Both ship inside the scikit-learn wheel (``sklearn/datasets/data``); nothing is downloaded.
When scikit-learn is missing, ``--data public`` says which extra to install.

The shape is the same for both: the consumer holds some real columns and, for its training
entities, the outcome; each provider holds other real columns for 60–80% of the entities
under the same identifiers (身份证 with valid check characters; 追溯码). A provider derives,
next to its data, the (identifier, flag) pairs where one of its columns is in its own upper or
lower tertile (e.g. "s5_high": a serum result above its lab's upper tertile — what a hospital
may share under mutual recognition); PSI on (identifier, flag) tells the consumer which of its
own entities carry which flag, nothing else — but since it asks about every flag of every
column, that is, for each shared entity, which tertile of each provider column it falls in: a
coarse (three-level) copy of those columns, released under the providers' ``psi-only``
agreements with ``output = pseudonymized``. The consumer fits the same ridge model on its own
columns with and without the flags; the evaluator scores the held-out entities (split before
any PSI) whose outcome no party holds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dataspace.scenarios import ids
from dataspace.scenarios.base import (
    Control,
    Generated,
    MetricResult,
    OfferSpec,
    Scenario,
    ScenarioError,
)
from dataspace.scenarios.common import estimates, overlap_mask, paired_steps, rng_for
from dataspace.scenarios.stats import auc, ridge_fit, ridge_predict

EXTRA_HINT = (
    "install scikit-learn (it ships the data sets in its wheel): "
    "pip install 'dataspace[public]' (scikit-learn ships the data)"
)


@dataclass(frozen=True)
class Vertical:
    dataset: str  # sklearn loader name
    consumer: str
    own: tuple[str, ...]
    providers: dict[str, tuple[str, ...]]
    key_kind: str  # id_card | text
    purpose: str
    outcome: str  # name of the binary outcome
    version: str
    source: str  # the data set, its origin and licence, as the docs cite it


HEALTH = Vertical(
    "load_diabetes",
    "hospital-a",
    ("age", "sex", "bp"),
    {"hospital-b": ("bmi", "s1", "s2", "s3"), "hospital-c": ("s4", "s5", "s6")},
    "id_card",
    "medical-quality",
    "progression in the top quarter a year later",
    "health-public-diabetes/1",
    "scikit-learn `load_diabetes` (442 patients; Efron, Hastie, Johnstone, Tibshirani, *Least "
    "Angle Regression*, Annals of Statistics 2004). Licence: BSD-3-Clause, shipped inside the "
    "scikit-learn wheel.",
)
AGRICULTURE = Vertical(
    "load_wine",
    "market-regulator",
    ("malic_acid", "ash", "magnesium", "alcalinity_of_ash"),
    {
        "agri-bureau": ("flavanoids", "total_phenols", "proanthocyanins"),
        "wholesale-market": ("proline", "color_intensity", "hue"),
    },
    "text",
    "agri-supply-chain",
    "lots of cultivar 3 (origin claim to verify)",
    "agri-public-wine/1",
    "scikit-learn `load_wine` (178 wines, 13 chemical assays; UCI Machine Learning Repository "
    "*Wine*, Forina et al.). Licence: CC BY 4.0 (UCI), shipped inside the scikit-learn wheel "
    "(BSD-3-Clause).",
)
SPECS = {"health": HEALTH, "agriculture": AGRICULTURE}


def about(scenario: str) -> str:
    """What a scenario's ``--data public`` run uses and what its flags reveal, for its page."""
    return (
        f"Data set: {SPECS[scenario].source} Loads offline; needs scikit-learn (the `bench` "
        "extra today). The real columns are split vertically across the parties (see "
        "`dataspace.scenarios.public`); flags travel only through PSI. Each provider flags "
        "whether an entity is in the upper or lower tertile of each of its columns, and the "
        "consumer asks about every flag: for each shared entity it learns which tertile of each "
        "provider column it falls in — a coarse copy of those columns, under `psi-only` "
        "agreements with `output = pseudonymized`."
    )


def load(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X, y, feature names) of a data set bundled with scikit-learn, offline."""
    try:
        from sklearn import datasets
    except ImportError:
        raise ScenarioError(
            "--data public needs scikit-learn, which is not installed", hint=EXTRA_HINT
        ) from None
    bunch = getattr(datasets, name)()
    return (
        np.asarray(bunch.data, dtype=float),
        np.asarray(bunch.target, dtype=float),
        [str(f) for f in bunch.feature_names],
    )


def safe(col: str) -> str:
    return col.replace("/", "_")


def generate(spec: Vertical, seed: int) -> Generated:
    x, target, names = load(spec.dataset)
    n = len(target)
    rng = rng_for(seed, spec.version)
    py = random.Random(seed)
    if spec.dataset == "load_diabetes":
        label = (target >= np.percentile(target, 75)).astype(np.int64)
        areas = [py.choice(sorted(ids.COUNTIES)) for _ in range(n)]
        keys = ids.unique(ids.person_id, n, py, areas)
    else:
        label = (target == 2).astype(np.int64)
        keys = [f"37{py.randint(1000, 9999)}20250{py.randint(1, 9)}{i:05d}" for i in range(n)]
    evaluation = rng.random(n) < 0.3  # split by entity before any PSI
    col = {c: x[:, names.index(c)] for c in names}
    own: dict[str, Any] = {"entity_id": keys}
    for c in spec.own:
        own[safe(c)] = np.round(col[c], 5)
    own["outcome"] = [None if evaluation[i] else int(label[i]) for i in range(n)]
    flags = [
        f"{safe(c)}_{side}"
        for cols in spec.providers.values()
        for c in cols
        for side in ("high", "low")
    ]
    candidates = {"entity_id": [k for k in keys for _ in flags], "flag": flags * n}
    tables: dict[str, list[tuple[str, pa.Table]]] = {
        spec.consumer: [("own", pa.table(own)), ("flag_candidates", pa.table(candidates))]
    }
    for party, cols in spec.providers.items():
        idx = np.flatnonzero(overlap_mask(rng, n))
        held: dict[str, Any] = {"entity_id": [keys[i] for i in idx]}
        derived: dict[str, list[Any]] = {"entity_id": [], "flag": []}
        for c in cols:
            values = col[c][idx]
            held[safe(c)] = np.round(values, 5)
            lo, hi = np.percentile(values, [100 / 3, 200 / 3])  # the provider's own tertiles
            for j, v in zip(idx, values, strict=True):
                if v >= hi or v <= lo:
                    derived["entity_id"].append(keys[j])
                    derived["flag"].append(f"{safe(c)}_{'high' if v >= hi else 'low'}")
        tables[party] = [("results", pa.table(held)), ("flags", pa.table(derived))]
    return Generated(
        tables=tables,
        heldout={"label": label, "eval": evaluation},
        params={
            "public": spec.dataset,
            "flags": flags,
            "entities": n,
            "split": "30% evaluation, by entity, before PSI",
        },
        version=spec.version,
    )


def offers(spec: Vertical) -> list[OfferSpec]:
    return [
        OfferSpec(
            party,
            "flags",
            "psi-only",
            {"purposes": spec.purpose, "output": "pseudonymized", "fields": "entity_id,flag"},
            spec.consumer,
            spec.purpose,
            price="20 CNY",
            key=f"psi:{party}",
        )
        for party in spec.providers
    ]


def flow(spec: Vertical, ctx: Any) -> dict[str, Any]:
    api = ctx.api[spec.consumer]
    cand = ctx.own(spec.consumer, "flag_candidates")
    flags: list[str] = ctx.generated.params["flags"]
    n = ctx.generated.params["entities"]
    matrix = np.zeros((n, len(flags)))
    for party in spec.providers:
        ctx.step(f"PSI on (identifier, flag) with {party}")
        view = api.psi(
            agreements=[ctx.agreements[f"psi:{party}"]],
            dataset=ctx.dataset(spec.consumer, "flag_candidates"),
            key=f"entity_id:{spec.key_kind},flag:text",
            mode="me",
        )
        for pos in ctx.kept_positions(spec.consumer, view):
            matrix[pos // len(flags), pos % len(flags)] = 1.0
    assert cand.num_rows == n * len(flags)
    ctx.step("ridge on own columns, with and without the flags (at the consumer)")
    own = ctx.own(spec.consumer, "own")
    x_own = np.column_stack([np.asarray(own.column(safe(c)).to_pylist(), float) for c in spec.own])
    x_own = (x_own - x_own.mean(0)) / np.where(x_own.std(0) > 0, x_own.std(0), 1)
    y = own.column("outcome").to_pylist()
    train = np.array([v is not None for v in y])
    yt = np.array([float(v) for v in y if v is not None])
    out: dict[str, Any] = {"flags_matched": int(matrix.sum())}
    for name, x in (("own", x_own), ("fused", np.column_stack([x_own, matrix]))):
        beta = ridge_fit(x[train], yt, alpha=1.0)
        out[name] = ridge_predict(beta, x).tolist()
    return out


def metric(
    spec: Vertical, runs: list[tuple[int, Generated, dict[str, Any]]], primary: str
) -> MetricResult:
    names = {
        "own": f"{spec.consumer} alone (its own columns)",
        "fused": f"{spec.consumer} + PSI flags from {len(spec.providers)} providers",
    }
    scores: dict[str, list[float]] = {k: [] for k in names}
    truth: list[int] = []
    strata: list[int] = []
    for seed, gen, rel in runs:
        ev = np.flatnonzero(gen.heldout["eval"])
        for k in names:
            scores[k] += np.asarray(rel[k])[ev].tolist()
        truth += np.asarray(gen.heldout["label"])[ev].tolist()
        strata += [seed] * len(ev)
    y = np.asarray(truth)
    arrays = {k: np.asarray(v) for k, v in scores.items()}

    def stat(k: str) -> Any:
        if primary == "auc":
            return lambda idx: auc(arrays[k][idx], y[idx])

        def hit(idx: np.ndarray) -> float:
            top = idx[np.argsort(-arrays[k][idx], kind="mergesort")[: max(1, len(idx) // 5)]]
            return float(y[top].mean())

        return hit

    stats = {names[k]: stat(k) for k in names}
    est = estimates(stats, len(y), strata, seed=runs[0][0])
    steps = paired_steps(stats, [(names["own"], names["fused"])], len(y), strata,
                         seed=runs[0][0], lower_is_better=False)
    label = "AUC" if primary == "auc" else "hit rate of the top 20%"
    return MetricResult(
        metric=f"{label} for {spec.outcome} (real data: scikit-learn {spec.dataset})",
        lower_is_better=False,
        estimates=est,
        ordering="own columns < own + PSI flags",
        ordering_holds=est[1].value > est[0].value,
        steps=steps,
        seeds=[r[0] for r in runs],
        extra={
            "data": f"scikit-learn {spec.dataset} (real, bundled, offline)",
            "evaluation entities": str(len(y)),
            "base rate": f"{y.mean():.3f}",
        },
        controls=[
            Control(
                "outcome of evaluation entities",
                "in no party's table",
                "held by the evaluator only",
                True,
            )
        ],
    )


# -- the scenarios' hooks ---------------------------------------------------------------------


def public_generate(scenario: Scenario, spec: Vertical, seed: int) -> Generated:
    scenario._public = True  # type: ignore[attr-defined]
    return generate(spec, seed)


def health_generate(scenario: Scenario, size: str, seed: int) -> Generated:
    return public_generate(scenario, HEALTH, seed)


def health_offers() -> list[OfferSpec]:
    return offers(HEALTH)


def health_flow(ctx: Any) -> dict[str, Any]:
    return flow(HEALTH, ctx)


def health_metric(runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
    return metric(HEALTH, runs, "auc")


def agriculture_generate(scenario: Scenario, size: str, seed: int) -> Generated:
    return public_generate(scenario, AGRICULTURE, seed)


def agriculture_offers() -> list[OfferSpec]:
    return offers(AGRICULTURE)


def agriculture_flow(ctx: Any) -> dict[str, Any]:
    return flow(AGRICULTURE, ctx)


def agriculture_metric(runs: list[tuple[int, Generated, dict[str, Any]]]) -> MetricResult:
    return metric(AGRICULTURE, runs, "hit")
