"""A participant's side of multi-party jobs: check its own agreement, run its steps, meter.

Steps arrive as signed frames (:mod:`.mp_wire`) from the initiator, numbered from 0:

* step 0 **open** — the participant claims the job id, checks *its own* agreement with the
  initiator at execution time (action ``psi`` or ``secure-aggregate``, purpose, fields — the
  key columns or the aggregated columns —, expiry, count, ε budget, output), loads its data
  next to it and answers with its first protocol message (nothing, for PSI; the key
  advertisement, for secure aggregation). A denial is final (``DENIED``, metered at zero).
* steps 1..n — one protocol message in, the protocol core's answers out.
* the last step **finish** — the participant keeps what its mode allows (aligned row
  positions, its matched rows), records the usage and ``job.completed``.

Idempotence: a step sent again (same job, same number, same bytes) gets the answer already
computed — never a recomputation, so no new randomness is exposed; a different body under a
used number, or a number out of sequence, is refused. Secrets (PSI scalar, mask seeds) live
only in this process's memory: if the node restarts, the job cannot continue and is failed.
A watchdog fails the job when no step arrives within its idle timeout.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy.orm import Session

from dataspace.contracts import store as cstore
from dataspace.contracts.messages import policy_from_wire
from dataspace.contracts.negotiation import NegotiationState
from dataspace.errors import Conflict, DataspaceError, NotFound, UsageError
from dataspace.jsondoc import utc
from dataspace.metering import PriceTerms, Usage
from dataspace.policy import PolicyDenied, Request, evaluate
from dataspace.privacy.psi import MODES, Engine, KeySpec, Responder, shared_engine
from dataspace.privacy.psi.errors import PsiEngineFailed
from dataspace.privacy.secagg import (
    AdvertisementRejected,
    FixedPoint,
    PartyRole,
    SessionConfig,
    aggregator,
    ed25519_verifier,
    local_noise,
)
from dataspace.scratch import staging_path
from dataspace.services import jobs, mp_protocols, mp_rr22
from dataspace.services import mp_store as ms
from dataspace.services.job_policy import _slots_taken
from dataspace.services.job_wire import check_job_id, jsonable
from dataspace.services.mp_keys import party_keys, party_names
from dataspace.services.mp_wire import MultipartyFailed, pack_frame, unpack_frame
from dataspace.services.node import Node
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import ContractNegotiationRow, OfferRow

logger = logging.getLogger("dataspace.multiparty")

#: the count a party may contribute to an aggregation, fixed: one chosen by the initiator
#: would make a party's row count a yes/no answer
MAX_ROWS_PER_PARTY = 2**31

__all__ = [
    "ALIGN_DIR",
    "answer_once",
    "check_new",
    "check_open",
    "claim",
    "complete",
    "end_if_running",
    "handle_abort",
    "handle_alive",
    "handle_step",
    "psi_output",
    "write_rows",
]

ALIGN_DIR = "mp"  # under the node's data dir: <job id>.parquet per job that kept rows
POOL_ABOVE_ROWS = 200_000  # smaller inputs are hashed in-process; larger on the shared pool
LINK_WAIT_SECONDS = 30.0  # longest an "rr22" step waits for its link (under the step timeout)


def psi_output(mode: str) -> str:
    """What a PSI mode releases about a participant's rows, for the policy's output constraint.

    ``size`` releases one number: ``aggregate-only``. ``me`` and ``both`` tell the initiator
    which of its own keys the participant holds, and so does ``align`` — the positions it keeps
    are its rows whose keys the participant holds, which it can read back — so all three are
    ``pseudonymized``.
    """
    return "aggregate-only" if mode == "size" else "pseudonymized"


@dataclass
class _Session:
    job_id: str
    initiator: str
    kind: str
    idle_timeout: float
    agreement_id: str = ""
    provider: str = ""
    dataset: str = ""
    terms: PriceTerms | None = None
    decision: dict[str, Any] | None = None
    rows_scanned: int = 0
    responder: Responder | None = None
    party: PartyRole | None = None
    engine: Engine | None = None
    rr22: mp_rr22.Run | None = None
    key_columns: list[str] = field(default_factory=list)
    epsilon: Decimal = Decimal(0)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.perf_counter)
    cpu: float = 0.0
    bytes_out: int = 0
    last_step: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    cache: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: bool = False


_SESSIONS: dict[str, _Session] = {}
_REGISTRY = threading.Lock()

#: The last answer of each job whose session ended here (finish, commit): the same request sent
#: again -- its answer was lost on the way -- gets it again instead of "no longer holds the
#: session", which failed a job this node had completed and metered. Kept ENDED_ANSWER_SECONDS.
_ENDED: dict[str, tuple[str, str, bytes, float]] = {}
ENDED_ANSWER_SECONDS = 600.0
_ENDED_MAX = 1024


def remember_ended(job_id: str, caller: str, digest: str, answer: bytes) -> None:
    """Keep ``answer`` to request ``digest``, the last step of a job that ended here."""
    now = time.monotonic()
    with _REGISTRY:
        for old in [k for k, v in _ENDED.items() if now - v[3] > ENDED_ANSWER_SECONDS]:
            del _ENDED[old]
        while len(_ENDED) >= _ENDED_MAX:
            del _ENDED[next(iter(_ENDED))]
        _ENDED[job_id] = (caller, digest, answer, now)


def ended_answer(job_id: str, caller: str, digest: str) -> bytes | None:
    """The answer already given to this very request, if the job's last step was it."""
    with _REGISTRY:
        kept = _ENDED.get(job_id)
    if kept is None or kept[0] != caller or kept[1] != digest:
        return None
    if time.monotonic() - kept[3] > ENDED_ANSWER_SECONDS:
        return None
    return kept[2]


#: jobs an initiator aborted before they opened here: (node, job, initiator) -> when
_ABORTED_UNOPENED: dict[tuple[str, str, str], float] = {}
_ABORTED_LOCK = threading.Lock()  # not _REGISTRY: an open is checked while that is held
ABORTED_UNOPENED_SECONDS = 3600.0  # the longest idle timeout a participant grants by default


def remember_aborted_unopened(node: Node, job_id: str, caller: str) -> None:
    """An abort came before the job's ``open`` (the two crossed): an ``open`` arriving later
    must not start a job its initiator has given up, and hold the agreement's slot until it
    times out."""
    now = time.monotonic()
    with _ABORTED_LOCK:
        for old in [k for k, t in _ABORTED_UNOPENED.items()
                    if now - t > ABORTED_UNOPENED_SECONDS]:
            del _ABORTED_UNOPENED[old]
        while len(_ABORTED_UNOPENED) >= _ENDED_MAX:
            del _ABORTED_UNOPENED[next(iter(_ABORTED_UNOPENED))]
        _ABORTED_UNOPENED[(str(node.root), job_id, caller)] = now


def refuse_if_aborted(node: Node, job_id: str, caller: str) -> None:
    """Before an ``open``: :class:`Conflict` if its initiator aborted the job already."""
    with _ABORTED_LOCK:
        when = _ABORTED_UNOPENED.get((str(node.root), job_id, caller))
    if when is not None and time.monotonic() - when <= ABORTED_UNOPENED_SECONDS:
        raise Conflict(
            f"job {job_id} was ended by its initiator {caller} before it opened here",
            hint="the initiator starts a new attempt with `dataspace job retry`",
        )


# --- entry points --------------------------------------------------------------------------------


def handle_step(node: Node, caller: str, body: bytes) -> bytes:
    """Run one step of a job for ``caller`` (the signed initiator); returns the answer frame."""
    if (custom := mp_protocols.dispatch(node, caller, body)) is not None:
        return custom
    header, blobs = unpack_frame(body)
    job_id = check_job_id(str(header.get("job_id", "")))
    step, name = header.get("step"), str(header.get("name", ""))
    if not isinstance(step, int) or step < 0:
        raise UsageError("a step needs a non-negative integer 'step'")
    digest = hashlib.sha256(body).hexdigest()
    ms.reap(node)
    with _REGISTRY:
        session = _SESSIONS.get(job_id)
        if session is None and step == 0:
            session = _new_session(node, caller, job_id, header)
    if session is None:
        if (again := ended_answer(job_id, caller, digest)) is not None:
            return again
        raise _lost(node, job_id, caller)
    if session.initiator != caller:
        raise NotFound(f"no multi-party job {job_id!r} with {caller}")
    with session.lock:
        cached = session.cache.get(step)
        if cached is not None:
            if cached[0] != digest:
                raise Conflict(
                    f"step {step} of job {job_id} was already answered for another request",
                    hint="a step number is used once per job",
                )
            return cached[1]
        if session.ended or not _running(node, job_id, opening=step == 0):  # ended here
            session.ended = True
            _close(session)
            with _REGISTRY:
                _SESSIONS.pop(job_id, None)
            raise _lost(node, job_id, caller)
        if step != (0 if not session.cache and session.last_step == 0 else session.last_step + 1):
            raise Conflict(
                f"step {step} of job {job_id} is out of sequence",
                hint=f"the next step is {session.last_step + 1}",
            )
        session.last_seen = time.monotonic()
        c0 = time.process_time()
        try:
            out_header, out_blobs, info = _dispatch(node, session, step, name, header, blobs)
        except DataspaceError as exc:
            _end_error(node, session, exc, step=step, name=name)
            raise
        except Exception as exc:  # a bug: the job must not stay RUNNING
            err = MultipartyFailed(f"step {name} failed on {node.name} ({type(exc).__name__})")
            _end_error(node, session, err, step=step, name=name)
            raise err from exc
        session.cpu += time.process_time() - c0
        if step > 0:  # answered: what it computed now leaves for the initiator
            ms.mark_engaged(node, job_id, caller)
        ev = ms.event(node.name, step, name, request_sha256=digest, **info)
        response = pack_frame(
            {**out_header, "job_id": job_id, "step": step, "event": ev}, out_blobs
        )
        session.bytes_out += len(response)
        session.cache = {k: v for k, v in session.cache.items() if k >= step - 1}
        session.cache[step] = (digest, response)
        session.last_step = step
        session.last_seen = time.monotonic()
        ms.add_events(node, job_id, [ev], actor=f"peer:{caller}")
        if session.ended:  # its last step: kept for a resend after a lost answer
            remember_ended(job_id, caller, digest, response)
        return response


def handle_abort(node: Node, caller: str, job_id: str, reason: str) -> dict[str, Any]:
    """The initiator ends the job: FAILED here with its reason (idempotent)."""
    job_id = check_job_id(job_id)
    with node.store.read() as db:
        row = db.get(JobRow, job_id)
        state = row.state if row is not None and row.peer == caller else None
    if state is None:
        remember_aborted_unopened(node, job_id, caller)
        return {"job_id": job_id, "state": "UNKNOWN"}
    error = MultipartyFailed(f"the initiator {caller} ended the job: {reason}", cause="aborted")
    with _REGISTRY:
        session = _SESSIONS.pop(job_id, None)
    if session is not None:  # metered with what it did (rows scanned, bytes sent, ε reserved)
        with session.lock:
            failed = _end_error(node, session, error, step=session.last_step, name="abort",
                                cause="aborted", refund=True)
    else:
        failed = ms.fail(node, job_id, error, actor=f"peer:{caller}", cause="aborted")
    if not failed:
        _unwind_commit(node, job_id, error, actor=f"peer:{caller}")
    with node.store.read() as s:
        row = s.get(JobRow, job_id)
        return {"job_id": job_id, "state": row.state if row else "UNKNOWN"}


def handle_alive(node: Node, caller: str, job_id: str) -> dict[str, Any]:
    """The initiator is at work on the job (alone, for a while): its idle timeout starts again
    here, for a session of any protocol. The answer is the job's state here — RUNNING, the
    state it ended in (with the reason) or UNKNOWN: not opened yet, or not ``caller``'s."""
    job_id = check_job_id(job_id)
    held = False
    for sessions, registry in [(_SESSIONS, _REGISTRY), *mp_protocols.session_registries()]:
        with registry:
            session = sessions.get(job_id)
        if session is not None and session.initiator == caller:
            session.last_seen = time.monotonic()
            held = True
    with node.store.read() as db:
        row = db.get(JobRow, job_id)
        if row is None or row.peer != caller or row.role == ms.INITIATOR:
            return {"job_id": job_id, "state": "UNKNOWN"}
        state, error = row.state, row.error
    if held and state == jobs.RUNNING:
        ms.beat(node, job_id)  # the reaper goes by the row's heartbeat
    return {"job_id": job_id, "state": state, **({"reason": error} if error else {})}


def _unwind_commit(node: Node, job_id: str, error: DataspaceError, *, actor: str) -> None:
    """The initiator aborts a job this node already committed (another node's finish or
    commit failed, or the initiator's own): the job ends FAILED, and what it left here goes —
    a PSI's kept rows, a training's model part (revoked) — so no node of a failed job holds a
    usable result."""
    from dataspace.services import models as model_store

    with node.store.read() as db:
        row = db.get(JobRow, job_id)
        action = row.action if row is not None else None
    if action in ms.ACTIONS:  # PSI keeps its rows file, if any; an aggregation keeps nothing
        if ms.unwind_success(node, job_id, error, actor=actor, undo=lambda session: True):
            (node.data_dir / ALIGN_DIR / f"{job_id}.parquet").unlink(missing_ok=True)
        return

    def revoke(session: Session) -> bool:
        return model_store.revoke_in(session, job_id, error.message, actor=actor)

    if ms.unwind_success(node, job_id, error, actor=actor, undo=revoke):
        model_store.drop_revoked_file(node, job_id)


# --- sessions ------------------------------------------------------------------------------------


def _new_session(node: Node, caller: str, job_id: str, header: dict[str, Any]) -> _Session:
    kind = str(header.get("kind", ""))
    if kind not in ms.ACTIONS:
        raise UsageError(f"unknown multi-party job kind {kind!r}", hint="psi or secure-aggregate")
    refuse_if_aborted(node, job_id, caller)
    with node.store.read() as s:
        row = s.get(JobRow, job_id)
        if row is not None:
            state, error, owner = row.state, row.error, row.peer
    if row is not None:
        if state == jobs.RUNNING or owner != caller:  # another initiator's: say nothing of it
            raise _lost(node, job_id, caller)
        raise Conflict(
            f"job {job_id} already ended here: {state}" + (f" ({error})" if error else ""),
            hint="retry the job: a retry runs under a new job id",
        )
    idle = float(header.get("idle_timeout") or ms.DEFAULT_IDLE_TIMEOUT)
    idle = max(1.0, min(idle, float(node.limits.mp_max_idle_timeout_seconds)))
    ms.create_row(
        node,
        job_id=job_id,
        role=ms.PARTICIPANT,
        agreement_id=str(header.get("agreement_id", ""))[:200],
        peer=caller,
        action=kind,
        request={"mp": header, "idle_timeout": idle},
        state=jobs.QUEUED,  # RUNNING once its agreement admits it (_check), atomically
    )
    session = _Session(job_id, caller, kind, idle)
    _SESSIONS[job_id] = session
    ms.watch(node, job_id)
    threading.Thread(
        target=_watchdog, args=(node, session), daemon=True, name=f"mp-watchdog-{job_id[:12]}"
    ).start()
    return session


def _running(node: Node, job_id: str, *, opening: bool = False) -> bool:
    """The job has not ended here (timeout, abort, reaper); before admission it is QUEUED."""
    with node.store.read() as db:
        row = db.get(JobRow, job_id)
        states = (jobs.RUNNING, jobs.QUEUED) if opening else (jobs.RUNNING,)
        return row is not None and row.state in states


def _watchdog(node: Node, session: _Session) -> None:
    try:
        _watch(node, session)
    finally:
        ms.watch(node, session.job_id, False)


def _watch(node: Node, session: _Session) -> None:
    while True:
        time.sleep(min(1.0, session.idle_timeout / 4))
        with session.lock:
            if session.ended:
                return
            error = _overdue(node, session) or _idle(session)
            if error is None:
                continue
            try:
                _end_error(node, session, error, step=session.last_step + 1, name="timeout",
                           refund=True)
            except Exception:  # the node's store closed under it: nothing left to end
                logger.exception("job %s: could not be ended after its idle timeout",
                                 session.job_id)
            return


def _idle(session: _Session) -> MultipartyFailed | None:
    if time.monotonic() - session.last_seen <= session.idle_timeout:
        return None
    return MultipartyFailed(
        f"no step from the initiator {session.initiator} for {session.idle_timeout:g} s: the "
        "job timed out here",
        hint="the initiator can start it again with `dataspace job retry`",
        cause="timeout",
    )


def _overdue(node: Node, session: _Session) -> MultipartyFailed | None:
    """The job has run longer than this node allows any (``mp_max_job_seconds``): keep-alives
    keep a session's idle timeout away, not this."""
    limit = float(node.limits.mp_max_job_seconds)
    if time.perf_counter() - session.t0 <= limit:
        return None
    return MultipartyFailed(
        f"the job ran for longer than {limit:g} s, the most {node.name} allows",
        hint="split the work into smaller jobs, or ask the participant to raise "
        "mp_max_job_seconds",
        cause="timeout",
    )


def watch_quiet(
    node: Node, s: Any, sessions: dict[str, Any], registry: threading.Lock, what: str
) -> None:
    """End a training or prediction job here once its initiator has been quiet for the idle
    timeout while no protocol thread of it runs (before ``start``, or after the run and before
    ``finish``/``commit``): an abandoned job stayed RUNNING for good and kept its agreement's
    slot. While a protocol thread runs, its own checks do this. ``s`` has ``ps`` (this node's
    :class:`_Session`), ``initiator``, ``thread`` and ``last_seen``, and is registered in
    ``sessions`` under ``registry`` until its job ends."""
    job_id = s.ps.job_id

    def held() -> bool:
        with registry:
            return sessions.get(job_id) is s

    def drop() -> None:
        with registry:
            if sessions.get(job_id) is s:
                del sessions[job_id]

    def run() -> None:
        idle = float(s.ps.idle_timeout)
        while True:
            time.sleep(min(1.0, idle / 4))
            if not held():
                return
            thread = s.thread
            error = _overdue(node, s.ps)
            if error is None:
                if (thread is not None and thread.is_alive()) or (
                    time.monotonic() - s.last_seen <= idle
                ):
                    continue
                error = MultipartyFailed(
                    f"no step from the initiator {s.initiator} for {idle:g} s: the {what} job "
                    "timed out here",
                    hint="the initiator can start it again with `dataspace job retry`",
                    cause="timeout",
                )
            try:
                end_if_running(node, s.ps, error, step=1, name="timeout")
            except Exception:  # the node's store closed under it: nothing left to end
                logger.exception("job %s: could not be ended after its idle timeout", s.ps.job_id)
            drop()
            return

    threading.Thread(target=run, daemon=True, name=f"watch-{s.ps.job_id[:12]}").start()


def _lost(node: Node, job_id: str, caller: str) -> MultipartyFailed:
    """The error for a step of a job whose session this node no longer holds: why it ended
    here, when it did (a timeout most often: the initiator's long local work left this node
    idle), else a restart; the job is FAILED if it was still RUNNING."""
    with node.store.read() as db:
        row = db.get(JobRow, job_id)
        mine = row is not None and row.peer == caller and row.role == ms.PARTICIPANT
        ended = None
        if row is not None and row.state != jobs.RUNNING:
            ended = row.state + (f": {row.error}" if row.error else "")
    if not mine:  # another initiator's job, or none: say nothing about it, change nothing
        return MultipartyFailed(f"no multi-party job {job_id!r} with {caller} here")
    if ended:
        return MultipartyFailed(
            f"{node.name} no longer holds job {job_id}'s session: it ended here ({ended})",
            hint="the initiator starts a new attempt with `dataspace job retry`; a job that "
            "timed out here got neither a step nor a keep-alive for its idle timeout "
            "(mp_idle_timeout_seconds): check that this node reaches the initiator's calls",
            cause="session-lost",
        )
    error = MultipartyFailed(
        f"{node.name} no longer holds job {job_id}'s session (the node restarted and its "
        "secrets are gone)",
        hint="the initiator starts a new attempt with `dataspace job retry`",
        cause="session-lost",
    )
    ms.fail(node, job_id, error, actor=f"peer:{caller}", cause="session-lost")
    return error


def _close(session: _Session) -> None:
    if session.engine is not None:
        session.engine.close()
        session.engine = None
    if session.rr22 is not None:
        session.rr22.close()  # its link's keys and certificates are wiped
    session.responder, session.party = None, None


def _end_error(
    node: Node, s: _Session, exc: DataspaceError, *, step: int, name: str,
    cause: str | None = None, refund: bool = False,
) -> bool:
    """FAILED (or DENIED, for a policy denial) here, metered with what the session did (at no
    price), session dropped; False, with nothing written, if the job has ended here
    already. With ``refund`` (the job ended by others: the initiator's abort, its silence),
    the ε reserved for this party's noise is given back if its noised input had not left."""
    s.ended = True
    refunded = (refund and s.epsilon > 0 and s.party is not None
                and not s.party.input_sent)
    _close(s)
    try:
        return _finish_error(node, s, exc, step=step, name=name, cause=cause, refunded=refunded)
    finally:  # only once its end is committed: a session gone means a job ended for readers
        with _REGISTRY:
            _SESSIONS.pop(s.job_id, None)


def _finish_error(
    node: Node, s: _Session, exc: DataspaceError, *, step: int, name: str, cause: str | None,
    refunded: bool,
) -> bool:
    denied = isinstance(exc, PolicyDenied) or (exc.http_status in (403, 404) and step == 0)
    ending = [ms.event(node.name, step, name, "refused" if denied else "failed", code=exc.code)]
    usage = None
    if s.provider:  # the usage record says what the job cost in the end
        usage = _usage(s, "denied" if denied else "failed",
                       epsilon=Decimal(0) if refunded else None)
    reasons = [r for r in ((s.decision or {}).get("reasons") or []) if not r.get("held")]
    return ms.finish(
        node,
        s.job_id,
        state=jobs.DENIED if denied else jobs.FAILED,
        actor=f"peer:{s.initiator}",
        ledger_action="job.denied" if denied else "job.failed",
        ledger_payload={
            "agreement_id": s.agreement_id,
            "consumer": s.initiator,
            "dataset": s.dataset or None,
            "code": exc.code,
            "message": exc.message,
            "reasons": reasons,
            "step": step,
            **({"cause": cause} if cause else {}),
            **({"epsilon_refunded": True} if refunded else {}),
        },
        error=exc,
        usage=usage,
        terms=s.terms,
        decision=s.decision,
        # in the ending's transaction: a job another path ended meanwhile (the reaper, an
        # abort) gets no step after its end, and no refund
        also=lambda db: _ending(db, node, s, ending, exc.message if refunded else None),
    )


def _ending(
    db: Session, node: Node, s: _Session, events: list[dict[str, Any]], refund: str | None
) -> None:
    if refund is not None:  # first: the budget row before the ledger head, as reserve() locks
        from dataspace.privacy.budget import refund_in

        refund_in(db, s.agreement_id, s.job_id, refund, actor=f"node:{node.name}")
    ms.add_events_in(db, node, s.job_id, events, actor=f"peer:{s.initiator}")


def _usage(
    s: _Session, status: str, result_rows: int = 0, *, epsilon: Decimal | None = None
) -> Usage:
    return Usage(
        agreement_id=s.agreement_id,
        job_id=s.job_id,
        action=s.kind,
        consumer=s.initiator,
        provider=s.provider,
        dataset=s.dataset,
        started_at=s.started,
        finished_at=datetime.now(UTC),
        status=status,
        rows_scanned=s.rows_scanned,
        result_rows=result_rows,
        bytes_out=s.bytes_out,
        # charged to the budget at open; given back only if others ended the job first
        epsilon_spent=s.epsilon if epsilon is None else epsilon,
        cpu_seconds=Decimal(str(round(s.cpu, 6))),
        wall_seconds=Decimal(str(round(time.perf_counter() - s.t0, 6))),
    )


# --- shared by the protocols registered with mp_protocols (training, FedAvg, prediction) ----------


class NamedSteps(Protocol):
    """A participant's run of a protocol whose steps are named: its answers kept by name."""

    initiator: str
    cache: dict[str, tuple[str, bytes]]
    lock: threading.Lock


def answer_keeping_the_last(
    s: NamedSteps, job_id: str, name: str, digest: str, caller: str,
    answer: Callable[[], bytes], sessions: dict[str, Any], registry: threading.Lock,
) -> bytes:
    """:func:`answer_once`; when the step ended the session (it left ``sessions``), its
    answer is kept for a resend after a lost answer (:func:`remember_ended`)."""
    out = answer_once(s, job_id, name, digest, answer)
    with registry:
        ended = sessions.get(job_id) is not s
    if ended:
        remember_ended(job_id, caller, digest, out)
    return out


def answer_once(
    s: NamedSteps, job_id: str, name: str, digest: str, answer: Callable[[], bytes]
) -> bytes:
    """Step ``name`` answered once, under the run's lock: the same request (``digest``) sent
    again gets the answer already given — never a recomputation —, another request under a
    used name is refused."""
    with s.lock:
        cached = s.cache.get(name)
        if cached is not None:
            if cached[0] != digest:
                raise Conflict(f"step {name} of job {job_id} was already answered differently")
            return cached[1]
        out = answer()
        s.cache[name] = (digest, out)
        return out


def check_open(
    node: Node, job_id: str, caller: str, digest: str, existing: NamedSteps | None, what: str
) -> bytes | None:
    """Before ``open``: the answer already given when the same initiator opens the same job
    again; a job already open (``existing``) or already run here is refused."""
    if existing is not None:
        cached = existing.cache.get("open")
        if existing.initiator == caller and cached and cached[0] == digest:
            return cached[1]
        raise Conflict(f"{what} job {job_id} is already open here")
    refuse_if_aborted(node, job_id, caller)
    check_new(node, job_id)
    return None


def check_new(node: Node, job_id: str) -> None:
    """A job id runs once on a node: a retry runs under a new id."""
    with node.store.read() as db:
        if db.get(JobRow, job_id) is not None:
            raise Conflict(f"job {job_id} already ran here", hint="a retry runs under a new id")


def claim(
    node: Node,
    job_id: str,
    caller: str,
    header: dict[str, Any],
    *,
    action: str,
    request: dict[str, Any],
    role: str = ms.PARTICIPANT,
) -> None:
    """This node's row of a job ``caller`` opened: a provider's waits (QUEUED) until its
    agreement admits the job (:func:`_check`); another role's (the dealer's) runs at once."""
    ms.create_row(
        node,
        job_id=job_id,
        role=role,
        agreement_id=str(header.get("agreement_id") or "")[:200],
        peer=caller,
        action=action,
        request=request,
        state=jobs.QUEUED if role == ms.PARTICIPANT else jobs.RUNNING,
    )


def complete(
    node: Node,
    s: _Session,
    result: dict[str, Any],
    usage: Usage | None,
    payload: dict[str, Any],
    *,
    ledger_action: str = "job.completed",
    also: Callable[[Session], Any] | None = None,
) -> bool:
    """SUCCEEDED here: the use metered under the agreement (``usage``), ``ledger_action`` in the
    ledger with the agreement, the consumer, the dataset and ``payload``; ``also`` in the same
    transaction. False (nothing done) if the job had already ended here."""
    return ms.finish(
        node,
        s.job_id,
        state=jobs.SUCCEEDED,
        actor=f"peer:{s.initiator}",
        ledger_action=ledger_action,
        result=result,
        usage=usage,
        terms=s.terms,
        ledger_payload={
            "agreement_id": s.agreement_id,
            "consumer": s.initiator,
            "dataset": s.dataset or None,
            **payload,
        },
        also=also,
    )


def end_if_running(node: Node, s: _Session, exc: DataspaceError, *, step: int, name: str) -> None:
    """:func:`_end_error`, unless the job has ended here already (an abort, the reaper)."""
    if _running(node, s.job_id):
        _end_error(node, s, exc, step=step, name=name)


# --- steps ---------------------------------------------------------------------------------------

Out = tuple[dict[str, Any], list[bytes], dict[str, Any]]


def _dispatch(
    node: Node, s: _Session, step: int, name: str, header: dict[str, Any], blobs: list[bytes]
) -> Out:
    if step == 0:
        return _open_psi(node, s, header) if s.kind == ms.PSI else _open_agg(node, s, header)
    if name == "finish":
        return _finish(node, s, header)
    if s.rr22 is not None:
        if name == "status":
            return _rr22_status(s)
        if name != "rr22":
            raise UsageError(f"step {name!r} is not one of an RR22 PSI job")
        return _start_rr22(node, s, header, blobs)
    if s.kind == ms.PSI:
        assert s.responder is not None
        replies: list[bytes] = []
        for answers in [s.responder.receive(blob) for blob in blobs]:  # all chunks on the pool
            replies.extend(answers)
        return {"state": "running"}, replies, {"in": len(blobs), "out": len(replies)}
    assert s.party is not None
    if len(blobs) != 1:
        raise UsageError("a secure-aggregation round carries exactly one message")
    return {"state": "running"}, [s.party.handle(blobs[0])], {"round": name}


def _check(
    node: Node,
    s: _Session,
    header: dict[str, Any],
    fields: list[str],
    output: str,
    epsilon: float | None = None,
    delta: float | None = None,
) -> tuple[Any, Any]:
    """Evaluate this node's agreement with the initiator now and admit the job (deny by default).

    Like a governed query's admission (``jobs._admit``), all under the agreement row's write
    lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``SELECT ... FOR UPDATE``): count the
    agreement's admitted and succeeded jobs, evaluate, and move this job QUEUED → RUNNING in
    the same transaction. Concurrent openings queue on the lock, so a ``count`` limit of k
    admits exactly k of them.
    """
    s.agreement_id = str(header.get("agreement_id", ""))
    with node.store.write() as session:
        agreement = cstore.get_agreement(session, s.agreement_id, peer=s.initiator, lock=True)
        neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
        if neg is None or neg.role != "provider" or agreement.consumer != s.initiator:
            raise NotFound(
                f"no agreement {s.agreement_id!r} with {s.initiator}",
                hint="each participant needs its own agreement with the initiator",
            )
        offer = session.get(OfferRow, agreement.offer_id) if agreement.offer_id else None
        s.provider = agreement.provider
        # metered under its id should it be gone (removed since the agreement): the refusal
        # is then recorded like any other
        s.dataset = offer.dataset_id if offer else agreement.target
        dataset = jobs._dataset(node, session, s.dataset)
        s.dataset, s.terms = dataset.name, jobs._terms(offer)
        policy = policy_from_wire(agreement.policy, "$.agreement")
        jobs_run = _slots_taken(session, s.agreement_id, exclude=s.job_id,
                                engaged_failures=True)
        eps_spent, delta_spent = jobs._budget_spent(session, s.agreement_id)
        state, purpose, signed_at = neg.state, agreement.purpose, utc(agreement.signed_at)
        target = agreement.target
        decision = _decide(node, s, state, policy, dataset, fields, output, epsilon,
                           purpose=purpose, target=target, signed_at=signed_at,
                           jobs_run=jobs_run, eps_spent=eps_spent, delta=delta,
                           delta_spent=delta_spent)  # fmt: skip
        s.decision = jsonable(decision.to_dict())
        if decision.allowed:
            row = session.get(JobRow, s.job_id, with_for_update=True)
            if row is None or row.state != jobs.QUEUED:
                raise Conflict(f"job {s.job_id} is no longer waiting to start here")
            row.state = jobs.RUNNING
    if not decision.allowed:
        raise PolicyDenied(decision)
    return dataset, decision


def least_rows(node: Node, decision: Any) -> int:
    """The fewest rows a job may compute over at this node: the agreement's ``minGroupSize``
    or the node's ``min_group_size_floor``, whichever is larger. A model part's share of a
    score, or an update, over a handful of rows is those rows' values."""
    enforcement = getattr(decision, "enforcement", None)
    k = enforcement.min_group_size if enforcement is not None else None
    return max(int(node.limits.min_group_size_floor), int(k or 0))


def _decide(
    node: Node,
    s: _Session,
    state: str,
    policy: Any,
    dataset: Any,
    fields: list[str],
    output: str,
    epsilon: float | None,
    *,
    purpose: str | None,
    target: str,
    signed_at: datetime,
    jobs_run: int,
    eps_spent: Decimal,
    delta: float | None = None,
    delta_spent: Decimal | None = None,
) -> Any:
    if state != NegotiationState.FINALIZED:
        return jobs._single_reason("agreement", f"the agreement is {state}, not FINALIZED")
    missing = [c for c in fields if c not in dataset.columns]
    if missing:
        key = (f"; a key it names otherwise is given with --peer-key {node.name}=COLUMN"
               if s.kind == ms.PSI else "")
        raise UsageError(
            f"dataset {dataset.name} on {node.name} has no column(s) {missing}",
            # not the column list: an agreement limited to some fields must not reveal the rest
            hint="ask the provider which columns its offer covers" + key,
        )
    request = Request(
        action=s.kind,
        assignee=s.initiator,
        purpose=purpose,
        target=target,
        now=s.started,
        agreed_at=signed_at,
        jobs_run=jobs_run,
        fields=frozenset(fields),
        output=output,
        region=jobs._region(node, s.initiator),
        epsilon=Decimal(str(epsilon)) if epsilon else None,
        epsilon_spent=eps_spent if epsilon else None,
        delta=Decimal(str(delta)) if delta else None,
        delta_spent=delta_spent if delta else None,
    )
    return evaluate(policy, request)


def _open_psi(node: Node, s: _Session, header: dict[str, Any]) -> Out:
    mode = str(header.get("mode", "me"))
    if mode not in MODES:
        raise UsageError(f"unknown PSI mode {mode!r}", hint="modes: " + ", ".join(MODES))
    spec = KeySpec.parse(str(header.get("key", "")))
    engine = str(header.get("engine") or "dh")
    mp_rr22.check_engine(engine, mode)  # refused before admission: nothing is counted
    s.key_columns = [c.name for c in spec.columns]
    try:
        dataset, decision = _check(node, s, header, s.key_columns, psi_output(mode))
    except PolicyDenied as exc:
        failed = [r.left for r in exc.decision.reasons if not r.held and r.left is not None]
        # only when the output is all that stands in the way: an agreement for another
        # action (training) was told to ask for --reveal size, which it does not allow either
        if mode != "size" and failed and set(failed) == {"output"}:
            exc.hint = (f"the agreement lets {node.name} release only the intersection's "
                        "size: ask for that (`--reveal size`), or for an offer of "
                        f"{node.name}'s whose output allows pseudonymized")
        raise
    enforcement = getattr(decision, "enforcement", None)
    max_peer = enforcement.max_peer_set if enforcement is not None else None
    if engine == "rr22":
        if max_peer is not None:
            raise UsageError(
                "the agreement bounds the initiator's set (peerSetSize), which the rr22 engine "
                "cannot hold it to",
                hint="run this PSI with the DH engine (--engine dh)",
            )
        return _open_rr22(node, s, dataset, spec, mode)
    parquet = pq.ParquetFile(dataset.path)
    s.rows_scanned = parquet.metadata.num_rows
    s.engine = Engine(0) if s.rows_scanned < POOL_ABOVE_ROWS else shared_engine()
    s.responder = Responder(
        str(header.get("psi_id") or s.job_id),
        spec,
        allow=(mode,),
        # a count is an aggregate-only release: over at least k of the initiator's keys
        min_peer=least_rows(node, decision) if mode == "size" else 0,
        max_peer=max_peer,
        group_name=str(header.get("group", "x25519")),
        engine=s.engine,
    )
    s.responder.load(parquet.iter_batches(batch_size=65_536, columns=s.key_columns))
    return {"state": "open"}, [], {"rows": s.rows_scanned, "dataset": s.dataset, "mode": mode}


def _open_rr22(node: Node, s: _Session, dataset: Any, spec: KeySpec, mode: str) -> Out:
    """Admitted: this session's link identity (a fresh certificate and a free port), answered
    in the signed "open" so that the initiator's end accepts exactly this node."""
    source = mp_rr22.Input.load(dataset.path, spec)
    s.rows_scanned = len(source.rows)
    endpoint = mp_rr22.Endpoint.create(node)
    s.rr22 = mp_rr22.Run(endpoint, source, mode)
    info = {"rows": s.rows_scanned, "dataset": s.dataset, "mode": mode, "engine": "rr22"}
    head = {"state": "open", "engine": "rr22", "address": endpoint.address, "size": source.distinct}
    return head, [endpoint.pem], info


def _start_rr22(node: Node, s: _Session, header: dict[str, Any], blobs: list[bytes]) -> Out:
    """The initiator's certificate and address (its side, rank 0, listens already): this side
    (rank 1) starts in the background and the step is answered once the link is up; "finish"
    collects the run.
    Nothing runs when a side has no keys (both sides know both sizes: "open", "rr22")."""
    run = s.rr22
    assert run is not None
    if run.thread is not None or len(blobs) != 1:
        raise UsageError("an RR22 link is started once, with the initiator's certificate")
    run.peer_size = int(header.get("size") or 0)
    own = run.source.distinct
    go = own > 0 and run.peer_size > 0
    if go:
        limit = float(node.limits.mp_max_idle_timeout_seconds)
        timeout = max(1.0, min(float(header.get("timeout") or limit), limit))
        run.start(blobs[0], str(header.get("address", "")), timeout, s.job_id, rank=1)
        # Answer once the link is up: a failure here (a taken port, a refused certificate)
        # reaches the initiator now, not after its engine's whole timeout.
        run.wait_linked(min(LINK_WAIT_SECONDS, timeout / 2))
    return {"state": "running", "size": own, "run": go}, [], {"size": own, "run": go}


def _rr22_status(s: _Session) -> Out:
    """How this side's RR22 run goes, for an initiator waiting on its own engine: a run that
    failed here (its engine died, the link broke) fails the step, and so the job, at once."""
    run = s.rr22
    assert run is not None
    alive = run.alive  # first: a run that ends between the two reads is not answered "done"
    failure = run.failure
    if isinstance(failure, DataspaceError):
        raise failure
    if failure is not None:
        raise PsiEngineFailed(f"RR22 failed ({type(failure).__name__}: {failure})")
    state = "waiting" if run.thread is None else "running" if alive else "done"
    return {"state": state}, [], {"run": state}


def _refuse_unsafe_session(node: Node, s: _Session, header: dict[str, Any]) -> dict[int, str]:
    """The session's own terms, from the header alone: a max_count other than the fixed one,
    a threshold that could unmask this node's input, a party list that does not name this
    node as its party or that names the coordinator. The parties' names, by index."""
    if header.get("max_count", MAX_ROWS_PER_PARTY) != MAX_ROWS_PER_PARTY:
        # a smaller one would refuse a party's row count above it: a probe of the count
        raise AdvertisementRejected(
            f"an aggregation's max_count is {MAX_ROWS_PER_PARTY}, not {header.get('max_count')!r}",
            hint="the job is refused",
        )
    try:  # numbers cross as JSON numbers or decimal strings
        bound = float(header["bound"])
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"the aggregation's bound {header.get('bound')!r} is not a number",
                         hint="the initiator sent a malformed opening") from None
    FixedPoint(bound, int(header.get("scale_bits", 16)), max_count=MAX_ROWS_PER_PARTY)
    parties = tuple(int(p) for p in header["parties"])
    n, t = len(parties), int(header.get("threshold", 0))
    if n > 1 and t < max(2, n // 2 + 1):
        # with t = 1 a party's own share of its mask seed is the seed: a coordinator claiming
        # every other party dropped out would unmask this node's input inside a "sum". (With
        # one party the sum is its own aggregate, released knowingly: it sees n = 1 here.)
        raise AdvertisementRejected(
            f"secure aggregation over {n} parties with threshold {t} could release this "
            f"node's input; it takes a threshold of at least {max(2, n // 2 + 1)}",
            hint="the job is refused",
        )
    index = int(header["index"])
    names = party_names(header.get("members"), parties)
    if names.get(index) != node.name:
        raise AdvertisementRejected(
            f"the job names {names.get(index)!r}, not {node.name}, as party {index}",
            hint="the initiator sent an inconsistent party list; the job is refused",
        )
    if s.initiator in names.values():
        raise AdvertisementRejected(
            f"the coordinator {s.initiator} lists itself as a party", hint="the job is refused"
        )
    return names


def _open_agg(node: Node, s: _Session, header: dict[str, Any]) -> Out:
    columns = [str(c) for c in header.get("columns") or []]
    if not columns:
        raise UsageError("secure aggregation needs at least one column")
    eps = header.get("epsilon")
    op = str(header.get("op", "sum"))
    if eps and op != "sum":  # as start_aggregate refuses: a count or mean's noise is not set
        raise UsageError(f"a private aggregation is a sum, not a {op}",
                         hint="the initiator sent --epsilon with --op other than sum")
    dataset, decision = _check(
        node, s, header, columns, "aggregate-only", float(eps) if eps else None
    )
    names = _refuse_unsafe_session(node, s, header)  # before any ε: a refusal costs none
    enforcement = decision.enforcement
    if eps and enforcement is not None and enforcement.epsilon_budget is not None:
        from dataspace.privacy.budget import ensure_budget, reserve

        ensure_budget(
            node.store,
            s.agreement_id,
            str(enforcement.epsilon_budget),
            str(enforcement.delta_budget or 0),
        )
        reserve(node.store, s.agreement_id, str(eps), "0", s.job_id)
        s.epsilon = Decimal(str(eps))
    table = _finite_or_null(pq.read_table(dataset.path, columns=columns), s.job_id)
    s.rows_scanned = table.num_rows
    if op == "mean" and columns:
        # a mean divides by one count for every column: over the rows where each is present
        # (a null counted as a row would pull the mean towards zero)
        present = pc.is_valid(table.column(columns[0]))
        for name in columns[1:]:
            present = pc.and_(present, pc.is_valid(table.column(name)))
        table = table.filter(present)
    k = decision.enforcement.min_group_size if decision.enforcement is not None else None
    if k and not eps and table.num_rows < k:
        # the agreement's minGroupSize, said to be enforced: a sum over fewer rows than k is
        # too close to those rows (the node floor is not applied: parties here are often
        # organisations with a handful of rows, e.g. a supplier's facilities). Not with ε:
        # the noise protects the sum, and the refusal would be an exact bit of the row count.
        raise UsageError(f"{node.name} aggregates at least {k} rows under this agreement",
                         hint="the agreement's minGroupSize")
    values = _local_vector(table, columns, op)
    dp = local_noise(float(header["bound"]), len(values), float(eps)) if eps else None
    config = SessionConfig(
        session=bytes.fromhex(str(header["session"])),
        parties=tuple(int(p) for p in header["parties"]),
        length=len(values),
        encoding=FixedPoint(
            dp.encoded_bound if dp is not None else float(header["bound"]),
            int(header.get("scale_bits", 16)),
            max_count=MAX_ROWS_PER_PARTY,
        ),
        threshold=int(header.get("threshold", 0)),
    )
    # The initiator picks the bound. Refusing a local value beyond it would answer "is my sum
    # above B?" — a binary search on B reads the value, one probe per job. Clipping answers
    # nothing; what was clipped is written to this node's own log only.
    bound = float(header["bound"])
    beyond = int(np.count_nonzero(np.abs(values) > bound))
    if beyond:
        logger.warning("job %s: %d local value(s) clipped to the bound %g", s.job_id, beyond,
                       bound)
    values = np.clip(values, -bound, bound)
    if dp is not None:
        # this node's own noise, for its own ε: the coordinator is the consumer, and sees
        # only sums of noised vectors; the exact row count is not sent either (not released)
        values = dp.apply(values)
    strategy = aggregator(str(header.get("strategy", "pairwise-masking")))
    s.party = strategy.party(
        config,
        int(header["index"]),
        values,
        count=0 if dp is not None else table.num_rows,
        signer=node.signer.sign,  # round-0 keys signed with this node's Ed25519 key
        verifier=ed25519_verifier(party_keys(node, names), names),
    )
    # the step's event reaches the initiator: with ε, the exact row count stays here
    info = {"dataset": s.dataset} if dp is not None else {"rows": table.num_rows,
                                                           "dataset": s.dataset}
    return {"state": "open"}, [s.party.start()], info


def _finite_or_null(table: pa.Table, job_id: str) -> pa.Table:
    """NaN and ±inf in float columns become missing values, like nulls. Refusing them would
    tell the initiator the column holds one; summing them would clip an infinite sum to the
    bound or poison it with NaN. How many were dropped goes to this node's own log only."""
    for i, spec in enumerate(table.schema):
        if pa.types.is_floating(spec.type):
            column = table.column(i)
            finite = pc.is_finite(column)
            dropped = len(column) - column.null_count - int(pc.sum(finite).as_py() or 0)
            if dropped:
                logger.warning("job %s: %d non-finite value(s) of %s taken as missing", job_id,
                               dropped, spec.name)
                table = table.set_column(i, spec, pc.if_else(finite, column, None))
    return table


def _local_vector(table: pa.Table, columns: list[str], op: str) -> np.ndarray:
    out = []
    for name in columns:
        column = table.column(name)
        if op == "count":
            out.append(float(len(column) - column.null_count))
            continue
        if not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_decimal(column.type)
        ):
            raise UsageError(f"column {name} is not numeric ({column.type})")
        if pa.types.is_integer(column.type):  # int64 sums wrap around; 38 digits do not
            column = column.cast(pa.decimal128(38, 0))
        total = pc.sum(column).as_py()
        out.append(float(total or 0.0))
    return np.asarray(out, dtype=np.float64)


def _finish(node: Node, s: _Session, header: dict[str, Any]) -> Out:
    result: dict[str, Any] = {"dataset": s.dataset}
    result_rows = 0
    if s.responder is not None:
        psi = s.responder.result()
        result.update(mode=psi.mode, own_size=psi.own_size, peer_size=psi.peer_size)
        if psi.rows is not None:
            result.update(
                size=psi.size,
                rows=len(psi.rows),
                **write_rows(node, s.job_id, psi.rows, ordered=psi.mode == "align"),
            )
            result_rows = int(psi.size or 0)
    elif s.rr22 is not None:
        run = s.rr22
        keys = run.wait(max(1.0, run.timeout / 2))  # its peer's side is through already
        s.cpu += run.cpu_seconds  # the engine ran in its own process
        result.update(
            mode=run.mode, engine="rr22", own_size=run.source.distinct, peer_size=run.peer_size
        )
        if run.mode in ("both", "align"):
            rows = mp_rr22.positions(run.source, keys, run.mode)
            result.update(
                size=len(keys),
                rows=len(rows),
                **write_rows(node, s.job_id, rows, ordered=run.mode == "align"),
            )
            result_rows = len(keys)
    elif s.party is not None and not s.party.done:
        raise Conflict("the secure aggregation has not finished on this node")
    s.ended = True
    _close(s)
    with _REGISTRY:
        _SESSIONS.pop(s.job_id, None)
    complete(
        node,
        s,
        result,
        _usage(s, "completed", result_rows),
        {
            "rows_scanned": s.rows_scanned,
            "bytes_out": s.bytes_out,
            "result": result,
            "epsilon_spent": s.epsilon,
        },
    )
    return {"state": jobs.SUCCEEDED, "kept": result}, [], {"kept": result}


def write_rows(node: Node, job_id: str, rows: np.ndarray, *, ordered: bool) -> dict[str, Any]:
    """Keep a job's row positions as ``<data dir>/mp/<job id>.parquet`` (see docs/multiparty.md).

    Columns: ``position`` (int64, 0-based row number in the dataset's Parquet file) and, for
    align, ``order`` (int64, the common order both nodes share: row i here pairs with the row
    of the same ``order`` at the peer).
    """
    folder = node.data_dir / ALIGN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    positions = np.asarray(rows, dtype=np.int64)
    cols: dict[str, Any] = {"position": pa.array(positions)}
    if ordered:
        cols = {"order": pa.array(np.arange(len(positions), dtype=np.int64)), **cols}
    path = folder / f"{job_id}.parquet"
    tmp = staging_path(path)
    pq.write_table(pa.table(cols), tmp)
    tmp.replace(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"rows_file": f"{ALIGN_DIR}/{path.name}", "rows_sha256": digest}
