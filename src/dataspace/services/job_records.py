"""Provider job records: claiming a job id, the job's lease, and the one record of each outcome.

* :func:`claim` takes a job id (state ``QUEUED``, ``claimed_at`` = now) or finds what is
  stored under it. A ``QUEUED`` or ``RUNNING`` job is still in flight (``Conflict``) until its
  lease runs out: ``claimed_at`` + :func:`lease_seconds`. Then the node that ran it must have
  stopped (a governed job never outlives the sandbox timeout), so the job is failed as
  *interrupted* — ``job.failed`` in the ledger, a zero usage record, any ε it had already
  reserved stated — and a retry gets that outcome instead of a ``Conflict`` forever.
* :func:`finish_success` / :func:`finish_error` write the final state, the usage record and
  the ledger entry in one transaction; a job that lost its lease is never released.
* :func:`fail_stale` and :func:`sweep_stale` fail the interrupted jobs of one agreement (when a
  new job of it is admitted, so crashed jobs do not hold its job slots) or of the node (when
  jobs are listed, and at start-up where the node calls it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.compute.errors import SandboxBusy
from dataspace.contracts import store as cstore
from dataspace.errors import Conflict, DataspaceError, NotFound
from dataspace.jsondoc import utc
from dataspace.ledger import log
from dataspace.metering import PriceTerms, Usage, record_usage
from dataspace.policy import Decision, PolicyDenied
from dataspace.scratch import process_gone, process_tag, write_whole
from dataspace.services.job_policy import (
    DENIED,
    DP,
    FAILED,
    GOVERNED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    _dataset,
    _terms,
)
from dataspace.services.job_wire import is_denial, jsonable, sha256_hex
from dataspace.services.node import Node
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import ContractNegotiationRow, OfferRow
from dataspace.store.models_privacy import DpSpend

logger = logging.getLogger("dataspace.node")

RESULTS_DIR = "results"
SQL_IN_LEDGER = 2000  # characters of the SQL kept in a ledger payload (its sha256 always)
IN_FLIGHT = (QUEUED, RUNNING)


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


@dataclass(frozen=True)
class Stored:
    """The outcome already recorded under a job id."""

    state: str
    meta: dict[str, Any]
    sha: str | None


class JobInterrupted(DataspaceError):
    """The node stopped while the job ran; its lease expired and nothing was released."""

    code = "job_interrupted"
    http_status = 500


# --- the lease ---------------------------------------------------------------------------------


def lease_seconds(node: Node) -> float:
    """``job_lease_seconds``, but never shorter than a job may legitimately run."""
    limits = node.limits
    floor = float(limits.sandbox_timeout_seconds) + float(limits.sandbox_kill_grace_seconds)
    return max(float(limits.job_lease_seconds), floor)


def _expired(row: JobRow, now: datetime, lease: float, alive: Path) -> bool:
    """Is this in-flight job interrupted: has the process that claimed it ended (its lock in
    the node's ``alive`` folder, else its pid and start time), or its lease run out (a claim
    that recorded no process)?"""
    if row.claimed_by and process_gone(row.claimed_by, alive):
        return True
    claimed = utc(row.claimed_at or row.created_at)
    return claimed + timedelta(seconds=lease) < now


def _interrupted(lease: float) -> JobInterrupted:
    return JobInterrupted(
        "the job was interrupted: the provider process running it ended, or it did not "
        f"finish within its {lease:g} s lease (the provider node stopped while it ran); "
        "nothing was released",
        hint="send the query again under a new job id",
    )


def _job_from_row(session: Session, node: Node, row: JobRow, now: datetime) -> _Job:
    """Rebuild what a record needs of a job another process started (and never finished)."""
    started = utc(row.created_at)
    job = _Job(
        id=row.id,
        agreement_id=row.agreement_id,
        consumer=row.peer,
        sql=str((row.request or {}).get("sql") or ""),
        actor=f"node:{node.name}",
        started=started,
        t0=time.perf_counter() - max(0.0, (now - started).total_seconds()),
        action=row.action,
    )
    try:
        agreement = cstore.get_agreement(session, row.agreement_id, peer=row.peer)
    except NotFound:
        return job
    neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
    if neg is None or neg.role != "provider" or agreement.consumer != row.peer:
        return job
    offer = session.get(OfferRow, agreement.offer_id) if agreement.offer_id else None
    job.provider, job.dataset, job.meterable = agreement.provider, agreement.target, True
    with contextlib.suppress(NotFound):
        job.dataset = _dataset(node, session, offer.dataset_id if offer else agreement.target).name
    job.terms = _terms(offer)
    return job


def fail_stale(
    session: Session, node: Node, *, agreement_id: str | None = None, exclude: str | None = None
) -> list[str]:
    """Fail, inside the caller's write transaction, the in-flight jobs whose lease expired."""
    now, lease = datetime.now(UTC), lease_seconds(node)
    stmt = select(JobRow).where(
        JobRow.role == "provider",
        JobRow.state.in_(IN_FLIGHT),
        JobRow.action.in_((GOVERNED, DP)),
    )
    if agreement_id is not None:
        stmt = stmt.where(JobRow.agreement_id == agreement_id)
    expired = sorted(
        row.id
        for row in session.scalars(stmt).all()
        if row.id != exclude and _expired(row, now, lease, node.alive_dir)
    )
    failed = []
    for job_id in expired:  # locked one by one, in id order: no lock cycles between sweepers
        row = session.get(JobRow, job_id, with_for_update=True, populate_existing=True)
        if row is None or row.state not in IN_FLIGHT or not _expired(
            row, now, lease, node.alive_dir
        ):
            continue
        record_error(session, _job_from_row(session, node, row, now), _interrupted(lease))
        failed.append(job_id)
    return failed


def sweep_stale(node: Node) -> list[str]:
    """Fail every interrupted provider job of this node (call at start-up; cheap when none)."""
    now, lease = datetime.now(UTC), lease_seconds(node)
    with node.store.read() as session:
        rows = session.scalars(
            select(JobRow).where(
                JobRow.role == "provider",
                JobRow.state.in_(IN_FLIGHT),
                JobRow.action.in_((GOVERNED, DP)),
            )
        ).all()
        stale = any(_expired(r, now, lease, node.alive_dir) for r in rows)
    if not stale:
        return []
    with node.store.write() as session:
        return fail_stale(session, node)


# --- claiming ----------------------------------------------------------------------------------


def claim(node: Node, job: _Job) -> Stored | None:
    """Take the job id (state QUEUED), or return the outcome already recorded under it."""
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
                    state=QUEUED,
                    request={"sql": job.sql},
                    created_at=job.started,
                    claimed_at=datetime.now(UTC),
                    claimed_by=process_tag(),
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
        if row.state in IN_FLIGHT:
            now, lease = datetime.now(UTC), lease_seconds(node)
            if not _expired(row, now, lease, node.alive_dir):
                raise Conflict(f"job {job.id!r} is still running", hint="retry in a moment")
            record_error(session, _job_from_row(session, node, row, now), _interrupted(lease))
        return Stored(row.state, dict(row.result_meta or {}), row.result_sha256)


# --- results -----------------------------------------------------------------------------------


def result_path(node: Node, sha: str) -> Path:
    return node.root / RESULTS_DIR / f"{sha}.arrow"


#: How long a result file no job records is left alone (its job may be committing now).
ORPHAN_RESULT_GRACE_SECONDS = 15 * 60


def orphan_results(node: Node, now: float | None = None) -> list[str]:
    """Delete result files no job records, last written ``ORPHAN_RESULT_GRACE_SECONDS`` ago
    or more: a job's result is written before its commit, and a process stopped in between
    left a result nothing was released from (call at start-up). Their names."""
    folder = node.root / RESULTS_DIR
    if not folder.is_dir():
        return []
    files = list(folder.glob("*.arrow"))
    if not files:
        return []
    with node.store.read() as session:
        recorded = set(session.scalars(
            select(JobRow.result_sha256).where(JobRow.result_sha256.is_not(None))))
    before = (time.time() if now is None else now) - ORPHAN_RESULT_GRACE_SECONDS
    removed = []
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            if file.stem not in recorded and file.stat().st_mtime <= before:
                file.unlink()
                removed.append(file.name)
    return removed


def _store_result(node: Node, sha: str, ipc: bytes) -> None:
    folder = node.root / RESULTS_DIR
    folder.mkdir(exist_ok=True)
    path = result_path(node, sha)
    try:  # the same bytes kept already: made fresh, so the orphan sweep's grace covers it
        os.utime(path)
    except FileNotFoundError:
        write_whole(path, ipc)


def sql_fields(sql: str) -> dict[str, Any]:
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


# --- finishing ---------------------------------------------------------------------------------


def finish_success(
    node: Node, job: _Job, table: pa.Table, ipc: bytes, figures: dict[str, Any]
) -> JobOutcome:
    sha = sha256_hex(ipc)
    with node.store.write() as session:
        row = session.get(JobRow, job.id, with_for_update=True)
        if row is None or row.state != RUNNING:
            # Its lease ran out and another process recorded it as interrupted: the record
            # stands and nothing is released (raising here writes nothing, no file either).
            raise Conflict(
                f"job {job.id!r} outlived its lease and was recorded as failed; "
                "nothing was released",
                hint="send the query again under a new job id",
            )
        # Written only for a job still holding its lease. Results are shared by hash (another
        # job may hold the same one), so a commit that fails after this leaves the file.
        _store_result(node, sha, ipc)
        return _record_success(session, row, job, table, ipc, figures, sha)


def _record_success(
    session: Any, row: JobRow, job: _Job, table: pa.Table, ipc: bytes, figures: dict[str, Any],
    sha: str,
) -> JobOutcome:
    """The success record in the caller's transaction: usage, ``job.completed``, the row."""
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
    enforcement = job.decision.enforcement if job.decision else None
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
                **sql_fields(job.sql),
                "result_sha256": sha,
                "rows_scanned": usage.rows_scanned,
                "result_rows": usage.result_rows,
                "bytes_out": usage.bytes_out,
                "epsilon_spent": usage.epsilon_spent,
                "delta_spent": usage.delta_spent,
                "epsilon_left": job.extra.get("epsilon_left"),
                "price": meta["price"],
                "usage_id": usage.id,
                "granted_by": enforcement.granted_by if enforcement else None,
            }
        ),
    )
    row.state, row.action = SUCCEEDED, job.action
    row.decision = jsonable(job.decision.to_dict()) if job.decision else None
    row.result_sha256, row.result_meta = sha, meta
    row.finished_at = datetime.now(UTC)
    return JobOutcome(job.id, table, ipc, meta)


def _public_error(exc: DataspaceError) -> dict[str, Any]:
    """The error as the consumer may see it (never an engine's internal detail)."""
    body = dict(exc.to_dict())
    details = body.get("details")
    if isinstance(details, Mapping) and "internal_detail" in details:
        details = {k: v for k, v in details.items() if k != "internal_detail"}
        if details:
            body["details"] = details
        else:
            body.pop("details")
    out: dict[str, Any] = jsonable(body)
    return out


def finish_error(node: Node, job: _Job, exc: DataspaceError) -> None:
    detail = getattr(exc, "internal_detail", None)
    if detail:  # the engine's words stay here: they can quote a row's value
        logger.warning("job %s (agreement %s, consumer %s): %s; the engine said: %s",
                       job.id, job.agreement_id, job.consumer, exc.code, detail)
    with node.store.write() as session:
        if isinstance(exc, SandboxBusy):
            # nothing ran and nothing was written for it but its claim: give the id back, so
            # sending it again later runs it instead of replaying "busy, try again"
            row = session.get(JobRow, job.id, with_for_update=True)
            if row is not None and row.state in IN_FLIGHT:
                session.delete(row)
                return
        record_error(session, job, exc)


def record_error(session: Session, job: _Job, exc: DataspaceError) -> bool:
    """Record a denied or failed job (state, usage, ledger) if it is still in flight."""
    denied = is_denial(exc)
    state = DENIED if denied else FAILED
    decision = job.decision if isinstance(exc, PolicyDenied) else None
    error = _public_error(exc)
    row = session.get(JobRow, job.id, with_for_update=True)
    if row is None or row.state not in IN_FLIGHT:
        return False
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
                **sql_fields(job.sql),
                "code": error["code"],
                "message": error["message"],
                "reasons": reasons,
                "epsilon_spent": spent["epsilon_spent"],
                "usage_id": usage_id,
            }
        ),
    )
    row.state, row.action = state, job.action
    row.decision = jsonable(decision.to_dict()) if decision else None
    row.error = str(error["message"])
    row.result_meta = {"error": error, "http_status": exc.http_status}
    row.finished_at = datetime.now(UTC)
    return True


def record_replay_denied(node: Node, job: _Job, exc: DataspaceError) -> None:
    """A retry of a succeeded job that its agreement no longer allows: logged, not released."""
    decision = getattr(exc, "decision", None) if isinstance(exc, PolicyDenied) else None
    reasons = [r.to_dict() for r in decision.reasons if not r.held] if decision else []
    with node.store.write() as session:
        log.append(
            session,
            actor=job.actor,
            action="job.replay_denied",
            payload=jsonable(
                {
                    "job_id": job.id,
                    "agreement_id": job.agreement_id,
                    "consumer": job.consumer,
                    "code": exc.code,
                    "message": exc.message,
                    "reasons": reasons,
                }
            ),
        )


def _spent_by(session: Session, job: _Job) -> dict[str, Any]:
    """ε/δ a failed DP job already paid (the budget is charged before the engine runs)."""
    spends = session.scalars(
        select(DpSpend).where(DpSpend.agreement_id == job.agreement_id, DpSpend.job_id == job.id)
    ).all()
    return {
        "epsilon_spent": sum((Decimal(s.epsilon) for s in spends), Decimal(0)),
        "delta_spent": sum((Decimal(s.delta) for s in spends), Decimal(0)),
    }
