"""Transfer processes, the provider side: take a request, decide under the agreement's
policy, write the Parquet extract and start the process (or deny and terminate), then serve
the one pull the token allows, and meter it once it has gone out in full."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dataspace.catalog.classify import is_identifier, is_personal
from dataspace.catalog.profile import NEARLY_UNIQUE
from dataspace.catalog.sample import open_parquet, quote
from dataspace.contracts import IllegalTransition, build, parse
from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.messages import (
    DataAddress,
    EndpointProperty,
    TransferStartMessage,
    policy_from_wire,
)
from dataspace.contracts.roles import Role
from dataspace.errors import (
    Conflict,
    DataspaceError,
    Forbidden,
    NotFound,
)
from dataspace.identity.membership import Member
from dataspace.jsondoc import utc
from dataspace.ledger import log
from dataspace.metering import PriceTerms, Usage, record_usage
from dataspace.policy import Decision, Request, evaluate
from dataspace.policy.model import Constraint, Operator
from dataspace.policy.values import Duration, as_datetime
from dataspace.services import pseudonymize as ps
from dataspace.services.catalog import Transport
from dataspace.services.dsp_process import check_new_process, log_refusal
from dataspace.services.neg_common import PEER_ACTOR, Reply, lookup_member
from dataspace.services.node import NODE_DIR_MODE, Node
from dataspace.services.transfer_common import (
    EXTRACT_DIR,
    HTTP_ENDPOINT,
    NS,
    PULL_PATH,
    _ack,
    _discard,
    _extract,
    _guard,
    _now,
    _peer_path,
    _send_or_fail,
    _sha256_file,
    _terminate_in,
    _terminate_local,
    logger,
    mode_of,
    tell_terminated,
    terminate,
)
from dataspace.store.models import Dataset
from dataspace.store.models_compute import JobRow
from dataspace.store.models_contracts import (
    ContractNegotiationRow,
    OfferRow,
    TransferExtractRow,
    TransferProcessRow,
)
from dataspace.store.models_metering import UsageRecord

NEARLY_UNIQUE_MIN = 10  # values a column needs before "nearly unique" says anything
#: an ID number or a mobile number inside free text (RE2, as DuckDB reads it)
_EMBEDDED_ID = "[0-9]{17}[0-9Xx]|1[3-9][0-9]{9}"
#: a column most of whose values each go with one identifier's value names what the
#: identifier does: this share of its values, over at least ALIAS_MIN of them
ALIAS_SHARE = 0.9
ALIAS_MIN = 3

# --- provider: the request and the decision ----------------------------------------------------


def handle_request(
    node: Node, peer: Member, doc: Any, *, transport: Transport | None = None
) -> Reply:
    """POST /dsp/transfers/request: a consumer's TransferRequestMessage → 201 TransferProcess;
    the policy decision and the start (or termination) follow the answer."""

    def run() -> Reply:
        msg = parse(doc, "TransferRequestMessage")
        mode = mode_of(msg.format)
        check_new_process(peer, msg.callback_address, msg.consumer_pid)
        with node.store.write() as session:
            # two copies of one request at once: one process. Queue on the agreement's row, as
            # job admission does (agreement, then ledger head: no lock-order cycle with it)
            with contextlib.suppress(NotFound):  # an unknown agreement is refused below
                cs.get_agreement(session, msg.agreement_id, peer=None, lock=True)
            existing = session.scalars(
                select(TransferProcessRow).where(
                    TransferProcessRow.peer == peer.name,
                    TransferProcessRow.consumer_pid == msg.consumer_pid,
                )
            ).first()
            if existing is not None:
                if (existing.agreement_id, existing.format) != (msg.agreement_id, msg.format):
                    raise IllegalTransition(
                        f"transfer {msg.consumer_pid!r} already exists", path="$.consumerPid"
                    )
                return Reply(201, _ack(existing))  # a retried request: the same answer
            agreement = cs.get_agreement(session, msg.agreement_id, peer=peer.name)
            neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
            if neg is None or neg.role != Role.PROVIDER.value or agreement.consumer != peer.name:
                raise NotFound(
                    f"no agreement {msg.agreement_id!r}",
                    path="$.agreementId",
                    hint="check the agreement id",
                )
            row = cs.create_transfer(
                session,
                role=Role.PROVIDER,
                peer=peer.name,
                agreement_id=msg.agreement_id,
                format=msg.format,
                consumer_pid=msg.consumer_pid,
                callback_address=msg.callback_address,
            )
            session.add(TransferExtractRow(id=row.id, mode=mode))
            log.append(
                session,
                actor=PEER_ACTOR.format(peer.name),
                action="transfer.requested",
                payload={
                    "pid": row.id,
                    "role": "provider",
                    "peer": peer.name,
                    "consumer_pid": msg.consumer_pid,
                    "agreement_id": msg.agreement_id,
                    "mode": mode,
                },
            )
            ack, pid = _ack(row), row.id
        return Reply(201, ack, [lambda: provide(node, pid, transport=transport)])

    return _guard(node, peer.name, "TransferRequestMessage", None, run,
                  consumer_pid=doc.get("consumerPid") if isinstance(doc, dict) else None)


@dataclass
class _Plan:
    agreement_id: str
    consumer: str
    dataset: str
    path: Path
    columns: list[str]
    personal: Mapping[str, str | None]  # columns holding personal data → their category
    text_columns: frozenset[str]
    terms: PriceTerms | None


def _agreed(session: Session, row: TransferProcessRow) -> tuple[Any, OfferRow | None, str]:
    """Transfer ``row``'s agreement, the offer it was made under (if still stored) and the
    agreed dataset's id, and the offer's price terms."""
    agreement = cs.get_agreement(session, row.agreement_id, peer=row.peer)
    offer = session.get(OfferRow, agreement.offer_id) if agreement.offer_id else None
    return agreement, offer, offer.dataset_id if offer is not None else agreement.target


def _terms(offer: OfferRow | None) -> PriceTerms | None:
    return PriceTerms.parse(offer.price_terms) if offer and offer.price_terms else None


def _load_plan(node: Node, session: Session, row: TransferProcessRow) -> tuple[_Plan, Any, Any]:
    agreement, offer, key = _agreed(session, row)
    ds = session.get(Dataset, key)
    if ds is None:
        raise NotFound(f"the agreed dataset {key!r} is no longer on this node")
    personal: dict[str, str | None] = {}
    for column, info in (ds.classification.get("columns", {}) or {}).items():
        category = info.get("category") if isinstance(info, Mapping) else None
        if category and is_personal(category):
            personal[str(column)] = category
    for col in ds.profile.get("columns", []):
        # a text column of nearly unique values no detector knows (a record number, MR0012)
        # singles out a row as well as an ID number does
        name, present = str(col["name"]), int(ds.rows or 0) - int(col.get("nulls", 0))
        if (name not in personal and col.get("kind") == "string" and present >= NEARLY_UNIQUE_MIN
                and int(col.get("distinct", 0)) >= NEARLY_UNIQUE * present):
            personal[name] = None
    plan = _Plan(
        agreement_id=agreement.id,
        consumer=row.peer,
        dataset=ds.name,
        path=node.data_dir / ds.file_name,
        columns=[str(c["name"]) for c in ds.profile.get("columns", [])],
        personal=personal,
        text_columns=frozenset(
            str(c["name"]) for c in ds.profile.get("columns", []) if c.get("kind") == "string"
        ),
        terms=_terms(offer),
    )
    completed = session.execute(
        select(func.count())
        .select_from(UsageRecord)
        .where(UsageRecord.agreement_id == agreement.id, UsageRecord.status == "completed")
    ).scalar_one()
    running = session.execute(  # a job admitted under the agreement holds its slot already
        select(func.count()).select_from(JobRow).where(
            JobRow.agreement_id == agreement.id, JobRow.role == "provider",
            JobRow.state == "RUNNING",
        )
    ).scalar_one()
    facts = {
        "purpose": agreement.purpose,
        "target": agreement.target,
        "agreed_at": utc(agreement.signed_at),
        "jobs_run": int(completed) + int(running) + _promised(session, agreement.id, row.id),
    }
    return plan, policy_from_wire(agreement.policy, "$.agreement"), facts


def transfers_taken(session: Session, agreement_id: str) -> int:
    """The agreement's transfers that count against its ``count``: billed, or granted and
    still going (:func:`_promised`). Jobs add these to their own (``job_policy``)."""
    billed_n = session.execute(
        select(func.count()).select_from(UsageRecord).where(
            UsageRecord.agreement_id == agreement_id, UsageRecord.action == "transfer",
            UsageRecord.status == "completed",
        )
    ).scalar_one()
    return int(billed_n) + _promised(session, agreement_id, exclude="")


def _promised(session: Session, agreement_id: str, exclude: str) -> int:
    """Transfers of this agreement not billed yet that may still go out, or are going out:
    unpulled grants whose token (or reservation) still runs — suspended ones too, since the
    consumer may restart them — and pulls whose delivery is not settled, in any state (a
    consumer that terminates mid-stream keeps receiving). They count against its ``count``
    like completed ones, or a consumer could ask for many transfers before pulling any (or end
    one mid-stream and ask again) and have each one granted."""
    open_states = (tp.TransferState.REQUESTED.value, tp.TransferState.STARTED.value,
                   tp.TransferState.SUSPENDED.value)
    rows = session.execute(
        select(TransferProcessRow.state, TransferExtractRow.token_expires_at,
               TransferExtractRow.pulled_at)
        .join(TransferProcessRow, TransferProcessRow.id == TransferExtractRow.id)
        .where(
            TransferProcessRow.agreement_id == agreement_id,
            TransferProcessRow.role == Role.PROVIDER.value,
            TransferProcessRow.id != exclude,
            TransferExtractRow.token_expires_at.is_not(None),
            TransferExtractRow.settled_at.is_(None),
            ~billed_clause(),
        )
    ).all()
    now = _now()
    return sum(
        1 for state, until, pulled in rows
        if pulled is not None
        or (state in open_states and until is not None and utc(until) > now)
    )


def delete_deadline(
    decision: Decision, agreed_at: datetime | None, now: datetime
) -> tuple[datetime | None, str]:
    """When the grant's ``delete`` duties fall due (the earliest), and why the transfer must
    be refused instead, if it must: a deadline already past (the data may not be held any
    longer), or a duty this node cannot schedule (no deadline, or not an upper bound)."""
    deadlines = []
    for duty in decision.obligations:
        if duty.action != "delete":
            continue
        bounds = [c for c in duty.constraints if isinstance(c, Constraint)
                  and c.operator in (Operator.LTEQ, Operator.LT, Operator.EQ)]
        if not bounds or len(bounds) != len(duty.constraints):
            return None, (f"{duty.rule}: a delete duty needs a deadline (dateTime or "
                          "elapsedTime, lteq) this node can pass on to the consumer")
        for c in bounds:
            if c.left == "dateTime":
                deadlines.append(as_datetime(c.right))
            elif agreed_at is not None:
                deadlines.append(Duration.parse(str(c.right)).after(agreed_at))
            else:
                return None, f"{duty.rule}: the agreement has no signing time to count from"
    if not deadlines:
        return None, ""
    due = min(deadlines).astimezone(UTC)  # stored as UTC: SQLite keeps no offset
    if due <= now:
        return due, (f"the agreement's delete duty fell due at {due.isoformat()}: its data "
                     "may no longer be held")
    return due, ""


def decide(
    node: Node,
    policy: Any,
    facts: Mapping[str, Any],
    *,
    consumer: str,
    mode: str,
    columns: list[str],
    now: datetime,
) -> tuple[Decision, list[str]]:
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
        return evaluate(
            policy,
            Request(
                action="transfer",
                assignee=consumer,
                groups=frozenset(groups),
                purpose=facts["purpose"],
                target=facts["target"],
                now=now,
                agreed_at=facts["agreed_at"],
                jobs_run=facts["jobs_run"],
                fields=fields,
                output=mode,
                region=str(region) if region else None,
            ),
        )

    first = ask(frozenset())
    if not first.allowed or first.enforcement is None:
        return first, []
    e = first.enforcement
    chosen = [
        c
        for c in columns
        if (e.allowed_fields is None or c in e.allowed_fields) and c not in e.prohibited_fields
    ]
    return ask(frozenset(chosen)), chosen


def provide(
    node: Node, pid: str, *, transport: Transport | None = None, now: datetime | None = None
) -> None:
    """Provider, after the 201: decide, then start (extract + token) or terminate."""
    at = now or _now()
    actor = f"node:{node.name}"
    # Decided under the agreement's write lock and, if granted, reserved in the same
    # transaction (the extract row's expiry): concurrent requests under one agreement queue
    # here, so a ``count`` limit of k grants exactly k of them.
    try:
        with node.store.write() as session:
            row = cs.get_transfer(session, pid, peer=None)
            if row.state != tp.TransferState.REQUESTED.value:  # the consumer ended it already
                logger.info("transfer %s is %s before it was provided; nothing made", pid,
                            row.state)
                return
            cs.get_agreement(session, row.agreement_id, peer=row.peer, lock=True)
            mode = mode_of(row.format)
            plan, policy, facts = _load_plan(node, session, row)
            decision, columns = decide(
                node, policy, facts, consumer=plan.consumer, mode=mode, columns=plan.columns,
                now=at,
            )
            reasons = [r.message for r in decision.failures]
            if decision.allowed and not columns:
                reasons = ["no column of the dataset may leave under this agreement"]
            delete_by, why = delete_deadline(decision, facts["agreed_at"], at)
            if decision.allowed and why:
                reasons = [why]
            if decision.allowed and not reasons:
                ext = _extract(session, pid)
                ext.token_expires_at = _now() + timedelta(
                    seconds=node.limits.transfer_token_ttl_seconds
                )
                ext.delete_by = delete_by
    except DataspaceError as exc:  # its dataset or agreement is gone: end it and say why
        logger.info("transfer %s cannot be provided: %s", pid, exc)
        terminate(node, pid, code="unavailable", reasons=[str(exc)], actor=actor,
                  transport=transport)
        return
    if reasons or not decision.allowed:
        _deny(
            node,
            pid,
            plan,
            mode,
            reasons or ["no permission grants the transfer"],
            actor,
            transport,
        )
        return
    try:
        targets = _pseudonymized(node, plan, columns, mode)
        path, sha, rows, size = _write_extract(node, pid, plan, columns, targets)
    except Exception as exc:  # the file could not be made: nothing leaves
        logger.exception("transfer %s: extract failed", pid)
        terminate(
            node,
            pid,
            code="extract_failed",
            reasons=[f"{type(exc).__name__}: {exc}"],
            actor=actor,
            transport=transport,
        )
        return
    try:
        started = _start(node, pid, plan, columns, mode, decision, (path, sha, rows, size),
                         targets, actor)
    except IllegalTransition:  # ended while the extract was written: nothing refers to it
        _discard(str(path))
        logger.info("transfer %s ended while its extract was written; extract deleted", pid)
        return
    except _HoldLapsed as lapsed:
        _discard(str(path))
        _deny(node, pid, plan, mode, lapsed.reasons, actor, transport)
        return
    except BaseException:
        _discard(str(path))
        raise
    _send_or_fail(node, pid, *started, actor, transport)


def _start(
    node: Node,
    pid: str,
    plan: _Plan,
    columns: list[str],
    mode: str,
    decision: Decision,
    extract: tuple[Path, str, int, int],
    targets: Mapping[str, str | None],
    actor: str,
) -> tuple[str, str, dict[str, Any]]:
    """Record the extract and its one-time token, move to STARTED and log it, in one
    transaction; the peer, path and start message to send."""
    path, sha, rows, size = extract
    token = secrets.token_urlsafe(32)
    member_url = lookup_member(node, node.name).url.rstrip("/")
    with node.store.write() as session:
        held = _extract(session, pid).token_expires_at
        if held is not None and utc(held) <= _now():
            # The grant's hold on its slot lapsed while the extract was written (a long
            # pseudonymisation): other requests may have been granted in its place, so the
            # agreement decides again, queued on its row as the first decision was.
            first = cs.get_transfer(session, pid, peer=None)
            cs.get_agreement(session, first.agreement_id, peer=first.peer, lock=True)
            _, policy, facts = _load_plan(node, session, first)
            again, _ = decide(node, policy, facts, consumer=plan.consumer, mode=mode,
                              columns=plan.columns, now=_now())
            if not again.allowed:
                raise _HoldLapsed([r.message for r in again.failures]
                                  or ["no permission grants the transfer any longer"])
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        delete_by = _extract(session, pid).delete_by
        delete_by = utc(delete_by) if delete_by is not None else None
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
                *(() if delete_by is None
                  else (EndpointProperty(NS + "deleteBy", delete_by.isoformat()),)),
            ),
        )
        stored = DataAddress(endpoint_type=HTTP_ENDPOINT, endpoint=address.endpoint)
        row = cs.advance_transfer(
            session, pid, tp.START, sender=Role.PROVIDER, peer=None, data_address=stored
        )
        ext = _extract(session, pid)
        ext.path, ext.sha256, ext.rows, ext.bytes, ext.columns = str(path), sha, rows, size, columns
        ext.token_sha256 = hashlib.sha256(token.encode()).hexdigest()
        ext.token_expires_at = _now() + timedelta(seconds=node.limits.transfer_token_ttl_seconds)
        log.append(
            session,
            actor=actor,
            action="transfer.started",
            payload={
                "pid": pid,
                "role": "provider",
                "peer": row.peer,
                "agreement_id": row.agreement_id,
                "dataset": plan.dataset,
                "mode": mode,
                "sha256": sha,
                "rows": rows,
                "bytes": size,
                "columns": columns,
                "pseudonymized": sorted(targets),
                "delete_by": delete_by.isoformat() if delete_by is not None else None,
                "granted_by": decision.enforcement.granted_by if decision.enforcement else None,
            },
        )
        message = TransferStartMessage(
            provider_pid=pid, consumer_pid=row.consumer_pid or "", data_address=address
        )
        return row.peer, _peer_path(node, row, "start"), build(message)


class _HoldLapsed(Exception):
    """The grant's hold lapsed during its extract and the agreement no longer allows it."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def _deny(
    node: Node,
    pid: str,
    plan: _Plan,
    mode: str,
    reasons: list[str],
    actor: str,
    transport: Transport | None,
) -> None:
    # One transaction with the termination: a stop between the two would leave a denied
    # request REQUESTED, and its resumption at the next start would deny (and bill) it twice.
    with node.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        if row.state != tp.TransferState.REQUESTED.value:  # the consumer ended it meanwhile
            return
        usage = record_usage(session, _usage(node, row, plan.dataset, status="denied"),
                             actor=actor, terms=plan.terms)
        log.append(
            session,
            actor=actor,
            action="transfer.denied",
            payload={
                "pid": pid,
                "peer": plan.consumer,
                "agreement_id": plan.agreement_id,
                "mode": mode,
                "reasons": reasons,
                "usage_id": usage.id,
            },
        )
        _extract(session, pid).reason = reasons
        ended = _terminate_in(session, node, pid, code="policy_denied", reasons=reasons,
                              actor=actor)
    if ended is not None:
        tell_terminated(node, ended, code="policy_denied", reasons=reasons, transport=transport)


def _usage(
    node: Node, row: TransferProcessRow, dataset: str, *, status: str, rows: int = 0,
    size: int = 0,
) -> Usage:
    """The usage record of provider transfer ``row`` of ``dataset``, finished now: ``rows``
    scanned and sent, ``size`` bytes out."""
    started = utc(row.created_at)
    return Usage(
        agreement_id=row.agreement_id,
        job_id=row.id,
        action="transfer",
        consumer=row.peer,
        provider=node.name,
        dataset=dataset,
        started_at=started,
        finished_at=max(_now(), started),
        status=status,
        rows_scanned=rows,
        result_rows=rows,
        bytes_out=size,
    )


def _pseudonymized(
    node: Node, plan: _Plan, columns: list[str], mode: str
) -> dict[str, str | None]:
    """The columns a pseudonymized extract replaces by pseudonyms, with their categories:
    every personal column (:class:`_Plan`), every other text column in which an ID or phone
    number appears inside the text ("患者身份证11010519491231002X"), and every other text
    column that stands for what an identifier identifies (:func:`_aliases`)."""
    if mode != "pseudonymized":
        return {}
    targets = {c: plan.personal[c] for c in columns if c in plan.personal}
    text = [c for c in columns if c not in targets and c in plan.text_columns]
    if text:
        with open_parquet(plan.path, node.limits) as (con, rel):  # the import's own limits
            counts = con.execute(
                "SELECT " + ", ".join(
                    f"count(*) FILTER (WHERE regexp_matches({quote(c)}, '{_EMBEDDED_ID}'))"
                    for c in text
                ) + f" FROM {rel}"
            ).fetchone()
            targets |= {c: None for c, n in zip(text, counts or (), strict=False) if n}
    identifiers = [c for c, category in targets.items()
                   if category is None or is_identifier(category)]
    # text only: a number repeated along an entity's rows is as often a measure of it (its
    # registered capital) as a code for it, and replacing measures would void the extract
    candidates = [c for c in columns if c not in targets and c in plan.text_columns]
    if identifiers and candidates:
        with open_parquet(plan.path, node.limits) as (con, rel):
            targets |= dict.fromkeys(_aliases(con, rel, candidates, identifiers))
    return targets


def _aliases(con: Any, rel: str, candidates: list[str], identifiers: list[str]) -> list[str]:
    """The columns that stand for what an identifier column identifies: at least
    :data:`ALIAS_SHARE` of their values go each with one value of the identifier (folded as
    its pseudonyms are: case and spaces do not count), over at least :data:`ALIAS_MIN`
    values — a firm's name beside its tax number, a patient's name beside the record number. Left
    in clear, such a column maps the pseudonyms back to whom they stand for; one row under a
    second number, or one number written two ways, must not let it through. One small
    grouped query per pair: a statement over every pair at once ran out of memory."""
    found: list[str] = []
    for t in identifiers:
        qt = quote(t)
        key = f"upper(regexp_replace(CAST({qt} AS VARCHAR), '\\s+', '', 'g'))"
        if int(con.execute(f"SELECT count(DISTINCT {key}) FROM {rel}").fetchone()[0] or 0) \
                < ALIAS_MIN:  # a constant (or nearly) goes with everything
            continue
        for c in candidates:
            if c in found or c == t:
                continue
            qc = quote(c)
            values, single = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE ids = 1) FROM (SELECT {qc}, "
                f"count(DISTINCT {key}) AS ids FROM {rel} WHERE {qc} IS NOT NULL "
                f"AND {qt} IS NOT NULL GROUP BY {qc})").fetchone() or (0, 0)
            if values >= ALIAS_MIN and single >= ALIAS_SHARE * values:
                found.append(c)
    return found


def _write_extract(
    node: Node, pid: str, plan: _Plan, columns: list[str], targets: Mapping[str, str | None]
) -> tuple[Path, str, int, int]:
    """Stream the allowed columns (pseudonymized where asked) into a Parquet file."""
    folder = node.root / EXTRACT_DIR
    folder.mkdir(mode=NODE_DIR_MODE, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.parquet"
    key = None
    if targets:
        key = ps.agreement_key(ps.load_or_create_secret(node.root), plan.agreement_id)
    source = pq.ParquetFile(plan.path)
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for batch in source.iter_batches(columns=columns, batch_size=65_536):
            table = (
                ps.pseudonymize_table(batch, targets, key)
                if key is not None
                else pa.Table.from_batches([batch])
            )
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
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        path.unlink(missing_ok=True)  # a half-written extract is never served or left behind
        raise
    if writer is not None:
        writer.close()
    return path, _sha256_file(path), rows, path.stat().st_size


# --- the data plane ----------------------------------------------------------------------------


def _refuse_pull(node: Node, peer: str, pid: str, exc: DataspaceError) -> DataspaceError:
    """Log a refused pull within the member's refusal budget (a member looping on bad pulls
    must not grow the ledger without bound), and hand the error back to raise."""
    log_refusal(node, "transfer.pull_refused", peer, "pull", pid, exc, status=exc.http_status)
    return exc


def serve_pull(
    node: Node, peer: Member, pid: str, authorization: str | None
) -> tuple[Path, dict[str, Any]]:
    """Provider: check a pull (the agreement's consumer, the transfer STARTED, the token right,
    unused and unexpired) and burn the token; the extract's path and facts. Nothing is billed
    yet: the face that streams the file calls :func:`settle_pull` when it knows whether the
    whole extract went out."""
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
                raise Conflict(
                    f"transfer {pid!r} is {row.state}; nothing can be pulled",
                    hint="request a new transfer",
                )
            expected = ext.token_sha256 or ""
            given = hashlib.sha256(token.encode()).hexdigest() if token else ""
            if not token or not secrets.compare_digest(given, expected):
                raise Forbidden(
                    "the pull token is missing or wrong",
                    hint="send 'Authorization: Bearer <token from the dataAddress>'",
                )
            if ext.pulled_at is not None:
                raise Forbidden("the pull token has been used", hint="request a new transfer")
            if ext.token_expires_at is None or _now() > utc(ext.token_expires_at):
                raise Forbidden("the pull token has expired", hint="request a new transfer")
            if not ext.path or not Path(ext.path).exists():
                raise NotFound(f"the extract of transfer {pid!r} is gone")
            ext.pulled_at = _now()
            return Path(ext.path), {"sha256": ext.sha256, "rows": ext.rows, "bytes": ext.bytes}
    except DataspaceError as exc:
        raise _refuse_pull(node, peer.name, pid, exc) from None


#: a delivery cut off after more than this share of the extract's bytes is billed like a
#: complete one: the consumer holds a decodable part of it (row groups before the footer)
BILLED_SHARE = 0.1


def settle_pull(node: Node, pid: str, *, sent: int, complete: bool) -> str:
    """Provider: the pull of ``pid`` is over; settle it once. ``complete``: the whole extract
    was handed to the connection — bill it (once; the consumer's completion message may have
    billed it already). A delivery cut off after more than :data:`BILLED_SHARE` of its bytes is
    billed too, and ends TERMINATED (``delivery_cut``), as the consumer's failed pull ends it
    there: nothing else would end it here should the consumer's termination be lost. Below
    that the transfer ends TERMINATED (``delivery_broken``), unbilled, and its ``count`` slot
    is free again; the consumer, whose pull failed, terminates on its side too.
    Returns ``billed``, ``terminated`` or ``settled`` (nothing left to do)."""
    with node.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        ext = _extract(session, pid)
        if ext.pulled_at is None or ext.settled_at is not None:
            return "settled"
        ext.settled_at = _now()
        total = int(ext.bytes or 0)
        outcome = ""
        if complete or sent > BILLED_SHARE * total:
            outcome = "billed" if bill_delivery(node, session, row) else "settled"
        path = ext.path
    # its one pull is over: the copy made for it goes now, not when (if ever) the consumer's
    # completion message arrives (and also when the transfer ended while it streamed)
    _discard(path)
    if outcome == "billed" and not complete:
        _terminate_local(node, pid, code="delivery_cut", actor=f"node:{node.name}", reasons=[
            f"the connection closed after {sent} of {total} bytes; billed: past a tenth of "
            "the extract the consumer holds whole row groups"])
    if outcome:
        return outcome
    reason = f"the connection closed after {sent} of {total} bytes; not billed"
    ended = _terminate_local(node, pid, code="delivery_broken", reasons=[reason],
                             actor=f"node:{node.name}")
    return "terminated" if ended is not None else "settled"


def bill_delivery(node: Node, session: Session, row: TransferProcessRow) -> bool:
    """Meter the delivered extract of provider transfer ``row`` (locked) unless it was metered
    already: usage (action ``transfer``, priced by the offer) and ``transfer.served``. False
    if there was nothing to bill: never pulled, or billed before. Works from the agreement
    and offer alone: a dataset removed while its extract went out is still billed."""
    ext = _extract(session, row.id)
    if ext.pulled_at is None or billed(session, row.id):
        return False
    _, offer, key = _agreed(session, row)
    ds = session.get(Dataset, key)
    usage = record_usage(
        session,
        _usage(node, row, ds.name if ds is not None else key, status="completed",
               rows=int(ext.rows or 0), size=int(ext.bytes or 0)),
        actor=PEER_ACTOR.format(row.peer),
        terms=_terms(offer),
    )
    log.append(
        session,
        actor=PEER_ACTOR.format(row.peer),
        action="transfer.served",
        payload={
            "pid": row.id,
            "peer": row.peer,
            "agreement_id": row.agreement_id,
            "sha256": ext.sha256,
            "rows": ext.rows,
            "bytes": ext.bytes,
            "usage_id": usage.id,
            "price": {"amount": usage.price_amount, "currency": usage.currency},
        },
    )
    return True


def _billed_usage(job_id: Any) -> Any:
    """SQL: the completed usage record that bills a transfer, by its id (or a column of it)."""
    return select(UsageRecord.id).where(
        UsageRecord.job_id == job_id,
        UsageRecord.action == "transfer",
        UsageRecord.status == "completed",
    )


def billed(session: Session, pid: str) -> bool:
    """Whether provider transfer ``pid`` has its completed usage record."""
    return session.execute(_billed_usage(pid).limit(1)).first() is not None


def billed_clause() -> Any:
    """SQL, for queries over extract rows: the row's transfer was billed."""
    return _billed_usage(TransferExtractRow.id).exists()
