"""Jobs under an agreement, consumer side: ask the provider's node, verify, record.

:func:`query` finds the agreement (this node must be its consumer), sends the SQL with a fresh
job id to the provider as a signed ``POST /peer/v1/jobs/query``, checks that the Arrow IPC body
hashes to the ``result_sha256`` the provider states, and records its own job row plus a
``job.result_received`` ledger entry — so both ledgers hold the job, with the same hash. A
refusal is recorded as ``job.denied`` (or ``job.failed``) and re-raised as the same
:class:`~dataspace.errors.DataspaceError` subclass the provider raised. Transport errors are
retried with the **same** job id: the provider runs and charges a job id at most once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow as pa

from dataspace.compute.sqlcheck import MAX_SQL_CHARS, check_text
from dataspace.contracts import store as cstore
from dataspace.errors import Conflict, DataspaceError, NotFound, UsageError, VerificationError
from dataspace.ledger import log
from dataspace.services.job_wire import (
    META_HEADER,
    check_job_id,
    decode_meta,
    error_from_envelope,
    from_ipc,
    is_denial,
    jsonable,
    sha256_hex,
)
from dataspace.services.jobs import DENIED, FAILED, RUNNING, SUCCEEDED
from dataspace.services.node import Node, default_actor
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import ContractNegotiationRow

__all__ = ["PEER_PATH", "QueryOutcome", "query"]

PEER_PATH = "/peer/v1/jobs/query"
ATTEMPTS = 3  # transport failures are retried with the same job id (idempotent on the provider)


@dataclass(frozen=True)
class QueryOutcome:
    """The released table, its metadata (ε spent and left, error bounds, price, hash, ...)
    and the exact IPC bytes received."""

    table: pa.Table
    meta: dict[str, Any]
    ipc: bytes

    @property
    def job_id(self) -> str:
        return str(self.meta["job_id"])


def _provider_of(node: Node, agreement_id: str) -> str:
    with node.store.read() as session:
        agreement = cstore.get_agreement(session, agreement_id, peer=None)
        neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
        if neg is None or neg.role != "consumer":
            raise NotFound(
                f"no agreement {agreement_id!r} in which this node is the consumer",
                hint="see `dataspace contract list`; queries run under your own agreements",
            )
        return neg.peer


def _post(node: Node, provider: str, body: dict[str, Any], timeout: float) -> httpx.Response:
    from dataspace.services.catalog import DeliveryFailed
    from dataspace.services.peers import peer_client

    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            with peer_client(node, provider, timeout=timeout) as client:
                response = client.post(PEER_PATH, json=body)
            if response.status_code != 409 or "still running" not in response.text:
                return response
        except httpx.TimeoutException as exc:
            if not isinstance(exc, httpx.ConnectTimeout):
                # it took the query and said nothing for longer than a job may run: asking
                # again would only wait as long again (the id is safe to resend later)
                raise DeliveryFailed(
                    f"{provider} took the query but did not answer within {timeout:.0f} s",
                    hint=f"check that {provider} is up, then resend job {body['job_id']} "
                         "(--job-id): it runs once and answers a resend with its outcome",
                    job_id=body["job_id"],
                ) from None
            last = exc
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2 * (attempt + 1))
    raise DeliveryFailed(
        f"the query could not be delivered to {provider} ({last or 'job still running'})",
        hint=f"check that {provider} is up, then retry (job {body['job_id']} is safe to resend)",
        job_id=body["job_id"],  # for a program: the id to resend under
    )


def _sandbox_wait(node: Node) -> float:
    limits = node.limits
    return float(limits.sandbox_timeout_seconds) + float(limits.sandbox_kill_grace_seconds) + 30


def query(
    node: Node,
    *,
    agreement_id: str,
    sql: str,
    job_id: str | None = None,
    actor: str | None = None,
) -> QueryOutcome:
    """Run ``sql`` on the provider of ``agreement_id``; only policy-safe results come back."""
    who = actor or default_actor()
    job_id = check_job_id(job_id) if job_id is not None else uuid.uuid4().hex
    if not sql.strip() or len(sql) > MAX_SQL_CHARS:  # what the provider would refuse anyway
        raise UsageError(
            "the SQL is empty" if not sql.strip() else
            f"the SQL is {len(sql):,} characters long; at most {MAX_SQL_CHARS:,} are sent",
            hint="give one SELECT over the agreed dataset")
    check_text(sql)  # a shell's stray bytes (lone surrogates): no store or log holds them
    provider = _provider_of(node, agreement_id)
    received: str | None = None  # the result's hash, when this job's answer was taken before
    with node.store.write() as session:
        earlier = session.get(JobRow, job_id, with_for_update=True)
        if earlier is not None and earlier.state == SUCCEEDED:
            received = _taken_before(earlier, agreement_id, sql, who)
        elif earlier is None:
            session.add(
                JobRow(
                    id=job_id,
                    role="consumer",
                    agreement_id=agreement_id,
                    peer=provider,
                    action="query",
                    state=RUNNING,
                    request={"sql": sql, "actor": who},  # whose result it is
                    created_at=datetime.now(UTC),
                )
            )
        else:
            _resend(earlier, agreement_id, sql)
    try:
        response = _post(
            node,
            provider,
            {"agreement_id": agreement_id, "sql": sql, "job_id": job_id},
            _sandbox_wait(node),
        )
        if response.status_code != 200:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_from_envelope(body, response.status_code)
        meta = decode_meta(response.headers.get(META_HEADER))
        ipc = response.content
        if meta.get("job_id") != job_id or meta.get("agreement_id") != agreement_id:
            raise VerificationError(
                "the provider answered for another job", hint="report this to the provider"
            )
        if sha256_hex(ipc) != meta.get("result_sha256"):
            raise VerificationError(
                "the result does not hash to the result_sha256 the provider stated",
                hint="nothing was accepted; retry the query",
            )
        table = from_ipc(ipc)
        if table.num_rows != meta.get("rows"):
            raise VerificationError("the result's row count differs from the provider's")
        if received is not None and meta.get("result_sha256") != received:
            raise VerificationError(
                f"{provider} answered job {job_id} with another result than it gave before",
                hint="report this to the provider; the result received first stands",
            )
    except DataspaceError as exc:
        if received is None:  # a job taken before keeps its recorded outcome
            _record_error(node, job_id, agreement_id, provider, sql, exc, who)
        raise
    except BaseException:  # Ctrl-C, or a bug: the job must not stay RUNNING here for good
        if received is not None:
            raise
        from dataspace.services.catalog import DeliveryFailed

        stopped = DeliveryFailed(
            f"stopped here before {provider}'s answer was taken",
            hint=f"resend it with --job-id {job_id}: the provider runs a job id once and "
                 "answers a resend with its outcome",
            job_id=job_id,
        )
        _record_error(node, job_id, agreement_id, provider, sql, stopped, who)
        raise
    if received is not None:
        _record_refetch(node, job_id, provider, meta, who)
    else:
        _record_success(node, job_id, agreement_id, provider, sql, meta, who)
    return QueryOutcome(table, meta, ipc)


def _taken_before(row: JobRow, agreement_id: str, sql: str, actor: str) -> str:
    """A job whose answer this node took already, asked again with the same query by the
    same user (the answer was lost between this node and its caller: a client's timeout):
    the provider answers a job id it ran with the same stored result and charges nothing
    again, so the result is fetched once more. Its recorded hash, which the new answer must
    match. Another user of this node gets no one else's result this way."""
    _same_query(row, agreement_id, sql)
    if (row.request or {}).get("actor") != actor:
        raise Conflict(f"job {row.id} has ended SUCCEEDED here, for another user",
                       hint="its result goes back to the user who ran it; run the query "
                            "under a new job id")
    return str(row.result_sha256 or "")


def _record_refetch(
    node: Node, job_id: str, provider: str, meta: dict[str, Any], actor: str
) -> None:
    """The second delivery of a result is evidence too: who took it, and which bytes."""
    with node.store.write() as session:
        log.append(session, actor=actor, action="job.result_refetched", payload=jsonable({
            "job_id": job_id, "provider": provider, "result_sha256": meta["result_sha256"],
            "rows": meta.get("rows"),
        }))


def _same_query(row: JobRow, agreement_id: str, sql: str) -> None:
    same = (row.role == "consumer" and row.agreement_id == agreement_id
            and (row.request or {}).get("sql") == sql)
    if not same:
        raise Conflict(f"job id {row.id} was used for another query",
                       hint="resend it with its own agreement and SQL, or use a new job id")


def _resend(row: JobRow, agreement_id: str, sql: str) -> None:
    """Take up a job id sent before: the same query whose delivery failed, or whose process
    died before the answer was recorded, is asked again (the provider answers a job id it
    has run with the same outcome, and never runs or charges it twice)."""
    _same_query(row, agreement_id, sql)
    if row.state not in (RUNNING, FAILED):
        raise Conflict(f"job {row.id} has ended {row.state} here",
                       hint=f"see `dataspace job show {row.id}`; a new query needs a new id")
    row.state, row.error, row.finished_at = RUNNING, None, None


def _record_success(
    node: Node,
    job_id: str,
    agreement_id: str,
    provider: str,
    sql: str,
    meta: dict[str, Any],
    actor: str,
) -> None:
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        assert row is not None
        if row.state == SUCCEEDED:  # a resend of this id in another process recorded it
            return
        log.append(
            session,
            actor=actor,
            action="job.result_received",
            payload=jsonable(
                {
                    "job_id": job_id,
                    "agreement_id": agreement_id,
                    "provider": provider,
                    "action": meta.get("action"),
                    "sql_sha256": sha256_hex(sql.encode("utf-8")),
                    "result_sha256": meta["result_sha256"],
                    "rows": meta.get("rows"),
                    "bytes": meta.get("bytes"),
                    "columns": meta.get("columns"),
                    "epsilon_spent": meta.get("epsilon_spent"),
                    "epsilon_left": meta.get("epsilon_left"),
                    "price": meta.get("price"),
                }
            ),
        )
        row.state, row.action = SUCCEEDED, str(meta.get("action") or "query")
        row.result_sha256, row.result_meta = str(meta["result_sha256"]), jsonable(meta)
        row.finished_at = datetime.now(UTC)


def _record_error(
    node: Node,
    job_id: str,
    agreement_id: str,
    provider: str,
    sql: str,
    exc: DataspaceError,
    actor: str,
) -> None:
    denied = is_denial(exc)
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None or row.state != RUNNING:
            return
        details = exc.details if isinstance(exc.details, dict) else {}
        reasons = [
            r for r in details.get("reasons", []) if isinstance(r, dict) and not r.get("held")
        ]
        log.append(
            session,
            actor=actor,
            action="job.denied" if denied else "job.failed",
            payload=jsonable(
                {
                    "job_id": job_id,
                    "agreement_id": agreement_id,
                    "provider": provider,
                    "sql_sha256": sha256_hex(sql.encode("utf-8")),
                    "code": exc.code,
                    "message": exc.message,
                    "reasons": reasons,
                    "by": provider
                    if exc.code not in ("delivery_failed", "verification_failed")
                    else None,
                }
            ),
        )
        row.state = DENIED if denied else FAILED
        row.error = exc.message
        row.result_meta = {"error": jsonable(exc.to_dict()), "http_status": exc.http_status}
        row.finished_at = datetime.now(UTC)
