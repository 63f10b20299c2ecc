"""The initiator's side every multi-party job shares (PSI, aggregation, training, FedAvg,
prediction): claiming the job row, calling a protocol's steps with their events recorded, and
the end — ``mp.completed`` here, or FAILED here and ``abort`` to every participant.

:mod:`.multiparty`, :mod:`.training`, :mod:`.train_fedavg` and :mod:`.predict` each drive their
own protocol; what they do the same way around it lives here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from dataspace.errors import Conflict, DataspaceError
from dataspace.services import jobs
from dataspace.services import mp_store as ms
from dataspace.services.job_wire import jsonable, sha256_hex
from dataspace.services.mp_wire import (
    ABORT_PATH,
    ALIVE_PATH,
    STEP_PATH,
    MultipartyFailed,
    call_peer,
    pack_frame,
    unpack_frame,
)
from dataspace.services.node import Node
from dataspace.store.models_compute import JobRow

logger = logging.getLogger("dataspace.multiparty")

Progress = Callable[[dict[str, Any], dict[str, Any]], None]  # (event, {"done", "total"})
T = TypeVar("T")
R = TypeVar("R")


# --- the job row -------------------------------------------------------------------------------


def claim(
    node: Node,
    job_id: str,
    *,
    action: str,
    params: Mapping[str, Any],
    participants: Sequence[Mapping[str, Any]],
    total: int,
    **request: Any,
) -> None:
    """The initiator's RUNNING row: ``participants`` are ``{"peer", "agreement_id", ...}`` (the
    first one's agreement is the row's), ``request`` further fields kept with the job (attempt,
    retry_of, timeouts...)."""
    ms.create_row(
        node,
        job_id=job_id,
        role=ms.INITIATOR,
        agreement_id=str(participants[0]["agreement_id"]),
        peer=",".join(str(p["peer"]) for p in participants),
        action=action,
        request={"mp": params, "participants": [dict(p) for p in participants], **request},
        total=total,
    )


def progress_of(node: Node, job_id: str) -> dict[str, Any]:
    """The job's progress as recorded (``{"done", "total"}``)."""
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        meta = (row.result_meta or {}) if row else {}
        return dict(meta.get("progress") or {})


# --- running -----------------------------------------------------------------------------------


def each(items: Sequence[T], call: Callable[[T], R]) -> list[R]:
    """``call`` for every item, in parallel threads; results in order, the first failure raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return [f.result() for f in [pool.submit(call, item) for item in items]]


def in_background(name: str, run: Callable[[], object]) -> None:
    """``run`` in a daemon thread named ``name``; it records its own end in the job row, so
    what it raises is dropped here."""

    def target() -> None:
        with contextlib.suppress(Exception):
            run()

    threading.Thread(target=target, daemon=True, name=name).start()


class Coordinator:
    """The initiator's end of a running job whose steps are frames tagged ``protocol``: each
    call to a peer is a signed step; the peer's event and both bodies' hashes are recorded."""

    def __init__(
        self,
        node: Node,
        job_id: str,
        *,
        protocol: str,
        actor: str,
        timeout: float,
        progress: Progress | None,
    ) -> None:
        self.node, self.job_id, self.protocol = node, job_id, protocol
        self.actor, self.timeout, self.progress = actor, timeout, progress
        self.lock = threading.Lock()
        self.alive: KeepAlive | None = None  # set while a KeepAlive runs for the job

    def call_step(
        self, peer: str, name: str, blobs: Sequence[bytes] = (), **fields: Any
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Step ``name`` at ``peer``; its answer's header and blobs. A participant that said
        the job ended there (:class:`KeepAlive`) fails it here first."""
        if self.alive is not None:
            self.alive.check()
        header = {"protocol": self.protocol, "job_id": self.job_id, "name": name, **fields}
        body = pack_frame(header, list(blobs))
        answer = call_peer(self.node, peer, STEP_PATH, body, timeout=self.timeout)
        out, back = unpack_frame(answer)
        if isinstance(out.get("event"), dict):
            self.record(
                out["event"],
                {
                    "peer": peer,
                    "name": name,
                    "request_sha256": sha256_hex(body),
                    "response_sha256": sha256_hex(answer),
                },
            )
        return out, back

    def record(self, event: dict[str, Any], entry: dict[str, Any] | None = None) -> None:
        """A step event: this node's own (to the ledger), or a peer's with its ``entry``."""
        with self.lock:
            ms.add_events(
                self.node,
                self.job_id,
                [event],
                ledger=entry is None,
                actor=self.actor,
                entries=[entry] if entry else [],
            )
            if self.progress is not None:
                self.progress(event, progress_of(self.node, self.job_id))


# --- the end -----------------------------------------------------------------------------------


class KeepAlive:
    """Signs of life while a job runs here, a third of the participants' idle timeout apart
    (1–30 s): the job row's heartbeat (the reaper, run by any process that reads jobs, spares
    it) and a keep-alive to every participant, whose idle timeout starts again. Participants
    wait while the initiator works alone — loading its own identifiers, another participant's
    run of a PSI chain, evaluating a model — and would otherwise time out a job that is well.

    A participant that answers that the job ended there (FAILED, DENIED) is remembered, and
    :meth:`check` raises it at this node's next step instead of after its local work; one that
    finished (SUCCEEDED) is no longer told. Used as a context manager around the run."""

    def __init__(self, node: Node, job_id: str, peers: Sequence[str], idle: float) -> None:
        self.node, self.job_id, self.peers = node, job_id, list(peers)
        self.every = max(1.0, min(30.0, idle / 3))
        self._ended: dict[str, str] = {}
        self._finished: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"mp-alive-{job_id[:12]}")

    def __enter__(self) -> KeepAlive:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def check(self) -> None:
        """Raise :class:`MultipartyFailed` if a participant said the job ended there."""
        with self._lock:
            ended = next(iter(self._ended.items()), None)
        if ended is not None:
            peer, why = ended
            raise MultipartyFailed(
                f"{peer} ended job {self.job_id} there ({why})",
                hint="start a new attempt with `dataspace job retry`",
                node=peer,
                cause="peer-ended",
            )

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(self.peers))),
                                thread_name_prefix=f"mp-alive-{self.job_id[:8]}") as pool:
            while not self._done.wait(self.every):
                try:
                    ms.beat(self.node, self.job_id)
                except Exception:  # a missed beat costs nothing unless many are missed
                    logger.exception("heartbeat of job %s", self.job_id)
                with self._lock:
                    told = [p for p in self.peers
                            if p not in self._finished and p not in self._ended]
                # in parallel: peers that do not answer (5 s each) must not delay the others
                # past their idle timeout
                for _ in pool.map(self._tell, told):
                    pass

    def _tell(self, peer: str) -> None:
        body = json.dumps({"job_id": self.job_id}).encode()
        try:
            answer = call_peer(self.node, peer, ALIVE_PATH, body, timeout=min(5.0, self.every),
                               attempts=1, content_type="application/json")
            doc = json.loads(answer)
        except (DataspaceError, ValueError):  # the job's own steps will say what is wrong
            return
        state = str(doc.get("state", "")) if isinstance(doc, dict) else ""
        with self._lock:
            if state == jobs.SUCCEEDED:
                self._finished.add(peer)
            elif state in (jobs.FAILED, jobs.DENIED):
                reason = str(doc.get("reason") or "")[:500]
                self._ended[peer] = state + (f": {reason}" if reason else "")


def run_or_fail(run: Callable[[], R], fail: Callable[[DataspaceError], None], what: str) -> R:
    """``run()``; should it raise, ``fail(error)`` records the failure first (the caller's
    :func:`fail_everywhere`) and the error is raised — anything but a :class:`DataspaceError`
    as :class:`MultipartyFailed` ("``what`` stopped unexpectedly")."""
    try:
        return run()
    except DataspaceError as exc:
        fail(exc)
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C: the user's wish, not a crash
            err = MultipartyFailed(f"{what} was cancelled by its initiator (interrupted)",
                                   hint="start it again with `dataspace job retry`",
                                   cause="cancelled")
        else:
            err = MultipartyFailed(f"{what} stopped unexpectedly ({type(exc).__name__}: {exc})")
        fail(err)
        raise err from exc


def complete(
    node: Node,
    job_id: str,
    result: Mapping[str, Any],
    *,
    actor: str,
    participants: Sequence[tuple[str, str]],
    **payload: Any,
) -> bool:
    """SUCCEEDED with ``result``: ``mp.completed`` names the (peer, agreement) pairs, the
    result's hash and any further ``payload``. False if the job had ended meanwhile."""
    return ms.finish(
        node,
        job_id,
        state=jobs.SUCCEEDED,
        actor=actor,
        ledger_action="mp.completed",
        result=result,
        ledger_payload={
            "participants": [[peer, agreement] for peer, agreement in participants],
            **payload,
            "result_sha256": sha256_hex(json.dumps(jsonable(result), sort_keys=True).encode()),
        },
    )


def abort_peers(
    node: Node, job_id: str, peers: Sequence[str], reason: str, *, attempts: int = 1
) -> list[str]:
    """Tell every peer the job ended (``abort``); returns those that could not be told."""
    pending = []
    body = json.dumps({"job_id": job_id, "reason": reason}).encode()
    for peer in peers:
        try:
            call_peer(
                node,
                peer,
                ABORT_PATH,
                body,
                timeout=5.0,
                attempts=attempts,
                content_type="application/json",
            )
        except DataspaceError:
            pending.append(peer)
    return pending


RETRY = "`dataspace job retry`"


def name_the_job(exc: DataspaceError, job_id: str, instead: str | None = None) -> None:
    """Say which job failed: ``details.job_id``, and the id in a hint that says to retry
    (``instead``: what to say in its place, for a job that is not retried)."""
    if isinstance(exc.details, dict):
        exc.details.setdefault("job_id", job_id)
    if exc.hint and RETRY in exc.hint:
        exc.hint = exc.hint.replace(RETRY, instead or f"`dataspace job retry {job_id}`")


def fail_everywhere(
    node: Node,
    job_id: str,
    exc: DataspaceError,
    *,
    actor: str,
    peers: Sequence[str],
    blame: bool = True,
) -> None:
    """FAILED here with ``exc`` (a ``failed`` event, ``job.failed``), ``abort`` to every peer;
    the unreachable are kept as the job's pending aborts (delivered by a retry). With
    ``blame``, the node named by the error (if any) is recorded as the culprit."""
    name_the_job(exc, job_id)
    details = exc.details if isinstance(exc.details, dict) else {}
    culprit = details.get("node") if blame else None
    ms.add_events(
        node,
        job_id,
        [
            ms.event(
                str(culprit or node.name),
                -1,
                "failed",
                "failed",
                code=exc.code,
                message=exc.message,
            )
        ],
        ledger=False,
    )
    if blame:
        ms.fail(node, job_id, exc, actor=actor, by=culprit)
    else:
        ms.fail(node, job_id, exc, actor=actor)
    ms.set_meta(node, job_id, pending_aborts=abort_peers(node, job_id, peers, exc.message))


class _Attempt(Protocol):
    id: str


A = TypeVar("A", bound=_Attempt)


def start_retry(node: Node, job_id: str, start: Callable[[], A]) -> A:
    """Claim the one retry of failed job ``job_id`` (:func:`ms.claim_retry`), start the new
    attempt with ``start()`` and record its id; the claim is given back if it cannot start."""
    ms.claim_retry(node, job_id)
    try:
        attempt = start()
    except BaseException:
        ms.settle_retry(node, job_id, None)
        raise
    ms.settle_retry(node, job_id, attempt.id)
    return attempt


def check_retryable(job_id: str, state: str) -> None:
    """A retry starts a job that ended without success, never a running or succeeded one."""
    if state == jobs.RUNNING:
        raise Conflict(f"job {job_id} is still running", hint="wait for it to end, then retry")
    if state == jobs.SUCCEEDED:
        raise Conflict(f"job {job_id} succeeded; there is nothing to retry")


def deliver_pending_aborts(node: Node, job_id: str, view: Mapping[str, Any]) -> list[str]:
    """Before a retry: the aborts a failed job could not deliver, sent again (two attempts
    each); returns the peers still unreachable."""
    reason = str((view.get("error") or {}).get("message") or "the job failed")
    return abort_peers(
        node, job_id, [str(p) for p in view.get("pending_aborts") or []], reason, attempts=2
    )
