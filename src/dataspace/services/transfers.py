"""DSP 2025-1 transfer processes between two nodes: both sides, as service functions.

The only way rows leave a node (docs/transfers.md). The consumer asks with
:func:`request_transfer` (a ``TransferRequestMessage`` naming a FINALIZED agreement and an
output mode in ``format``); the provider answers 201, then — after the answer — evaluates the
agreement's policy with ``action=transfer`` and ``output=`` the mode, and either terminates
(``transfer.denied`` + a zero-price usage record) or writes a Parquet extract of the allowed
columns (identifier and sensitive columns pseudonymized per agreement when asked), moves to
STARTED and sends a ``TransferStartMessage`` whose ``dataAddress`` is its HTTP pull endpoint
with a one-time token. The consumer pulls with a signed request, checks sha256 and rows, writes
the file under its ``received/`` folder, moves to COMPLETED and sends a
``TransferCompletionMessage``. Every step is a ledger entry on the node that takes it.

The routers (``node/routers/dsp_transfers.py``, ``peer_transfers.py``, ``transfers.py``) call
one function per endpoint; follow-up messages go in :class:`Reply` ``after`` tasks.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.catalog.classify import is_identifier, is_sensitive
from dataspace.contracts import IllegalTransition, ProtocolError, build, parse
from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.messages import (
    DataAddress,
    EndpointProperty,
    TransferCompletionMessage,
    TransferProcess,
    TransferRequestMessage,
    TransferStartMessage,
    TransferTerminationMessage,
    policy_from_wire,
)
from dataspace.contracts.roles import Role
from dataspace.errors import (
    Conflict,
    DataspaceError,
    Forbidden,
    NotFound,
    UsageError,
    VerificationError,
)
from dataspace.identity.membership import Member
from dataspace.ledger import log
from dataspace.metering import PriceTerms, Usage, record_usage
from dataspace.policy import Decision, Request, evaluate
from dataspace.services import pseudonymize as ps
from dataspace.services.catalog import DSP_PATH, Transport, deliver
from dataspace.services.negotiation import PEER_ACTOR, Reply, callback_address, lookup_member
from dataspace.services.node import Node, default_actor
from dataspace.store.models import Dataset
from dataspace.store.models_contracts import (
    ContractNegotiationRow,
    OfferRow,
    TransferExtractRow,
    TransferProcessRow,
)
from dataspace.store.models_metering import UsageRecord

logger = logging.getLogger("dataspace.transfers")

MODES = ("raw", "pseudonymized")
FORMAT_PREFIX = "application/vnd.apache.parquet+http-pull;output="
HTTP_ENDPOINT = "https://w3id.org/idsa/v4.1/HTTP"
NS = "https://w3id.org/dataspace/transfer#"
PULL_PATH = "/peer/v1/transfers/{pid}/data"
EXTRACT_DIR, RECEIVED_DIR = "transfers", "received"
FINAL = (tp.TransferState.COMPLETED.value, tp.TransferState.TERMINATED.value)
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"

#: (node, peer) -> a signed httpx client for the pull; tests substitute one
ClientFactory = Callable[[Node, str], httpx.Client]
#: what the routers pass as transport (None: signed HTTP); tests substitute one
TRANSPORT: Transport | None = None
CLIENTS: ClientFactory | None = None


def format_for(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"unknown transfer mode {mode!r}", hint="use raw or pseudonymized")
    return FORMAT_PREFIX + mode


def mode_of(fmt: str) -> str:
    mode = fmt[len(FORMAT_PREFIX):] if fmt.startswith(FORMAT_PREFIX) else ""
    if mode not in MODES:
        raise ProtocolError(f"unsupported transfer format {fmt!r}", path="$.format",
                            hint=f"use {FORMAT_PREFIX}raw or {FORMAT_PREFIX}pseudonymized")
    return mode


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Pids:
    provider_pid: str | None
    consumer_pid: str | None


def _ack(row: TransferProcessRow) -> dict[str, Any]:
    return build(TransferProcess(provider_pid=row.provider_pid or "",
                                 consumer_pid=row.consumer_pid or "", state=row.state))


def _refused(node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError,
             pids: _Pids | None) -> Reply:
    status = 404 if isinstance(exc, NotFound) else 400
    with node.store.write() as session:
        log.append(session, actor=PEER_ACTOR.format(peer), action="transfer.refused",
                   payload={"peer": peer, "message": what, "pid": pid, "status": status,
                            "code": exc.code, "reason": exc.message,
                            "path": exc.details.get("path")})
    return Reply(status, tp.error_body(pids, exc))


def refuse(node: Node, peer: str, what: str, pid: str | None, exc: DataspaceError) -> Reply:
    """Answer (and log) a message refused before a handler saw it, e.g. malformed JSON."""
    return _refused(node, peer, what, pid, exc, None)


def _guard(node: Node, peer: str, what: str, pid: str | None, fn: Callable[[], Reply]) -> Reply:
    try:
        return fn()
    except DataspaceError as exc:
        pids = None
        if pid is not None and not isinstance(exc, NotFound):
            try:
                with node.store.read() as session:
                    row = cs.get_transfer(session, pid, peer=peer)
                    pids = _Pids(row.provider_pid, row.consumer_pid)
            except DataspaceError:
                pids = None
        return _refused(node, peer, what, pid, exc, pids)


def _callback_base(member: Member, callback: str) -> str:
    """The path of ``callback`` under the member's URL; any other host is refused."""
    base = member.url.rstrip("/")
    if callback != base and not callback.startswith(base + "/"):
        raise ProtocolError(f"callbackAddress {callback!r} is not under the member URL {base!r}",
                            path="$.callbackAddress",
                            hint="a node only calls peers back at their listed address")
    return callback[len(base):].rstrip("/")


def _peer_path(node: Node, row: TransferProcessRow, suffix: str) -> str:
    if row.role == Role.PROVIDER.value:
        base = _callback_base(lookup_member(node, row.peer), row.callback_address or "")
        return f"{base}/transfers/{row.consumer_pid}/{suffix}"
    return f"{DSP_PATH}/transfers/{row.provider_pid}/{suffix}"


def _extract(session: Session, pid: str) -> TransferExtractRow:
    row = session.get(TransferExtractRow, pid, with_for_update=True)
    if row is None:
        raise NotFound(f"no transfer {pid!r}", hint="see `dataspace transfer list`")
    return row


def _discard(path: str | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)


# --- consumer: request, wait -------------------------------------------------------------------


def _provider_of(session: Session, agreement_id: str) -> str:
    agreement = cs.get_agreement(session, agreement_id, peer=None)
    neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
    if neg is None or neg.role != Role.CONSUMER.value:
        raise NotFound(f"no agreement {agreement_id!r} in which this node is the consumer",
                       hint="see `dataspace contract list`")
    return neg.peer


def request_transfer(node: Node, *, agreement_id: str, mode: str, actor: str | None = None,
                     transport: Transport | None = None) -> dict[str, Any]:
    """Ask the provider of ``agreement_id`` for its rows (``mode`` raw or pseudonymized).

    Records the process (REQUESTED, ``transfer.requested``) and sends the
    TransferRequestMessage; the data arrives later (see :func:`wait`). A refusal terminates
    the process here with the provider's reason.
    """
    who = actor or default_actor()
    fmt = format_for(mode)
    pid = cs.new_pid()
    with node.store.write() as session:
        provider = _provider_of(session, agreement_id)
        row = cs.create_transfer(session, role=Role.CONSUMER, peer=provider,
                                 agreement_id=agreement_id, format=fmt, consumer_pid=pid)
        session.add(TransferExtractRow(id=row.id, mode=mode))
        log.append(session, actor=who, action="transfer.requested", payload={
            "pid": pid, "role": "consumer", "peer": provider, "agreement_id": agreement_id,
            "mode": mode})
    doc = build(TransferRequestMessage(consumer_pid=pid, agreement_id=agreement_id, format=fmt,
                                       callback_address=callback_address(node)))
    try:
        status, data = deliver(node, provider, "POST", f"{DSP_PATH}/transfers/request", doc,
                               transport)
    except DataspaceError as exc:
        _terminate_local(node, pid, code=exc.code, reasons=[exc.message], actor=who)
        raise
    if status != 201 or not isinstance(data, Mapping):
        reasons = [str(r) for r in data.get("reason", [])] if isinstance(data, Mapping) else []
        code = str(data.get("code")) if isinstance(data, Mapping) else "refused"
        _terminate_local(node, pid, code=code, actor=who,
                         reasons=reasons or [f"the provider answered HTTP {status}"])
        return show_transfer(node, pid)
    ack = parse(data, "TransferProcess")
    with node.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        if ack.consumer_pid != pid:
            raise ProtocolError("the provider's ACK names another consumerPid",
                                path="$.consumerPid")
        if row.provider_pid is None:
            row.provider_pid = ack.provider_pid
    return show_transfer(node, pid)


def wait(node: Node, pid: str, seconds: float, *, poll: float = 0.1) -> dict[str, Any]:
    """Wait until the transfer is COMPLETED or TERMINATED (or ``seconds`` pass)."""
    end = time.monotonic() + seconds
    while True:
        view = show_transfer(node, pid)
        if view["state"] in FINAL or time.monotonic() >= end:
            return view
        time.sleep(poll)


# --- provider: the request and the decision ----------------------------------------------------


def handle_request(node: Node, peer: Member, doc: Any, *,
                   transport: Transport | None = None) -> Reply:
    """POST /dsp/transfers/request: a consumer's TransferRequestMessage → 201 TransferProcess;
    the policy decision and the start (or termination) follow the answer."""
    def run() -> Reply:
        msg = parse(doc, "TransferRequestMessage")
        mode = mode_of(msg.format)
        _callback_base(peer, msg.callback_address)
        with node.store.write() as session:
            existing = session.scalars(select(TransferProcessRow).where(
                TransferProcessRow.peer == peer.name,
                TransferProcessRow.consumer_pid == msg.consumer_pid)).first()
            if existing is not None:
                if (existing.agreement_id, existing.format) != (msg.agreement_id, msg.format):
                    raise IllegalTransition(
                        f"transfer {msg.consumer_pid!r} already exists", path="$.consumerPid")
                return Reply(201, _ack(existing))  # a retried request: the same answer
            agreement = cs.get_agreement(session, msg.agreement_id, peer=peer.name)
            neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
            if neg is None or neg.role != Role.PROVIDER.value or agreement.consumer != peer.name:
                raise NotFound(f"no agreement {msg.agreement_id!r}", path="$.agreementId",
                               hint="check the agreement id")
            row = cs.create_transfer(session, role=Role.PROVIDER, peer=peer.name,
                                     agreement_id=msg.agreement_id, format=msg.format,
                                     consumer_pid=msg.consumer_pid,
                                     callback_address=msg.callback_address)
            session.add(TransferExtractRow(id=row.id, mode=mode))
            log.append(session, actor=PEER_ACTOR.format(peer.name), action="transfer.requested",
                       payload={"pid": row.id, "role": "provider", "peer": peer.name,
                                "consumer_pid": msg.consumer_pid,
                                "agreement_id": msg.agreement_id, "mode": mode})
            ack, pid = _ack(row), row.id
        return Reply(201, ack, [lambda: provide(node, pid, transport=transport)])

    return _guard(node, peer.name, "TransferRequestMessage", None, run)


@dataclass
class _Plan:
    agreement_id: str
    consumer: str
    dataset: str
    path: Path
    columns: list[str]
    personal: frozenset[str]  # identifier or sensitive columns
    terms: PriceTerms | None
    started: datetime


def _load_plan(node: Node, session: Session, row: TransferProcessRow) -> tuple[_Plan, Any, Any]:
    agreement = cs.get_agreement(session, row.agreement_id, peer=row.peer)
    offer = session.get(OfferRow, agreement.offer_id) if agreement.offer_id else None
    key = offer.dataset_id if offer is not None else agreement.target
    ds = session.get(Dataset, key)
    if ds is None:
        raise NotFound(f"the agreed dataset {key!r} is no longer on this node")
    personal = set()
    for column, info in (ds.classification.get("columns", {}) or {}).items():
        category = info.get("category") if isinstance(info, Mapping) else None
        if category and (is_identifier(category) or is_sensitive(category)):
            personal.add(str(column))
    plan = _Plan(
        agreement_id=agreement.id, consumer=row.peer, dataset=ds.name,
        path=node.data_dir / ds.file_name,
        columns=[str(c["name"]) for c in ds.profile.get("columns", [])],
        personal=frozenset(personal),
        terms=PriceTerms.parse(offer.price_terms) if offer and offer.price_terms else None,
        started=_aware(row.created_at))
    completed = session.execute(select(func.count()).select_from(UsageRecord).where(
        UsageRecord.agreement_id == agreement.id, UsageRecord.status == "completed")).scalar_one()
    facts = {"purpose": agreement.purpose, "target": agreement.target,
             "agreed_at": _aware(agreement.signed_at), "jobs_run": int(completed)}
    return plan, policy_from_wire(agreement.policy, "$.agreement"), facts


def decide(node: Node, policy: Any, facts: Mapping[str, Any], *, consumer: str, mode: str,
           columns: list[str], now: datetime) -> tuple[Decision, list[str]]:
    """The policy decision for a transfer and the columns that may leave.

    First with no fields, to learn the allowed/prohibited columns from the granting rule; then
    the authoritative decision over exactly the columns that will be sent.
    """
    try:
        groups: tuple[str, ...] = lookup_member(node, consumer).roles
    except DataspaceError:
        groups = ()
    regions = node.config.get("peer_regions", {})
    region = regions.get(consumer) if isinstance(regions, Mapping) else None

    def ask(fields: frozenset[str]) -> Decision:
        return evaluate(policy, Request(
            action="transfer", assignee=consumer, groups=frozenset(groups),
            purpose=facts["purpose"], target=facts["target"], now=now,
            agreed_at=facts["agreed_at"], jobs_run=facts["jobs_run"], fields=fields,
            output=mode, region=str(region) if region else None))

    first = ask(frozenset())
    if not first.allowed or first.enforcement is None:
        return first, []
    e = first.enforcement
    chosen = [c for c in columns if (e.allowed_fields is None or c in e.allowed_fields)
              and c not in e.prohibited_fields]
    return ask(frozenset(chosen)), chosen


def provide(node: Node, pid: str, *, transport: Transport | None = None,
            now: datetime | None = None) -> None:
    """Provider, after the 201: decide, then start (extract + token) or terminate."""
    at = now or _now()
    actor = f"node:{node.name}"
    with node.store.read() as session:
        row = cs.get_transfer(session, pid, peer=None)
        mode = mode_of(row.format)
        plan, policy, facts = _load_plan(node, session, row)
    decision, columns = decide(node, policy, facts, consumer=plan.consumer, mode=mode,
                               columns=plan.columns, now=at)
    reasons = [r.message for r in decision.failures]
    if decision.allowed and not columns:
        reasons = ["no column of the dataset may leave under this agreement"]
    if reasons or not decision.allowed:
        _deny(node, pid, plan, mode, reasons or ["no permission grants the transfer"], actor,
              transport)
        return
    try:
        path, sha, rows, size = _write_extract(node, pid, plan, columns, mode)
    except Exception as exc:  # the file could not be made: nothing leaves
        logger.exception("transfer %s: extract failed", pid)
        terminate(node, pid, code="extract_failed", reasons=[f"{type(exc).__name__}: {exc}"],
                  actor=actor, transport=transport)
        return
    token = secrets.token_urlsafe(32)
    member_url = lookup_member(node, node.name).url.rstrip("/")
    with node.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        address = DataAddress(
            endpoint_type=HTTP_ENDPOINT,
            endpoint=member_url + PULL_PATH.format(pid=pid),
            endpoint_properties=(
                EndpointProperty("authorization", token),
                EndpointProperty("authType", "bearer"),
                EndpointProperty(NS + "sha256", sha),
                EndpointProperty(NS + "rows", str(rows)),
                EndpointProperty(NS + "bytes", str(size)),
                EndpointProperty(NS + "mode", mode),
            ))
        stored = DataAddress(endpoint_type=HTTP_ENDPOINT, endpoint=address.endpoint)
        row = cs.advance_transfer(session, pid, tp.START, sender=Role.PROVIDER, peer=None,
                                  data_address=stored)
        ext = _extract(session, pid)
        ext.path, ext.sha256, ext.rows, ext.bytes, ext.columns = str(path), sha, rows, size, \
            columns
        ext.token_sha256 = hashlib.sha256(token.encode()).hexdigest()
        ext.token_expires_at = _now() + timedelta(seconds=node.limits.transfer_token_ttl_seconds)
        log.append(session, actor=actor, action="transfer.started", payload={
            "pid": pid, "role": "provider", "peer": row.peer, "agreement_id": row.agreement_id,
            "dataset": plan.dataset, "mode": mode, "sha256": sha, "rows": rows, "bytes": size,
            "columns": columns, "pseudonymized": sorted(set(columns) & plan.personal)
            if mode == "pseudonymized" else [],
            "granted_by": decision.enforcement.granted_by if decision.enforcement else None})
        message = TransferStartMessage(provider_pid=pid, consumer_pid=row.consumer_pid or "",
                                       data_address=address)
        target = _peer_path(node, row, "start")
        peer = row.peer
    _send_or_fail(node, pid, peer, target, build(message), actor, transport)


def _deny(node: Node, pid: str, plan: _Plan, mode: str, reasons: list[str], actor: str,
          transport: Transport | None) -> None:
    with node.store.write() as session:
        usage = record_usage(session, Usage(
            agreement_id=plan.agreement_id, job_id=pid, action="transfer",
            consumer=plan.consumer, provider=node.name, dataset=plan.dataset,
            started_at=plan.started, finished_at=max(_now(), plan.started), status="denied"),
            actor=actor, terms=plan.terms)
        log.append(session, actor=actor, action="transfer.denied", payload={
            "pid": pid, "peer": plan.consumer, "agreement_id": plan.agreement_id,
            "mode": mode, "reasons": reasons, "usage_id": usage.id})
        _extract(session, pid).reason = reasons
    terminate(node, pid, code="policy_denied", reasons=reasons, actor=actor, transport=transport)


def _write_extract(node: Node, pid: str, plan: _Plan, columns: list[str],
                   mode: str) -> tuple[Path, str, int, int]:
    """Stream the allowed columns (pseudonymized where asked) into a Parquet file."""
    folder = node.root / EXTRACT_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.parquet"
    key = None
    targets = sorted(set(columns) & plan.personal) if mode == "pseudonymized" else []
    if targets:
        key = ps.agreement_key(ps.load_or_create_secret(node.root), plan.agreement_id)
    source = pq.ParquetFile(plan.path)
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for batch in source.iter_batches(columns=columns, batch_size=65_536):
            table = ps.pseudonymize_table(batch, targets, key) if key is not None else \
                pa.Table.from_batches([batch])
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:  # no rows: still a valid file with the schema
            schema = source.schema_arrow
            empty = schema.empty_table().select(columns)
            if key is not None:
                empty = ps.pseudonymize_table(empty, targets, key)
            pq.write_table(empty, path)
    finally:
        if writer is not None:
            writer.close()
    return path, _sha256_file(path), rows, path.stat().st_size


# --- messages for an existing process (both sides) ---------------------------------------------


def handle_get(node: Node, peer: Member, pid: str) -> Reply:
    """GET /dsp/transfers/{pid}: the TransferProcess (ACK)."""
    def run() -> Reply:
        with node.store.read() as session:
            return Reply(200, _ack(cs.get_transfer(session, pid, peer=peer.name)))

    return _guard(node, peer.name, "GET TransferProcess", pid, run)


def handle_message(node: Node, peer: Member, pid: str, doc: Any, expected: str, *,
                   transport: Transport | None = None) -> Reply:
    """POST /dsp/transfers/{pid}/start|completion|suspension|termination, provider and
    consumer alike (the callback path is this node's ``/dsp``): validate, move, log."""
    def run() -> Reply:
        msg = parse(doc, expected)
        with node.store.write() as session:
            row = cs.get_transfer(session, pid, peer=peer.name, lock=True)
            own = Role(row.role)
            mine = msg.provider_pid if own is Role.PROVIDER else msg.consumer_pid
            if mine != pid:
                where = "$.providerPid" if own is Role.PROVIDER else "$.consumerPid"
                raise ProtocolError(f"{where[2:]} {mine!r} does not match the process in the "
                                    "URL", path=where)
            address = getattr(msg, "data_address", None)
            if expected == tp.START and own is Role.CONSUMER and address is None:
                raise ProtocolError("a TransferStartMessage for a pull must carry the "
                                    "dataAddress", path="$.dataAddress")
            row = cs.advance_transfer(session, pid, expected, sender=own.peer, peer=peer.name,
                                      consumer_pid=msg.consumer_pid,
                                      provider_pid=msg.provider_pid, data_address=address)
            ext = _extract(session, pid)
            payload: dict[str, Any] = {"pid": pid, "role": own.value, "peer": peer.name,
                                       "agreement_id": row.agreement_id, "by": peer.name}
            after: list[Callable[[], None]] = []
            if expected == tp.START:
                action = "transfer.started"
                if own is Role.CONSUMER:
                    assert address is not None
                    props = {p.name: p.value for p in address.endpoint_properties or ()}
                    ext.sha256 = props.get(NS + "sha256")
                    ext.rows = int(props.get(NS + "rows", "0"))
                    payload.update(sha256=ext.sha256, rows=ext.rows, mode=ext.mode)
                    after.append(lambda: pull(node, pid, transport=transport))
            elif expected == tp.COMPLETION:
                action = "transfer.completed"
                payload.update(sha256=ext.sha256, rows=ext.rows, bytes=ext.bytes)
                if own is Role.PROVIDER:
                    _discard(ext.path)
            elif expected == tp.TERMINATION:
                action = "transfer.terminated"
                payload.update(code=msg.code, reason=list(msg.reason or ()))
                ext.reason = [str(r) for r in msg.reason or ()] or ext.reason
                if own is Role.PROVIDER:
                    _discard(ext.path)
            else:
                action = "transfer.suspended"
                payload.update(code=msg.code, reason=list(msg.reason or ()))
            log.append(session, actor=PEER_ACTOR.format(peer.name), action=action,
                       payload=payload)
        return Reply(200, None, after)

    return _guard(node, peer.name, expected, pid, run)


# --- the data plane ----------------------------------------------------------------------------


def _refuse_pull(node: Node, peer: str, pid: str, exc: DataspaceError) -> DataspaceError:
    with node.store.write() as session:
        log.append(session, actor=PEER_ACTOR.format(peer), action="transfer.pull_refused",
                   payload={"pid": pid, "peer": peer, "code": exc.code, "reason": exc.message})
    return exc


def serve_pull(node: Node, peer: Member, pid: str, authorization: str | None
               ) -> tuple[Path, dict[str, Any]]:
    """Provider: check a pull (the agreement's consumer, the transfer STARTED, the token right,
    unused and unexpired), burn the token, meter the transfer; the extract's path and facts."""
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    try:
        with node.store.write() as session:
            row = cs.get_transfer(session, pid, peer=peer.name, lock=True)
            if row.role != Role.PROVIDER.value:
                raise NotFound(f"no transfer process {pid!r}", hint="check the process id")
            ext = _extract(session, pid)
            if row.state != tp.TransferState.STARTED.value:
                raise Conflict(f"transfer {pid!r} is {row.state}; nothing can be pulled",
                               hint="request a new transfer")
            expected = ext.token_sha256 or ""
            given = hashlib.sha256(token.encode()).hexdigest() if token else ""
            if not token or not secrets.compare_digest(given, expected):
                raise Forbidden("the pull token is missing or wrong",
                                hint="send 'Authorization: Bearer <token from the dataAddress>'")
            if ext.pulled_at is not None:
                raise Forbidden("the pull token has been used", hint="request a new transfer")
            if ext.token_expires_at is None or _now() > _aware(ext.token_expires_at):
                raise Forbidden("the pull token has expired", hint="request a new transfer")
            if not ext.path or not Path(ext.path).exists():
                raise NotFound(f"the extract of transfer {pid!r} is gone")
            ext.pulled_at = _now()
            plan, _, _ = _load_plan(node, session, row)
            usage = record_usage(session, Usage(
                agreement_id=row.agreement_id, job_id=pid, action="transfer",
                consumer=peer.name, provider=node.name, dataset=plan.dataset,
                started_at=plan.started, finished_at=max(_now(), plan.started),
                status="completed", rows_scanned=int(ext.rows or 0),
                result_rows=int(ext.rows or 0), bytes_out=int(ext.bytes or 0)),
                actor=PEER_ACTOR.format(peer.name), terms=plan.terms)
            log.append(session, actor=PEER_ACTOR.format(peer.name), action="transfer.served",
                       payload={"pid": pid, "peer": peer.name, "agreement_id": row.agreement_id,
                                "sha256": ext.sha256, "rows": ext.rows, "bytes": ext.bytes,
                                "usage_id": usage.id,
                                "price": {"amount": usage.price_amount,
                                          "currency": usage.currency}})
            return Path(ext.path), {"sha256": ext.sha256, "rows": ext.rows}
    except DataspaceError as exc:
        raise _refuse_pull(node, peer.name, pid, exc) from None


def _client(node: Node, peer: str) -> httpx.Client:
    if CLIENTS is not None:
        return CLIENTS(node, peer)
    from dataspace.services.peers import peer_client

    return peer_client(node, peer, timeout=node.limits.transfer_pull_timeout_seconds)


def pull(node: Node, pid: str, *, transport: Transport | None = None) -> None:
    """Consumer, after the start: pull, verify, store under ``received/``, complete (or
    terminate with the reason)."""
    actor = f"node:{node.name}"
    try:
        with node.store.read() as session:
            row = cs.get_transfer(session, pid, peer=None)
            ext = session.get(TransferExtractRow, pid)
            address = DataAddress.from_json(row.data_address or {}, "$.dataAddress")
            provider, stated_sha = row.peer, ext.sha256 if ext else None
            stated_rows = ext.rows if ext else None
        props = {p.name: p.value for p in address.endpoint_properties or ()}
        base = lookup_member(node, provider).url.rstrip("/")
        endpoint = address.endpoint or ""
        if not endpoint.startswith(base + "/"):
            raise ProtocolError(f"the data address {endpoint!r} is not on {provider}'s node",
                                path="$.dataAddress.endpoint")
        folder = node.root / RECEIVED_DIR
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        with _client(node, provider) as client, client.stream(
                "GET", endpoint[len(base):],
                headers={"Authorization": f"Bearer {props.get('authorization', '')}"}) as resp:
            if resp.status_code != 200:
                resp.read()
                raise VerificationError(f"{provider} refused the pull (HTTP {resp.status_code})"
                                        f": {resp.text[:300]}")
            with tmp.open("wb") as out:
                for chunk in resp.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
        sha = digest.hexdigest()
        if sha != stated_sha:
            tmp.unlink(missing_ok=True)
            raise VerificationError("the data does not hash to the sha256 the provider stated")
        rows = pq.ParquetFile(tmp).metadata.num_rows
        if rows != stated_rows:
            tmp.unlink(missing_ok=True)
            raise VerificationError(f"the data has {rows} rows, the provider stated {stated_rows}")
        final = folder / f"{sha[:16]}-{uuid.uuid4().hex[:8]}.parquet"
        tmp.replace(final)
    except DataspaceError as exc:
        terminate(node, pid, code=exc.code, reasons=[exc.message], actor=actor,
                  transport=transport)
        return
    except (httpx.HTTPError, OSError) as exc:
        terminate(node, pid, code="pull_failed", reasons=[f"{type(exc).__name__}: {exc}"],
                  actor=actor, transport=transport)
        return
    with node.store.write() as session:
        row = cs.advance_transfer(session, pid, tp.COMPLETION, sender=Role.CONSUMER, peer=None)
        ext_row = _extract(session, pid)
        ext_row.path, ext_row.bytes = str(final), final.stat().st_size
        ext_row.columns = list(pq.ParquetFile(final).schema_arrow.names)
        log.append(session, actor=actor, action="transfer.received", payload={
            "pid": pid, "peer": provider, "agreement_id": row.agreement_id, "sha256": sha,
            "rows": rows, "bytes": ext_row.bytes, "columns": ext_row.columns,
            "mode": ext_row.mode, "file": final.name})
        message = TransferCompletionMessage(provider_pid=row.provider_pid or "",
                                            consumer_pid=pid)
        target = _peer_path(node, row, "completion")
    try:
        status, _ = deliver(node, provider, "POST", target, build(message), transport)
        if status >= 300:
            logger.warning("transfer %s: %s refused the completion (HTTP %s)", pid, provider,
                           status)
    except DataspaceError as exc:
        logger.warning("transfer %s: completion not delivered: %s", pid, exc)


# --- termination -------------------------------------------------------------------------------


def _terminate_local(node: Node, pid: str, *, code: str, reasons: list[str], actor: str
                     ) -> TransferProcessRow | None:
    with node.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        if row.state in FINAL:
            return None
        own = Role(row.role)
        row = cs.advance_transfer(session, pid, tp.TERMINATION, sender=own, peer=None)
        ext = _extract(session, pid)
        ext.reason = ext.reason or reasons
        if own is Role.PROVIDER:
            _discard(ext.path)
        log.append(session, actor=actor, action="transfer.terminated", payload={
            "pid": pid, "role": own.value, "peer": row.peer, "agreement_id": row.agreement_id,
            "by": node.name, "code": code, "reason": reasons})
        session.expunge(row)
        return row


def terminate(node: Node, pid: str, *, code: str, reasons: list[str], actor: str,
              transport: Transport | None = None) -> None:
    """Terminate a transfer here and tell the peer (best effort)."""
    row = _terminate_local(node, pid, code=code, reasons=reasons, actor=actor)
    if row is None or row.provider_pid is None or row.consumer_pid is None:
        return
    message = TransferTerminationMessage(provider_pid=row.provider_pid,
                                         consumer_pid=row.consumer_pid, code=code,
                                         reason=tuple(reasons))
    try:
        status, _ = deliver(node, row.peer, "POST", _peer_path(node, row, "termination"),
                            build(message), transport, attempts=3)
        if status >= 300:
            logger.warning("transfer %s: %s refused the termination (HTTP %s)", pid, row.peer,
                           status)
    except DataspaceError as exc:
        logger.warning("transfer %s: termination not delivered: %s", pid, exc)


def _send_or_fail(node: Node, pid: str, peer: str, path: str, doc: dict[str, Any], actor: str,
                  transport: Transport | None) -> None:
    try:
        status, data = deliver(node, peer, "POST", path, doc, transport)
    except DataspaceError as exc:
        terminate(node, pid, code=exc.code, reasons=[exc.message], actor=actor,
                  transport=transport)
        return
    if status >= 300:
        reasons = [str(r) for r in data.get("reason", [])] if isinstance(data, Mapping) else []
        terminate(node, pid, code="refused_by_peer", actor=actor, transport=transport,
                  reasons=[f"{peer} answered HTTP {status}", *reasons])


# --- reading -----------------------------------------------------------------------------------


def _view(row: TransferProcessRow, ext: TransferExtractRow | None) -> dict[str, Any]:
    return {
        "id": row.id, "role": row.role, "peer": row.peer, "state": row.state,
        "agreement_id": row.agreement_id, "mode": ext.mode if ext else None,
        "provider_pid": row.provider_pid, "consumer_pid": row.consumer_pid,
        "sha256": ext.sha256 if ext else None, "rows": ext.rows if ext else None,
        "bytes": ext.bytes if ext else None, "columns": ext.columns if ext else None,
        "file": ext.path if ext and row.role == Role.CONSUMER.value else None,
        "reason": ext.reason if ext else None,
        "created_at": _aware(row.created_at).isoformat(),
        "updated_at": _aware(row.updated_at).isoformat(),
    }


def list_transfers(node: Node, *, agreement_id: str | None = None, role: str | None = None,
                   state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Transfers on this node, newest first."""
    stmt = select(TransferProcessRow).order_by(TransferProcessRow.created_at.desc()).limit(
        max(1, min(limit, 1000)))
    if agreement_id:
        stmt = stmt.where(TransferProcessRow.agreement_id == agreement_id)
    if role:
        stmt = stmt.where(TransferProcessRow.role == role)
    if state:
        stmt = stmt.where(TransferProcessRow.state == state.upper())
    with node.store.read() as session:
        return [_view(r, session.get(TransferExtractRow, r.id)) for r in session.scalars(stmt)]


def show_transfer(node: Node, pid: str) -> dict[str, Any]:
    """One transfer by this node's pid (or the peer's)."""
    with node.store.read() as session:
        row = session.get(TransferProcessRow, pid) or session.scalars(
            select(TransferProcessRow).where((TransferProcessRow.provider_pid == pid)
                                             | (TransferProcessRow.consumer_pid == pid))).first()
        if row is None:
            raise NotFound(f"no transfer {pid!r}", hint="see `dataspace transfer list`")
        return _view(row, session.get(TransferExtractRow, row.id))


def copy_received(view: Mapping[str, Any], out: Path) -> Path:
    """Copy a completed transfer's file to ``out`` after checking its sha256 again."""
    source = Path(str(view.get("file") or ""))
    if view.get("state") != tp.TransferState.COMPLETED.value or not source.exists():
        raise UsageError(f"transfer {view.get('id')} has no received file",
                         hint=f"it is {view.get('state')}")
    if _sha256_file(source) != view.get("sha256"):
        raise VerificationError("the received file no longer matches its sha256")
    shutil.copyfile(source, out)
    return out


__all__ = [
    "FORMAT_PREFIX",
    "MODES",
    "copy_received",
    "decide",
    "format_for",
    "handle_get",
    "handle_message",
    "handle_request",
    "list_transfers",
    "mode_of",
    "provide",
    "pull",
    "refuse",
    "request_transfer",
    "serve_pull",
    "show_transfer",
    "terminate",
    "wait",
]
