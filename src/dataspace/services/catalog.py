"""The DSP catalog of this node (provider side) and of a peer (consumer side).

Provider: :func:`catalog_doc` is the DCAT / DSP 2025-1 ``Catalog`` of this node's datasets that
have at least one active offer: each dataset carries its offers as ``hasPolicy`` (without
``target``, as DSP wants in a catalog), a ``Distribution`` whose ``accessService`` is this
node's DSP endpoint, and catalog metadata only — ``dct:title``, ``dct:description``,
``dcat:theme`` (the domain) and, under our namespace, the columns with their types and the
GB/T 43697 grade. Never values, samples or profiles.

Consumer: :func:`fetch_catalog` sends a signed ``CatalogRequestMessage`` to a peer and
validates the answer; :func:`summarize` turns it into rows a person can read.

Node-to-node traffic goes through a :data:`Transport` (default: HTTP through
``services.peers.peer_client``, every request RFC 9421-signed); tests substitute one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from dataspace.contracts import (
    Catalog,
    CatalogRequestMessage,
    DataService,
    Dataset,
    Distribution,
    ProtocolError,
    build,
    parse,
)
from dataspace.contracts.messages import policy_from_wire
from dataspace.errors import DataspaceError, NotFound
from dataspace.policy.model import LogicalConstraint, Operator
from dataspace.services.node import Node
from dataspace.store.models import Dataset as DatasetRow
from dataspace.store.models_contracts import OfferRow

#: our namespace for catalog members DCAT has no term for
NS = "https://w3id.org/dataspace/catalog#"
COLUMNS = NS + "columns"
GRADE = NS + "grade"
DSP_PATH = "/dsp"
FORMAT = "dataspace+governed-compute"

#: (node, peer name, method, path relative to the peer's base URL, JSON body) -> (status, JSON)
Transport = Callable[[Node, str, str, str, "Mapping[str, Any] | None"], tuple[int, Any]]


class DeliveryFailed(DataspaceError):
    """A message to a peer could not be delivered within the retry budget."""

    code = "delivery_failed"
    exit_code = 10
    http_status = 502


def http_transport(
    node: Node, peer: str, method: str, path: str, body: Mapping[str, Any] | None
) -> tuple[int, Any]:
    """Send a signed request to ``peer`` (a member of this node's space)."""
    import httpx

    from dataspace.services.peers import peer_client

    try:
        with peer_client(node, peer) as client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(
            f"cannot reach {peer}: {exc}", hint="is the peer's node running?", peer=peer
        ) from None
    try:
        data = response.json() if response.content else None
    except ValueError:
        data = None
    return response.status_code, data


def deliver(
    node: Node,
    peer: str,
    method: str,
    path: str,
    body: Mapping[str, Any] | None,
    transport: Transport | None,
    *,
    attempts: int = 5,
    deadline: float = 20.0,
) -> tuple[int, Any]:
    """Send with bounded retries (network errors and 5xx; at most ``attempts`` tries within
    ``deadline`` seconds, exponential backoff). 4xx answers are returned, not retried."""
    send = transport or http_transport
    start = time.monotonic()
    last: str = "no attempt"
    for attempt in range(attempts):
        try:
            status, data = send(node, peer, method, path, body)
        except DeliveryFailed as exc:
            last = exc.message
        else:
            if status < 500:
                return status, data
            last = f"HTTP {status}"
        pause = min(0.25 * 2**attempt, 4.0)
        if attempt + 1 == attempts or time.monotonic() - start + pause > deadline:
            break
        time.sleep(pause)
    raise DeliveryFailed(
        f"{method} {path} to {peer} failed: {last}",
        hint="the peer is down or refusing; try again later",
        peer=peer,
    )


# --- provider side -----------------------------------------------------------------------------


def deliver_or_terminate(
    node: Node,
    pid: str,
    peer: str,
    path: str,
    doc: Mapping[str, Any],
    *,
    terminate: Callable[..., Any],
    actor: str,
    transport: Transport | None,
) -> None:
    """POST a protocol message; if it cannot be delivered or the peer refuses it, end the
    process with ``terminate`` (the negotiation's or the transfer's), giving the reason."""
    try:
        status, data = deliver(node, peer, "POST", path, doc, transport)
    except DataspaceError as exc:
        terminate(node, pid, code=exc.code, reasons=[exc.message], actor=actor, transport=transport)
        return
    if status >= 300:
        reasons = [str(r) for r in data.get("reason", [])] if isinstance(data, Mapping) else []
        terminate(
            node,
            pid,
            code="refused_by_peer",
            reasons=[f"{peer} answered HTTP {status}", *reasons],
            actor=actor,
            transport=transport,
        )


def _service(node: Node, endpoint: str) -> DataService:
    return DataService(id=f"urn:dataspace:{node.name}:dsp", endpoint_url=endpoint)


def _dataset_entry(node: Node, row: DatasetRow, offers: list[OfferRow], endpoint: str) -> Dataset:
    policies = []
    for offer in offers:
        doc = {k: v for k, v in offer.policy.items() if k not in ("@context", "target")}
        policies.append(policy_from_wire(doc))
    columns = [{"name": c["name"], "type": c["type"]} for c in row.profile.get("columns", [])]
    extras: tuple[tuple[str, Any], ...] = (
        ("dct:title", row.title),
        ("dct:description", row.description or ""),
        ("dcat:theme", row.domain),
        (COLUMNS, columns),
        (GRADE, {"level": row.grading.get("level"), "label": row.grading.get("label")}),
    )
    return Dataset(
        id=row.id,
        offers=tuple(policies),
        distributions=(Distribution(format=FORMAT, access_service=_service(node, endpoint).id),),
        extras=extras,
    )


def _active(session: Any, dataset_id: str | None = None) -> dict[str, list[OfferRow]]:
    stmt = select(OfferRow).where(OfferRow.withdrawn_at.is_(None)).order_by(OfferRow.created_at)
    if dataset_id is not None:
        stmt = stmt.where(OfferRow.dataset_id == dataset_id)
    by_dataset: dict[str, list[OfferRow]] = {}
    for offer in session.scalars(stmt):
        by_dataset.setdefault(offer.dataset_id, []).append(offer)
    return by_dataset


def catalog_doc(node: Node, endpoint: str) -> dict[str, Any]:
    """This node's DSP Catalog (schema-valid); ``endpoint`` is its DSP base URL."""
    with node.store.read() as session:
        entries = []
        for dataset_id, offers in _active(session).items():
            row = session.get(DatasetRow, dataset_id)
            if row is not None:
                entries.append(_dataset_entry(node, row, offers, endpoint))
    catalog = Catalog(
        id=f"urn:dataspace:{node.name}:catalog",
        participant_id=node.name,
        services=(_service(node, endpoint),),
        datasets=tuple(entries) or None,
    )
    return build(catalog)


def dataset_doc(node: Node, dataset_id: str, endpoint: str) -> dict[str, Any]:
    """One dataset of the catalog; NotFound unless it exists and has an active offer."""
    with node.store.read() as session:
        offers = _active(session, dataset_id).get(dataset_id)
        row = session.get(DatasetRow, dataset_id)
        if row is None or not offers:
            raise NotFound(
                f"no dataset {dataset_id!r} in this catalog",
                hint="request the catalog for the dataset ids",
            )
        return build(_dataset_entry(node, row, offers, endpoint))


# --- consumer side -----------------------------------------------------------------------------


def fetch_catalog(node: Node, peer: str, *, transport: Transport | None = None) -> dict[str, Any]:
    """Ask ``peer`` for its catalog (signed CatalogRequestMessage); the validated Catalog."""
    status, data = deliver(
        node,
        peer,
        "POST",
        f"{DSP_PATH}/catalog/request",
        build(CatalogRequestMessage()),
        transport,
        attempts=2,
    )
    if status != 200 or not isinstance(data, Mapping):
        raise ProtocolError(
            f"{peer} refused the catalog request (HTTP {status})", hint=_reason(data), status=status
        )
    parse(data, "Catalog")
    return dict(data)


def _reason(data: Any) -> str:
    if isinstance(data, Mapping):
        if "error" in data and isinstance(data["error"], Mapping):
            return str(data["error"].get("message"))
        if "reason" in data:
            return "; ".join(str(r) for r in data["reason"])
    return "see the peer's ledger"


def find_offer(catalog: Mapping[str, Any], offer_id: str) -> tuple[str, dict[str, Any]]:
    """(dataset id, offer JSON) of ``offer_id`` in a Catalog; NotFound if it is not there."""
    for dataset in catalog.get("dataset", []) or []:
        for offer in dataset.get("hasPolicy", []) or []:
            if offer.get("@id") == offer_id:
                return str(dataset["@id"]), dict(offer)
    raise NotFound(
        f"the peer's catalog has no offer {offer_id!r}",
        hint="run `dataspace catalog PEER` for the offer ids",
    )


_NOT = {Operator.IS_NONE_OF, Operator.NEQ}


def _purposes(constraints: Sequence[Any], joined: str = "") -> list[str]:
    """The purposes the constraints name, as a person reads them: 'not marketing' for an
    exclusion, 'finance or (purpose …)' kept apart in a logical constraint (its ``op``
    shown), so an offer that restricts its purposes never reads as open to any."""
    found: list[str] = []
    for c in constraints:
        if isinstance(c, LogicalConstraint):
            inner = _purposes(c.constraints)
            if inner:
                found.append(f" {c.op.value} ".join(inner) if len(inner) > 1 else inner[0])
            continue
        if c.left != "purpose":
            continue
        items = c.right if isinstance(c.right, tuple) else (c.right,)
        names = [str(x) for x in items]
        found.extend([f"not {n}" for n in names] if c.operator in _NOT else names)
    return found


def _price_per_job(policy: Any) -> str | None:
    """The price a job under the offer costs (its compensate duties), as '100 CNY'; None
    when it asks none; what the provider would refuse as several prices is shown as such."""
    from dataspace.services.offers import policy_price

    try:
        price = policy_price(policy)
    except DataspaceError:
        return "several prices"
    return str(price) if price is not None else None


def summarize(catalog: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The datasets of a Catalog with their offers, as plain rows."""
    out = []
    for ds in catalog.get("dataset", []) or []:
        offers = []
        for offer in ds.get("hasPolicy", []) or []:
            policy = policy_from_wire(offer)
            purposes: list[str] = []
            for rule in policy.permissions:
                purposes.extend(_purposes(rule.constraints))
            offers.append(
                {
                    "id": offer.get("@id"),
                    "actions": [r.action for r in policy.permissions],
                    "purposes": purposes,
                    "price": _price_per_job(policy),
                    "policy": offer,
                }
            )
        out.append(
            {
                "id": ds.get("@id"),
                "title": ds.get("dct:title"),
                "description": ds.get("dct:description"),
                "domain": ds.get("dcat:theme"),
                "columns": ds.get(COLUMNS, []),
                "grade": ds.get(GRADE),
                "offers": offers,
            }
        )
    return out
