"""Jobs under an agreement, provider side: governed SQL and DP queries run where the data is.

:func:`run_job` is what a consumer's request reaches (through ``POST /peer/v1/jobs/query``)::

    claim the job id (QUEUED) or replay it  →  load agreement, offer, dataset
      →  read the SQL once (columns, action)
      →  admit: under the agreement's write lock, count its running + succeeded jobs and
         evaluate its policy with the execution-time facts (deny by default) → RUNNING
      →  SqlPolicy from the Enforcement + the dataset's classification + the node's k floor
      →  check_query → locked DuckDB worker (run_query)  |  ensure_budget → run_dp_query
      →  output control  →  Arrow IPC, sha256  →  job row + usage record + ledger entry, together

Every outcome of a governed query is final and recorded in one write transaction: ``SUCCEEDED``
(``job.completed``), ``DENIED`` (``job.denied``: unknown or foreign agreement, agreement not
finalized, refused SQL, policy denial, exhausted budget) or ``FAILED`` (``job.failed``: timeout,
out of memory, result too large, engine error, interrupted). Denied and failed attempts are
metered at zero (a usage record with that status) except an unknown or foreign agreement, which
has nothing to meter against. A job id is claimed once: a retry with the same id returns the
stored outcome (the same bytes — after checking the agreement still allows it — or the same
error) and never runs or charges twice. Claims, leases and records live in
:mod:`~dataspace.services.job_records`, the policy helpers in
:mod:`~dataspace.services.job_policy`. See docs/jobs.md. """

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from dataspace.compute import SandboxLimits, check_query, check_text, run_query
from dataspace.compute.bind import bind_problem
from dataspace.compute.errors import QueryRefused
from dataspace.contracts import store as cstore
from dataspace.contracts.messages import policy_from_wire
from dataspace.contracts.negotiation import NegotiationState
from dataspace.errors import Conflict, DataspaceError, NotFound, UsageError
from dataspace.jsondoc import utc
from dataspace.policy import Decision, Policy, PolicyDenied, Request, evaluate
from dataspace.privacy import DpSpec, ensure_budget, run_dp_query
from dataspace.privacy.dp_query import delta_spent
from dataspace.services.job_policy import (
    DENIED,
    DP,
    FAILED,
    GOVERNED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    _action,
    _columns_read,
    _dp_spec,
    _output_control,
    _slots_taken,
    _sql_policy,
    declared_contributor,
    unnamed_people,
)
from dataspace.services.job_policy import _budget_spent as _budget_spent
from dataspace.services.job_policy import _completed_jobs as _completed_jobs
from dataspace.services.job_policy import _Dataset as _Dataset
from dataspace.services.job_policy import _dataset as _dataset
from dataspace.services.job_policy import _region as _region
from dataspace.services.job_policy import _single_reason as _single_reason
from dataspace.services.job_policy import _terms as _terms
from dataspace.services.job_records import (
    JobInterrupted,
    JobOutcome,
    Stored,
    _Job,
    claim,
    fail_stale,
    finish_error,
    finish_success,
    record_replay_denied,
    result_path,
    sweep_stale,
)
from dataspace.services.job_wire import (
    check_job_id,
    error_from_envelope,
    from_ipc,
    sha256_hex,
    to_ipc,
)
from dataspace.services.node import Node
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import ContractNegotiationRow, OfferRow

__all__ = [
    "DENIED",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "JobInterrupted",
    "JobOutcome",
    "get_job",
    "job_view",
    "list_jobs",
    "run_job",
    "sweep_stale",
]

#: What a replay does not re-check: what the original run consumed (its job slot, its ε/δ).
REPLAY_DEFERRED = frozenset({"count", "epsilon", "delta"})


@dataclass(frozen=True)
class _Agreed:
    """What the agreement says, read before the SQL is parsed."""

    policy: Policy
    dataset: _Dataset
    dp_spec: DpSpec | None
    purpose: str | None
    signed_at: datetime
    target: str
    contributor: str | None


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
    :class:`Conflict` (the job id is taken or the job is still running). Each is recorded first,
    except SQL that is not Unicode text (a lone surrogate), which no store can hold.
    """
    check_text(sql)
    job = _Job(
        id=check_job_id(job_id) if job_id is not None else uuid.uuid4().hex,
        agreement_id=agreement_id,
        consumer=consumer,
        sql=sql,
        actor=actor or f"peer:{consumer}",
        started=now or datetime.now(UTC),
        t0=time.perf_counter(),
    )
    stored = claim(node, job)
    if stored is not None:
        return _replay(node, job, stored)
    try:
        return _run(node, job)
    except DataspaceError as exc:
        finish_error(node, job, exc)
        raise
    except BaseException as exc:  # a bug or an interrupt: the job must not stay in flight
        stopped = DataspaceError(f"the job stopped unexpectedly ({type(exc).__name__})")
        finish_error(node, job, stopped)
        raise


def _run(node: Node, job: _Job) -> JobOutcome:
    agreed = _load(node, job)
    dataset, dp_spec = agreed.dataset, agreed.dp_spec
    if job.action == DP and dp_spec is None:
        raise _deny(
            job,
            _single_reason(
                "dp", "the agreement asks for DP queries but its offer declares no DP parameters"
            ),
        )
    contributor = agreed.contributor
    if contributor is not None and contributor.lower() not in {c.lower() for c in dataset.columns}:
        raise _deny(
            job,
            _single_reason(
                "contributor",
                f"the offer counts contributors by column {contributor!r}, which the dataset lacks",
            ),
        )
    several = unnamed_people(dataset.identifier_list, contributor)
    if dp_spec is not None and several:
        raise _deny(
            job,
            _single_reason(
                "contributor",
                f"the dataset has several identifier columns ({', '.join(several)}) and the "
                "offer does not say which one is the person: DP queries need it named "
                "(the provider publishes the offer again with --contributor-column)",
            ),
        )
    # Read the SQL once without the agreement's limits, to learn which columns it reads.
    # Anything the checker refuses here (COPY, files, joins, ...) is refused for good.
    columns_read, grouped = _columns_read(sql=job.sql, dataset=dataset)
    job.extra["fields"] = sorted(columns_read)
    # the policy weighs the δ this query spends (ungrouped Laplace spends none), not the offer's
    delta = delta_spent(dp_spec, grouped) if dp_spec is not None else None
    enforcement = _admit(node, job, agreed, frozenset(columns_read), delta).enforcement
    assert enforcement is not None
    sql_policy = _sql_policy(
        dataset,
        enforcement,
        floor=int(node.limits.min_group_size_floor),
        contributor=contributor,
    )
    limits = SandboxLimits.from_limits(node.limits)
    if dp_spec is not None:
        if enforcement.epsilon_budget is None:
            raise _deny(
                job,
                _single_reason(
                    "epsilon", "a DP query needs an epsilon budget in the agreement's policy"
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
            max_contributions=dp_spec.max_contributions,
            contributor_column=sql_policy.contributor_column,
        )
        expected = None
    else:
        checked = check_query(job.sql, sql_policy)
        problem = bind_problem(checked.sql, dataset.name, sql_policy.columns)
        if problem is not None:  # decided by the schema alone, so saying why leaks nothing
            raise QueryRefused(f"the query does not fit the table's columns: {problem}",
                               hint="fix the query; nothing was run or charged")
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
        job.extra["contributor_column"] = sql_policy.contributor_column
    _output_control(table, expected, limits)
    return finish_success(node, job, table, to_ipc(table), figures)


# --- the agreement -----------------------------------------------------------------------------


def _load(node: Node, job: _Job) -> _Agreed:
    """The agreement (ours, with this consumer, FINALIZED), its offer, dataset and policy."""
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
        agreed = _Agreed(
            policy=policy,
            dataset=dataset,
            dp_spec=_dp_spec(offer.dp if offer else None) if job.action == DP else None,
            purpose=agreement.purpose,
            signed_at=utc(agreement.signed_at),
            target=agreement.target,
            contributor=declared_contributor(offer),
        )
        state = neg.state
    if state != NegotiationState.FINALIZED:
        raise _deny(job, _not_finalized(state))
    return agreed


def _not_finalized(state: str | None) -> Decision:
    return _single_reason("agreement", f"the agreement's negotiation is {state}, not FINALIZED")


def _request(
    node: Node,
    job: _Job,
    *,
    purpose: str | None,
    target: str,
    signed_at: datetime,
    fields: frozenset[str] | None,
    dp: DpSpec | None = None,
    delta: float | None = None,
    jobs_run: int | None = None,
    spent: tuple[Decimal, Decimal] | None = None,
) -> Request:
    """The execution-time facts the policy is evaluated with (``None``: not known); ``delta``
    is what the query spends, when known (else the offer's δ per query)."""
    return Request(
        action=job.action,
        assignee=job.consumer,
        purpose=purpose,
        target=target,
        now=job.started,
        agreed_at=signed_at,
        jobs_run=jobs_run,
        fields=fields,
        output="aggregate-only",
        region=_region(node, job.consumer),
        epsilon=Decimal(str(dp.epsilon)) if dp else None,
        epsilon_spent=spent[0] if dp and spent else None,
        delta=Decimal(str(dp.delta if delta is None else delta)) if dp else None,
        delta_spent=spent[1] if dp and spent else None,
    )


def _admit(
    node: Node, job: _Job, agreed: _Agreed, fields: frozenset[str], delta: float | None = None
) -> Decision:
    """Evaluate the policy and take a job slot, atomically per agreement.

    Under the agreement row's write lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL
    ``SELECT ... FOR UPDATE``): re-check that the agreement is FINALIZED, fail its interrupted
    jobs, count its RUNNING + SUCCEEDED jobs, evaluate, and move this job QUEUED → RUNNING.
    Concurrent jobs queue here, so a ``count`` limit of k admits exactly k of them.
    """
    with node.store.write() as session:
        agreement = cstore.get_agreement(session, job.agreement_id, peer=job.consumer, lock=True)
        neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
        state = neg.state if neg is not None else None
        fail_stale(session, node, agreement_id=job.agreement_id, exclude=job.id)
        if state != NegotiationState.FINALIZED:
            decision = _not_finalized(state)
        else:
            taken = _slots_taken(session, job.agreement_id, exclude=job.id)
            spent = _budget_spent(session, job.agreement_id)
            request = _request(
                node,
                job,
                purpose=agreed.purpose,
                target=agreed.target,
                signed_at=agreed.signed_at,
                fields=fields,
                dp=agreed.dp_spec,
                delta=delta,
                jobs_run=taken,
                spent=spent,
            )
            decision = evaluate(agreed.policy, request)
        if decision.allowed:
            row = session.get(JobRow, job.id, with_for_update=True)
            if row is None or row.state != QUEUED:
                raise Conflict(
                    f"job {job.id!r} outlived its lease and was recorded as failed",
                    hint="send the query again under a new job id",
                )
            row.state, row.action = RUNNING, job.action
    job.decision = decision
    if not decision.allowed:
        raise PolicyDenied(decision)
    return decision


def _deny(job: _Job, decision: Decision) -> PolicyDenied:
    job.decision = decision
    return PolicyDenied(decision)


# --- replays -----------------------------------------------------------------------------------


def _replay(node: Node, job: _Job, stored: Stored) -> JobOutcome:
    """The stored outcome of a job id: the same bytes, if the agreement still allows them."""
    if stored.state == SUCCEEDED and stored.sha:
        try:
            _revalidate(node, job, stored.meta)
        except DataspaceError as exc:
            record_replay_denied(node, job, exc)
            raise
        path = result_path(node, stored.sha)
        ipc = path.read_bytes() if path.exists() else b""
        if sha256_hex(ipc) != stored.sha:
            raise NotFound(
                f"the result of job {job.id!r} is no longer kept",
                hint="run the query again under a new job id",
            )
        return JobOutcome(job.id, from_ipc(ipc), ipc, dict(stored.meta), replayed=True)
    meta = stored.meta
    raise error_from_envelope(
        {"error": meta.get("error", {"code": "error", "message": "the job failed"})},
        meta.get("http_status"),
    )


def _revalidate(node: Node, job: _Job, meta: dict[str, Any]) -> None:
    """Re-check, at replay time, what can have changed since the job ran.

    The agreement must still exist, be ours with this consumer and FINALIZED (not
    terminated), and its policy must still allow the job *now*: ``dateTime`` and
    ``elapsedTime`` expiry, purpose, region, fields. What the original run consumed (its job
    slot and its ε/δ) is not charged again, so ``count``, ``epsilon`` and ``delta`` are not
    re-checked.
    """
    with node.store.read() as session:
        agreement = cstore.get_agreement(session, job.agreement_id, peer=job.consumer)
        neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
        if neg is None or neg.role != "provider" or agreement.consumer != job.consumer:
            raise NotFound(f"no agreement {job.agreement_id!r}", hint="check the agreement id")
        policy = policy_from_wire(agreement.policy, "$.agreement")
        state = neg.state
        signed_at, purpose = utc(agreement.signed_at), agreement.purpose
        target = agreement.target
    if state != NegotiationState.FINALIZED:
        raise PolicyDenied(_not_finalized(state))
    fields = meta.get("fields")
    job.action = str(meta.get("action") or GOVERNED)
    request = _request(
        node,
        job,
        purpose=purpose,
        target=target,
        signed_at=signed_at,
        fields=frozenset(str(f) for f in fields) if isinstance(fields, list) else None,
    )
    defer = REPLAY_DEFERRED | (frozenset() if isinstance(fields, list) else {"fields"})
    decision = evaluate(policy, request, defer=defer)
    if not decision.allowed:
        raise PolicyDenied(decision)


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
        "created_at": utc(row.created_at).isoformat(),
        "finished_at": utc(row.finished_at).isoformat() if row.finished_at else None,
    }


#: what a job row's role and state can be: a governed query's two sides, a multi-party job's
#: initiator (its participants are providers) and a training's dealer
JOB_ROLES = ("provider", "consumer", "initiator", "dealer")
JOB_STATES = (QUEUED, RUNNING, SUCCEEDED, DENIED, FAILED)


def check_state(state: str | None) -> None:
    """A state filter no job can match is refused: it would only ever list nothing."""
    if state and state.upper() not in JOB_STATES:
        raise UsageError(f"no job has the state {state!r}",
                         hint="states: " + ", ".join(JOB_STATES))


def list_jobs(
    node: Node,
    *,
    agreement_id: str | None = None,
    role: str | None = None,
    state: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Jobs on this node, newest first (interrupted provider jobs are failed first). A role
    or state no job can have is refused (it would only ever list nothing)."""
    if role and role not in JOB_ROLES:
        raise UsageError(f"no job has the role {role!r}", hint="roles: " + ", ".join(JOB_ROLES))
    check_state(state)
    sweep_stale(node)
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
    sweep_stale(node)
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r}", hint="see `dataspace job list`")
        return job_view(row)
