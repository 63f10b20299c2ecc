"""Contract negotiation, reading: the list of negotiations and one contract with its agreement
and signature checks (``contract list`` / ``contract show``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.contracts import negotiation as cn
from dataspace.contracts import store as cs
from dataspace.contracts import (
    verify_agreement,
)
from dataspace.errors import NotFound, SignatureError
from dataspace.jsondoc import iso_utc
from dataspace.services.neg_common import _digest, _own_public, lookup_member
from dataspace.services.node import Node
from dataspace.store.models_contracts import (
    ContractAgreementRow,
    ContractNegotiationRow,
)


def list_contracts(node: Node) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = cs.list_negotiations(session)
        return [_summary(session, r) for r in rows]


def _find(session: Session, ref: str) -> ContractNegotiationRow:
    row = session.get(ContractNegotiationRow, ref)
    if row is None:
        ag = session.get(ContractAgreementRow, ref)
        if ag is not None:
            row = session.get(ContractNegotiationRow, ag.negotiation_id)
    if row is None:
        row = session.scalars(
            select(ContractNegotiationRow).where(
                (ContractNegotiationRow.provider_pid == ref)
                | (ContractNegotiationRow.consumer_pid == ref)
            )
        ).first()
    if row is None:
        raise NotFound(f"no contract or negotiation {ref!r}", hint="see `dataspace contract list`")
    return row


def _summary(session: Session, row: ContractNegotiationRow) -> dict[str, Any]:
    ag = session.scalars(
        select(ContractAgreementRow).where(ContractAgreementRow.negotiation_id == row.id)
    ).first()
    return {
        "id": row.id,
        "role": row.role,
        "peer": row.peer,
        "state": row.state,
        "offer_id": row.offer_id,
        "purpose": row.purpose,
        "agreement_id": ag.id if ag is not None else None,
        "provider_pid": row.provider_pid,
        "consumer_pid": row.consumer_pid,
        "updated_at": iso_utc(row.updated_at),
    }


def _signature_status(sig: str | None, agreement: dict[str, Any], key: bytes | None) -> str:
    if not sig:
        return "missing"
    if key is None:
        return "unverifiable (peer key unknown)"
    try:
        verify_agreement(agreement, sig, key)
    except SignatureError:
        return "INVALID"
    return "verified"


def show_contract(node: Node, ref: str) -> dict[str, Any]:
    """A negotiation (by either pid or agreement id) with its agreement and signature checks."""
    with node.store.read() as session:
        row = _find(session, ref)
        view = _summary(session, row)
        view["offer"] = row.offer
        view["callback_address"] = row.callback_address
        view["reason"] = _termination_reason(session, row)
        ag = session.scalars(
            select(ContractAgreementRow).where(ContractAgreementRow.negotiation_id == row.id)
        ).first()
        if ag is None:
            view["agreement"] = None
            return view
        try:
            peer_key: bytes | None = lookup_member(node, row.peer).verifier.public_bytes
        except Exception:
            peer_key = None
        mine = _own_public(node)
        provider_key, consumer_key = (
            (mine, peer_key) if row.role == "provider" else (peer_key, mine)
        )
        view["agreement"] = {
            "id": ag.id,
            "policy": ag.policy,
            "provider": ag.provider,
            "consumer": ag.consumer,
            "target": ag.target,
            "offer_id": ag.offer_id,
            "purpose": ag.purpose,
            "signed_at": iso_utc(ag.signed_at),
            "sha256": _digest(ag.policy),
            "signatures": {
                "provider": _signature_status(ag.provider_signature, ag.policy, provider_key),
                "consumer": _signature_status(ag.consumer_signature, ag.policy, consumer_key),
            },
            "provider_signature": ag.provider_signature,
            "consumer_signature": ag.consumer_signature,
        }
        return view


def _termination_reason(session: Session, row: ContractNegotiationRow) -> list[str] | None:
    if row.state != cn.NegotiationState.TERMINATED.value:
        return None
    import json

    from dataspace.store.models import LedgerEntry

    for entry in session.scalars(select(LedgerEntry).order_by(LedgerEntry.idx.desc()).limit(500)):
        head = json.loads(entry.entry)
        if head.get("action") != "negotiation.terminated":
            continue
        payload = json.loads(entry.payload)
        if payload.get("pid") == row.id:
            return [f"{payload.get('code')}: {r}" for r in payload.get("reason") or []]
    return None
