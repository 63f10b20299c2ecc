"""Jobs under an agreement, provider side: governed SQL and DP queries run where the data is.

:func:`run_job` is what a consumer's request reaches (through ``POST /peer/v1/jobs/query``)::

    claim the job id  →  load agreement, offer, dataset  →  read the SQL once (columns, action)
      →  evaluate the agreement's policy with the execution-time facts (deny by default)
      →  SqlPolicy from the Enforcement + the dataset's classification
      →  check_query → locked DuckDB worker (run_query)  |  ensure_budget → run_dp_query
      →  output control  →  Arrow IPC, sha256  →  job row + usage record + ledger entry, together

Every outcome is final and recorded in one write transaction: ``SUCCEEDED`` (``job.completed``),
``DENIED`` (``job.denied``: unknown or foreign agreement, agreement not finalized, refused SQL,
policy denial, exhausted budget) or ``FAILED`` (``job.failed``: timeout, out of memory, result
too large, engine error). Denied and failed attempts are metered at zero (a usage record with
that status) except an unknown or foreign agreement, which has nothing to meter against.
A job id is claimed once: a retry with the same id returns the stored outcome (the same bytes,
or the same error) and never runs or charges twice. See docs/jobs.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.catalog.classify import is_identifier, is_sensitive
from dataspace.compute import SandboxLimits, SqlPolicy, check_query, run_query
from dataspace.compute.errors import QueryFailed, SandboxError
from dataspace.contracts import store as cstore
from dataspace.contracts.messages import policy_from_wire
from dataspace.contracts.negotiation import NegotiationState
from dataspace.errors import Conflict, DataspaceError, NotFound
from dataspace.ledger import log
from dataspace.metering import PriceTerms, Usage, record_usage
from dataspace.policy import Decision, Enforcement, Policy, PolicyDenied, Request, evaluate
from dataspace.policy.checks import Reason
from dataspace.policy.vocabulary import ACTIONS
from dataspace.privacy import DpSpec, ensure_budget, run_dp_query
from dataspace.services.job_wire import (
    check_job_id,
    error_from_envelope,
    from_ipc,
    jsonable,
    sha256_hex,
    to_ipc,
)
from dataspace.services.node import Node
from dataspace.store.models import Dataset
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import ContractNegotiationRow, OfferRow
from dataspace.store.models_privacy import DpBudget, DpSpend

__all__ = [
    "DENIED",
    "FAILED",
    "RUNNING",
    "SUCCEEDED",
    "JobOutcome",
    "get_job",
    "job_view",
    "list_jobs",
    "run_job",
]

RUNNING, SUCCEEDED, DENIED, FAILED = "RUNNING", "SUCCEEDED", "DENIED", "FAILED"
GOVERNED, DP = "governed-query", "dp-query"
RESULTS_DIR = "results"
SQL_IN_LEDGER = 2000  # characters of the SQL kept in a ledger payload (its sha256 always)


@dataclass(frozen=True)
class JobOutcome:
    """A succeeded job: the released table, its exact IPC bytes and the metadata sent along."""

    job_id: str
    table: pa.Table
    ipc: bytes
    meta: dict[str, Any]
    replayed: bool = False

    @property
    def result_sha256(self) -> str:
        return str(self.meta["result_sha256"])


@dataclass(frozen=True)
class _Dataset:
    id: str
    name: str
    path: Path
    columns: dict[str, str]
    sensitive: frozenset[str]
    identifiers: frozenset[str]


@dataclass
class _Job:
    """What one run learned so far (for the final record, whatever the outcome)."""

    id: str
    agreement_id: str
    consumer: str
    sql: str
    actor: str
    started: datetime
    t0: float
    action: str = GOVERNED
    provider: str = ""
    dataset: str = ""
    terms: PriceTerms | None = None
    meterable: bool = False  # a known agreement of this consumer: denied attempts are metered
    decision: Decision | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- the entry point ---------------------------------------------------------------------------


def run_job(
    node: Node,
    *,
    agreement_id: str,
    consumer: str,
    sql: str,
    job_id: str | None = None,
    actor: str | None = None,
    now: datetime | None = None,
) -> JobOutcome:
    """Run ``sql`` for ``consumer`` under ``agreement_id`` on this (the provider's) node.

    Raises :class:`NotFound` (unknown or foreign agreement), :class:`PolicyDenied` (denied, with
    every reason), :class:`QueryRefused`, :class:`BudgetExhausted`, a :class:`SandboxError`, or
    :class:`Conflict` (the job id is taken or the job is still running). Each is recorded first.
    """
    job = _Job(
        id=check_job_id(job_id) if job_id is not None else uuid.uuid4().hex,
        agreement_id=agreement_id,
        consumer=consumer,
        sql=sql,
        actor=actor or f"peer:{consumer}",
        started=now or datetime.now(UTC),
        t0=time.perf_counter(),
    )
    replay = _claim(node, job)
    if replay is not None:
        return replay
    try:
        return _run(node, job)
    except DataspaceError as exc:
        _finish_error(node, job, exc)
        raise
    except BaseException as exc:  # a bug or an interrupt: the job must not stay RUNNING
        stopped = DataspaceError(f"the job stopped unexpectedly ({type(exc).__name__})")
        _finish_error(node, job, stopped)
        raise


def _run(node: Node, job: _Job) -> JobOutcome:
    with node.store.read() as session:
        agreement = cstore.get_agreement(session, job.agreement_id, peer=job.consumer)
        neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
        if neg is None or neg.role != "provider" or agreement.consumer != job.consumer:
            raise NotFound(f"no agreement {job.agreement_id!r}", hint="check the agreement id")
        offer = session.get(OfferRow, agreement.offer_id) if agreement.offer_id else None
        job.provider, job.dataset, job.meterable = agreement.provider, agreement.target, True
        dataset = _dataset(node, session, offer.dataset_id if offer else agreement.target)
        job.dataset = dataset.name
        job.terms = _terms(offer)
        policy = policy_from_wire(agreement.policy, "$.agreement")
        job.action = _action(policy)
        dp_spec = _dp_spec(offer.dp if offer else None) if job.action == DP else None
        jobs_run = _completed_jobs(session, job.agreement_id)
        eps_spent, delta_spent = _budget_spent(session, job.agreement_id)
        state, purpose, signed_at = neg.state, agreement.purpose, _aware(agreement.signed_at)
        target = agreement.target

    if state != NegotiationState.FINALIZED:
        raise _deny(
            job,
            _single_reason(
                "agreement",
                f"the agreement's negotiation is {state}, not FINALIZED",
            ),
        )
    if job.action == DP and dp_spec is None:
        raise _deny(
            job,
            _single_reason(
                "dp",
                "the agreement asks for DP queries but its offer declares no DP parameters",
            ),
        )
    # Read the SQL once without the agreement's limits, to learn which columns it reads.
    # Anything the checker refuses here (COPY, files, joins, ...) is refused for good.
    columns_read = _columns_read(sql=job.sql, dataset=dataset)
    job.extra["fields"] = sorted(columns_read)
    request = Request(
        action=job.action,
        assignee=job.consumer,
        purpose=purpose,
        target=target,
        now=job.started,
        agreed_at=signed_at,
        jobs_run=jobs_run,
        fields=frozenset(columns_read),
        output="aggregate-only",
        region=_region(node, job.consumer),
        epsilon=Decimal(str(dp_spec.epsilon)) if dp_spec else None,
        epsilon_spent=eps_spent if dp_spec else None,
        delta=Decimal(str(dp_spec.delta)) if dp_spec else None,
        delta_spent=delta_spent if dp_spec else None,
    )
    decision = evaluate(policy, request)
    job.decision = decision
    if not decision.allowed:
        raise PolicyDenied(decision)
    enforcement = decision.enforcement
    assert enforcement is not None
    sql_policy = _sql_policy(dataset, enforcement)
    limits = SandboxLimits.from_limits(node.limits)
    if dp_spec is not None:
        if enforcement.epsilon_budget is None:
            raise _deny(
                job,
                _single_reason(
                    "epsilon",
                    "a DP query needs an epsilon budget in the agreement's policy",
                ),
            )
        ensure_budget(
            node.store,
            job.agreement_id,
            str(enforcement.epsilon_budget),
            str(enforcement.delta_budget or 0),
        )
        dp = run_dp_query(
            node.store,
            dataset.path,
            dataset.name,
            job.sql,
            sql_policy,
            dp_spec,
            job.agreement_id,
            job.id,
            limits,
        )
        table = dp.table
        figures: dict[str, Any] = {
            "rows_scanned": dp.rows_scanned,
            "cpu_seconds": dp.cpu_seconds,
            "epsilon_spent": Decimal(str(dp.epsilon_spent)),
            "delta_spent": Decimal(str(dp.delta_spent)),
        }
        job.extra.update(
            epsilon_left=Decimal(str(dp.epsilon_left)),
            delta_left=Decimal(str(dp.delta_left)),
            error_bounds=dict(dp.error_bounds),
            mechanism=dp.mechanism,
            threshold=dp.threshold,
        )
        expected = None
    else:
        checked = check_query(job.sql, sql_policy)
        result = run_query(dataset.path, dataset.name, checked, limits)
        table = result.table
        figures = {
            "rows_scanned": result.rows_scanned,
            "cpu_seconds": result.cpu_seconds,
            "epsilon_spent": Decimal(0),
            "delta_spent": Decimal(0),
        }
        expected = checked.output_columns
        job.extra["min_group_size"] = sql_policy.min_group_size
    _output_control(table, expected, limits)
    ipc = to_ipc(table)
    return _finish_success(node, job, table, ipc, figures)


# --- loading -----------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _dataset(node: Node, session: Session, key: str) -> _Dataset:
    row = (
        session.get(Dataset, key)
        or session.scalars(select(Dataset).where(Dataset.name == key)).first()
    )
    if row is None:
        raise NotFound(
            f"the agreed dataset {key!r} is no longer on this node",
            hint="the provider removed it; ask them about the agreement",
        )
    columns = {str(c["name"]): str(c["type"]) for c in row.profile.get("columns", [])}
    classes = row.classification.get("columns", {})
    sensitive, identifiers = set(), set()
    for column, info in classes.items():
        category = info.get("category") if isinstance(info, Mapping) else None
        if not category:
            continue
        if is_identifier(category):
            identifiers.add(column)
        elif is_sensitive(category):
            sensitive.add(column)
    return _Dataset(
        row.id,
        row.name,
        node.data_dir / row.file_name,
        columns,
        frozenset(sensitive),
        frozenset(identifiers),
    )


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
    if not doc:
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


def _columns_read(*, sql: str, dataset: _Dataset) -> set[str]:
    probe = SqlPolicy(table=dataset.name, columns=dataset.columns, output="raw")
    checked = check_query(sql, probe)
    canonical = {c.lower(): c for c in dataset.columns}
    return {canonical.get(c.lower(), c) for c in checked.columns_read}


def _sql_policy(dataset: _Dataset, e: Enforcement) -> SqlPolicy:
    output = (
        e.max_output
        if e.max_output in ("aggregate-only", "pseudonymized")
        else (
            "aggregate-only"  # governed SQL never releases raw rows; transfers are the DSP's job
        )
    )
    return SqlPolicy(
        table=dataset.name,
        columns=dataset.columns,
        allowed_fields=e.allowed_fields,
        prohibited_fields=e.prohibited_fields,
        sensitive_columns=dataset.sensitive,
        identifier_columns=dataset.identifiers,
        min_group_size=max(1, e.min_group_size or 1),
        output=output,  # type: ignore[arg-type]
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


def _deny(job: _Job, decision: Decision) -> PolicyDenied:
    job.decision = decision
    return PolicyDenied(decision)


# --- claiming and finishing --------------------------------------------------------------------


def _claim(node: Node, job: _Job) -> JobOutcome | None:
    """Take the job id (state RUNNING), or replay the outcome already recorded under it."""
    with node.store.write() as session:
        row = session.get(JobRow, job.id, with_for_update=True)
        if row is None:
            session.add(
                JobRow(
                    id=job.id,
                    role="provider",
                    agreement_id=job.agreement_id,
                    peer=job.consumer,
                    action=GOVERNED,
                    state=RUNNING,
                    request={"sql": job.sql},
                    created_at=job.started,
                )
            )
            return None
        same = (
            row.role == "provider"
            and row.peer == job.consumer
            and row.agreement_id == job.agreement_id
            and row.request.get("sql") == job.sql
        )
        if not same:
            raise Conflict(
                f"job id {job.id!r} is already used by another job",
                hint="send a fresh job id (or none)",
            )
        state, meta, sha = row.state, row.result_meta or {}, row.result_sha256
    if state == RUNNING:
        raise Conflict(f"job {job.id!r} is still running", hint="retry in a moment")
    if state == SUCCEEDED and sha:
        ipc = _result_path(node, sha).read_bytes() if _result_path(node, sha).exists() else b""
        if sha256_hex(ipc) != sha:
            raise NotFound(
                f"the result of job {job.id!r} is no longer kept",
                hint="run the query again under a new job id",
            )
        return JobOutcome(job.id, from_ipc(ipc), ipc, dict(meta), replayed=True)
    raise error_from_envelope(
        {"error": meta.get("error", {"code": "error", "message": "the job failed"})},
        meta.get("http_status"),
    )


def _result_path(node: Node, sha: str) -> Path:
    return node.root / RESULTS_DIR / f"{sha}.arrow"


def _store_result(node: Node, sha: str, ipc: bytes) -> None:
    folder = node.root / RESULTS_DIR
    folder.mkdir(exist_ok=True)
    path = _result_path(node, sha)
    if not path.exists():
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(ipc)
        tmp.replace(path)


def _sql_fields(sql: str) -> dict[str, Any]:
    text = sql if len(sql) <= SQL_IN_LEDGER else sql[:SQL_IN_LEDGER] + "…"
    return {"sql": text, "sql_sha256": sha256_hex(sql.encode("utf-8"))}


def _usage(
    job: _Job, status: str, figures: Mapping[str, Any], result_rows: int = 0, bytes_out: int = 0
) -> Usage:
    return Usage(
        agreement_id=job.agreement_id,
        job_id=job.id,
        action=job.action,
        consumer=job.consumer,
        provider=job.provider,
        dataset=job.dataset,
        started_at=job.started,
        finished_at=datetime.now(UTC),
        status=status,
        rows_scanned=int(figures.get("rows_scanned", 0)),
        result_rows=result_rows,
        bytes_out=bytes_out,
        epsilon_spent=figures.get("epsilon_spent", Decimal(0)),
        delta_spent=figures.get("delta_spent", Decimal(0)),
        cpu_seconds=Decimal(str(round(float(figures.get("cpu_seconds", 0.0)), 6))),
        wall_seconds=Decimal(str(round(time.perf_counter() - job.t0, 6))),
    )


def _finish_success(
    node: Node, job: _Job, table: pa.Table, ipc: bytes, figures: dict[str, Any]
) -> JobOutcome:
    sha = sha256_hex(ipc)
    _store_result(node, sha, ipc)
    with node.store.write() as session:
        row = session.get(JobRow, job.id, with_for_update=True)
        assert row is not None
        usage = record_usage(
            session,
            _usage(job, "completed", figures, table.num_rows, len(ipc)),
            actor=job.actor,
            terms=job.terms,
        )
        meta = {
            "job_id": job.id,
            "agreement_id": job.agreement_id,
            "action": job.action,
            "state": SUCCEEDED,
            "provider": job.provider,
            "dataset": job.dataset,
            "result_sha256": sha,
            "rows": table.num_rows,
            "bytes": len(ipc),
            "columns": list(table.column_names),
            "epsilon_spent": usage.epsilon_spent,
            "delta_spent": usage.delta_spent,
            "price": {"amount": usage.price_amount, "currency": usage.currency},
            "finished_at": log.format_time(datetime.now(UTC)),
            **jsonable(job.extra),
        }
        meta = jsonable(meta)
        log.append(
            session,
            actor=job.actor,
            action="job.completed",
            payload=jsonable(
                {
                    "job_id": job.id,
                    "agreement_id": job.agreement_id,
                    "consumer": job.consumer,
                    "action": job.action,
                    "dataset": job.dataset,
                    **_sql_fields(job.sql),
                    "result_sha256": sha,
                    "rows_scanned": usage.rows_scanned,
                    "result_rows": usage.result_rows,
                    "bytes_out": usage.bytes_out,
                    "epsilon_spent": usage.epsilon_spent,
                    "delta_spent": usage.delta_spent,
                    "epsilon_left": job.extra.get("epsilon_left"),
                    "price": meta["price"],
                    "usage_id": usage.id,
                    "granted_by": job.decision.enforcement.granted_by
                    if job.decision and job.decision.enforcement
                    else None,
                }
            ),
        )
        row.state, row.action = SUCCEEDED, job.action
        row.decision = jsonable(job.decision.to_dict()) if job.decision else None
        row.result_sha256, row.result_meta = sha, meta
        row.finished_at = datetime.now(UTC)
    return JobOutcome(job.id, table, ipc, meta)


def _denied(exc: DataspaceError) -> bool:
    return not isinstance(exc, SandboxError | QueryFailed) and exc.http_status < 500


def _finish_error(node: Node, job: _Job, exc: DataspaceError) -> None:
    denied = _denied(exc)
    state = DENIED if denied else FAILED
    decision = job.decision if isinstance(exc, PolicyDenied) else None
    error = jsonable(exc.to_dict())
    with node.store.write() as session:
        row = session.get(JobRow, job.id, with_for_update=True)
        if row is None or row.state != RUNNING:
            return
        spent = _spent_by(session, job)
        usage_id = None
        if job.meterable:
            usage = record_usage(
                session,
                _usage(job, "denied" if denied else "failed", spent),
                actor=job.actor,
                terms=job.terms,
            )
            usage_id = usage.id
        reasons = [r.to_dict() for r in decision.reasons if not r.held] if decision else []
        log.append(
            session,
            actor=job.actor,
            action="job.denied" if denied else "job.failed",
            payload=jsonable(
                {
                    "job_id": job.id,
                    "agreement_id": job.agreement_id,
                    "consumer": job.consumer,
                    "action": job.action,
                    "dataset": job.dataset or None,
                    **_sql_fields(job.sql),
                    "code": exc.code,
                    "message": exc.message,
                    "reasons": reasons,
                    "epsilon_spent": spent["epsilon_spent"],
                    "usage_id": usage_id,
                }
            ),
        )
        row.state, row.action = state, job.action
        row.decision = jsonable(decision.to_dict()) if decision else None
        row.error = exc.message
        row.result_meta = {"error": error, "http_status": exc.http_status}
        row.finished_at = datetime.now(UTC)


def _spent_by(session: Session, job: _Job) -> dict[str, Any]:
    """ε/δ a failed DP job already paid (the budget is charged before the engine runs)."""
    spends = session.scalars(
        select(DpSpend).where(DpSpend.agreement_id == job.agreement_id, DpSpend.job_id == job.id)
    ).all()
    return {
        "epsilon_spent": sum((Decimal(s.epsilon) for s in spends), Decimal(0)),
        "delta_spent": sum((Decimal(s.delta) for s in spends), Decimal(0)),
    }


# --- listing -------------------------------------------------------------------------------------


def job_view(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "role": row.role,
        "agreement_id": row.agreement_id,
        "peer": row.peer,
        "action": row.action,
        "state": row.state,
        "sql": row.request.get("sql"),
        "result_sha256": row.result_sha256,
        "meta": row.result_meta,
        "error": row.error,
        "decision": row.decision,
        "created_at": _aware(row.created_at).isoformat(),
        "finished_at": _aware(row.finished_at).isoformat() if row.finished_at else None,
    }


def list_jobs(
    node: Node,
    *,
    agreement_id: str | None = None,
    role: str | None = None,
    state: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Jobs on this node, newest first."""
    stmt = select(JobRow).order_by(JobRow.created_at.desc()).limit(max(1, min(limit, 1000)))
    if agreement_id:
        stmt = stmt.where(JobRow.agreement_id == agreement_id)
    if role:
        stmt = stmt.where(JobRow.role == role)
    if state:
        stmt = stmt.where(JobRow.state == state.upper())
    with node.store.read() as session:
        return [job_view(r) for r in session.scalars(stmt)]


def get_job(node: Node, job_id: str) -> dict[str, Any]:
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r}", hint="see `dataspace job list`")
        return job_view(row)
