"""What a provider job may do: the agreed dataset, the action, the SqlPolicy the checker enforces.

Pure helpers of :mod:`dataspace.services.jobs` (the flow) and of the multi-party services:
loading the agreed dataset with its classification, choosing the action (governed or DP),
counting an agreement's job slots, and turning the policy decision's :class:`Enforcement`
into the :class:`SqlPolicy` the checker applies — always aggregate-only, with ``k`` at least
the node's ``min_group_size_floor`` and counted in *contributors* where the data says who
contributed a row.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.catalog.classify import is_identifier, is_sensitive
from dataspace.compute import SandboxLimits, SqlPolicy, check_query
from dataspace.compute.errors import QueryFailed
from dataspace.errors import NotFound
from dataspace.metering import PriceTerms
from dataspace.policy import Decision, Enforcement, Policy
from dataspace.policy.checks import Reason
from dataspace.policy.vocabulary import ACTIONS
from dataspace.privacy import DpSpec
from dataspace.services.node import Node
from dataspace.services.transfer_provider import transfers_taken
from dataspace.store.models import Dataset
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import OfferRow
from dataspace.store.models_privacy import DpBudget

QUEUED, RUNNING, SUCCEEDED, DENIED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "DENIED", "FAILED"
GOVERNED, DP = "governed-query", "dp-query"

#: Which identifier column names the contributor of a row when a dataset has several: a
#: person's national ID first, then an organisation's credit code, then the other personal
#: identifiers from the most to the least specific. Ties go to the first column of the file.
CONTRIBUTOR_PREFERENCE: tuple[str, ...] = (
    "id_card_cn",
    "uscc",
    "passport",
    "bank_card",
    "mobile_cn",
    "email",
    "vehicle_plate_cn",
    "person_name_cn",
    "ipv6",
    "ipv4",
)
#: The key of an offer's ``dp`` document naming the contributor column explicitly.
OFFER_CONTRIBUTOR_KEY = "contributor_column"


@dataclass(frozen=True)
class _Dataset:
    id: str
    name: str
    path: Path
    columns: dict[str, str]
    sensitive: frozenset[str]
    identifiers: frozenset[str]
    contributor: str | None = None  # the identifier column that says whose row it is

    @property
    def identifier_list(self) -> list[str]:
        """The identifier columns, in the file's order."""
        return [c for c in self.columns if c in self.identifiers]


def _dataset(node: Node, session: Session, key: str, *, mine: bool = False) -> _Dataset:
    """The dataset ``key`` (id or name): an agreed one, or, ``mine``, one the caller named as
    its own (a PSI or FedAvg initiator's --dataset), whose absence is the caller's to fix."""
    row = (
        session.get(Dataset, key)
        or session.scalars(select(Dataset).where(Dataset.name == key)).first()
    )
    if row is None and mine:
        raise NotFound(f"no dataset {key!r} on this node",
                       hint="name one of yours: see `dataspace dataset list`")
    if row is None:
        raise NotFound(
            f"the agreed dataset {key!r} is no longer on this node",
            hint="the provider removed it; ask them about the agreement",
        )
    columns = {str(c["name"]): str(c["type"]) for c in row.profile.get("columns", [])}
    # A column whose every row holds a value of its own (distinct values plus NULLs reach
    # the row count) names rows, not people: a per-row code passing as a card or phone.
    rows = int(row.profile.get("rows", 0) or 0)
    per_row = {str(c["name"]) for c in row.profile.get("columns", [])
               if rows > 1 and int(c.get("distinct", 0)) + int(c.get("nulls", 0)) >= rows}
    classes = row.classification.get("columns", {})
    sensitive, identifiers = set(), set()
    categories: dict[str, str] = {}
    for column, info in classes.items():
        category = info.get("category") if isinstance(info, Mapping) else None
        if not category:
            continue
        if is_identifier(category):
            identifiers.add(column)
            categories[str(column)] = str(category)
        elif is_sensitive(category):
            sensitive.add(column)
    return _Dataset(
        row.id,
        row.name,
        node.data_dir / row.file_name,
        columns,
        frozenset(sensitive),
        frozenset(identifiers),
        _contributor(columns, categories, per_row),
    )


def _contributor(
    columns: Mapping[str, str], categories: Mapping[str, str], per_row: Collection[str] = ()
) -> str | None:
    """The identifier column to count contributors by: CONTRIBUTOR_PREFERENCE, then the
    file's order -- passing over a column that holds a value of its own in every row while
    another does not (a per-row code that passes as a card or phone number would make each
    row a person). A heuristic: an offer names the column to be sure."""
    order = {name: i for i, name in enumerate(columns)}
    candidates = [c for c in categories if c in order]
    if not candidates:
        return None
    people = [c for c in candidates if c not in per_row]
    candidates = people or candidates

    def rank(column: str) -> tuple[int, int]:
        category = categories[column]
        preference = (
            CONTRIBUTOR_PREFERENCE.index(category)
            if category in CONTRIBUTOR_PREFERENCE
            else len(CONTRIBUTOR_PREFERENCE)
        )
        return preference, order[column]

    return min(candidates, key=rank)


def _terms(offer: OfferRow | None) -> PriceTerms | None:
    if offer is None or not offer.price_terms:
        return None
    return PriceTerms.parse(offer.price_terms)


def _grants(policy: Policy, action: str) -> list[int]:
    out = []
    for i, rule in enumerate(policy.permissions):
        if rule.action in ACTIONS and ACTIONS.is_part_of(action, rule.action):
            out.append(i)
    return out


def _has_epsilon(constraints: Any) -> bool:
    for c in constraints:
        inner = getattr(c, "constraints", None)
        if inner is not None and _has_epsilon(inner):
            return True
        if getattr(c, "left", None) in ("epsilon", "delta"):
            return True
    return False


def _action(policy: Policy) -> str:
    """DP if the policy grants dp-query and not governed-query, or requires ε to query."""
    governed, dp = _grants(policy, GOVERNED), _grants(policy, DP)
    if dp and not governed:
        return DP
    if governed and all(_has_epsilon(policy.permissions[i].constraints) for i in governed):
        return DP
    return GOVERNED


def _dp_spec(doc: Mapping[str, Any] | None) -> DpSpec | None:
    if not doc or "epsilon" not in doc:
        return None
    bounds = {str(k): (float(v[0]), float(v[1])) for k, v in (doc.get("bounds") or {}).items()}
    return DpSpec(
        epsilon=float(doc["epsilon"]),
        delta=float(doc.get("delta", 0.0)),
        bounds=bounds,
        max_contributions=int(doc.get("max_contributions", 1)),
        mechanism=str(doc.get("mechanism", "laplace")),
    )


def _completed_jobs(session: Session, agreement_id: str) -> int:
    """Succeeded provider jobs of the agreement (what multi-party participants count)."""
    query = (
        select(func.count())
        .select_from(JobRow)
        .where(
            JobRow.agreement_id == agreement_id,
            JobRow.role == "provider",
            JobRow.state == SUCCEEDED,
        )
    )
    return int(session.execute(query).scalar_one())


def _slots_taken(
    session: Session, agreement_id: str, *, exclude: str, engaged_failures: bool = False
) -> int:
    """Uses that count against the agreement's ``count``: jobs succeeded, or admitted and
    running — and with ``engaged_failures`` (multi-party jobs), failed after their opening
    step too — and the agreement's transfers, billed or still going (one ``use`` permission
    may grant both, and its count is one count).

    A multi-party job releases as it goes (scores, updates, answers reach the initiator before
    its end), so an initiator that fails or aborts it once steps past its opening arrived has
    used it; a job that ended while opening released nothing and does not count. Read under the
    agreement's write lock, so two admissions cannot both take the last slot.
    """
    query = (
        select(func.count())
        .select_from(JobRow)
        .where(
            JobRow.agreement_id == agreement_id,
            JobRow.role == "provider",
            JobRow.state.in_((RUNNING, SUCCEEDED)),
            JobRow.id != exclude,
        )
    )
    taken = int(session.execute(query).scalar_one()) + transfers_taken(session, agreement_id)
    if engaged_failures:
        failed = select(JobRow.result_meta).where(
            JobRow.agreement_id == agreement_id,
            JobRow.role == "provider",
            JobRow.state == FAILED,
            JobRow.id != exclude,
        )
        taken += sum(_engaged(meta) for meta in session.execute(failed).scalars())
    return taken


def _engaged(meta: Any) -> bool:
    """Whether a failed job had got past its opening (``mp_store.mark_engaged``)."""
    return isinstance(meta, dict) and meta.get("engaged") is True


def _budget_spent(session: Session, agreement_id: str) -> tuple[Decimal, Decimal]:
    row = session.get(DpBudget, agreement_id)
    if row is None:
        return Decimal(0), Decimal(0)
    return Decimal(row.epsilon_spent), Decimal(row.delta_spent)


def _region(node: Node, consumer: str) -> str | None:
    """Where the consumer's results go, if the provider recorded it (node.toml [peer_regions])."""
    regions = node.config.get("peer_regions", {})
    value = regions.get(consumer) if isinstance(regions, Mapping) else None
    return str(value) if value else None


def _columns_read(*, sql: str, dataset: _Dataset) -> tuple[set[str], bool]:
    """The columns ``sql`` reads, and whether it groups (which decides the δ a DP query
    spends), from one check without the agreement's limits."""
    probe = SqlPolicy(table=dataset.name, columns=dataset.columns, output="raw")
    checked = check_query(sql, probe)
    canonical = {c.lower(): c for c in dataset.columns}
    return {canonical.get(c.lower(), c) for c in checked.columns_read}, bool(checked.group_keys)


def unnamed_people(identifiers: Sequence[str], declared: str | None) -> list[str]:
    """The identifier columns a DP cut could not choose among: several, and the offer names
    none. Cut by one that is not the person (a doctor's id over patients' rows), one added
    person can push out another's row -- twice the sensitivity the noise assumes."""
    return list(identifiers) if declared is None and len(identifiers) > 1 else []


@dataclass(frozen=True)
class Contributors:
    """Whose rows a dataset's jobs count: its file, the column (the offer's, else the
    preferred identifier) and every identifier column, in the file's order."""

    path: Path
    column: str | None
    identifiers: list[str]


def contributors_of(
    node: Node, session: Session, dataset_key: str, declared: str | None
) -> Contributors:
    found = _dataset(node, session, dataset_key)
    return Contributors(found.path, declared or found.contributor, found.identifier_list)


def declared_contributor(offer: OfferRow | None) -> str | None:
    """The contributor column the provider named in the offer's ``dp`` document, if any."""
    doc = offer.dp if offer is not None else None
    value = doc.get(OFFER_CONTRIBUTOR_KEY) if isinstance(doc, Mapping) else None
    return str(value) if value else None


def _sql_policy(
    dataset: _Dataset, e: Enforcement, *, floor: int = 1, contributor: str | None = None
) -> SqlPolicy:
    """The checker's limits for this job.

    * output is always ``aggregate-only``: governed SQL never releases rows, whatever the
      policy's ``output`` allows — row-level data leaves only by a DSP transfer;
    * ``k = max(floor, the policy's minGroupSize)`` — a policy without one gets the floor;
    * ``k`` counts distinct contributors (``contributor``, else the dataset's preferred
      identifier column) when there is one, rows otherwise; every other identifier column
      must show none or at least ``k`` distinct values (:class:`~dataspace.compute.sqlsafe.Units`).
    """
    return SqlPolicy(
        table=dataset.name,
        columns=dataset.columns,
        allowed_fields=e.allowed_fields,
        prohibited_fields=e.prohibited_fields,
        sensitive_columns=dataset.sensitive,
        identifier_columns=dataset.identifiers,
        min_group_size=max(1, floor, e.min_group_size or 1),
        output="aggregate-only",
        contributor_column=contributor or dataset.contributor,
    )


def _output_control(
    table: pa.Table, expected: tuple[str, ...] | None, limits: SandboxLimits
) -> None:
    """Last gate before release: the schema is what the checker planned, within the caps."""
    if expected is not None and tuple(table.column_names) != tuple(expected):
        raise QueryFailed(
            "the result's columns differ from the checked query's; nothing was released",
            hint="report this to the provider",
        )
    if table.num_rows > limits.max_result_rows:
        raise QueryFailed(f"the result has more than {limits.max_result_rows} rows")


def _single_reason(left: str, message: str) -> Decision:
    return Decision(
        False, (Reason(rule="agreement", path=left, held=False, message=message, left=left),)
    )
