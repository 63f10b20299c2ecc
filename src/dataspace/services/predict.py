"""Scoring new aligned rows with a trained vertical model (vlr, vgbdt): ``dataspace predict``.

The initiator (the label party that trained the model) names the model and the PSI ``align``
job(s) over the new rows. Every step is a signed multi-party frame with
``"protocol": "federated-predict"`` (registered with :mod:`.mp_protocols`):

* ``open`` (to each provider) — the provider checks **its own** agreement with the initiator
  now (action ``federated-train``: purpose, its columns as ``fields``, expiry, count), loads
  its part of the model from its own store (final, held by it, its hash equal to the one in
  ``model.trained``) and its aligned rows (``<data dir>/mp/<align job>.parquet``); a missing
  part, a hash mismatch or a denied agreement refuses, and the job is FAILED everywhere
  (``output``: ``aggregate-only`` for vlr, ``pseudonymized`` for vgbdt, as in training);
* ``start`` — vlr: each party computes ``X_p w_p`` on its rows at home, secret-shares it
  between the label party and the first provider, the shares are summed and only the total
  is opened, to the initiator (:func:`dataspace.federated.vlr.predict`, run replicated like
  training). vgbdt: the initiator walks every tree level by level; each provider answers
  left/right for the rows reaching its own splits (:mod:`dataspace.federated.sgb_route`);
* ``push`` / ``pull`` / ``status`` — the protocol's messages (:class:`.train_net.Mailbox`);
* ``finish`` — the provider's part is done: ``model.predicted`` enters its ledger and the use
  is metered under the agreement.

Only the initiator holds the scores (a parquet file: aligned order, its own row positions,
score and probability for the classifiers vlr and vgbdt; prediction, in the target's units,
for the regression vlinreg). The dealer takes no part: prediction needs no secure
multiplication.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataspace.errors import DataspaceError, NotFound, UsageError
from dataspace.federated import sgb, sgb_route, vlr
from dataspace.federated.errors import MalformedMessage
from dataspace.federated.plan import Scaler
from dataspace.federated.sgb_tree import SgbParams, Tree
from dataspace.services import jobs, mp_initiator, mp_party, mp_protocols
from dataspace.services import models as model_store
from dataspace.services import mp_store as ms
from dataspace.services.job_wire import check_job_id
from dataspace.services.mp_wire import (
    STEP_PATH,
    MultipartyFailed,
    call_peer,
    pack_frame,
    unpack_frame,
)
from dataspace.services.node import Node, default_actor
from dataspace.services.train_columns import numeric_block
from dataspace.services.train_net import Mailbox, NodeNetwork, mailbox_step, using
from dataspace.services.train_roles import Spec, sgb_params
from dataspace.store.models_compute import JobRow

PROTOCOL = "federated-predict"
ACTION = ms.PREDICT  # the job rows' action; agreements are checked for TRAIN_ACTION
TRAIN_ACTION = ms.TRAIN
OUTPUT = "aggregate-only"
# what each family releases about a provider's rows (its policy's `output`, as in training)
OUTPUTS = {"vlr": OUTPUT, "vlinreg": OUTPUT, "vgbdt": "pseudonymized"}
PREDICTIONS_DIR = "predictions"
IDLE_SECONDS = 60.0  # a provider ends a job whose initiator sent nothing (not even a keep-alive)
LEAKAGE = (
    "vgbdt: the label party learns each new row's side of every passive split it reaches; "
    "each split's owner learns which rows reach that split"
)
FINISH_WAIT = 300.0


class _PredictMailbox(Mailbox):
    """The training mailbox, its frames tagged with this protocol."""

    def _call(
        self, peer: str, header: dict[str, object], blobs: list[bytes]
    ) -> tuple[dict[str, object], list[bytes]]:
        return super()._call(peer, {**header, "protocol": PROTOCOL}, blobs)


def _models(spec: Spec, me: str, own: vlr.PartyModel) -> dict[str, vlr.PartyModel]:
    """Every party's model in the job's party order: this node's real, the others' zeros
    of the public shapes (their messages come by wire)."""
    out = {}
    for name in spec.parties:
        if name == me:
            out[name] = own
            continue
        width = spec.widths[name]
        out[name] = vlr.PartyModel(
            name,
            (),
            np.zeros(width),
            Scaler(np.zeros(width), np.ones(width), 1e9),
            0.0 if name == spec.label else None,
        )
    return out


def _score(mb: Mailbox, spec: Spec, own: vlr.PartyModel, block: np.ndarray) -> vlr.Prediction:
    me, rows = mb.me, block.shape[0]
    features = {
        name: block if name == me else np.zeros((rows, spec.widths[name])) for name in spec.parties
    }
    with using(NodeNetwork(mb, "predict", replicate=True)):
        out = vlr.predict(_models(spec, me, own), features, label_party=spec.label)
    mb.flush()
    return out


def part_model(part: dict[str, Any]) -> vlr.PartyModel:
    """A stored vlr part (JSON numbers may come back as strings) as a model."""
    intercept = part.get("intercept")
    return vlr.PartyModel(
        str(part["party"]),
        tuple(str(c) for c in part["columns"]),
        np.asarray(part["weights"], dtype=np.float64),
        Scaler(
            np.asarray(part["mean"], dtype=np.float64),
            np.asarray(part["scale"], dtype=np.float64),
            float(part["clip"]),
        ),
        None if intercept is None else float(intercept),
    )


def _own_part(
    node: Node, model_id: str, holder_of: str | None = None
) -> tuple[dict[str, Any], Spec, dict[str, Any]]:
    """This node's final part of ``model_id``, checked against its ``model.trained`` hash."""
    try:
        view = model_store.get_model(node, model_id)
        if holder_of is not None and view["initiator"] != holder_of:
            raise NotFound(f"model {model_id} was not trained by {holder_of}")
        if view["family"] not in OUTPUTS:
            raise UsageError(
                f"model {model_id} is {view['family']}: prediction runs for vertical models "
                f"({', '.join(OUTPUTS)}) only"
            )
        recorded = ((view.get("parts") or {}).get(node.name) or {}).get("sha256")
        part = model_store.load_part(node, model_id)
        if not recorded or recorded != view["part_sha256"]:
            raise NotFound(f"the part of model {model_id} does not match model.trained")
    except (NotFound, OSError) as exc:
        if holder_of is None and isinstance(exc, NotFound):
            raise
        message = exc.message if isinstance(exc, DataspaceError) else f"unreadable ({exc})"
        raise MultipartyFailed(
            f"{node.name} cannot use its part of model {model_id}: {message}",
            node=node.name,
            cause="part-missing",
        ) from None
    spec = Spec.from_dict(model_id, dict(view["params"]))
    try:
        if spec.family != "vgbdt":
            own = part_model(part)
            ok = own.party == node.name and list(own.columns) == spec.columns.get(node.name)
        else:
            book = split_book(part)
            width = len(spec.columns.get(node.name) or [])
            ok = str(part.get("party")) == node.name and all(c < width for c, _ in book.records)
            if node.name == spec.label:
                trees(part)
    except (KeyError, TypeError, ValueError) as exc:
        raise MultipartyFailed(
            f"the part of model {model_id} here is unreadable ({type(exc).__name__}: {exc})",
            node=node.name,
            cause="part-missing",
        ) from None
    if not ok:
        raise MultipartyFailed(f"the part of model {model_id} here is not {node.name}'s")
    return view, spec, part


def split_book(part: dict[str, Any]) -> sgb.SplitBook:
    """A stored vgbdt part's split book: record id -> (column, threshold), its owner's only."""
    book = sgb.SplitBook()
    book.records = [(int(c), float(t)) for c, t in part["book"]]
    return book


def trees(part: dict[str, Any]) -> list[Tree]:
    """The trees of the label party's stored vgbdt part."""
    out = []
    for t in part["trees"]:
        tree = Tree(
            owner=[str(o) for o in t["owner"]],
            split=[int(x) for x in t["split"]],
            left=[int(x) for x in t["left"]],
            right=[int(x) for x in t["right"]],
            value=[float(x) for x in t["value"]],
        )
        if not len(tree.owner) == len(tree.split) == len(tree.left) == len(tree.value):
            raise ValueError("a tree's node arrays differ in length")
        out.append(tree)
    return out


def sgb_model(parts: dict[str, dict[str, Any]], label: str) -> sgb.SgbModel:
    """The in-process model from every party's stored part (what no node has alone: a
    reference, e.g. for a test that pools the parts)."""
    return sgb.SgbModel(
        label_party=label,
        parties=tuple(parts),
        trees=trees(parts[label]),
        base=float(parts[label]["base"]),
        books={name: split_book(part) for name, part in parts.items()},
        params=SgbParams(),
        frac_bits=0,
    )


class _Owners:
    """The initiator's link to the other split owners, over the job's mailbox."""

    def __init__(self, net: NodeNetwork) -> None:
        self.net = net

    def ask(self, owner: str, request: np.ndarray) -> None:
        self.net.send(self.net.me, owner, sgb_route.REQUEST, request)

    def bits(self, owner: str) -> np.ndarray:
        return np.asarray(self.net.recv(self.net.me, owner, sgb_route.ANSWER))


def _sgb_label(
    mb: Mailbox, spec: Spec, part: dict[str, Any], block: np.ndarray
) -> tuple[np.ndarray, int]:
    """The initiator's side of vgbdt prediction: walk the trees, ask each split's owner."""
    net = NodeNetwork(mb, "predict", replicate=False)
    book = split_book(part)
    scores, asked = sgb_route.predict_levels(
        trees(part),
        float(part["base"]),
        int(block.shape[0]),
        spec.label,
        lambda record, rows: book.left(record, block[rows]),
        _Owners(net),
    )
    for name in spec.parties[1:]:
        net.send(mb.me, name, sgb_route.REQUEST, np.array([sgb_route.DONE], dtype=np.int64))
    mb.flush()
    return scores, asked


def _sgb_owner(mb: Mailbox, spec: Spec, part: dict[str, Any], block: np.ndarray) -> None:
    """A provider's side of vgbdt prediction: answer left/right for its own splits."""
    net = NodeNetwork(mb, "predict", replicate=False)
    book = split_book(part)
    # The honest routing asks one request per depth level, each of this owner's splits at
    # most once, each with distinct rows, and a row at most once per tree in a request (a row
    # sits at one node of each tree per level). This bounds what a label party that deviates
    # learns to that many thresholds per row and level -- not every split for every row.
    params = sgb_params(spec)
    depth, per_request = params.max_depth, params.trees
    asked: set[int] = set()
    answered = 0
    while True:
        request = np.asarray(net.recv(mb.me, spec.label, sgb_route.REQUEST))
        if request.shape == (1,) and int(request[0]) == sgb_route.DONE:
            break
        if answered == depth:
            raise MalformedMessage(f"more than {depth} routing requests for trees of depth "
                                   f"{depth}")
        items = sgb_route.decode_request(request, int(block.shape[0]), len(book.records))
        records = [record for record, _ in items]
        named = np.concatenate([rows for _, rows in items]) if items else np.zeros(0, np.int64)
        if len(set(records)) != len(records) or asked & set(records) or any(
            np.unique(rows).size != rows.size for _, rows in items
        ) or (named.size and int(np.bincount(named).max()) > per_request):
            raise MalformedMessage("a prediction asks each split once, with distinct rows, "
                                   "and a row at most once per tree")
        asked.update(records)
        net.send(mb.me, spec.label, sgb_route.ANSWER, sgb_route.answer(book, block, request))
        answered += 1
    mb.flush()


# --- a provider's side ---------------------------------------------------------------------


@dataclass
class _Party:
    job_id: str
    model_id: str
    initiator: str
    spec: Spec
    part: dict[str, Any]
    block: np.ndarray
    mailbox: Mailbox
    ps: mp_party._Session
    thread: threading.Thread | None = None
    error: DataspaceError | None = None
    done: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    cache: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_SESSIONS: dict[str, _Party] = {}
_REGISTRY = threading.Lock()
mp_protocols.register_sessions(_SESSIONS, _REGISTRY)


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
            f"{node.name} holds no running prediction job {job_id}", cause="session-lost"
        )
    shared = mailbox_step(s, name, caller, header, blobs, what="prediction",
                          senders=s.spec.parties)  # fmt: skip
    if shared is not None:
        return pack_frame(*shared)

    def answer() -> bytes:
        if name == "start":
            assert s.thread is not None
            s.thread.start()
            return pack_frame({"job_id": job_id, "state": "running"})
        if name == "finish":
            return _finish(node, s)
        raise UsageError(f"unknown prediction step {name!r}")

    return mp_party.answer_keeping_the_last(
        s, job_id, name, hashlib.sha256(body).hexdigest(), caller, answer, _SESSIONS, _REGISTRY
    )


def _open(node: Node, caller: str, job_id: str, header: dict[str, Any], body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    with _REGISTRY:
        existing = _SESSIONS.get(job_id)
    again = mp_party.check_open(node, job_id, caller, digest, existing, "prediction")
    if again is not None:
        return again
    model_id = check_job_id(str(header.get("model_id", "")))
    try:
        asked = float(header.get("idle_timeout") or 60.0)
    except (TypeError, ValueError):
        raise UsageError(f"idle_timeout {header.get('idle_timeout')!r} is not a number of "
                         "seconds") from None
    cap = min(600.0, float(node.limits.mp_max_idle_timeout_seconds))
    idle = max(5.0, min(asked, cap)) if math.isfinite(asked) else cap
    mp_party.claim(
        node,
        job_id,
        caller,
        header,
        action=ACTION,
        request={"mp": {"model_id": model_id, **header}, "idle_timeout": idle},
    )
    ps = mp_party._Session(job_id, caller, TRAIN_ACTION, idle)
    try:
        _, spec, part = _own_part(node, model_id, holder_of=caller)
        if node.name not in spec.parties[1:]:
            raise NotFound(f"{node.name} is not a provider of model {model_id}")
        columns = list(spec.columns[node.name])
        dataset, decision = mp_party._check(node, ps, header, columns, OUTPUTS[spec.family])
        least = mp_party.least_rows(node, decision)
        if int(header.get("rows", -1)) < least:
            raise UsageError(f"a prediction here scores at least {least} rows (this node's "
                             f"agreement and limits); the job names {header.get('rows')}")
        from dataspace.services.train_party import check_align, load_local

        check_align(node, str(header.get("align", "")), caller, dataset)
        local = load_local(
            node, dataset, columns, str(header.get("align", "")), header.get("select")
        )
        assert local.block is not None
        if local.block.shape[0] != int(header.get("rows", -1)):
            raise UsageError("the number of aligned rows here does not match the job's")
        ps.rows_scanned = pq.ParquetFile(dataset.path).metadata.num_rows
    except DataspaceError as exc:
        mp_party._end_error(node, ps, exc, step=0, name="open")
        raise
    except Exception as exc:  # a bug: the admitted job must not stay RUNNING
        err = MultipartyFailed(f"step open failed on {node.name} ({type(exc).__name__})")
        mp_party._end_error(node, ps, err, step=0, name="open")
        raise err from exc
    mailbox = _PredictMailbox(node, job_id, node.name, caller, list(spec.parties))
    s = _Party(job_id, model_id, caller, spec, part, local.block, mailbox, ps)
    mailbox.alive = lambda: _alive(node, s)
    s.thread = threading.Thread(
        target=_drive, args=(node, s), daemon=True, name=f"predict-{job_id[:12]}"
    )
    with _REGISTRY:
        _SESSIONS[job_id] = s
    mp_party.watch_quiet(node, s, _SESSIONS, _REGISTRY, "prediction")
    ev = ms.event(node.name, 0, "open", request_sha256=digest, rows=int(local.block.shape[0]))
    ms.add_events(node, job_id, [ev], actor=f"peer:{caller}")
    answer = pack_frame({"job_id": job_id, "step": 0, "event": ev, "state": "open"})
    s.cache["open"] = (digest, answer)
    return answer


def _alive(node: Node, s: _Party) -> None:
    with node.store.read() as db:
        row = db.get(JobRow, s.job_id)
        state, error = (row.state, row.error) if row is not None else ("UNKNOWN", None)
    if state != jobs.RUNNING:
        raise MultipartyFailed(f"the job ended on {node.name}: {error or state}", cause="aborted")
    if time.monotonic() - s.last_seen > s.ps.idle_timeout:
        raise MultipartyFailed(f"no word from the initiator {s.initiator}", cause="timeout")


def _drive(node: Node, s: _Party) -> None:
    t0 = time.process_time()
    try:
        if s.spec.family == "vgbdt":
            _sgb_owner(s.mailbox, s.spec, s.part, s.block)
        else:
            _score(s.mailbox, s.spec, part_model(s.part), s.block)
        s.done = True
    except Exception as exc:  # a failure or a bug: the job must not stay RUNNING
        err = (
            exc
            if isinstance(exc, DataspaceError)
            else MultipartyFailed(f"prediction failed on {node.name} ({type(exc).__name__}: {exc})")
        )
        s.error = err
        s.mailbox.fail(err)
        mp_party.end_if_running(node, s.ps, err, step=1, name="predict")
    finally:
        s.mailbox.close()
        s.ps.cpu += time.process_time() - t0
        s.ps.bytes_out = s.mailbox.bytes_out


def _finish(node: Node, s: _Party) -> bytes:
    assert s.thread is not None
    s.thread.join(FINISH_WAIT)
    with _REGISTRY:
        _SESSIONS.pop(s.job_id, None)
    if s.thread.is_alive():
        raise MultipartyFailed(f"prediction on {node.name} did not end in time")
    if s.error is not None:
        raise s.error
    rows = int(s.block.shape[0])
    mp_party.complete(
        node,
        s.ps,
        {"model_id": s.model_id, "rows": rows},
        mp_party._usage(s.ps, "completed", rows),
        {"model_id": s.model_id, "rows": rows, "bytes_out": s.mailbox.bytes_out},
        ledger_action="model.predicted",
    )
    ev = ms.event(node.name, 1, "finish", rows=rows, bytes_out=s.mailbox.bytes_out)
    ms.add_events(node, s.job_id, [ev], actor=f"peer:{s.initiator}")
    return pack_frame({"job_id": s.job_id, "step": 1, "event": ev})


# --- the initiator -------------------------------------------------------------------------


@dataclass
class _Provider:
    name: str
    agreement_id: str
    align: str
    select: list[int]


def _call(node: Node, peer: str, job_id: str, name: str, timeout: float, **fields: Any) -> Any:
    header = {"protocol": PROTOCOL, "job_id": job_id, "name": name, **fields}
    out, _ = unpack_frame(call_peer(node, peer, STEP_PATH, pack_frame(header), timeout=timeout))
    event = out.get("event")
    if isinstance(event, dict):
        ms.add_events(node, job_id, [event], ledger=False)
    return out


def run_predict(
    node: Node,
    *,
    model: str,
    rows: Sequence[str],
    out: str | Path | None = None,
    actor: str | None = None,
    timeout: float = 30.0,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Score the rows of the PSI align job(s) ``rows`` with model ``model``; the scores are
    written here only (``out``, default ``<data dir>/predictions/<job>.parquet``)."""
    from dataspace.services import training

    actor = actor or default_actor()
    view, spec, part = _own_part(node, check_job_id(model))
    if view["role"] != ms.INITIATOR or spec.label != node.name:
        raise UsageError(f"only the label party {spec.label} runs predictions with {model}")
    trained = training.get_job(node, model)
    if trained["state"] != jobs.SUCCEEDED:
        raise UsageError(f"the training job of model {model} ended {trained['state']}: its "
                         "model is not usable", hint="retry the training job")
    agreements = {str(p["peer"]): str(p["agreement_id"]) for p in trained["participants"] or []}
    own_ds, common, per_peer = None, None, {}
    for peer in spec.parties[1:]:
        why = []
        for align in rows:
            try:
                ds, positions = training._aligned(node, align, peer)
            except UsageError as exc:  # another peer's align job, or no align job at all
                why.append(exc.message)
                continue
            per_peer[peer] = (align, positions)
            break
        else:
            raise UsageError(f"no align job for {peer} among {list(rows)}: " + "; ".join(why),
                             hint=f"run `dataspace psi --with {peer} --reveal align` on the "
                             "rows to score, and pass its job id with --rows")
        training._same_dataset(own_ds, ds)
        own_ds = own_ds or ds
        common = positions if common is None else np.intersect1d(common, positions)
    assert common is not None and own_ds is not None
    common = np.sort(common)
    if common.size == 0:
        raise UsageError("the align jobs share no rows")
    providers = []
    for peer in spec.parties[1:]:
        align, positions = per_peer[peer]
        where = {int(p): i for i, p in enumerate(positions)}
        providers.append(_Provider(peer, agreements[peer], align, [where[int(p)] for p in common]))
    new_id = check_job_id(job_id) if job_id else uuid.uuid4().hex
    mp_initiator.claim(
        node,
        new_id,
        action=ACTION,
        params={"model_id": model, "family": spec.family, "rows": list(rows), "dataset": own_ds},
        participants=[{"peer": p.name, "agreement_id": p.agreement_id} for p in providers],
        total=2 * len(providers) + 1,
    )
    try:
        with mp_initiator.KeepAlive(node, new_id, [p.name for p in providers], IDLE_SECONDS):
            result = _execute(node, new_id, model, spec, part, own_ds, common, providers, out,
                              timeout)
    except Exception as exc:
        err = (
            exc
            if isinstance(exc, DataspaceError)
            else MultipartyFailed(f"prediction stopped ({type(exc).__name__}: {exc})")
        )
        _fail_everywhere(node, new_id, providers, err, actor)
        if err is exc:
            raise
        raise err from exc
    ms.finish(
        node,
        new_id,
        state=jobs.SUCCEEDED,
        actor=actor,
        ledger_action="model.predicted",
        result=result,
        ledger_payload={
            "model_id": model,
            "family": spec.family,
            "rows": result["rows"],
            "participants": [[p.name, p.agreement_id] for p in providers],
            "scores_sha256": result["sha256"],
        },
    )
    return get_job(node, new_id)


def _execute(
    node: Node,
    job_id: str,
    model: str,
    spec: Spec,
    part: dict[str, Any],
    dataset_name: str,
    common: np.ndarray,
    providers: list[_Provider],
    out: str | Path | None,
    timeout: float,
) -> dict[str, Any]:
    with node.store.read() as session:
        dataset = jobs._dataset(node, session, dataset_name)
    names = list(spec.columns[node.name])
    missing = [c for c in names if c not in dataset.columns]
    if missing:
        raise UsageError(f"dataset {dataset.name} has no column(s) {missing} of the model")
    table = pq.read_table(dataset.path, columns=names).take(common)
    for c in names:
        if table.column(c).null_count:
            raise UsageError(f"column {c} has missing values in the aligned rows")
    block = numeric_block(table, names)

    def each(name: str, **fields: Any) -> None:
        def one(p: _Provider) -> None:
            extra = fields.get(p.name, {}) if name == "open" else {}
            _call(node, p.name, job_id, name, timeout, **extra)

        mp_initiator.each(providers, one)

    each(
        "open",
        **{
            p.name: {
                "model_id": model,
                "agreement_id": p.agreement_id,
                "kind": TRAIN_ACTION,
                "align": p.align,
                "select": p.select,
                "rows": int(common.size),
                "idle_timeout": IDLE_SECONDS,
            }
            for p in providers
        },
    )
    each("start")
    mailbox = _PredictMailbox(
        node, job_id, node.name, node.name, list(spec.parties), timeout=timeout
    )
    t0 = time.perf_counter()
    asked = None
    try:
        if spec.family == "vgbdt":
            scores, asked = _sgb_label(mailbox, spec, part, block)
        else:
            scores = _score(mailbox, spec, part_model(part), block).scores
    finally:
        mailbox.close()
    seconds = time.perf_counter() - t0
    ms.add_events(
        node, job_id, [ms.event(node.name, 1, "predict", seconds=round(seconds, 3))], ledger=False
    )
    each("finish")
    path = Path(out) if out else node.data_dir / PREDICTIONS_DIR / f"{job_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    scores = np.asarray(scores, dtype=np.float64)
    columns = {
        "order": np.arange(common.size, dtype=np.int64),
        "position": common.astype(np.int64),
        "score": scores,
        "probability": 0.5 * (1.0 + np.tanh(0.5 * scores)),
    }
    if spec.family == "vlinreg":  # regression: the score in the target's units, at home
        from dataspace.services.train_linreg import target_of

        del columns["probability"]
        columns["prediction"] = target_of(model_store.load_part(node, model)).inverse(scores)
    pq.write_table(pa.table(columns), path)
    extra = {} if asked is None else {"split_nodes_asked": asked, "leakage": LEAKAGE}
    return {
        "model_id": model,
        "family": spec.family,
        "rows": int(common.size),
        "scores_file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "seconds": round(seconds, 3),
        "bytes_exchanged_by_initiator": mailbox.bytes_out + mailbox.bytes_in,
        **extra,
    }


def _fail_everywhere(
    node: Node, job_id: str, providers: list[_Provider], exc: DataspaceError, actor: str
) -> None:
    """FAILED here and ``abort`` to every provider (a prediction is not retried: no pending
    aborts are kept)."""
    mp_initiator.name_the_job(exc, job_id, instead="`dataspace predict` again")
    details = exc.details if isinstance(exc.details, dict) else {}
    ms.fail(node, job_id, exc, actor=actor, by=details.get("node"))
    mp_initiator.abort_peers(node, job_id, [p.name for p in providers], exc.message)


def get_job(node: Node, job_id: str) -> dict[str, Any]:
    with node.store.read() as session:
        row = session.get(JobRow, job_id)
        if row is None or row.action != ACTION:
            raise NotFound(f"no prediction job {job_id!r}")
        return ms.view(row)


mp_protocols.register(PROTOCOL, handle)
