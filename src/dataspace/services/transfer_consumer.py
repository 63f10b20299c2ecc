"""Transfer processes, the consumer side: request a transfer under a FINALIZED agreement, wait
for it, and pull the data once the provider starts: verify sha256 and rows, keep the file
under ``received/``, complete."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.orm import Session

from dataspace.contracts import ProtocolError, build, parse
from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.messages import (
    DataAddress,
    TransferRequestMessage,
)
from dataspace.contracts.roles import Role
from dataspace.errors import (
    DataspaceError,
    NotFound,
    VerificationError,
)
from dataspace.ledger import log
from dataspace.services.catalog import DSP_PATH, Transport, deliver
from dataspace.services.dsp_process import take_provider_pid, wait_until_final
from dataspace.services.neg_common import callback_address, lookup_member
from dataspace.services.neg_consumer import catch_up
from dataspace.services.node import NODE_DIR_MODE, Node, default_actor
from dataspace.services.transfer_common import (
    FINAL,
    RECEIVED_DIR,
    _extract,
    _terminate_local,
    format_for,
    logger,
    tell_completed,
    terminate,
)
from dataspace.services.transfer_views import show_transfer
from dataspace.store.models_contracts import (
    ContractNegotiationRow,
    TransferExtractRow,
    TransferProcessRow,
)

# --- consumer: request, wait -------------------------------------------------------------------


def _provider_of(session: Session, agreement_id: str) -> str:
    agreement = cs.get_agreement(session, agreement_id, peer=None)
    neg = session.get(ContractNegotiationRow, agreement.negotiation_id)
    if neg is None or neg.role != Role.CONSUMER.value:
        raise NotFound(
            f"no agreement {agreement_id!r} in which this node is the consumer",
            hint="see `dataspace contract list`",
        )
    return neg.peer


def request_transfer(
    node: Node,
    *,
    agreement_id: str,
    mode: str,
    actor: str | None = None,
    transport: Transport | None = None,
) -> dict[str, Any]:
    """Ask the provider of ``agreement_id`` for its rows (``mode`` raw or pseudonymized).

    Records the process (REQUESTED, ``transfer.requested``) and sends the
    TransferRequestMessage; the data arrives later (see :func:`wait`). A refusal terminates
    the process here with the provider's reason.
    """
    who = actor or default_actor()
    fmt = format_for(mode)
    pid = cs.new_pid()
    with node.store.read() as session:
        negotiation = cs.get_agreement(session, agreement_id, peer=None).negotiation_id
    catch_up(node, negotiation, transport=transport)  # a FINALIZED event that never came
    with node.store.write() as session:
        provider = _provider_of(session, agreement_id)
        row = cs.create_transfer(
            session,
            role=Role.CONSUMER,
            peer=provider,
            agreement_id=agreement_id,
            format=fmt,
            consumer_pid=pid,
        )
        session.add(TransferExtractRow(id=row.id, mode=mode))
        log.append(
            session,
            actor=who,
            action="transfer.requested",
            payload={
                "pid": pid,
                "role": "consumer",
                "peer": provider,
                "agreement_id": agreement_id,
                "mode": mode,
            },
        )
    doc = build(
        TransferRequestMessage(
            consumer_pid=pid,
            agreement_id=agreement_id,
            format=fmt,
            callback_address=callback_address(node),
        )
    )
    try:
        status, data = deliver(
            node, provider, "POST", f"{DSP_PATH}/transfers/request", doc, transport
        )
    except DataspaceError as exc:
        _terminate_local(node, pid, code=exc.code, reasons=[exc.message], actor=who)
        raise
    if status != 201 or not isinstance(data, Mapping):
        reasons = [str(r) for r in data.get("reason", [])] if isinstance(data, Mapping) else []
        code = str(data.get("code")) if isinstance(data, Mapping) else "refused"
        _terminate_local(
            node,
            pid,
            code=code,
            actor=who,
            reasons=reasons or [f"the provider answered HTTP {status}"],
        )
        return show_transfer(node, pid)
    ack = parse(data, "TransferProcess")
    with node.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None, lock=True)
        take_provider_pid(row, ack, pid)
    return show_transfer(node, pid)


def wait(node: Node, pid: str, seconds: float, *, poll: float = 0.1) -> dict[str, Any]:
    """Wait until the transfer is COMPLETED or TERMINATED (or ``seconds`` pass)."""
    return wait_until_final(lambda: show_transfer(node, pid), FINAL, seconds, poll)


# --- the data plane ----------------------------------------------------------------------------


def _client(node: Node, peer: str) -> httpx.Client:
    from dataspace.services import transfers  # tests substitute transfers.CLIENTS

    if transfers.CLIENTS is not None:
        return transfers.CLIENTS(node, peer)
    from dataspace.services.peers import peer_client

    return peer_client(node, peer, timeout=node.limits.transfer_pull_timeout_seconds)


def _remove(path: Path | None) -> None:
    """Delete a partial download, if there is one (nothing partial stays on disk)."""
    if path is not None:
        path.unlink(missing_ok=True)


def pull(node: Node, pid: str, *, transport: Transport | None = None) -> None:
    """Consumer, after the start: pull, verify, store under ``received/``, complete (or
    terminate with the reason)."""
    actor = f"node:{node.name}"
    tmp: Path | None = None  # the partial download, removed on any failure
    try:
        with node.store.read() as session:
            row = cs.get_transfer(session, pid, peer=None)
            if row.state != tp.TransferState.STARTED.value:
                return  # ended (or suspended) before the pull began: nothing to fetch
            ext = session.get(TransferExtractRow, pid)
            address = DataAddress.from_json(row.data_address or {}, "$.dataAddress")
            provider, stated_sha = row.peer, ext.sha256 if ext else None
            stated_rows = ext.rows if ext else None
            stated_bytes = ext.bytes if ext else None
        props = {p.name: p.value for p in address.endpoint_properties or ()}
        base = lookup_member(node, provider).url.rstrip("/")
        endpoint = address.endpoint or ""
        if not endpoint.startswith(base + "/"):
            raise ProtocolError(
                f"the data address {endpoint!r} is not on {provider}'s node",
                path="$.dataAddress.endpoint",
            )
        folder = node.root / RECEIVED_DIR
        folder.mkdir(mode=NODE_DIR_MODE, exist_ok=True)  # received data is this node's alone
        tmp = folder / f".{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        cap = int(node.limits["transfer_max_mb"]) * 1024 * 1024
        if stated_bytes is not None:
            cap = min(cap, stated_bytes)
        with (
            _client(node, provider) as client,
            client.stream(
                "GET",
                endpoint[len(base) :],
                headers={"Authorization": f"Bearer {props.get('authorization', '')}"},
            ) as resp,
        ):
            if resp.status_code != 200:
                resp.read()
                raise VerificationError(
                    f"{provider} refused the pull (HTTP {resp.status_code}): {resp.text[:300]}"
                )
            written = 0
            with tmp.open("wb") as out:
                for chunk in resp.iter_bytes():
                    written += len(chunk)
                    if written > cap:  # a provider may not fill this node's disk
                        raise VerificationError(
                            f"the data passes {cap} bytes (the size the provider stated, or "
                            "this node's transfer_max_mb)"
                        )
                    digest.update(chunk)
                    out.write(chunk)
        sha = digest.hexdigest()
        if sha != stated_sha:
            raise VerificationError("the data does not hash to the sha256 the provider stated")
        try:
            rows = pq.ParquetFile(tmp).metadata.num_rows
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise VerificationError(f"the data is not a Parquet file ({exc})") from None
        if rows != stated_rows:
            raise VerificationError(f"the data has {rows} rows, the provider stated {stated_rows}")
        final = folder / f"{sha[:16]}-{uuid.uuid4().hex[:8]}.parquet"
        tmp.replace(final)
    except DataspaceError as exc:
        _remove(tmp)
        terminate(node, pid, code=exc.code, reasons=[exc.message], actor=actor, transport=transport)
        return
    except (httpx.HTTPError, OSError) as exc:
        _remove(tmp)
        terminate(
            node,
            pid,
            code="pull_failed",
            reasons=[f"{type(exc).__name__}: {exc}"],
            actor=actor,
            transport=transport,
        )
        return
    try:
        row = _record_received(node, pid, final, provider=provider, sha=sha, rows=rows,
                               actor=actor)
    except DataspaceError as exc:  # no record, so no file either
        _remove(final)
        if show_transfer(node, pid)["state"] == tp.TransferState.TERMINATED.value:
            logger.warning("transfer %s ended while its data arrived; the file is deleted", pid)
        else:  # suspended meanwhile, or the store failed: end it rather than leave it hanging
            terminate(node, pid, code="record_failed",
                      reasons=[f"the verified data could not be recorded: {exc.message}"],
                      actor=actor, transport=transport)
        return
    except Exception:
        # not recorded: no file either (an interrupt is left to the start-up sweep, which
        # removes only what no transfer records: it may have come after the commit)
        _remove(final)
        raise
    tell_completed(node, row, transport)


def _record_received(
    node: Node, pid: str, final: Path, *, provider: str, sha: str, rows: int, actor: str
) -> TransferProcessRow:
    """COMPLETED, with the file's facts and a ``transfer.received`` entry, in one transaction."""
    with node.store.write() as session:
        row = cs.advance_transfer(session, pid, tp.COMPLETION, sender=Role.CONSUMER, peer=None)
        ext_row = _extract(session, pid)
        ext_row.path, ext_row.bytes = str(final), final.stat().st_size
        ext_row.columns = list(pq.ParquetFile(final).schema_arrow.names)
        log.append(
            session,
            actor=actor,
            action="transfer.received",
            payload={
                "pid": pid,
                "peer": provider,
                "agreement_id": row.agreement_id,
                "sha256": sha,
                "rows": rows,
                "bytes": ext_row.bytes,
                "columns": ext_row.columns,
                "mode": ext_row.mode,
                "file": final.name,
            },
        )
        session.expunge(row)
        return row
