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

import contextlib
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dataspace.contracts import store as cstore
from dataspace.errors import Conflict, DataspaceError, NotFound, UsageError
from dataspace.privacy.psi import MODES, Engine, Initiator, KeySpec, shared_engine
from dataspace.privacy.secagg import (
    AGGREGATORS,
    FixedPoint,
    OutputNoise,
    SessionConfig,
    aggregator,
    ed25519_verifier,
)
from dataspace.services import jobs
from dataspace.services import mp_store as ms
from dataspace.services.job_wire import check_job_id, jsonable, sha256_hex
from dataspace.services.mp_keys import party_keys
from dataspace.services.mp_party import POOL_ABOVE_ROWS, write_rows
from dataspace.services.mp_wire import (
    ABORT_PATH,
    STEP_PATH,
    MultipartyFailed,
    call_peer,
    pack_frame,
    unpack_frame,
)
from dataspace.services.node import Node, default_actor
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
Progress = Callable[[dict[str, Any], dict[str, Any]], None]  # (event, {"done", "total"})
DEFAULT_BOUND = 1e12
CHUNK = 16_384


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
    ms.create_row(
        node,
        job_id=job.id,
        role=ms.INITIATOR,
        agreement_id=job.links[0].agreement_id,
        peer=",".join(link.peer for link in job.links),
        action=job.kind,
        request={
            "mp": job.params,
            "participants": [
                {"peer": link.peer, "agreement_id": link.agreement_id, "key": link.key or None}
                for link in job.links
            ],
            "attempt": job.attempt,
            "retry_of": job.retry_of,
            "idle_timeout": max(job.idle_timeout, job.step_timeout * 3),
            "step_timeout": job.step_timeout,
        },
        total=total,
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
    job_id: str | None = None,
    actor: str | None = None,
    step_timeout: float | None = None,
    idle_timeout: float | None = None,
    attempt: int = 1,
    retry_of: str | None = None,
) -> Job:
    """Validate a PSI job and claim its id (RUNNING); :func:`execute` runs it."""
    if mode not in MODES:
        raise UsageError(f"unknown PSI mode {mode!r}", hint="modes: " + ", ".join(MODES))
    spec = KeySpec.parse(key)
    links = _links(node, agreements, peers)
    if len(links) > 1 and mode != "me":
        raise UsageError(
            f"mode {mode!r} is two-party only; with {len(links)} participants the chain "
            "reveals the intersection to the initiator (mode me)",
        )
    for link in links:
        link.key = (peer_keys or {}).get(link.peer) or key
        if KeySpec.parse(link.key).describe() != spec.describe():
            raise UsageError(f"the key for {link.peer} has other kinds than {key!r}")
    with node.store.read() as session:
        own = jobs._dataset(node, session, dataset)
    missing = [c.name for c in spec.columns if c.name not in own.columns]
    if missing:
        raise UsageError(f"dataset {own.name} has no column(s) {missing}")
    rows = pq.ParquetFile(own.path).metadata.num_rows
    step_t, idle_t = _timeouts(node, step_timeout, idle_timeout)
    chunks = max(1, math.ceil(rows / CHUNK))
    per_peer = 3 + chunks + (1 if mode in ("both", "align") else 0)
    job = Job(
        id=check_job_id(job_id) if job_id else uuid.uuid4().hex,
        kind=ms.PSI,
        params={
            "mode": mode,
            "key": key,
            "group": group,
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
    if epsilon is not None and epsilon <= 0:
        raise UsageError("epsilon must be positive")
    links = _links(node, agreements, peers)
    FixedPoint(bound, scale_bits, max_count=2**31).check_capacity(len(links))
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
    def __init__(self, node: Node, job: Job, progress: Progress | None) -> None:
        self.node, self.job, self.progress = node, job, progress
        self.lock = threading.Lock()

    def step(
        self, link: _Link, name: str, blobs: Sequence[bytes] = (), **fields: Any
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send ``link``'s next step and record both sides' view of it."""
        header = {"job_id": self.job.id, "step": link.next_step, "name": name, **fields}
        body = pack_frame(header, blobs)
        answer = call_peer(self.node, link.peer, STEP_PATH, body, timeout=self.job.step_timeout)
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
                self.progress(event, _progress(self.node, self.job.id))
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


def _progress(node: Node, job_id: str) -> dict[str, Any]:
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        meta = (row.result_meta or {}) if row else {}
        return dict(meta.get("progress") or {})


def execute(node: Node, job: Job, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run a claimed job to its end; returns its view. Raises after recording a failure."""
    runner = _Runner(node, job, progress)
    try:
        result = _run_psi(runner) if job.kind == ms.PSI else _run_aggregate(runner)
    except DataspaceError as exc:
        _fail_everywhere(node, job, exc)
        raise
    except BaseException as exc:
        err = MultipartyFailed(f"the job stopped unexpectedly ({type(exc).__name__})")
        _fail_everywhere(node, job, err)
        raise
    ms.finish(
        node,
        job.id,
        state=jobs.SUCCEEDED,
        actor=job.actor,
        ledger_action="mp.completed",
        result=result,
        ledger_payload={
            "participants": [[lk.peer, lk.agreement_id] for lk in job.links],
            "result_sha256": sha256_hex(json.dumps(jsonable(result), sort_keys=True).encode()),
        },
    )
    return get_job(node, job.id)


def _fail_everywhere(node: Node, job: Job, exc: DataspaceError) -> None:
    details = exc.details if isinstance(exc.details, dict) else {}
    culprit = details.get("node")
    ms.add_events(
        node,
        job.id,
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
    ms.fail(node, job.id, exc, actor=job.actor, by=culprit)
    pending = []
    for link in job.links:
        body = json.dumps({"job_id": job.id, "reason": exc.message}).encode()
        try:
            call_peer(
                node,
                link.peer,
                ABORT_PATH,
                body,
                timeout=5.0,
                attempts=1,
                content_type="application/json",
            )
        except DataspaceError:
            pending.append(link.peer)
    ms.set_meta(node, job.id, pending_aborts=pending)


def _run_psi(r: _Runner) -> dict[str, Any]:
    job, p = r.job, r.job.params
    spec = KeySpec.parse(p["key"])
    path: Path = job.extra["path"]
    two_party = len(job.links) == 1
    rows: np.ndarray | None = None
    sizes = []
    own = 0
    modes = {link.peer: p["mode"] if two_party else "me" for link in job.links}
    ids = {
        link.peer: job.id if two_party else f"{job.id}/{i}"
        for i, link in enumerate(job.links, start=1)
    }
    # Every participant checks its own agreement before any protocol message is sent.
    r.each(
        lambda link: r.step(
            link,
            "open",
            kind=ms.PSI,
            agreement_id=link.agreement_id,
            key=link.key,
            mode=modes[link.peer],
            group=p["group"],
            psi_id=ids[link.peer],
            idle_timeout=max(job.idle_timeout, job.step_timeout * 3),
        )
    )
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
    # Only when every run is through does any participant keep or record anything.
    r.each(lambda link: r.step(link, "finish"))
    out: dict[str, Any] = {
        "mode": p["mode"],
        "size": result.size,
        "own_size": own,
        "dataset": p["dataset"],
        "per_peer": sizes,
    }
    if rows is not None:
        out.update(rows=len(rows), **write_rows(r.node, job.id, rows, ordered=p["mode"] == "align"))
    return out


def _run_aggregate(r: _Runner) -> dict[str, Any]:
    job, p = r.job, r.job.params
    index = {link.peer: i for i, link in enumerate(job.links, start=1)}
    encoding = FixedPoint(float(p["bound"]), int(p["scale_bits"]), max_count=2**31)
    config = SessionConfig(
        secrets.token_bytes(16),
        tuple(index.values()),
        len(p["columns"]),
        encoding,
        threshold=len(index),
    )
    noise = OutputNoise(float(p["epsilon"])) if p.get("epsilon") else None
    names = {i: peer for peer, i in index.items()}
    verifier = ed25519_verifier(party_keys(r.node, names), names)  # keys from the member list
    coordinator = aggregator(p["strategy"], noise).coordinator(config, verifier=verifier)
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
        "count": result.count,
        "parties": len(result.parties),
        "error_bound": result.error_bound
        if p["op"] != "mean"
        else result.error_bound / max(result.count, 1),
        "epsilon": p.get("epsilon"),
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

    def run() -> None:
        with contextlib.suppress(Exception):  # recorded in the job row by execute
            execute(node, job)

    threading.Thread(target=run, daemon=True, name=f"mp-{job.id[:12]}").start()
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
        if row is None or row.action not in ms.ACTIONS or row.role != ms.INITIATOR:
            raise NotFound(
                f"no multi-party job {job_id!r} started by this node",
                hint="retry a job on the node that initiated it",
            )
        state, request, meta = row.state, dict(row.request), dict(row.result_meta or {})
        action = row.action
    if state == jobs.RUNNING:
        ms.reap(node)
        raise Conflict(f"job {job_id} is still running", hint="wait for it to end, then retry")
    if state == jobs.SUCCEEDED:
        raise Conflict(f"job {job_id} succeeded; there is nothing to retry")
    pending = []
    reason = str((meta.get("error") or {}).get("message") or "the job failed")
    for peer in meta.get("pending_aborts") or []:
        body = json.dumps({"job_id": job_id, "reason": reason}).encode()
        try:
            call_peer(
                node,
                peer,
                ABORT_PATH,
                body,
                timeout=5.0,
                attempts=2,
                content_type="application/json",
            )
        except DataspaceError:
            pending.append(peer)
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
    if background:
        return start_background(node, job)
    return execute(node, job, progress=progress)


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


def write_keys(table: pa.Table, out: Path) -> None:
    if out.suffix.lower() == ".csv":
        pacsv.write_csv(table, out)
    else:
        pq.write_table(table, out)


def wait(node: Node, job_id: str, *, timeout: float = 600.0, poll: float = 0.2) -> dict[str, Any]:
    """Poll until the job ends (tests and scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        view = get_job(node, job_id)
        if ms.is_final(view["state"]) or time.monotonic() > deadline:
            return view
        time.sleep(poll)
