"""Trained federated models: each node keeps its own part, and knows who holds the others.

A part is written as JSON under ``<data dir>/models/<model id>.<holder>.json`` when the node
finishes its share of the job (``staged``) and becomes ``final`` only when the initiator
commits the whole model — after every node finished. A failed job leaves at most staged
parts, which are never listed, shown or used. A node that committed its part before the job
failed elsewhere (the initiator's abort comes after its commit) revokes it: the part file is
deleted and the row kept as ``revoked`` (ledger ``model.revoked``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.errors import NotFound
from dataspace.jsondoc import iso_utc
from dataspace.ledger import log
from dataspace.scratch import write_whole
from dataspace.services.job_wire import jsonable
from dataspace.services.mp_store import plain
from dataspace.services.node import Node
from dataspace.store.models_federated import FederatedModelRow

MODELS_DIR = "models"
STAGED, FINAL, REVOKED = "staged", "final", "revoked"


def stage(
    node: Node,
    *,
    model_id: str,
    family: str,
    role: str,
    initiator: str,
    part: dict[str, Any] | None,
    info: dict[str, Any],
) -> str | None:
    """Write this node's part (staged); returns its SHA-256 (None for a node holding none)."""
    digest, rel = None, None
    if part is not None:
        folder = node.data_dir / MODELS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(jsonable(part), sort_keys=True).encode()
        rel = f"{MODELS_DIR}/{model_id}.{node.name}.json"
        write_whole(node.data_dir / rel, data)  # never a half-written part under its name
        digest = hashlib.sha256(data).hexdigest()
    with node.store.write() as session:
        row = session.get(FederatedModelRow, model_id)
        if row is None:
            row = FederatedModelRow(id=model_id, created_at=datetime.now(UTC))
            session.add(row)
        row.job_id, row.family, row.role, row.state = model_id, family, role, STAGED
        row.initiator, row.part_file, row.part_sha256 = initiator, rel, digest
        row.info = plain(info)
    return digest


def finalize(node: Node, model_id: str, info: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """Mark the part final with the whole model's description; ledger ``model.trained``."""
    with node.store.write() as session:
        return finalize_in(session, model_id, info, actor=actor)


def finalize_in(session: Session, model_id: str, info: dict[str, Any], *, actor: str
                ) -> dict[str, Any]:
    """:func:`finalize` in the caller's transaction (a provider finalizes and meters in one).

    What this node staged itself (the job's parameters, as it checked them at open) is kept:
    another node's description may add to it, not replace it — prediction trusts it."""
    row = session.get(FederatedModelRow, model_id)
    if row is None:
        raise NotFound(f"no staged part of model {model_id} here")
    row.state = FINAL
    row.info = plain({**info, **(row.info or {})})
    row.finished_at = datetime.now(UTC)
    log.append(
        session,
        actor=actor,
        action="model.trained",
        payload=jsonable(
            {
                "model_id": model_id,
                "family": row.family,
                "role": row.role,
                "initiator": row.initiator,
                "part_sha256": row.part_sha256,
                "parts": info.get("parts"),
                "metrics": info.get("metrics"),
                "contribution": info.get("contribution"),
            }
        ),
    )
    return _view(row)


def discard_staged(node: Node, model_id: str) -> None:
    """Remove this node's part of ``model_id`` if it is only staged (its job ended here before
    the commit): the file goes with the row, so nothing of a failed job stays on disk."""
    with node.store.write() as session:
        row = session.get(FederatedModelRow, model_id, with_for_update=True)
        if row is None or row.state != STAGED:
            return
        part_file = row.part_file
        session.delete(row)
    if part_file:  # after the commit: a rolled-back delete keeps its file
        (node.data_dir / part_file).unlink(missing_ok=True)


def drop_revoked_file(node: Node, model_id: str) -> None:
    """Delete the part file of a revoked part (after :func:`revoke_in` committed)."""
    with node.store.read() as session:
        row = session.get(FederatedModelRow, model_id)
        part_file = row.part_file if row is not None and row.state == REVOKED else None
    if part_file:
        (node.data_dir / part_file).unlink(missing_ok=True)


def revoke_in(session: Session, model_id: str, reason: str, *, actor: str) -> bool:
    """Revoke this node's final part of ``model_id`` (the job failed after it committed): the
    row is kept as ``revoked``, ledger ``model.revoked``, in the caller's transaction; once it
    committed, :func:`drop_revoked_file` deletes the file. False if there is no final part."""
    row = session.get(FederatedModelRow, model_id, with_for_update=True)
    if row is None or row.state != FINAL:
        return False
    row.state = REVOKED
    log.append(
        session,
        actor=actor,
        action="model.revoked",
        payload={"model_id": model_id, "part_sha256": row.part_sha256, "reason": reason},
    )
    return True


def _view(row: FederatedModelRow) -> dict[str, Any]:
    info = dict(row.info or {})
    return {
        "id": row.id,
        "family": row.family,
        "state": row.state,
        "role": row.role,
        "initiator": row.initiator,
        "part_file": row.part_file,
        "part_sha256": row.part_sha256,
        "parts": info.get("parts") or {},
        "metrics": info.get("metrics") or {},
        "contribution": info.get("contribution") or {},
        "params": info.get("params") or {},
        "created_at": iso_utc(row.created_at),
        "finished_at": iso_utc(row.finished_at),
    }


def get_model(node: Node, model_id: str) -> dict[str, Any]:
    with node.store.read() as session:
        row = session.get(FederatedModelRow, model_id)
        if row is None or row.state != FINAL:
            raise NotFound(f"no trained model {model_id!r} here", hint="see `dataspace model list`")
        return _view(row)


def list_models(node: Node) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = session.scalars(
            select(FederatedModelRow)
            .where(FederatedModelRow.state == FINAL)
            .order_by(FederatedModelRow.created_at.desc())
        ).all()
        return [_view(r) for r in rows]


def load_part(node: Node, model_id: str) -> dict[str, Any]:
    view = get_model(node, model_id)
    if not view["part_file"]:
        raise NotFound(f"this node holds no part of model {model_id}")
    data = (node.data_dir / view["part_file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != view["part_sha256"]:
        raise NotFound(f"the part of model {model_id} does not match its recorded hash")
    part: dict[str, Any] = json.loads(data)
    return part


def has_part(node: Node, model_id: str) -> bool:
    with node.store.read() as session:
        return session.get(FederatedModelRow, model_id) is not None
