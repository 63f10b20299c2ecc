"""Offers: a dataset published under a usage policy, DP parameters and price terms.

``create`` parses and lints the policy (from a file's JSON-LD or a template), binds it to the
dataset (``target`` = the dataset id, ``@id`` = a new ``urn:uuid:``), checks every column it
names against the dataset, requires DP parameters when it permits ``dp-query``, and stores the
offer with an ``offer.created`` ledger entry in the same transaction. Withdrawn offers stay in
the store (agreements refer to them) but leave the catalog and cannot be negotiated.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.catalog.profile import kind_of
from dataspace.errors import Conflict, DataspaceError, NotFound, UsageError
from dataspace.jsondoc import iso_utc
from dataspace.ledger import log
from dataspace.metering.pricing import PriceTerms
from dataspace.policy import Policy, PolicyError, PolicyType, from_template, parse_policy
from dataspace.policy.evaluate import conjuncts
from dataspace.policy.jsonld import to_jsonld
from dataspace.policy.lint import require_evaluable
from dataspace.policy.model import AnyConstraint, Constraint, Operator, Rule
from dataspace.policy.request import Price
from dataspace.policy.values import Malformed, as_datetime, as_terms
from dataspace.policy.vocabulary import ACTIONS, REGIONS
from dataspace.services.node import Node
from dataspace.store.models import Dataset
from dataspace.store.models_contracts import OfferRow

DP_ACTION = "dp-query"


# --- parsing CLI-style inputs ------------------------------------------------------------------


def parse_bounds(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``["income=0:100000", ...]`` -> ``{"income": (0.0, 100000.0)}``."""
    bounds: dict[str, tuple[float, float]] = {}
    for item in items:
        column, sep, rng = item.partition("=")
        lower, sep2, upper = rng.partition(":")
        try:
            if not (sep and sep2 and column):
                raise ValueError
            pair = (float(lower), float(upper))
        except ValueError:
            raise UsageError(
                f"--dp-bounds {item!r} is not COLUMN=LOWER:UPPER",
                hint="e.g. --dp-bounds income=0:100000",
            ) from None
        if not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
            raise UsageError(f"--dp-bounds {item!r}: bounds must be finite with lower <= upper")
        bounds[column] = pair
    return bounds


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``["purposes=credit-risk", ...]`` -> ``{"purposes": "credit-risk"}``."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f"--param {item!r} is not KEY=VALUE",
                hint="e.g. --param purposes=credit-risk,anti-fraud",
            )
        params[key.strip().replace("-", "_")] = value
    return params


# --- policy checks -----------------------------------------------------------------------------


def _atoms(constraints: Sequence[AnyConstraint], path: str) -> Iterator[tuple[str, Constraint]]:
    for i, c in enumerate(constraints):
        where = f"{path}.constraint[{i}]"
        if isinstance(c, Constraint):
            yield where, c
        else:
            for j, sub in enumerate(c.constraints):
                yield from _atoms((sub,), f"{where}.{c.op.value}[{j}]")


def _rules(policy: Policy) -> Iterator[tuple[str, Rule]]:
    for key, rules in (
        ("permission", policy.permissions),
        ("prohibition", policy.prohibitions),
        ("obligation", policy.obligations),
    ):
        for i, rule in enumerate(rules):
            yield f"{key}[{i}]", rule
            for j, duty in enumerate(rule.duties):
                yield f"{key}[{i}].duty[{j}]", duty


def _require_grade_controls(policy: Policy, ds: Dataset) -> None:
    """What the dataset's grade (GB/T 43697) demands of any offer of it: core data is not
    offered here at all; every permission over important data keeps results in mainland China
    (taking it abroad needs a security assessment, which no offer can stand in for)."""
    level = (ds.grading or {}).get("level")
    fix = "if the grade is wrong, correct the columns (dataset reclassify) or the grading rules"
    if level == "core":
        raise UsageError(
            f"dataset {ds.name!r} is graded core data (核心数据): it is not offered in the data "
            "space", hint="core data is shared only under the state's approval; " + fix,
        )
    if level != "important":
        return
    for i, rule in enumerate(policy.permissions):
        if not any(_within(c, "CN") for c in conjuncts(rule.constraints)):
            raise PolicyError(
                f"dataset {ds.name!r} is graded important data (重要数据): this permission "
                "must keep results in mainland China",
                hint="add 'region isPartOf CN' (template parameter region=CN): taking important "
                "data abroad needs a security assessment (数据出境安全评估); " + fix,
                path=f"permission[{i}]",
            )


def _within(c: Constraint, region: str) -> bool:
    """``c`` admits only regions inside ``region``."""
    if c.left != "region" or c.operator not in (
        Operator.EQ, Operator.IS_PART_OF, Operator.IS_ANY_OF
    ):
        return False
    try:
        terms = as_terms(c.right)
    except Malformed:
        return False
    return bool(terms) and all(t in REGIONS and REGIONS.is_part_of(t, region) for t in terms)


def named_fields(policy: Policy) -> list[tuple[str, str]]:
    """Every (path, column) a ``fields`` constraint of the policy names."""
    out: list[tuple[str, str]] = []
    for path, rule in _rules(policy):
        for where, c in _atoms(rule.constraints, path):
            if c.left == "fields":
                try:
                    out.extend((where, term) for term in as_terms(c.right))
                except Malformed as exc:  # pragma: no cover - lint refused it already
                    raise PolicyError(str(exc), path=where) from None
    return out


def permits_dp(policy: Policy) -> bool:
    """Whether a permission of the policy covers ``dp-query``."""
    return any(
        r.action in ACTIONS and ACTIONS.is_part_of(DP_ACTION, r.action) for r in policy.permissions
    )


def policy_price(policy: Policy) -> Price | None:
    """The price of the policy's ``compensate`` duties, if it has any. Metering bills one
    per-job price an offer, so duties asking different prices are refused rather than all
    but one silently left unbilled."""
    found: tuple[str, Price] | None = None
    for path, rule in _rules(policy):
        if rule.action != "compensate":
            continue
        for where, c in _atoms(rule.constraints, path):
            if c.left != "price" or not c.unit:
                continue
            price = Price.parse(f"{c.right} {c.unit}")
            if found is not None and found[1] != price:
                raise PolicyError(
                    f"compensate duties ask {found[1]} ({found[0]}) and {price}; this node "
                    "bills one price per job of an offer",
                    hint="give every compensate duty the same price, or publish two offers",
                    path=where,
                )
            found = found or (where, price)
    return None if found is None else found[1]


def _columns(row: Dataset) -> dict[str, str]:
    return {c["name"]: c["type"] for c in row.profile.get("columns", [])}


def _dataset(session: Session, ref: str) -> Dataset:
    row = session.scalars(select(Dataset).where(Dataset.name == ref)).first()
    if row is None:
        row = session.get(Dataset, ref)
    if row is None:
        raise NotFound(f"no dataset {ref!r}", hint="see `dataspace dataset list`")
    return row


def _build_policy(
    policy: Policy | Mapping[str, Any] | None,
    template: str | None,
    params: Mapping[str, Any] | None,
    price: Price | None,
) -> Policy:
    if (policy is None) == (template is None):
        raise UsageError(
            "give exactly one of a policy file or a template",
            hint="--policy FILE or --template NAME (see `dataspace offer templates`)",
        )
    if template is not None:
        values = dict(params or {})
        if price is not None and "price" not in values:
            values["price"] = price
        for key in ("target", "uid"):
            if key in values:
                raise UsageError(f"--param {key} is set by the node", hint="leave it out")
        return from_template(template, **values)
    if params:
        raise UsageError("--param applies to templates only")
    assert policy is not None
    if isinstance(policy, Policy):
        return policy
    if not isinstance(policy, Mapping):
        raise PolicyError("a policy must be a JSON object", path="$")
    return parse_policy(policy)


def _check_dp(
    policy: Policy,
    cols: Mapping[str, str],
    bounds: Mapping[str, tuple[float, float]],
    epsilon: float | None,
    delta: float | None,
    max_contributions: int | None,
    contributor_column: str | None = None,
) -> dict[str, Any] | None:
    given = (
        bool(bounds) or epsilon is not None or delta is not None or max_contributions is not None
    )
    if contributor_column is not None and contributor_column not in cols:
        raise UsageError(
            f"--contributor-column names column {contributor_column!r}, which the dataset lacks",
            hint="the column saying whose row each row is (a person or firm id); columns: "
            + ", ".join(cols),
        )
    named = {"contributor_column": contributor_column} if contributor_column else {}
    if not permits_dp(policy):
        if given:
            raise UsageError(
                "DP parameters given, but the policy does not permit dp-query",
                hint="drop the --dp-* options or use the dp-stats template",
            )
        # Governed SQL counts k in contributors too: the named column serves it alone.
        return named or None
    if epsilon is None:
        raise UsageError(
            "the policy permits dp-query: give --dp-epsilon-per-query",
            hint="the ε each query spends, e.g. --dp-epsilon-per-query 0.5",
        )
    if not bounds:
        raise UsageError(
            "the policy permits dp-query: give --dp-bounds COLUMN=LOWER:UPPER",
            hint="clamping bounds for each numeric column SUM/AVG may use",
        )
    for column in bounds:
        if column not in cols:
            raise UsageError(
                f"--dp-bounds names column {column!r}, which the dataset lacks",
                hint="columns: " + ", ".join(cols),
            )
        if kind_of(cols[column]) != "number":
            raise UsageError(
                f"--dp-bounds column {column!r} is {cols[column]}, not numeric",
                hint="bounds apply to numeric columns only",
            )
    from dataspace.privacy.dp import DpSpec

    spec = DpSpec(
        epsilon=float(epsilon),
        delta=float(delta or 0.0),
        bounds=dict(bounds),
        max_contributions=1 if max_contributions is None else int(max_contributions),
    )
    budget = _budget(policy, "epsilon")
    if budget is not None and spec.epsilon > budget:
        raise UsageError(
            f"--dp-epsilon-per-query {spec.epsilon} exceeds the policy's ε budget {budget}",
            hint="no query could ever run",
        )
    delta_budget = _budget(policy, "delta")
    if spec.delta > 0 and (delta_budget is None or spec.delta > delta_budget):
        raise UsageError(
            f"--dp-delta {spec.delta} exceeds the policy's δ budget "
            f"{delta_budget if delta_budget is not None else '(none: 0)'}",
            hint="grouped queries spend δ and could never run: give the policy a δ budget "
            "(dp-stats: delta=...) at least this large, or --dp-delta 0 for ungrouped "
            "Laplace queries only",
        )
    return {
        "epsilon": spec.epsilon,
        "delta": spec.delta,
        "bounds": {c: [lo, hi] for c, (lo, hi) in bounds.items()},
        "max_contributions": spec.max_contributions,
        "mechanism": spec.mechanism,
        **named,
    }


def _budget(policy: Policy, left: str) -> float | None:
    found: list[float] = []
    for i, rule in enumerate(policy.permissions):
        for _, c in _atoms(rule.constraints, f"permission[{i}]"):
            if c.left == left and c.operator.value in ("lteq", "lt"):
                try:
                    found.append(float(c.right))  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    continue
    return min(found) if found else None


def ledger_safe(value: Any) -> Any:
    """A JSON value the ledger accepts: floats (not canonical) become decimal strings."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): ledger_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [ledger_safe(v) for v in value]
    return value


# --- service functions -------------------------------------------------------------------------


def _require_grants_now(policy: Policy) -> None:
    """An offer must permit something, and not only until a time already past: such an offer
    would sit in the catalog as active while every request is denied."""
    if not policy.permissions:
        raise PolicyError("the policy has no permission: the offer would permit nothing",
                          path="permission",
                          hint="add a permission (or use a --template)")
    now = datetime.now(UTC)
    for rule in policy.permissions:
        ends = [as_datetime(c.right) for c in rule.constraints
                if isinstance(c, Constraint) and c.left == "dateTime"
                and c.operator in (Operator.LT, Operator.LTEQ)]
        if not ends or min(ends) > now:
            return
    raise PolicyError(
        "every permission of the policy ended already (its dateTime bound is in the past)",
        path="permission", hint="set an expiry in the future",
    )


def create(
    node: Node,
    dataset: str,
    *,
    actor: str,
    policy: Policy | Mapping[str, Any] | None = None,
    template: str | None = None,
    params: Mapping[str, Any] | None = None,
    dp_bounds: Mapping[str, tuple[float, float]] | None = None,
    dp_epsilon_per_query: float | None = None,
    dp_delta: float | None = None,
    max_contributions: int | None = None,
    contributor_column: str | None = None,
    price: str | Price | None = None,
    auto_approve: bool = False,
    contribution_share: bool = False,
    min_revenue_pool: str | None = None,
) -> dict[str, Any]:
    """Publish an offer for ``dataset`` (name or id). Raises PolicyError (with the JSON path),
    NotFound (dataset) or UsageError (fields, DP parameters, price). ``contributor_column``
    (DP offers): whose row each row is; every DP query cuts each contributor to
    ``max_contributions`` rows (else the dataset's identifier column is taken, if it has one;
    docs/privacy.md). ``contribution_share``:
    federated trainings are charged, on top of ``price``, this provider's share of the job's
    revenue pool (split by contribution; :mod:`dataspace.metering.revenue`)."""
    money = Price.parse(price) if isinstance(price, str) else price
    parsed = _build_policy(policy, template, params, money)
    if parsed.type is not PolicyType.OFFER:
        raise PolicyError(
            f"an offer's policy must be an ODRL Offer, not {parsed.type.value}", path="@type"
        )
    require_evaluable(parsed)
    _require_grants_now(parsed)
    duty_price = policy_price(parsed)
    if money is not None and duty_price is not None and money != duty_price:
        raise UsageError(
            f"--price {money} differs from the policy's compensate duty {duty_price}",
            hint="give one price",
        )
    money = money or duty_price
    offer_id = f"urn:uuid:{uuid.uuid4()}"
    with node.store.write() as session:
        ds = _dataset(session, dataset)
        if parsed.target is not None and parsed.target not in (ds.id, ds.name):
            raise UsageError(
                f"the policy targets {parsed.target!r}, not dataset {ds.name!r}",
                hint="drop the policy's target; the node sets it",
            )
        _require_grade_controls(parsed, ds)
        cols = _columns(ds)
        for where, column in named_fields(parsed):
            if column not in cols:  # the policy's fault, like any other policy error
                raise PolicyError(
                    f"the dataset {ds.name!r} has no column {column!r}",
                    hint="columns: " + ", ".join(cols),
                    path=where,
                )
        dp = _check_dp(
            parsed, cols, dict(dp_bounds or {}), dp_epsilon_per_query, dp_delta,
            max_contributions, contributor_column,
        )
        if dp is not None and "epsilon" in dp and not contributor_column:
            _require_one_person(node, session, ds.id)
        import dataclasses

        bound = dataclasses.replace(
            parsed, uid=offer_id, target=ds.id, assigner=parsed.assigner or node.name
        )
        terms: dict[str, Any] | None = (
            None
            if money is None
            else {"currency": money.currency, "per_job": str(money)}
        )
        if contribution_share:
            if not any(p.action == "federated-train" for p in bound.permissions):
                raise UsageError("a contribution share prices federated training: the offer "
                                 "permits no federated-train")
            if money is None:
                raise UsageError("a contribution share needs the offer's currency",
                                 hint="add --price, e.g. '0 CNY' for the share alone")
            terms = {**(terms or {}), "contribution_share": True}
            if min_revenue_pool is not None:
                terms["min_revenue_pool"] = min_revenue_pool
        elif min_revenue_pool is not None:
            raise UsageError("a minimum revenue pool needs --contribution-share")
        if terms is not None:
            PriceTerms.parse(terms)  # a bad amount or currency is refused here, not at a job
        row = OfferRow(
            id=offer_id,
            dataset_id=ds.id,
            policy=to_jsonld(bound),
            template=template,
            dp=dp,
            price_terms=terms,
            auto_approve=bool(auto_approve),
            created_at=datetime.now(UTC),
            withdrawn_at=None,
        )
        session.add(row)
        session.flush()
        log.append(
            session,
            actor=actor,
            action="offer.created",
            payload={
                "id": offer_id,
                "dataset": ds.id,
                "dataset_name": ds.name,
                "template": template,
                "policy": ledger_safe(row.policy),
                "dp": ledger_safe(dp),
                "price": terms,
                "auto_approve": row.auto_approve,
            },
        )
        view = _view(row, ds)
    # After the commit: a figure for the provider, which must not hold the write lock or
    # undo the offer if its scan fails.
    warnings = _warnings(node, str(view["dataset"]), dp)
    if warnings:
        view["warnings"] = warnings
    return view


def _require_one_person(node: Node, session: Session, dataset_id: str) -> None:
    """A DP offer over several identifier columns names the person's (job_policy's
    unnamed_people: jobs under an older offer are denied the same way)."""
    from dataspace.services.job_policy import contributors_of, unnamed_people

    several = unnamed_people(contributors_of(node, session, dataset_id, None).identifiers, None)
    if several:
        raise UsageError(
            f"the dataset has several identifier columns ({', '.join(several)}): a DP offer "
            "names the one that identifies the person",
            hint=f"add --contributor-column {several[0]} (or whichever is the person)",
        )


def _warnings(node: Node, dataset_id: str, dp: Mapping[str, Any] | None) -> list[str]:
    """What the provider (only) should know: which column counts contributors when several
    could, and whether DP queries will cut rows. Never stored in the offer."""
    from dataspace.services.job_policy import contributors_of, unnamed_people

    named = (dp or {}).get("contributor_column")
    with node.store.read() as session:
        found = contributors_of(node, session, dataset_id, named)
    out = []
    if found.column is not None and unnamed_people(found.identifiers, named):
        others = ", ".join(c for c in found.identifiers if c != found.column)
        out.append(f"k (and any DP cut) counts contributors by {found.column}, not by "
                   f"{others}: if another column identifies the person, name it with "
                   f"--contributor-column")  # fmt: skip
    cut = _cut_warning(node, found.path, found.column, dp) if dp and "epsilon" in dp else None
    if dp and "epsilon" in dp and not float(dp.get("delta") or 0):
        out.append("--dp-delta is 0: DP queries with GROUP BY will be refused (a group's key "
                   "comes from the data; releasing it needs δ > 0), only overall figures run")
    return out + ([cut] if cut else [])


def _cut_warning(
    node: Node, path: Path, column: str | None, dp: Mapping[str, Any]
) -> str | None:
    """When DP queries will cut rows: the data has more rows per contributor than m."""
    from dataspace.catalog.sample import open_parquet, quote
    from dataspace.privacy.rewrite import no_contributor

    if column is None:
        return None
    try:
        with open_parquet(path, node.limits) as (con, relation):
            found = con.execute(  # counted as the cut counts: rows naming no one are uncut
                f"SELECT max(n) FROM (SELECT count(*) AS n FROM {relation} "
                f"WHERE NOT {no_contributor(quote(column))} GROUP BY {quote(column)})"
            ).fetchone()
    except DataspaceError as exc:
        return (f"could not count the rows per {column} ({exc.message}): every DP query keeps "
                f"at most {dp['max_contributions']} of each")  # fmt: skip
    most, m = int((found or (0,))[0] or 0), int(dp["max_contributions"])
    if most <= m:
        return None
    return (
        f"the dataset has up to {most} rows per {column}; every DP query keeps {m} of each "
        f"(drawn at random): give --max-contributions {most} to count them all (the noise "
        f"grows with m), or name another --contributor-column"
    )


def list_offers(node: Node, *, include_withdrawn: bool = True) -> list[dict[str, Any]]:
    with node.store.read() as session:
        stmt = select(OfferRow).order_by(OfferRow.created_at)
        if not include_withdrawn:
            stmt = stmt.where(OfferRow.withdrawn_at.is_(None))
        return [_view(r, session.get(Dataset, r.dataset_id)) for r in session.scalars(stmt)]


def show(node: Node, offer_id: str) -> dict[str, Any]:
    with node.store.read() as session:
        row = get(session, offer_id)
        return _view(row, session.get(Dataset, row.dataset_id))


def withdraw(node: Node, offer_id: str, *, actor: str) -> dict[str, Any]:
    """Take an offer out of the catalog; agreements made under it stay valid."""
    with node.store.write() as session:
        row = get(session, offer_id)
        if row.withdrawn_at is not None:
            raise Conflict(f"offer {offer_id!r} is already withdrawn")
        row.withdrawn_at = datetime.now(UTC)
        session.flush()
        log.append(
            session,
            actor=actor,
            action="offer.withdrawn",
            payload={"id": row.id, "dataset": row.dataset_id},
        )
        return _view(row, session.get(Dataset, row.dataset_id))


def get(session: Session, offer_id: str) -> OfferRow:
    row = session.get(OfferRow, offer_id)
    if row is None:
        raise NotFound(f"no offer {offer_id!r}", hint="see `dataspace offer list`")
    return row


def offer_policy(row: OfferRow) -> Policy:
    return parse_policy(row.policy)


def _view(row: OfferRow, ds: Dataset | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "dataset": row.dataset_id,
        "dataset_name": ds.name if ds is not None else None,
        "template": row.template,
        "policy": row.policy,
        "dp": row.dp,
        "price": row.price_terms,
        "auto_approve": row.auto_approve,
        "created_at": iso_utc(row.created_at),
        "withdrawn_at": iso_utc(row.withdrawn_at),
        "state": "withdrawn" if row.withdrawn_at is not None else "active",
    }
