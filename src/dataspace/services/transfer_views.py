"""Transfer processes, reading: the list, one process, and copying a received file out."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dataspace.contracts import transfer as tp
from dataspace.contracts.roles import Role
from dataspace.errors import (
    InputError,
    NotFound,
    UsageError,
    VerificationError,
)
from dataspace.jsondoc import utc
from dataspace.scratch import staging_path
from dataspace.services.node import Node
from dataspace.services.transfer_common import _sha256_file
from dataspace.store.models_contracts import (
    TransferExtractRow,
    TransferProcessRow,
)

# --- reading -----------------------------------------------------------------------------------


def _view(row: TransferProcessRow, ext: TransferExtractRow | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "role": row.role,
        "peer": row.peer,
        "state": row.state,
        "agreement_id": row.agreement_id,
        "mode": ext.mode if ext else None,
        "provider_pid": row.provider_pid,
        "consumer_pid": row.consumer_pid,
        "sha256": ext.sha256 if ext else None,
        "rows": ext.rows if ext else None,
        "bytes": ext.bytes if ext else None,
        "columns": ext.columns if ext else None,
        "file": ext.path if ext and row.role == Role.CONSUMER.value else None,
        "delete_by": utc(ext.delete_by).isoformat() if ext and ext.delete_by else None,
        "reason": ext.reason if ext else None,
        "created_at": utc(row.created_at).isoformat(),
        "updated_at": utc(row.updated_at).isoformat(),
    }


def list_transfers(
    node: Node,
    *,
    agreement_id: str | None = None,
    role: str | None = None,
    state: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Transfers on this node, newest first. A role or state no transfer can have is
    refused (it would only ever list nothing)."""
    if role and role not in ("provider", "consumer"):
        raise UsageError(f"no transfer has the role {role!r}", hint="roles: provider, consumer")
    states = [str(s.value) for s in tp.TransferState]
    if state and state.upper() not in states:
        raise UsageError(f"no transfer has the state {state!r}",
                         hint="states: " + ", ".join(states))
    stmt = (
        select(TransferProcessRow)
        .order_by(TransferProcessRow.created_at.desc())
        .limit(max(1, min(limit, 1000)))
    )
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
        row = (
            session.get(TransferProcessRow, pid)
            or session.scalars(
                select(TransferProcessRow).where(
                    (TransferProcessRow.provider_pid == pid)
                    | (TransferProcessRow.consumer_pid == pid)
                )
            ).first()
        )
        if row is None:
            raise NotFound(f"no transfer {pid!r}", hint="see `dataspace transfer list`")
        return _view(row, session.get(TransferExtractRow, row.id))


def copy_received(view: Mapping[str, Any], out: Path) -> Path:
    """Copy a completed transfer's file to ``out`` after checking its sha256 again."""
    source = Path(str(view.get("file") or ""))
    if view.get("state") != tp.TransferState.COMPLETED.value or not source.exists():
        raise UsageError(
            f"transfer {view.get('id')} has no received file", hint=f"it is {view.get('state')}"
        )
    if view.get("delete_by"):
        raise UsageError(
            f"transfer {view.get('id')} must be deleted by {view['delete_by']}: a copy would "
            "outlive the deadline",
            hint=f"read it where it is ({source}); the node deletes it when the duty falls due",
        )
    if _sha256_file(source) != view.get("sha256"):
        raise VerificationError("the received file no longer matches its sha256")
    staged = staging_path(out)
    try:
        shutil.copyfile(source, staged)
        os.replace(staged, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
        raise InputError(f"cannot copy the received file to {out}: {exc.strerror or exc}",
                         hint=f"it stays at {source}; copy it from there") from None
    return out
