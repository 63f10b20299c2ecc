"""Multi-party job rows: the initiator's and each participant's, their step events, the end.

Both sides keep one :class:`~dataspace.store.models_compute.JobRow` per job, under the same
job id on every node:

* the **initiator** (``role="initiator"``): ``peer`` lists the participants, ``request`` the
  job's parameters (``mp``), its participants with their agreements, ``attempt`` and
  ``retry_of``; ``result_meta`` holds the step events of every node (``steps``), ``progress``
  (done / total), the released ``result`` or the ``error``, a ``heartbeat`` and the
  ``pending_aborts`` of participants that could not be told about a failure;
* a **participant** (``role="provider"`` — it provides data under its agreement, so the
  agreement's ``count`` constraint counts these jobs too): ``peer`` is the initiator,
  ``request`` the opening step's header, ``result_meta`` its own step events, its
  ``heartbeat`` and what it kept (``result``: the aligned-rows file, sizes).

``result_meta`` is replaced, never mutated in place (SQLAlchemy's JSON type does not track
in-place changes). A RUNNING row whose heartbeat is older than its idle timeout is failed by
:func:`reap` (lazily, whenever jobs are read or a step arrives).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.errors import Conflict, DataspaceError, NotFound
from dataspace.ledger import log
from dataspace.metering import PriceTerms, Usage, record_usage
from dataspace.services.job_wire import jsonable
from dataspace.services.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, check_state
from dataspace.services.node import Node
from dataspace.store.models_compute import JobRow

__all__ = [
    "ACTIONS",
    "INITIATOR",
    "PARTICIPANT",
    "add_events",
    "create_row",
    "event",
    "fail_orphaned",
    "finish",
    "get_row_view",
    "list_views",
    "reap",
    "view",
]

INITIATOR, PARTICIPANT = "initiator", "provider"
PSI, AGGREGATE = "psi", "secure-aggregate"
ACTIONS = (PSI, AGGREGATE)
# the training services' job actions (train_party.ACTION, predict.ACTION take them from here)
TRAIN, PREDICT = "federated-train", "federated-predict"
TRAINING_ACTIONS = (TRAIN, PREDICT)
DEFAULT_IDLE_TIMEOUT = 120.0


def plain(value: Any) -> Any:
    """JSON-safe like :func:`jsonable`, but finite floats stay numbers (results for the API)."""
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return jsonable(value)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def event(node: str, step: int, name: str, state: str = "done", **info: Any) -> dict[str, Any]:
    """One step event: which node did which step, how it ended, and what it measured."""
    out: dict[str, Any] = jsonable(
        {
            "node": node,
            "step": step,
            "name": name,
            "state": state,
            "at": now_iso(),
            **({"info": info} if info else {}),
        }
    )
    return out


def create_row(
    node: Node,
    *,
    job_id: str,
    role: str,
    agreement_id: str,
    peer: str,
    action: str,
    request: Mapping[str, Any],
    total: int = 0,
    state: str = RUNNING,
) -> None:
    """A new job row; a participant's starts QUEUED until its agreement admits it."""
    with node.store.write() as session:
        session.add(
            JobRow(
                id=job_id,
                role=role,
                agreement_id=agreement_id,
                peer=peer[:200],
                action=action,
                state=state,
                request=jsonable(dict(request)),
                result_meta={
                    "steps": [],
                    "progress": {"done": 0, "total": total},
                    "heartbeat": time.time(),
                },
                created_at=datetime.now(UTC),
            )
        )


def _meta(row: JobRow) -> dict[str, Any]:
    return dict(row.result_meta or {})


# callers already seen per (node, job) while it runs, so a step costs no write after the
# first; dropped when the job ends (finish)
_ENGAGED: dict[tuple[str, str], set[str]] = {}
_ENGAGED_LOCK = threading.Lock()
NOT_ENGAGING = frozenset({"open", "status"})  # steps that release nothing of the data


def mark_engaged(node: Node, job_id: str, caller: str) -> None:
    """Note on a provider's RUNNING job that a step past its opening arrived from its
    initiator: outputs may leave from here on, so the job holds its agreement slot even if it
    fails or is aborted later (:func:`dataspace.services.job_policy._slots_taken`)."""
    key = (str(node.root), job_id)
    with _ENGAGED_LOCK:
        if caller in _ENGAGED.get(key, ()):
            return
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None or row.state != RUNNING:
            return
        if row.peer == caller:
            meta = _meta(row)
            if not meta.get("engaged"):
                row.result_meta = {**meta, "engaged": True}
    with _ENGAGED_LOCK:  # marked, or a step of another party of the job: no write again
        _ENGAGED.setdefault(key, set()).add(caller)


def add_events(
    node: Node,
    job_id: str,
    events: Iterable[Mapping[str, Any]],
    *,
    ledger: bool = True,
    actor: str = "",
    entries: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Append step events to the job (heartbeat too); this node's steps (its own events, and
    ``entries``) go to the ledger as ``mp.step``."""
    with node.store.write() as session:
        add_events_in(session, node, job_id, events, ledger=ledger, actor=actor, entries=entries)


def add_events_in(
    session: Session,
    node: Node,
    job_id: str,
    events: Iterable[Mapping[str, Any]],
    *,
    ledger: bool = True,
    actor: str = "",
    entries: Iterable[Mapping[str, Any]] = (),
) -> None:
    """:func:`add_events` inside the caller's transaction."""
    events = [dict(e) for e in events]
    row = session.get(JobRow, job_id, with_for_update=True)
    if row is None:
        return
    meta = _meta(row)
    steps = list(meta.get("steps") or []) + events
    progress = dict(meta.get("progress") or {})
    progress["done"] = sum(1 for e in steps if e.get("state") == "done")
    progress["total"] = max(int(progress.get("total") or 0), progress["done"])
    row.result_meta = {**meta, "steps": steps, "progress": progress, "heartbeat": time.time()}
    if ledger:
        for e in events:
            if e.get("node") != node.name:
                continue
            log.append(
                session,
                actor=actor or f"node:{node.name}",
                action="mp.step",
                payload=jsonable(
                    {
                        "job_id": job_id,
                        "role": row.role,
                        "action": row.action,
                        **{k: v for k, v in e.items() if k != "at"},
                    }
                ),
            )
    for entry in entries:
        log.append(
            session,
            actor=actor or f"node:{node.name}",
            action="mp.step",
            payload=jsonable(
                {"job_id": job_id, "role": row.role, "action": row.action, **dict(entry)}
            ),
        )


def beat(node: Node, job_id: str) -> None:
    """A sign of life of a RUNNING job run in this process (its heartbeat), while its
    initiator works alone: :func:`reap`, run by any process that reads jobs, would fail it
    as timed out."""
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is not None and row.state == RUNNING:
            row.result_meta = {**_meta(row), "heartbeat": time.time()}


def set_meta(node: Node, job_id: str, **values: Any) -> None:
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is not None:
            row.result_meta = {**_meta(row), **jsonable(values)}


#: ``retried_as`` while a retry is being started, before its job id is known
RETRY_STARTING = "(starting)"


def claim_retry(node: Node, job_id: str) -> None:
    """Mark a failed job as retried (``retried_as``), once: two retries of one job at once (a
    double click, the CLI and the API) would each start an attempt, taking a ``count`` slot
    and ε at every participant. :class:`Conflict` if it was retried already."""
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None:
            return
        meta = _meta(row)
        taken = meta.get("retried_as")
        if taken == RETRY_STARTING:
            raise Conflict(f"job {job_id} is being retried right now",
                           hint="see `dataspace job list` for the new attempt")
        if taken:
            raise Conflict(f"job {job_id} was retried already, as {taken}",
                           hint=f"retry the latest attempt instead: `dataspace job retry "
                           f"{taken}` (if it failed too)")
        row.result_meta = {**meta, "retried_as": RETRY_STARTING}


def settle_retry(node: Node, job_id: str, new_job_id: str | None) -> None:
    """After :func:`claim_retry`: the new attempt's id, or (None) the claim given back because
    the attempt could not be started."""
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is not None:
            meta = _meta(row)
            meta.pop("retried_as", None)
            row.result_meta = meta if new_job_id is None else {**meta, "retried_as": new_job_id}


def finish(
    node: Node,
    job_id: str,
    *,
    state: str,
    actor: str,
    ledger_action: str,
    ledger_payload: Mapping[str, Any],
    result: Mapping[str, Any] | None = None,
    error: DataspaceError | None = None,
    usage: Usage | None = None,
    terms: PriceTerms | None = None,
    decision: Mapping[str, Any] | None = None,
    also: Callable[[Session], Any] | None = None,
) -> bool:
    """End a RUNNING (or not yet admitted, QUEUED) job — state, result or error, usage record,
    ledger entry, and ``also`` (e.g. finalizing the node's model part) — in one transaction.

    Returns False (and changes nothing) when the job has ended already: the first end wins.
    """
    with _ENGAGED_LOCK:
        _ENGAGED.pop((str(node.root), job_id), None)
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None or row.state not in (RUNNING, QUEUED):
            return False
        if also is not None:
            also(session)
        usage_id = None
        if usage is not None:
            usage_id = record_usage(session, usage, actor=actor, terms=terms).id
        meta = _meta(row)
        if result is not None:
            meta["result"] = plain(dict(result))
        if error is not None:
            meta["error"] = jsonable(error.to_dict())
            meta["http_status"] = error.http_status
            row.error = error.message
        if decision is not None:
            row.decision = jsonable(dict(decision))
        meta["heartbeat"] = time.time()
        row.result_meta = meta
        row.state = state
        row.finished_at = datetime.now(UTC)
        log.append(
            session,
            actor=actor,
            action=ledger_action,
            payload=jsonable(
                {
                    "job_id": job_id,
                    "role": row.role,
                    "action": row.action,
                    **dict(ledger_payload),
                    "usage_id": usage_id,
                }
            ),
        )
    return True


def fail(node: Node, job_id: str, error: DataspaceError, *, actor: str, **payload: Any) -> bool:
    """End a RUNNING job as FAILED with ``error`` (ledger ``job.failed``)."""
    return finish(
        node,
        job_id,
        state=FAILED,
        actor=actor,
        ledger_action="job.failed",
        ledger_payload={"code": error.code, "message": error.message, **payload},
        error=error,
    )


def unwind_success(
    node: Node,
    job_id: str,
    error: DataspaceError,
    *,
    actor: str,
    undo: Callable[[Session], bool],
) -> bool:
    """A job that SUCCEEDED here but failed as a whole (the initiator aborted it after this
    node committed): FAILED with ``error`` (ledger ``job.failed``, ``cause``
    ``aborted-after-commit``) when ``undo`` (e.g. revoking the committed model part) did
    something, in one transaction. Its usage record stands: the node did its share of the work.
    Returns whether the job was unwound."""
    with node.store.write() as session:
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None or row.state != SUCCEEDED or not undo(session):
            return False
        meta = _meta(row)
        meta["error"] = jsonable(error.to_dict())
        meta["http_status"] = error.http_status
        row.result_meta = meta
        row.error = error.message
        row.state = FAILED
        log.append(
            session,
            actor=actor,
            action="job.failed",
            payload={"job_id": job_id, "role": row.role, "action": row.action,
                     "code": error.code, "message": error.message,
                     "cause": "aborted-after-commit"},
        )
    return True


_WATCHED: set[tuple[str, str]] = set()  # (node root, job id): a watchdog here ends it
_WATCHED_LOCK = threading.Lock()


def watch(node: Node, job_id: str, watched: bool = True) -> None:
    """A session held in this process watches its job's idleness itself (and ends it with
    what only it knows: its metering, an ε it may give back): :func:`reap` leaves it alone."""
    with _WATCHED_LOCK:
        (_WATCHED.add if watched else _WATCHED.discard)((str(node.root), job_id))


def reap(node: Node) -> None:
    """Fail running (or queued) multi-party jobs whose last sign of life is older than their
    idle timeout — those no session of this process watches (another process's, one lost
    in a restart)."""
    from dataspace.services.mp_wire import MultipartyFailed

    stale = []
    with _WATCHED_LOCK:
        watched = {job for root, job in _WATCHED if root == str(node.root)}
    with node.store.read() as session:
        rows = session.scalars(
            select(JobRow).where(JobRow.state.in_((RUNNING, QUEUED)), JobRow.action.in_(ACTIONS))
        ).all()
        for row in rows:
            if row.id in watched:
                continue
            meta = _meta(row)
            idle = float((row.request or {}).get("idle_timeout") or DEFAULT_IDLE_TIMEOUT)
            if time.time() - float(meta.get("heartbeat") or 0) > idle:
                stale.append((row.id, row.role, row.peer, idle))
    for job_id, role, peer, idle in stale:
        who = "the initiator" if role == PARTICIPANT else "the job's coordinator"
        error = MultipartyFailed(
            f"no step from {who} ({peer}) for {idle:g} s: the job timed out",
            hint="the initiator can start it again with `dataspace job retry`",
            cause="timeout",
        )
        fail(node, job_id, error, actor=f"node:{node.name}", cause="timeout")


def fail_orphaned(node: Node) -> list[str]:
    """At server start: fail every multi-party or training job this node served for another
    node's initiator and left RUNNING (or QUEUED) when its server stopped. Its session lived
    in that server's memory and went with it, so the job cannot go on; without this its row
    stayed RUNNING for good unless the initiator retried (the reaper goes by heartbeats of
    PSI and aggregation rows only, and training watchdogs live in the session). Jobs this
    node initiated are left alone: a CLI process may be running them."""
    from dataspace.services.mp_wire import MultipartyFailed

    with node.store.read() as session:
        orphans = session.execute(
            select(JobRow.id, JobRow.peer).where(
                JobRow.state.in_((RUNNING, QUEUED)),
                JobRow.role != INITIATOR,
                JobRow.action.in_((*ACTIONS, *TRAINING_ACTIONS)),
            )
        ).all()
    failed = []
    for job_id, initiator in orphans:
        error = MultipartyFailed(
            "this node's server stopped while the job ran here; its part of the job is gone",
            hint=f"the initiator ({initiator}) can start it again with `dataspace job retry`",
            cause="restart",
        )
        if fail(node, job_id, error, actor=f"node:{node.name}", cause="restart"):
            failed.append(job_id)
    return failed


def view(row: JobRow) -> dict[str, Any]:
    meta = _meta(row)
    request = dict(row.request or {})
    return {
        "id": row.id,
        "role": row.role,
        "action": row.action,
        "state": row.state,
        "agreement_id": row.agreement_id,
        "peer": row.peer,
        "participants": request.get("participants"),
        "params": request.get("mp"),
        "attempt": request.get("attempt", 1),
        "retry_of": request.get("retry_of"),
        "retried_as": meta.get("retried_as"),
        "progress": meta.get("progress") or {"done": 0, "total": 0},
        "steps": meta.get("steps") or [],
        "result": meta.get("result"),
        "error": meta.get("error"),
        "pending_aborts": meta.get("pending_aborts") or [],
        "created_at": row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC).isoformat(),
        "finished_at": row.finished_at.replace(tzinfo=row.finished_at.tzinfo or UTC).isoformat()
        if row.finished_at
        else None,
    }


def get_row_view(node: Node, job_id: str) -> dict[str, Any]:
    reap(node)
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        if row is None or row.action not in ACTIONS:
            raise NotFound(f"no multi-party job {job_id!r}", hint="see `dataspace job list`")
        return view(row)


def list_views(node: Node, *, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    check_state(state)
    reap(node)
    stmt = (
        select(JobRow)
        .where(JobRow.action.in_(ACTIONS))
        .order_by(JobRow.created_at.desc())
        .limit(max(1, min(limit, 1000)))
    )
    if state:
        stmt = stmt.where(JobRow.state == state.upper())
    with node.store.read() as session:
        return [view(r) for r in session.scalars(stmt)]


def is_final(state: str) -> bool:
    return state in (SUCCEEDED, FAILED, "DENIED")
