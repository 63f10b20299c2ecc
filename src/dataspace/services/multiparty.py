"""Multi-party jobs, initiator side: PSI and secure aggregation across nodes.

The initiator coordinates. It holds one agreement with each participant (it is the consumer,
the participant the provider) and drives the protocol cores of :mod:`dataspace.privacy` step
by step over signed node-to-node messages (:mod:`.mp_wire`); each participant checks its own
agreement and runs its steps next to its data (:mod:`.mp_party`)::

    start_psi / start_aggregate   validate, resolve the agreements, claim the job id
    execute                       step 0 "open" to every participant (each checks its agreement)
                                  → protocol steps → "finish" to every participant
                                  → the result is released here, and only now
    on any failure                FAILED here with the reason, "abort" to every participant
                                  (those unreachable are kept as pending aborts), nothing kept
    retry                         pending aborts delivered, then a new job id, fresh secrets

``run_psi`` / ``run_aggregate`` do both in the caller's thread; the API starts ``execute`` in
a background thread and the caller polls :func:`get_job`. docs/multiparty.md has the details.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.contracts import store as cstore
from dataspace.errors import DataspaceError, NotFound, UsageError
from dataspace.privacy.dp import check_epsilon
from dataspace.privacy.psi import MODES, Engine, Initiator, KeySpec, shared_engine
from dataspace.privacy.psi.errors import PsiEngineFailed
from dataspace.privacy.secagg import (
    AGGREGATORS,
    FixedPoint,
    SessionConfig,
    aggregator,
    ed25519_verifier,
    local_noise,
)
from dataspace.services import jobs, mp_initiator, mp_rr22
from dataspace.services import mp_store as ms
from dataspace.services.job_wire import check_job_id, sha256_hex
from dataspace.services.mp_initiator import Progress
from dataspace.services.mp_keys import party_keys
from dataspace.services.mp_party import MAX_ROWS_PER_PARTY, POOL_ABOVE_ROWS, write_rows
from dataspace.services.mp_wire import (
    STEP_PATH,
    TRANSPORT_ATTEMPTS,
    MultipartyFailed,
    PeerRefused,
    call_peer,
    pack_frame,
    unpack_frame,
)
from dataspace.services.node import Node, default_actor
from dataspace.settings import DEFAULT_AGGREGATE_BOUND
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import ContractNegotiationRow

__all__ = [
    "OPS",
    "Progress",
    "execute",
    "get_job",
    "list_jobs",
    "retry",
    "run_aggregate",
    "run_psi",
    "start_aggregate",
    "start_background",
    "start_psi",
]

OPS = ("sum", "mean", "count")
DEFAULT_BOUND = DEFAULT_AGGREGATE_BOUND
CHUNK = 16_384
RR22_STATUS_EVERY = 3.0  # seconds before first asking an RR22 participant how its side goes
RR22_STATUS_LONGEST = 30.0  # the interval doubles up to this

logger = logging.getLogger("dataspace.multiparty")


@dataclass
class _Link:
    """The initiator's line to one participant: its agreement and next step number."""

    peer: str
    agreement_id: str
    key: str = ""
    next_step: int = 0


@dataclass
class Job:
    """A multi-party job being run by this (the initiator's) node."""

    id: str
    kind: str
    params: dict[str, Any]
    links: list[_Link]
    actor: str
    step_timeout: float
    idle_timeout: float
    attempt: int = 1
    retry_of: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- starting ------------------------------------------------------------------------------------


def check_peer_keys(
    peer_keys: Mapping[str, str] | None, links: Sequence[_Link], named: str = "peer_keys"
) -> None:
    """Every participant ``peer_keys`` (the option ``named``) names takes part: a misspelt
    one's key would be ignored, and its column then not found."""
    strangers = sorted(set(peer_keys or {}) - {link.peer for link in links})
    if strangers:
        raise UsageError(f"{named} names {', '.join(strangers)}, which takes no part",
                         hint="participants: " + ", ".join(link.peer for link in links))


def _peer_key(given: str | None, key: str, spec: KeySpec) -> str:
    """A participant's key columns: ``given`` (its own column names), taking the kinds of
    ``key`` in order when it names none (``tax-bureau=纳税人识别号`` with ``--on
    credit_code:uscc``); ``key`` itself when not given."""
    if not given:
        return key
    if ":" in given:
        return given
    names = [part.strip() for part in given.split(",")]
    if len(names) != len(spec.columns):
        return given  # the kinds check says what is wrong
    return ",".join(f"{name}:{column.kind}" for name, column in zip(names, spec.columns,
                                                                     strict=True))


def _timeouts(node: Node, step: float | None, idle: float | None) -> tuple[float, float]:
    step_t = float(step or node.limits.mp_step_timeout_seconds)
    idle_t = float(idle or node.limits.mp_idle_timeout_seconds)
    if step_t <= 0 or idle_t <= 0:
        raise UsageError("timeouts must be positive")
    return step_t, max(idle_t, 1.0)


def _links(node: Node, agreements: Sequence[str], peers: Sequence[str] | None) -> list[_Link]:
    if not agreements:
        raise UsageError("name at least one agreement (--agreement)")
    if peers and len(peers) != len(agreements):
        raise UsageError("give one --with PEER per --agreement, in the same order")
    out = []
    with node.store.read() as session:
        for i, agreement_id in enumerate(agreements):
            agreement = cstore.get_agreement(session, agreement_id, peer=None)
            neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
            if neg is None or neg.role != "consumer":
                raise NotFound(
                    f"no agreement {agreement_id!r} in which this node is the consumer",
                    hint="multi-party jobs run under your own agreements with each participant",
                )
            if peers and peers[i] != neg.peer:
                raise UsageError(f"agreement {agreement_id} is with {neg.peer}, not {peers[i]}")
            out.append(_Link(neg.peer, agreement_id))
    names = [link.peer for link in out]
    if len(set(names)) != len(names):
        raise UsageError("each participant may appear once")
    if node.name in names:
        raise UsageError("this node cannot be its own participant")
    return out


def _claim(node: Node, job: Job, total: int) -> Job:
    mp_initiator.claim(
        node,
        job.id,
        action=job.kind,
        params=job.params,
        participants=[
            {"peer": link.peer, "agreement_id": link.agreement_id, "key": link.key or None}
            for link in job.links
        ],
        total=total,
        attempt=job.attempt,
        retry_of=job.retry_of,
        idle_timeout=max(job.idle_timeout, job.step_timeout * 3),
        step_timeout=job.step_timeout,
    )
    return job


def start_psi(
    node: Node,
    *,
    agreements: Sequence[str],
    dataset: str,
    key: str,
    peers: Sequence[str] | None = None,
    peer_keys: dict[str, str] | None = None,
    mode: str = "me",
    group: str = "x25519",
    engine: str = "dh",
    job_id: str | None = None,
    actor: str | None = None,
    step_timeout: float | None = None,
    idle_timeout: float | None = None,
    attempt: int = 1,
    retry_of: str | None = None,
) -> Job:
    """Validate a PSI job and claim its id (RUNNING); :func:`execute` runs it.

    ``engine``: ``dh`` (DH-PSI over the signed steps) or ``rr22`` (spu's RR22 over a direct
    mutual-TLS link; not for mode ``size``), see :mod:`.mp_rr22`."""
    if mode not in MODES:
        raise UsageError(f"unknown PSI mode {mode!r}", hint="modes: " + ", ".join(MODES))
    mp_rr22.check_engine(engine, mode)
    spec = KeySpec.parse(key)
    links = _links(node, agreements, peers)
    if len(links) > 1 and mode != "me":
        raise UsageError(
            f"mode {mode!r} is two-party only; with {len(links)} participants the chain "
            "reveals the intersection to the initiator (mode me)",
        )
    check_peer_keys(peer_keys, links)
    for link in links:
        link.key = _peer_key((peer_keys or {}).get(link.peer), key, spec)
        if KeySpec.parse(link.key).describe() != spec.describe():
            raise UsageError(
                f"the key for {link.peer} ({link.key!r}) has other kinds than {key!r}",
                hint="give each column the kind --on gives it (PEER=COLUMN:KIND), or no kinds "
                "at all to take --on's",
            )
    with node.store.read() as session:
        own = jobs._dataset(node, session, dataset, mine=True)
    missing = [c.name for c in spec.columns if c.name not in own.columns]
    if missing:
        raise UsageError(f"dataset {own.name} has no column(s) {missing}")
    rows = pq.ParquetFile(own.path).metadata.num_rows
    step_t, idle_t = _timeouts(node, step_timeout, idle_timeout)
    chunks = max(1, math.ceil(rows / CHUNK))
    per_peer = 3 + chunks + (1 if mode in ("both", "align") else 0) if engine == "dh" else 3
    job = Job(
        id=check_job_id(job_id) if job_id else uuid.uuid4().hex,
        kind=ms.PSI,
        params={
            "mode": mode,
            "key": key,
            "group": group,
            "engine": engine,
            "dataset": own.name,
            "peer_keys": peer_keys or {},
        },
        links=links,
        actor=actor or default_actor(),
        step_timeout=step_t,
        idle_timeout=idle_t,
        attempt=attempt,
        retry_of=retry_of,
        extra={"path": own.path, "rows": rows},
    )
    return _claim(node, job, per_peer * len(links))


def start_aggregate(
    node: Node,
    *,
    agreements: Sequence[str],
    columns: Sequence[str],
    peers: Sequence[str] | None = None,
    op: str = "sum",
    epsilon: float | None = None,
    bound: float = DEFAULT_BOUND,
    scale_bits: int = 16,
    strategy: str = "pairwise-masking",
    job_id: str | None = None,
    actor: str | None = None,
    step_timeout: float | None = None,
    idle_timeout: float | None = None,
    attempt: int = 1,
    retry_of: str | None = None,
) -> Job:
    """Validate a secure aggregation and claim its id (RUNNING); :func:`execute` runs it."""
    if op not in OPS:
        raise UsageError(f"unknown operation {op!r}", hint="one of " + ", ".join(OPS))
    if strategy not in AGGREGATORS:
        raise UsageError(f"unknown strategy {strategy!r}", hint=", ".join(AGGREGATORS))
    columns = [c.strip() for c in columns if c.strip()]
    if not columns:
        raise UsageError("name the columns to aggregate (--columns c1,c2)")
    if epsilon is not None:
        check_epsilon(epsilon)
    if epsilon is not None and op != "sum":
        # the count's sensitivity is what one party may hold: with no agreed bound on rows
        # per party, its noise would drown any mean or count
        raise UsageError(
            f"--epsilon works with --op sum only, not {op}: a private count or mean needs a "
            "public bound on each party's rows, which jobs do not agree yet",
            hint="release the sum with --op sum --epsilon E (no count is released with it)",
        )
    links = _links(node, agreements, peers)
    # with ε the parties encode their noised vectors with a wider bound (see _run_aggregate)
    encoded = local_noise(bound, len(columns), epsilon).encoded_bound if epsilon else bound
    FixedPoint(encoded, scale_bits, max_count=MAX_ROWS_PER_PARTY).check_capacity(len(links))
    step_t, idle_t = _timeouts(node, step_timeout, idle_timeout)
    job = Job(
        id=check_job_id(job_id) if job_id else uuid.uuid4().hex,
        kind=ms.AGGREGATE,
        params={
            "columns": columns,
            "op": op,
            "epsilon": epsilon,
            "bound": bound,
            "scale_bits": scale_bits,
            "strategy": strategy,
        },
        links=links,
        actor=actor or default_actor(),
        step_timeout=step_t,
        idle_timeout=idle_t,
        attempt=attempt,
        retry_of=retry_of,
    )
    rounds = 4 if strategy == "pairwise-masking" else 3
    return _claim(node, job, (2 + rounds) * len(links))


# --- running -------------------------------------------------------------------------------------


class _Runner:
    def __init__(
        self, node: Node, job: Job, progress: Progress | None, alive: mp_initiator.KeepAlive
    ) -> None:
        self.node, self.job, self.progress, self.alive = node, job, progress, alive
        self.lock = threading.Lock()

    def step(
        self,
        link: _Link,
        name: str,
        blobs: Sequence[bytes] = (),
        *,
        wait: float | None = None,
        attempts: int = TRANSPORT_ATTEMPTS,
        **fields: Any,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send ``link``'s next step and record both sides' view of it (``wait``: seconds for
        the answer, default the job's step timeout). A step that got no answer keeps its
        number: sending it again is safe (the peer answers a repeat from its cache)."""
        self.alive.check()  # a participant said the job ended there: stop now
        header = {"job_id": self.job.id, "step": link.next_step, "name": name, **fields}
        body = pack_frame(header, blobs)
        answer = call_peer(
            self.node,
            link.peer,
            STEP_PATH,
            body,
            timeout=self.job.step_timeout if wait is None else wait,
            attempts=attempts,
        )
        out, out_blobs = unpack_frame(answer)
        if out.get("job_id") != self.job.id or out.get("step") != link.next_step:
            raise MultipartyFailed(f"{link.peer} answered for another step", node=link.peer)
        event = out.get("event") if isinstance(out.get("event"), dict) else None
        event = event or ms.event(link.peer, link.next_step, name)
        entry = {
            "peer": link.peer,
            "step": link.next_step,
            "name": name,
            "request_sha256": sha256_hex(body),
            "response_sha256": sha256_hex(answer),
        }
        with self.lock:
            ms.add_events(
                self.node, self.job.id, [event], ledger=False, actor=self.job.actor, entries=[entry]
            )
            if self.progress is not None:
                self.progress(event, mp_initiator.progress_of(self.node, self.job.id))
        link.next_step += 1
        return out, out_blobs

    def each(self, call: Callable[[_Link], Any], links: Sequence[_Link] | None = None) -> list[Any]:
        """``call`` for every link, in parallel; the first failure is raised."""
        targets = list(links if links is not None else self.job.links)
        if len(targets) == 1:
            return [call(targets[0])]
        with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
            futures = [pool.submit(call, link) for link in targets]
            return [f.result() for f in futures]


def execute(node: Node, job: Job, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run a claimed job to its end; returns its view. Raises after recording a failure."""
    idle = max(job.idle_timeout, job.step_timeout * 3)  # the participants' idle timeout
    with mp_initiator.KeepAlive(node, job.id, [lk.peer for lk in job.links], idle) as alive:
        runner = _Runner(node, job, progress, alive)
        try:
            result = _run_psi(runner) if job.kind == ms.PSI else _run_aggregate(runner)
        except DataspaceError as exc:
            _fail_everywhere(node, job, exc)
            raise
        except BaseException as exc:
            err = MultipartyFailed(f"the job stopped unexpectedly ({type(exc).__name__})")
            _fail_everywhere(node, job, err)
            raise
    stored = mp_initiator.complete(
        node,
        job.id,
        result,
        actor=job.actor,
        participants=[(lk.peer, lk.agreement_id) for lk in job.links],
    )
    if not stored:  # ended meanwhile (another process failed it): no node keeps a result
        if result.get("rows_file"):
            (node.data_dir / str(result["rows_file"])).unlink(missing_ok=True)
        ended = get_job(node, job.id)
        reason = str((ended.get("error") or {}).get("message") or "the job ended")
        mp_initiator.abort_peers(node, job.id, [lk.peer for lk in job.links],
                                 f"the initiator's job ended before it stored the result: "
                                 f"{reason}", attempts=2)
        raise MultipartyFailed(f"job {job.id} ended before its result was stored: {reason}",
                               hint="start a new attempt with `dataspace job retry`")
    return get_job(node, job.id)


def _fail_everywhere(node: Node, job: Job, exc: DataspaceError) -> None:
    peers = [link.peer for link in job.links]
    mp_initiator.fail_everywhere(node, job.id, exc, actor=job.actor, peers=peers)


def _run_psi(r: _Runner) -> dict[str, Any]:
    job, p = r.job, r.job.params
    spec = KeySpec.parse(p["key"])
    path: Path = job.extra["path"]
    two_party = len(job.links) == 1
    modes = {link.peer: p["mode"] if two_party else "me" for link in job.links}
    ids = {
        link.peer: job.id if two_party else f"{job.id}/{i}"
        for i, link in enumerate(job.links, start=1)
    }
    engine = p.get("engine", "dh")
    # Every participant checks its own agreement before any protocol message is sent.
    opened = r.each(
        lambda link: r.step(
            link,
            "open",
            kind=ms.PSI,
            agreement_id=link.agreement_id,
            key=link.key,
            mode=modes[link.peer],
            group=p["group"],
            psi_id=ids[link.peer],
            engine=engine,
            idle_timeout=max(job.idle_timeout, job.step_timeout * 3),
        )
    )
    rows: np.ndarray | None
    result_size: int | None
    if engine == "rr22":
        rows, own, sizes = _run_rr22(r, spec, path, modes, opened)
        result_size = sizes[-1]["size"]
    else:
        rows, own, sizes, result_size = _run_dh(r, spec, path, modes, ids)
    # Only when every run is through does any participant keep or record anything.
    r.each(lambda link: _finish_psi(r, link))
    out: dict[str, Any] = {
        "mode": p["mode"],
        "engine": engine,
        "size": result_size,
        "own_size": own,
        "dataset": p["dataset"],
        "per_peer": sizes,
    }
    if rows is not None:
        out.update(rows=len(rows), **write_rows(r.node, job.id, rows, ordered=p["mode"] == "align"))
    return out


def _finish_psi(r: _Runner, link: _Link) -> Any:
    """The ``finish`` step of a PSI job. A participant whose RR22 engine failed after this
    side's run had ended (so no ``status`` step saw it) refuses ``finish`` with that failure:
    the job fails as that engine's, on that node, as it would have had a status seen it."""
    try:
        return r.step(link, "finish")
    except PeerRefused as exc:
        if exc.details.get("peer_code") != PsiEngineFailed.code:
            raise
        raise PsiEngineFailed(exc.message, hint=exc.hint, node=link.peer) from exc


def _run_dh(
    r: _Runner, spec: KeySpec, path: Path, modes: dict[str, str], ids: dict[str, str]
) -> tuple[np.ndarray | None, int, list[dict[str, Any]], int | None]:
    """DH-PSI with each participant in turn over the signed steps (a chain for 3+)."""
    job, p = r.job, r.job.params
    rows: np.ndarray | None = None
    sizes = []
    own = 0
    with Engine(0) if job.extra["rows"] < POOL_ABOVE_ROWS else shared_engine() as engine:
        for i, link in enumerate(job.links, start=1):
            a = Initiator(
                ids[link.peer], spec, mode=modes[link.peer], group_name=p["group"], engine=engine
            )
            parquet = pq.ParquetFile(path)
            a.load(
                parquet.iter_batches(batch_size=65_536, columns=[c.name for c in spec.columns]),
                only_rows=rows,
            )
            _, replies = r.step(link, "hello", [a.hello()])
            back: list[bytes] = []
            for reply in replies:
                back.extend(a.receive(reply))
            for seq, chunk in enumerate(a.outgoing()):
                _, replies = r.step(link, f"points#{seq}", [chunk])
                for reply in replies:
                    back.extend(a.receive(reply))
            if back:
                r.step(link, "matches", back)
            result = a.result()
            own = result.own_size if i == 1 else own
            sizes.append({"peer": link.peer, "peer_size": result.peer_size, "size": result.size})
            rows = result.rows
    return rows, own, sizes, result.size


def _run_rr22(
    r: _Runner,
    spec: KeySpec,
    path: Path,
    modes: dict[str, str],
    opened: list[tuple[dict[str, Any], list[bytes]]],
) -> tuple[np.ndarray, int, list[dict[str, Any]]]:
    """RR22 with each participant in turn (rank 0 and receiver here; mode me chains on the
    rows matched so far), each over its own mutual-TLS link, wiped when the run ends."""
    job = r.job
    rows: np.ndarray | None = None
    sizes: list[dict[str, Any]] = []
    own = 0
    for i, (link, (answer, blobs)) in enumerate(zip(job.links, opened, strict=True)):
        mode = modes[link.peer]
        if answer.get("engine") != "rr22" or len(blobs) != 1:
            raise MultipartyFailed(f"{link.peer} did not open an RR22 link", node=link.peer)
        peer_size = int(answer.get("size") or 0)
        source = mp_rr22.Input.load(path, spec, rows)
        own = source.distinct if i == 0 else own
        go = source.distinct > 0 and peer_size > 0  # else the intersection is empty: no run
        with mp_rr22.Endpoint.create(r.node) as endpoint:
            run = mp_rr22.Run(endpoint, source, mode)
            answered = False
            try:
                if go:  # rank 0 listens before the participant starts rank 1
                    address = str(answer.get("address"))
                    run.start(blobs[0], address, job.step_timeout, job.id, rank=0)
                    run.wait_listening(job.step_timeout)
                back, _ = r.step(
                    link,
                    "rr22",
                    [endpoint.pem],
                    address=endpoint.address,
                    size=source.distinct,
                    timeout=job.step_timeout,
                )
                answered = True
                if bool(back.get("run")) != go:
                    raise MultipartyFailed(f"{link.peer} disagrees on the RR22 run", node=link.peer)
                _watch_rr22(r, link, run, job.step_timeout + 30)
                keys = run.wait(0)
            except (PsiEngineFailed, MultipartyFailed) as exc:
                mine = run.failure
                if isinstance(mine, PsiEngineFailed) and (not answered or exc is mine):
                    # this side's engine failed (before the peer answered: its port taken
                    # after all; or later, on its own): this node's failure, not the peer's
                    raise PsiEngineFailed(
                        f"RR22 with {link.peer}: {mine.message} (on {r.node.name})", hint=mine.hint
                    ) from mine
                if not isinstance(exc, PsiEngineFailed):
                    raise
                raise PsiEngineFailed(
                    f"RR22 with {link.peer}: {exc.message}", hint=exc.hint, node=link.peer
                ) from exc
            finally:
                run.stop()  # a run that failed elsewhere does not wait out its timeout here
        sizes.append({"peer": link.peer, "peer_size": peer_size, "size": len(keys)})
        rows = mp_rr22.positions(source, keys, mode)
    assert rows is not None
    return rows, own, sizes


def _watch_rr22(r: _Runner, link: _Link, run: mp_rr22.Run, timeout: float) -> None:
    """Wait for this side's run, asking the participant how its side goes (after 3 s, then
    at doubling intervals up to 30 s): its engine dying mid-run would otherwise show here only
    when this engine's link times out. A side whose run failed refuses the ``status`` step
    with its reason. A status that gets no answer in time is not a failure — this engine's
    own timeout still stands — and is sent again (same number) at the next tick."""
    deadline = time.monotonic() + timeout
    every, unanswered = RR22_STATUS_EVERY, False
    thread = run.thread
    while thread is not None and thread.is_alive() and time.monotonic() < deadline:
        thread.join(min(every, max(0.0, deadline - time.monotonic())))
        if thread.is_alive():
            unanswered = not _status(r, link, settle=False)
            every = min(RR22_STATUS_LONGEST, every * 2)
    if run.alive:
        raise MultipartyFailed(f"the RR22 run did not finish within {timeout:g} s here")
    if unanswered:  # settle that step number before the next step ("finish") reuses it
        _status(r, link, settle=True)


def _status(r: _Runner, link: _Link, *, settle: bool) -> bool:
    """One ``status`` step; True if answered. A refusal (the participant's run failed) fails
    the job as the participant's. No answer: with ``settle`` (the step timeout and retries)
    that fails the job too; otherwise (one attempt, RR22_STATUS_EVERY s) it returns False —
    unless the connection itself was refused: nothing listens at the participant's address,
    so its node is down and its run gone with it. That is settled at once (retried as any
    step), so a dead participant fails the job in seconds, not at this engine's timeout."""
    try:
        if settle:
            r.step(link, "status")
        else:
            r.step(link, "status", wait=RR22_STATUS_EVERY, attempts=1)
    except PeerRefused as exc:
        raise PsiEngineFailed(exc.message, hint=exc.hint, node=link.peer) from exc
    except MultipartyFailed as exc:
        if settle:
            raise PsiEngineFailed(exc.message, hint=exc.hint, node=link.peer) from exc
        if exc.details.get("transport") == "ConnectError":
            return _status(r, link, settle=True)
        return False
    return True


def _run_aggregate(r: _Runner) -> dict[str, Any]:
    job, p = r.job, r.job.params
    index = {link.peer: i for i, link in enumerate(job.links, start=1)}
    # DP is distributed: each party noises its own vector before masking (secagg.noise
    # .LocalNoise), so this node -- the consumer's -- never holds an exact sum. Noised values
    # are encoded with the wider bound every party derives from the same public numbers.
    dp = local_noise(float(p["bound"]), len(p["columns"]), float(p["epsilon"])) \
        if p.get("epsilon") else None
    bound = dp.encoded_bound if dp is not None else float(p["bound"])
    # stated before any party spends ε (every party must finish: threshold = n)
    noise_error95 = dp.error95(len(job.links)) if dp is not None else None
    encoding = FixedPoint(bound, int(p["scale_bits"]), max_count=MAX_ROWS_PER_PARTY)
    config = SessionConfig(
        secrets.token_bytes(16),
        tuple(index.values()),
        len(p["columns"]),
        encoding,
        threshold=len(index),
    )
    names = {i: peer for peer, i in index.items()}
    verifier = ed25519_verifier(party_keys(r.node, names), names)  # keys from the member list
    coordinator = aggregator(p["strategy"]).coordinator(config, verifier=verifier)
    opened = r.each(
        lambda link: r.step(
            link,
            "open",
            kind=ms.AGGREGATE,
            agreement_id=link.agreement_id,
            columns=p["columns"],
            op=p["op"],
            epsilon=p.get("epsilon"),
            session=config.session.hex(),
            parties=list(config.parties),
            members=[[i, peer] for i, peer in sorted(names.items())],
            index=index[link.peer],
            bound=p["bound"],
            scale_bits=p["scale_bits"],
            max_count=encoding.max_count,
            threshold=config.threshold,
            strategy=p["strategy"],
            idle_timeout=max(job.idle_timeout, job.step_timeout * 3),
        )
    )
    for _, blobs in opened:
        coordinator.receive(blobs[0])
    by_index = {index[link.peer]: link for link in job.links}
    rounds = 0
    while not coordinator.finished:
        messages = coordinator.advance()
        if not messages:
            break
        rounds += 1

        def send(link: _Link, m: dict[int, bytes] = messages, k: int = rounds) -> Any:
            return r.step(link, f"round#{k}", [m[index[link.peer]]])

        answers = r.each(send, [by_index[i] for i in sorted(messages)])
        for _, blobs in answers:
            if blobs and blobs[0]:
                coordinator.receive(blobs[0])
    result = coordinator.result()  # refuses unless every round completed
    r.each(lambda link: r.step(link, "finish"))  # every party ends well, or nothing is released
    values = result.sum if p["op"] != "mean" else result.mean
    return {
        "op": p["op"],
        "columns": p["columns"],
        "values": dict(zip(p["columns"], [float(v) for v in values], strict=True)),
        "count": None if dp is not None else result.count,
        "parties": len(result.parties),
        "error_bound": result.error_bound
        if p["op"] != "mean"
        else result.error_bound / max(result.count, 1),
        "epsilon": p.get("epsilon"),
        **({"noise_error95": noise_error95} if dp is not None else {}),
    }


# --- one call, background, retry, views ----------------------------------------------------------


def run_psi(node: Node, *, progress: Progress | None = None, **kw: Any) -> dict[str, Any]:
    """:func:`start_psi` then :func:`execute`, in this thread."""
    return execute(node, start_psi(node, **kw), progress=progress)


def run_aggregate(node: Node, *, progress: Progress | None = None, **kw: Any) -> dict[str, Any]:
    """:func:`start_aggregate` then :func:`execute`, in this thread."""
    return execute(node, start_aggregate(node, **kw), progress=progress)


def start_background(node: Node, job: Job) -> dict[str, Any]:
    """Run a claimed job in a daemon thread (the API's way); returns its view at once."""
    mp_initiator.in_background(f"mp-{job.id[:12]}", lambda: execute(node, job))
    return get_job(node, job.id)


def retry(
    node: Node,
    job_id: str,
    *,
    actor: str | None = None,
    progress: Progress | None = None,
    background: bool = False,
) -> dict[str, Any]:
    """Start a failed job again as a new attempt: new job id, fresh keys and secrets.

    Participants that could not be told about the failure are told first.
    """
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        if row is not None and row.action == ms.PREDICT and row.role == ms.INITIATOR:
            raise UsageError(f"job {job_id} is a prediction: predictions are not retried",
                             hint="run `dataspace predict` again with the same --model and "
                             "--rows")
        if row is None or row.action not in ms.ACTIONS or row.role != ms.INITIATOR:
            raise NotFound(
                f"no multi-party job {job_id!r} started by this node",
                hint="retry a job on the node that initiated it",
            )
        state, request, meta = row.state, dict(row.request), dict(row.result_meta or {})
        action = row.action
    if state == jobs.RUNNING:  # a job whose initiator died ends now, if it is stale
        ms.reap(node)
        with node.store.read() as session:
            again = session.get(JobRow, job_id)
            state = again.state if again is not None else state
    mp_initiator.check_retryable(job_id, state)
    job = mp_initiator.start_retry(
        node, job_id, lambda: _start_again(node, job_id, action, request, meta, actor))
    if background:
        return start_background(node, job)
    return execute(node, job, progress=progress)


def _start_again(
    node: Node, job_id: str, action: str, request: dict[str, Any], meta: dict[str, Any],
    actor: str | None,
) -> Job:
    """The new attempt of a failed job, claimed (not yet run); its pending aborts told first."""
    pending = mp_initiator.deliver_pending_aborts(node, job_id, meta)
    ms.set_meta(node, job_id, pending_aborts=pending)
    params = dict(request.get("mp") or {})
    parts = request.get("participants") or []
    common: dict[str, Any] = {
        "agreements": [str(x["agreement_id"]) for x in parts],
        "peers": [str(x["peer"]) for x in parts],
        "actor": actor,
        "step_timeout": request.get("step_timeout"),
        "idle_timeout": request.get("idle_timeout"),
        "attempt": int(request.get("attempt") or 1) + 1,
        "retry_of": job_id,
    }
    if action == ms.PSI:
        job = start_psi(
            node,
            dataset=params["dataset"],
            key=params["key"],
            mode=params["mode"],
            group=params.get("group", "x25519"),
            engine=params.get("engine", "dh"),
            peer_keys=params.get("peer_keys") or None,
            **common,
        )
    else:
        job = start_aggregate(
            node,
            columns=params["columns"],
            op=params["op"],
            epsilon=params.get("epsilon"),
            bound=float(params["bound"]),
            scale_bits=int(params["scale_bits"]),
            strategy=params["strategy"],
            **common,
        )
    return job


def get_job(node: Node, job_id: str) -> dict[str, Any]:
    """One multi-party job as this node sees it (the initiator: every node's step events)."""
    return ms.get_row_view(node, job_id)


def list_jobs(node: Node, *, state: str | None = None) -> list[dict[str, Any]]:
    return ms.list_views(node, state=state)


def intersection_keys(node: Node, job_id: str) -> pa.Table:
    """The initiator's rows of the intersection (its own key columns), for modes me/both/align."""
    view = get_job(node, job_id)
    result = view.get("result") or {}
    if view["state"] != jobs.SUCCEEDED or not result.get("rows_file"):
        raise NotFound(f"job {job_id} kept no rows here", hint="modes me, both and align keep rows")
    params = view.get("params") or {}
    with node.store.read() as session:
        own = jobs._dataset(node, session, str(params["dataset"]))
    names = [c.name for c in KeySpec.parse(str(params["key"])).columns]
    positions = pq.read_table(node.data_dir / result["rows_file"]).column("position")
    return pq.read_table(own.path, columns=names).take(positions)


def wait(node: Node, job_id: str, *, timeout: float = 600.0, poll: float = 0.2) -> dict[str, Any]:
    """Poll until the job ends (tests and scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        view = get_job(node, job_id)
        if ms.is_final(view["state"]) or time.monotonic() > deadline:
            return view
        time.sleep(poll)
