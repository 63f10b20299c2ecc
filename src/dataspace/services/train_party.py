"""A node's side of a federated training job it did not start (a provider, or the dealer).

Every request arrives as a multi-party step frame with ``"protocol": "federated-train"``
(registered with :mod:`.mp_protocols`), signed by its sender:

* ``open`` (from the initiator) — a provider checks **its own** agreement with the initiator
  now (action ``federated-train``, purpose, the feature columns as ``fields``, expiry, count,
  and ``output``: ``aggregate-only`` for vlr and fedavg, ``pseudonymized`` for vgbdt, whose
  split instance spaces are row-level), loads its aligned block and starts its role; the
  dealer (the space operator, or a member with role ``dealer``) checks that it is one;
* ``start`` (from the initiator, once every node has opened) — the role begins;
* ``push`` (from any node of the job) — protocol messages for this node;
* ``pull`` (from the initiator) — protocol messages this node keeps for the initiator;
* ``status`` — the job's state here (an error if it failed here);
* ``finish`` — waits for the role to end, stages this node's model part, answers its hash;
* ``commit`` — the whole model is through everywhere: the part becomes final, the usage is
  recorded, ``model.trained`` and ``job.completed`` enter the ledger.

An ``abort`` (:func:`.mp_party.handle_abort`) fails the row; the running role notices within
half a second and stops; a staged part stays staged (never used).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dataspace.errors import DataspaceError, NotFound, UsageError
from dataspace.metering import revenue
from dataspace.services import jobs, mp_party, mp_protocols, train_linreg
from dataspace.services import models as model_store
from dataspace.services import mp_store as ms
from dataspace.services.job_wire import check_job_id
from dataspace.services.mp_wire import MultipartyFailed, pack_frame
from dataspace.services.node import Node
from dataspace.services.train_columns import numeric_block, numeric_column
from dataspace.services.train_net import PROTOCOL, Mailbox, mailbox_step
from dataspace.services.train_roles import (
    Local,
    Spec,
    check_params,
    coalitions,
    sgb_params,
    sgb_run,
    vlr_part,
    vlr_run,
)
from dataspace.store.models_compute import JobRow

ACTION = ms.TRAIN
DEALER = "dealer"
FINISH_WAIT = 600.0


FAMILIES = ("vlr", "vlinreg", "vgbdt")  # what a provider runs; anything else is refused


def output_for(family: str) -> str:
    """What a model family releases about a provider's rows, for the policy's ``output``."""
    if family not in FAMILIES:
        raise UsageError(f"unknown model family {family!r}", hint=f"known: {', '.join(FAMILIES)}")
    return "pseudonymized" if family == "vgbdt" else "aggregate-only"


def check_spec(node: Node, caller: str, spec: Spec) -> None:
    """A provider's own checks of what the initiator asks, before anything runs: a known
    family and parameters, the initiator as the label party, and the space's dealer — from
    this node's membership list, never one of the parties or the initiator (a dealer knows
    every mask: one that colludes with a party reads the others' features)."""
    from dataspace.services import space

    output_for(spec.family)
    if not spec.parties or spec.parties[0] != caller:
        raise UsageError(f"the initiator {caller} must be the job's label party")
    if len(set(spec.parties)) != len(spec.parties):
        raise UsageError("the job names a party twice")
    dealer = space.dealer(node)
    if spec.dealer != dealer:
        raise UsageError(f"the job's dealer {spec.dealer!r} is not this space's dealer "
                         f"({dealer})", hint="the space's operator deals; no party may")
    if dealer in spec.parties:
        raise UsageError("the dealer must not be one of the data parties")
    if set(spec.widths) != set(spec.parties) or any(w < 1 for w in spec.widths.values()):
        raise UsageError("the job's column counts must name each party once, each at least 1")
    cells = spec.rows * sum(spec.widths.values())
    if spec.rows < 1 or cells > int(node.limits["train_max_cells"]):
        raise UsageError(f"the job's feature blocks ({spec.rows} rows × "
                         f"{sum(spec.widths.values())} columns) pass this node's limit of "
                         f"{node.limits['train_max_cells']} values",
                         hint="train_max_cells in node.toml [limits]")
    check_params(spec)


@dataclass
class Session:
    job_id: str
    initiator: str
    role: str
    spec: Spec
    mailbox: Mailbox
    ps: mp_party._Session
    local: Local = field(default_factory=Local)
    thread: threading.Thread | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: DataspaceError | None = None
    cache: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_seen: float = field(default_factory=time.monotonic)
    idle: float = 120.0
    ended: bool = False


_SESSIONS: dict[str, Session] = {}
_REGISTRY = threading.Lock()
mp_protocols.register_sessions(_SESSIONS, _REGISTRY)


def _reply(header: dict[str, Any], blobs: list[bytes] | None = None) -> bytes:
    return pack_frame(header, blobs or [])


def handle(
    node: Node, caller: str, header: dict[str, Any], blobs: list[bytes], body: bytes
) -> bytes:
    job_id = check_job_id(str(header.get("job_id", "")))
    name = str(header.get("name", ""))
    if name == "open":
        return _open(node, caller, job_id, header, body)
    with _REGISTRY:
        s = _SESSIONS.get(job_id)
    if s is None and (again := mp_party.ended_answer(
            job_id, caller, hashlib.sha256(body).hexdigest())) is not None:
        return again  # the job's last step, sent again after its answer was lost
    if s is None:
        raise MultipartyFailed(
            f"{node.name} holds no running training job {job_id} (it ended, or the node "
            "restarted and its secrets are gone)",
            hint="the initiator starts a new attempt with `dataspace job retry`",
            cause="session-lost",
        )
    shared = mailbox_step(
        s, name, caller, header, blobs, what="training",
        senders=[*s.spec.parties, s.spec.dealer], status={"runs_done": len(s.outputs)},
    )  # fmt: skip
    if shared is not None:
        return _reply(*shared)

    def answer() -> bytes:
        if name == "start":  # every node has opened: the protocol may begin
            assert s.thread is not None
            s.thread.start()
            return _reply({"job_id": job_id, "state": "running"})
        if name == "finish":
            return _finish(node, s)
        if name == "commit":
            return _commit(node, s, header)
        raise UsageError(f"unknown training step {name!r}")

    return mp_party.answer_keeping_the_last(
        s, job_id, name, hashlib.sha256(body).hexdigest(), caller, answer, _SESSIONS, _REGISTRY
    )


def _alive(node: Node, s: Session) -> None:
    with node.store.read() as db:
        row = db.get(JobRow, s.job_id)
        state, error = (row.state, row.error) if row is not None else ("UNKNOWN", None)
    if state != jobs.RUNNING:
        raise MultipartyFailed(f"the job ended on {node.name}: {error or state}", cause="aborted")
    if time.monotonic() - s.last_seen > s.idle:
        raise MultipartyFailed(
            f"no word from the initiator {s.initiator} for {s.idle:g} s: the job timed out",
            cause="timeout",
        )


def _open(node: Node, caller: str, job_id: str, header: dict[str, Any], body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    with _REGISTRY:
        existing = _SESSIONS.get(job_id)
    again = mp_party.check_open(node, job_id, caller, digest, existing, "training")
    if again is not None:
        return again
    spec = Spec.from_dict(job_id, dict(header["spec"]))
    check_spec(node, caller, spec)
    role = DEALER if node.name == spec.dealer else ms.PARTICIPANT
    if role == ms.PARTICIPANT and node.name not in spec.parties[1:]:
        raise NotFound(f"{node.name} is not a party of training job {job_id}")
    idle = max(
        5.0,
        min(
            float(header.get("idle_timeout") or 120.0),
            float(node.limits.mp_max_idle_timeout_seconds),
        ),
    )
    mp_party.claim(
        node,
        job_id,
        caller,
        header,
        action=ACTION,
        request={"mp": header, "idle_timeout": idle},
        role=role,
    )
    ps = mp_party._Session(job_id, caller, ACTION, idle)
    mailbox = Mailbox(node, job_id, node.name, caller, [*spec.parties, spec.dealer])
    s = Session(job_id, caller, role, spec, mailbox, ps, idle=idle)
    mailbox.alive = lambda: _alive(node, s)
    try:
        if role == DEALER:
            _check_dealer(node, caller)
        else:
            features = [str(c) for c in header.get("features") or []]
            if features != list(spec.columns.get(node.name) or []):
                # the model part records spec.columns: prediction reads them in that order
                raise UsageError("the job's columns for this node differ from the features "
                                 "it asks this node to load")
            dataset, decision = mp_party._check(node, ps, header, features,
                                                output_for(spec.family))
            least = mp_party.least_rows(node, decision)
            if spec.rows < least:
                raise UsageError(f"the job trains on {spec.rows} aligned rows; this node's "
                                 f"agreement and limits need at least {least}")
            if spec.family == "vgbdt" and sgb_params(spec).min_child_rows < least:
                # a tree node of a handful of rows hands the label party this node's bins
                # for those rows: every node of every tree holds at least k of them
                raise UsageError(
                    f"vgbdt's min_child_rows is {sgb_params(spec).min_child_rows}; this node's "
                    f"agreement and limits need at least {least} rows in every tree node",
                    hint=f"train with --param min_child_rows={least} (or more)",
                )
            _check_pricing(node, ps, spec)
            check_align(node, str(header.get("align", "")), caller, dataset)
            s.local = load_local(
                node, dataset, features, str(header.get("align", "")), header.get("select")
            )
            ps.rows_scanned = pq.ParquetFile(dataset.path).metadata.num_rows
            if s.local.block is not None and s.local.block.shape[1] != spec.widths[node.name]:
                raise UsageError("the job's column count for this node does not match")
            if s.local.block is not None and s.local.block.shape[0] != spec.rows:
                raise UsageError(f"the job names {spec.rows} aligned rows; this node has "
                                 f"{s.local.block.shape[0]}")
    except DataspaceError as exc:
        mp_party._end_error(node, ps, exc, step=0, name="open")
        raise
    except Exception as exc:  # a bug: the admitted job must not stay RUNNING
        err = MultipartyFailed(f"step open failed on {node.name} ({type(exc).__name__})")
        mp_party._end_error(node, ps, err, step=0, name="open")
        raise err from exc
    s.thread = threading.Thread(
        target=_drive, args=(node, s), daemon=True, name=f"train-{job_id[:12]}"
    )
    with _REGISTRY:
        _SESSIONS[job_id] = s
    mp_party.watch_quiet(node, s, _SESSIONS, _REGISTRY, "training")
    ev = ms.event(
        node.name,
        0,
        "open",
        request_sha256=digest,
        role=role,
        rows=int(s.local.block.shape[0]) if s.local.block is not None else 0,
    )
    ms.add_events(node, job_id, [ev], actor=f"peer:{caller}")
    answer = _reply({"job_id": job_id, "step": 0, "event": ev, "state": "open"})
    s.cache["open"] = (digest, answer)
    return answer


def _check_dealer(node: Node, caller: str) -> None:
    from dataspace.services import space

    me = space.member(node, node.name)
    if DEALER not in me.roles and "operator" not in me.roles:
        raise UsageError(f"{node.name} is not a dealer of this space")
    space.member(node, caller)  # the initiator must be a member


def check_align(node: Node, align: str, caller: str, dataset: Any) -> None:
    """``align`` is a PSI align job this node ran with ``caller`` on ``dataset`` and finished:
    an initiator may not train on rows another member aligned, or on another dataset's."""
    with node.store.read() as session:
        row = session.get(JobRow, check_job_id(align))
    result = ((row.result_meta or {}).get("result") or {}) if row is not None else {}
    if (row is None or row.action != "psi" or row.state != jobs.SUCCEEDED
            or result.get("mode") != "align"):
        raise NotFound(
            f"no finished PSI align job {align} on {node.name}",
            hint="run `dataspace psi --reveal align` with this node first",
        )
    if row.peer != caller:
        raise UsageError(f"align job {align} was run with another member, not {caller}")
    if result.get("dataset") != dataset.name:
        raise UsageError(f"align job {align} aligned another dataset than {dataset.name}")


def load_local(
    node: Node, dataset: Any, features: list[str], align: str, select: Any, label: str | None = None
) -> Local:
    """This node's aligned rows: the dataset's ``features`` at the positions kept by PSI
    align job ``align`` (in its common order), restricted to ``select`` when given."""
    path = node.data_dir / mp_party.ALIGN_DIR / f"{check_job_id(align)}.parquet"
    if not path.exists():
        raise NotFound(
            f"no aligned rows of job {align} on {node.name}",
            hint="run `dataspace psi --reveal align` with this node first",
        )
    kept = pq.read_table(path).sort_by("order").column("position").to_numpy()
    if select is not None:
        kept = kept[_selection(select, kept.size)]
    names = features + ([label] if label else [])
    table = pq.read_table(dataset.path, columns=names).take(kept)
    for name in names:
        if table.column(name).null_count:
            raise UsageError(f"column {name} has missing values in the aligned rows")
    block = numeric_block(table, features)
    labels = numeric_column(table, label) if label else None
    return Local(block, labels)


def _selection(select: Any, size: int) -> np.ndarray:
    """The initiator's choice of aligned rows, checked: distinct positions within the align
    job's rows. A row named twice would count twice towards the least rows a job needs
    (100 copies of one row are that row), a negative one would wrap around."""
    if not isinstance(select, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in select
    ):
        raise UsageError("the row selection must be a list of row positions (integers)")
    try:
        idx = np.asarray(select, dtype=np.int64)
    except OverflowError:
        raise UsageError("the row selection names a position out of range") from None
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= size)):
        raise UsageError(f"the row selection must name positions 0 to {size - 1} of the "
                         "aligned rows")
    if np.unique(idx).size != idx.size:
        raise UsageError("the row selection names a row more than once")
    return idx


def run_schedule(s: Session) -> list[dict[str, Any]]:
    run = vlr_run if s.spec.family == "vlr" else sgb_run
    if s.spec.family == train_linreg.FAMILY:
        run = train_linreg.run
    out = []
    for index, coalition in enumerate(coalitions(s.spec)):
        if s.mailbox.me in coalition or s.mailbox.me == s.spec.dealer:
            out.append(run(s.mailbox, s.spec, index, coalition, s.local))
        else:
            out.append({})
    s.mailbox.flush()
    return out


def _drive(node: Node, s: Session) -> None:
    t0 = time.process_time()
    try:
        s.outputs = run_schedule(s)
    except DataspaceError as exc:
        _failed(node, s, exc)
    except Exception as exc:  # a bug, or a broken message: the job must not stay RUNNING
        _failed(
            node,
            s,
            MultipartyFailed(f"training failed on {node.name} ({type(exc).__name__}: {exc})"),
        )
    finally:
        s.mailbox.close()
        s.ps.cpu += time.process_time() - t0
        s.ps.bytes_out = s.mailbox.bytes_out


def _failed(node: Node, s: Session, exc: DataspaceError) -> None:
    s.error = exc
    s.mailbox.fail(exc)
    if s.role == ms.PARTICIPANT:
        mp_party.end_if_running(node, s.ps, exc, step=1, name="train")
    else:
        ms.fail(node, s.job_id, exc, actor=f"peer:{s.initiator}")


def _finish(node: Node, s: Session) -> bytes:
    assert s.thread is not None
    s.thread.join(FINISH_WAIT)
    if s.thread.is_alive():
        raise MultipartyFailed(f"training on {node.name} did not end in time")
    if s.error is not None:
        raise s.error
    first = s.outputs[0] if s.outputs else {}
    part = None
    if "model" in first:
        if s.spec.family == train_linreg.FAMILY:
            part = train_linreg.part(first["model"])
        else:
            part = vlr_part(first["model"]) if s.spec.family == "vlr" else dict(first["model"])
    digest = model_store.stage(
        node,
        model_id=s.job_id,
        family=s.spec.family,
        role=s.role,
        initiator=s.initiator,
        part=part,
        info={"params": s.spec.to_dict()},
    )
    ev = ms.event(node.name, 1, "finish", part_sha256=digest, bytes_out=s.mailbox.bytes_out)
    ms.add_events(node, s.job_id, [ev], actor=f"peer:{s.initiator}")
    return _reply({"job_id": s.job_id, "step": 1, "event": ev, "part_sha256": digest})


def _check_pricing(node: Node, ps: mp_party._Session, spec: Spec) -> None:
    """An offer priced by contribution share takes part only in a job with a revenue pool, in
    its currency, and with contribution measured."""
    terms = ps.terms
    if terms is None or not terms.contribution_share:
        return
    if spec.revenue_pool is None or not spec.contribution:
        raise UsageError(f"{node.name}'s offer is priced by its share of a revenue pool: the "
                         "job must name one and measure contribution",
                         hint="train with --revenue-pool 'AMOUNT CURRENCY'")
    pool = revenue.parse_pool(spec.revenue_pool)
    if pool.currency != terms.currency:
        raise UsageError(f"the revenue pool is in {pool.currency}; {node.name}'s prices are in "
                         f"{terms.currency}")
    if pool.amount < terms.min_revenue_pool:
        raise UsageError(f"{node.name} takes part in revenue pools of at least "
                         f"{terms.min_revenue_pool} {terms.currency}, not {spec.revenue_pool}")


def _revenue_share(node: Node, s: Session, info: dict[str, Any]) -> dict[str, Any] | None:
    """This provider's part of the job's revenue pool, computed here from the contribution
    values the initiator committed (one per provider of the job, finite)."""
    terms = s.ps.terms
    if s.role != ms.PARTICIPANT or terms is None or not terms.contribution_share:
        return None
    assert s.spec.revenue_pool is not None  # _check_pricing
    values = (info.get("contribution") or {}).get("values")
    providers = set(s.spec.parties[1:])
    if not isinstance(values, dict) or set(values) != providers:
        raise UsageError("the commit's contribution values do not name this job's providers")
    from dataspace.services.training import revenue_shares

    shares = revenue_shares(s.spec.revenue_pool, values)
    return {"pool": shares["pool"], "share": shares["shares"][node.name],
            "values": {str(k): float(v) for k, v in values.items()}}


def _commit(node: Node, s: Session, header: dict[str, Any]) -> bytes:
    info = dict(header.get("model") or {})
    earned = _revenue_share(node, s, info)
    s.ps.bytes_out = s.mailbox.bytes_out
    usage = mp_party._usage(s.ps, "completed", s.spec.rows) if s.role == ms.PARTICIPANT else None
    if usage is not None and earned is not None:
        usage = dataclasses.replace(usage, revenue_share=Decimal(earned["share"]))
    ended_here_first = mp_party.complete(
        node,
        s.ps,
        {"model_id": s.job_id, "role": s.role},
        usage,
        {"model_id": s.job_id, "bytes_out": s.mailbox.bytes_out,
         **({"revenue": earned} if earned is not None else {})},
        # the part becomes final with the job's metering, or not at all
        also=lambda db: model_store.finalize_in(db, s.job_id, info, actor=f"peer:{s.initiator}"),
    )
    if not ended_here_first:  # aborted or timed out meanwhile: no model, no "done"
        raise MultipartyFailed(f"job {s.job_id} had already ended on {node.name}; nothing was "
                               "committed", node=node.name)
    with _REGISTRY:
        _SESSIONS.pop(s.job_id, None)
    ev = ms.event(node.name, 2, "commit")
    ms.add_events(node, s.job_id, [ev], actor=f"peer:{s.initiator}")
    return _reply({"job_id": s.job_id, "step": 2, "event": ev})


mp_protocols.register(PROTOCOL, handle)

from dataspace.services import predict as _predict  # noqa: E402,F401  (registers predict)
from dataspace.services import train_fedavg as _fedavg  # noqa: E402,F401  (registers "fedavg")
