"""DSP 2025-1 messages: typed values, builders (``build``/``to_json``) and parsers (``parse``).

Every message is compact JSON-LD with ``"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"]``
and its ``@type``. ``build`` validates what it produces and ``parse`` validates what it reads
against the official schemas (:mod:`dataspace.contracts.schema`), so a message this node sends
or accepts is always schema-valid. Offers and agreements inside messages are
:class:`dataspace.policy.Policy` values.

The DSP schema allows a constraint's ``rightOperand`` to be a string, object or array only, so
numbers and booleans are sent as typed literals (``{"@value": 10, "@type": "xsd:integer"}``)
and read back as plain numbers: ``parse(build(m)) == m``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dataspace.contracts.errors import ProtocolError
from dataspace.contracts.schema import validate
from dataspace.policy import DSP_CONTEXT, LogicalConstraint, Policy, PolicyError, parse_policy
from dataspace.policy.jsonld import to_jsonld
from dataspace.policy.model import AnyConstraint, Rule

CONTEXT: list[str] = [DSP_CONTEXT]
PROTOCOL_VERSION = "2025-1"

_AUTO_TYPES = {bool: "xsd:boolean", int: "xsd:integer", float: "xsd:double"}


# --- policies on the wire ----------------------------------------------------------------------


def _wire_constraint(c: AnyConstraint) -> AnyConstraint:
    if isinstance(c, LogicalConstraint):
        return dataclasses.replace(c, constraints=tuple(_wire_constraint(x) for x in c.constraints))
    if c.data_type is None and type(c.right) in _AUTO_TYPES:
        return dataclasses.replace(c, data_type=_AUTO_TYPES[type(c.right)])
    return c


def _read_constraint(c: AnyConstraint) -> AnyConstraint:
    if isinstance(c, LogicalConstraint):
        return dataclasses.replace(c, constraints=tuple(_read_constraint(x) for x in c.constraints))
    if c.data_type is not None and _AUTO_TYPES.get(type(c.right)) == c.data_type:
        return dataclasses.replace(c, data_type=None)
    return c


def _map_rules(policy: Policy, fn: Any) -> Policy:
    def rule(r: Rule) -> Rule:
        return dataclasses.replace(
            r, constraints=tuple(fn(c) for c in r.constraints),
            duties=tuple(rule(d) for d in r.duties))

    return dataclasses.replace(
        policy,
        permissions=tuple(rule(r) for r in policy.permissions),
        prohibitions=tuple(rule(r) for r in policy.prohibitions),
        obligations=tuple(rule(r) for r in policy.obligations),
    )


def policy_to_wire(policy: Policy) -> dict[str, Any]:
    """An ODRL policy as DSP messages carry it (no ``@context``, typed numeric operands)."""
    return to_jsonld(_map_rules(policy, _wire_constraint), context=False)


def policy_from_wire(doc: Mapping[str, Any], path: str = "$") -> Policy:
    """Parse an offer or agreement from a DSP message; errors name the JSON path."""
    try:
        return _map_rules(parse_policy(doc), _read_constraint)
    except PolicyError as exc:
        inner = exc.details.get("path", "")
        where = f"{path}.{inner}" if inner else path
        raise ProtocolError(f"invalid policy at {where}: {exc.message}", hint=exc.hint,
                            path=where) from exc


# --- generic (de)serialisation of message dataclasses ------------------------------------------


def _json_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("json", f.name))


def _out(value: Any) -> Any:
    if isinstance(value, Policy):
        return policy_to_wire(value)
    if isinstance(value, Part):
        return value.to_json()
    if isinstance(value, tuple):
        return [_out(v) for v in value]
    return value


def _in(value: Any, kind: Any, path: str) -> Any:
    if kind == "policy":
        return policy_from_wire(value, path)
    if kind == "policies":
        return tuple(policy_from_wire(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(kind, type) and issubclass(kind, Part):
        return kind.from_json(value, path)
    if isinstance(kind, tuple) and kind[0] == "many":
        return tuple(_in(v, kind[1], f"{path}[{i}]") for i, v in enumerate(value))
    if kind == "ref_or_service":
        return value if isinstance(value, str) else DataService.from_json(value, path)
    if kind == "list":
        return tuple(value)
    return value


def _m(json: str | None = None, kind: Any = None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if json:
        meta["json"] = json
    if kind is not None:
        meta["kind"] = kind
    return meta


class Part:
    """A JSON-LD object inside a message (or a message itself): to_json / from_json."""

    TYPE: ClassVar[str | None] = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.TYPE is not None:
            doc["@type"] = self.TYPE
        extras: tuple[tuple[str, Any], ...] = ()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == "extras":
                extras = value
            elif value is not None:
                doc[_json_name(f)] = _out(value)
        for key, value in extras:
            doc.setdefault(key, value)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], path: str = "$") -> Any:
        if not isinstance(doc, Mapping):
            raise ProtocolError(f"{path}: expected an object", path=path)
        kwargs: dict[str, Any] = {}
        known = {"@type", "@context"}
        has_extras = False
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extras":
                has_extras = True
                continue
            name = _json_name(f)
            known.add(name)
            if name in doc:
                kwargs[f.name] = _in(doc[name], f.metadata.get("kind"), f"{path}.{name}")
        if has_extras:
            kwargs["extras"] = tuple((k, v) for k, v in doc.items() if k not in known)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required member is missing
            raise ProtocolError(f"{path}: incomplete {cls.__name__}: {exc}", path=path) from exc


class Message(Part):
    """A top-level DSP message: carries ``@context`` and validates on build and parse."""

    TYPE: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        doc = {"@context": list(CONTEXT), **super().to_json()}
        validate(doc, self.TYPE)
        return doc


# --- catalog -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataService(Part):
    TYPE: ClassVar[str | None] = "DataService"
    id: str = field(metadata=_m("@id"))
    endpoint_url: str | None = field(default=None, metadata=_m("endpointURL"))
    extras: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Distribution(Part):
    TYPE: ClassVar[str | None] = "Distribution"
    format: str
    access_service: str | DataService = field(metadata=_m("accessService", "ref_or_service"))
    offers: tuple[Policy, ...] | None = field(default=None, metadata=_m("hasPolicy", "policies"))
    extras: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Dataset(Part):
    """A DCAT dataset with its offers (``hasPolicy``). As a message it is the
    answer to a DatasetRequestMessage: see :func:`dataset_response`."""

    TYPE: ClassVar[str | None] = "Dataset"
    id: str = field(metadata=_m("@id"))
    offers: tuple[Policy, ...] = field(default=(), metadata=_m("hasPolicy", "policies"))
    distributions: tuple[Distribution, ...] = field(
        default=(), metadata=_m("distribution", ("many", Distribution))
    )
    extras: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Catalog(Part):
    TYPE: ClassVar[str | None] = "Catalog"
    id: str = field(metadata=_m("@id"))
    participant_id: str | None = field(default=None, metadata=_m("participantId"))
    services: tuple[DataService, ...] | None = field(
        default=None, metadata=_m("service", ("many", DataService))
    )
    datasets: tuple[Dataset, ...] | None = field(
        default=None, metadata=_m("dataset", ("many", Dataset))
    )
    catalogs: tuple[Catalog, ...] | None = field(
        default=None, metadata=_m("catalog", ("many", "Catalog"))
    )
    distributions: tuple[Distribution, ...] | None = field(
        default=None, metadata=_m("distribution", ("many", Distribution))
    )
    extras: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], path: str = "$") -> Any:
        nested = doc.get("catalog") if isinstance(doc, Mapping) else None
        if nested is not None:
            doc = {k: v for k, v in doc.items() if k != "catalog"}
        out = super().from_json(doc, path)
        if nested is not None:
            out = dataclasses.replace(out, catalogs=tuple(
                Catalog.from_json(c, f"{path}.catalog[{i}]") for i, c in enumerate(nested)))
        return out


@dataclass(frozen=True)
class CatalogRequestMessage(Message):
    TYPE: ClassVar[str] = "CatalogRequestMessage"
    filter: tuple[Any, ...] | None = field(default=None, metadata=_m(None, "list"))


@dataclass(frozen=True)
class DatasetRequestMessage(Message):
    TYPE: ClassVar[str] = "DatasetRequestMessage"
    dataset: str


@dataclass(frozen=True)
class CatalogError(Message):
    TYPE: ClassVar[str] = "CatalogError"
    code: str | None = None
    reason: tuple[Any, ...] | None = field(default=None, metadata=_m(None, "list"))


def catalog_response(catalog: Catalog) -> dict[str, Any]:
    """A root Catalog (the answer to a CatalogRequestMessage); needs ``participant_id``."""
    doc = {"@context": list(CONTEXT), **catalog.to_json()}
    validate(doc, "Catalog")
    return doc


def dataset_response(dataset: Dataset) -> dict[str, Any]:
    """A root Dataset (the answer to a DatasetRequestMessage)."""
    doc = {"@context": list(CONTEXT), **dataset.to_json()}
    validate(doc, "Dataset")
    return doc


# --- negotiation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractRequestMessage(Message):
    """Consumer -> provider: ask for (or counter with) an offer. The initial one has no
    ``provider_pid`` and must give a ``callback_address``."""

    TYPE: ClassVar[str] = "ContractRequestMessage"
    consumer_pid: str = field(metadata=_m("consumerPid"))
    offer: Policy = field(metadata=_m(None, "policy"))
    provider_pid: str | None = field(default=None, metadata=_m("providerPid"))
    callback_address: str | None = field(default=None, metadata=_m("callbackAddress"))


@dataclass(frozen=True)
class ContractOfferMessage(Message):
    """Provider -> consumer: an offer (initial: no ``consumer_pid``, with ``callback_address``).
    The offer needs ``uid`` and ``target``."""

    TYPE: ClassVar[str] = "ContractOfferMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    offer: Policy = field(metadata=_m(None, "policy"))
    consumer_pid: str | None = field(default=None, metadata=_m("consumerPid"))
    callback_address: str | None = field(default=None, metadata=_m("callbackAddress"))


@dataclass(frozen=True)
class ContractAgreementMessage(Message):
    """Provider -> consumer: the ODRL Agreement (uid, target, assigner, assignee, timestamp)."""

    TYPE: ClassVar[str] = "ContractAgreementMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    agreement: Policy = field(metadata=_m(None, "policy"))


@dataclass(frozen=True)
class ContractAgreementVerificationMessage(Message):
    TYPE: ClassVar[str] = "ContractAgreementVerificationMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))


@dataclass(frozen=True)
class ContractNegotiationEventMessage(Message):
    """``event_type`` ACCEPTED (consumer -> provider) or FINALIZED (provider -> consumer)."""

    TYPE: ClassVar[str] = "ContractNegotiationEventMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    event_type: str = field(metadata=_m("eventType"))


@dataclass(frozen=True)
class ContractNegotiationTerminationMessage(Message):
    TYPE: ClassVar[str] = "ContractNegotiationTerminationMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    code: str | None = None
    reason: tuple[Any, ...] | None = field(default=None, metadata=_m(None, "list"))


@dataclass(frozen=True)
class ContractNegotiation(Message):
    """The ACK: a negotiation's pids and state."""

    TYPE: ClassVar[str] = "ContractNegotiation"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    state: str


@dataclass(frozen=True)
class ContractNegotiationError(Message):
    TYPE: ClassVar[str] = "ContractNegotiationError"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    code: str | None = None
    reason: tuple[Any, ...] | None = field(default=None, metadata=_m(None, "list"))


# --- transfer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointProperty(Part):
    TYPE: ClassVar[str | None] = "EndpointProperty"
    name: str
    value: str


@dataclass(frozen=True)
class DataAddress(Part):
    TYPE: ClassVar[str | None] = "DataAddress"
    endpoint_type: str = field(metadata=_m("endpointType"))
    endpoint: str | None = None
    endpoint_properties: tuple[EndpointProperty, ...] | None = field(
        default=None, metadata=_m("endpointProperties", ("many", EndpointProperty))
    )


@dataclass(frozen=True)
class TransferRequestMessage(Message):
    TYPE: ClassVar[str] = "TransferRequestMessage"
    consumer_pid: str = field(metadata=_m("consumerPid"))
    agreement_id: str = field(metadata=_m("agreementId"))
    format: str
    callback_address: str = field(metadata=_m("callbackAddress"))
    data_address: DataAddress | None = field(default=None, metadata=_m("dataAddress", DataAddress))


@dataclass(frozen=True)
class TransferStartMessage(Message):
    TYPE: ClassVar[str] = "TransferStartMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    data_address: DataAddress | None = field(default=None, metadata=_m("dataAddress", DataAddress))


@dataclass(frozen=True)
class TransferCompletionMessage(Message):
    TYPE: ClassVar[str] = "TransferCompletionMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))


@dataclass(frozen=True)
class TransferSuspensionMessage(Message):
    TYPE: ClassVar[str] = "TransferSuspensionMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    code: str | None = None
    reason: tuple[Any, ...] | None = field(default=None, metadata=_m(None, "list"))


@dataclass(frozen=True)
class TransferTerminationMessage(Message):
    TYPE: ClassVar[str] = "TransferTerminationMessage"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    code: str | None = None
    reason: tuple[Any, ...] | None = field(default=None, metadata=_m(None, "list"))


@dataclass(frozen=True)
class TransferProcess(Message):
    TYPE: ClassVar[str] = "TransferProcess"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    state: str


@dataclass(frozen=True)
class TransferError(Message):
    TYPE: ClassVar[str] = "TransferError"
    provider_pid: str = field(metadata=_m("providerPid"))
    consumer_pid: str = field(metadata=_m("consumerPid"))
    code: str | None = None
    reason: tuple[Any, ...] | None = field(default=None, metadata=_m(None, "list"))


# --- entry points ------------------------------------------------------------------------------

MESSAGE_TYPES: dict[str, type[Part]] = {
    cls.TYPE: cls
    for cls in (
        CatalogRequestMessage, DatasetRequestMessage, CatalogError,
        ContractRequestMessage, ContractOfferMessage, ContractAgreementMessage,
        ContractAgreementVerificationMessage, ContractNegotiationEventMessage,
        ContractNegotiationTerminationMessage, ContractNegotiation, ContractNegotiationError,
        TransferRequestMessage, TransferStartMessage, TransferCompletionMessage,
        TransferSuspensionMessage, TransferTerminationMessage, TransferProcess, TransferError,
    )
}
MESSAGE_TYPES["Catalog"] = Catalog
MESSAGE_TYPES["Dataset"] = Dataset


def build(message: Part) -> dict[str, Any]:
    """The message as compact JSON-LD; raises :class:`ProtocolError` if it is not schema-valid."""
    if isinstance(message, Catalog):
        return catalog_response(message)
    if isinstance(message, Dataset):
        return dataset_response(message)
    if not isinstance(message, Message):
        raise ProtocolError(f"{type(message).__name__} is not a DSP message")
    return message.to_json()


def parse(doc: Mapping[str, Any] | Any, expected: str | None = None) -> Any:
    """Validate a received message and return its typed value.

    ``expected`` (a kind such as ``"ContractRequestMessage"``) refuses any other type — use it
    at every endpoint. Raises :class:`ProtocolError` naming the JSON path of the problem.
    """
    if not isinstance(doc, Mapping):
        raise ProtocolError("a DSP message must be a JSON object", path="$")
    kind = doc.get("@type")
    if expected is not None and kind != expected:
        raise ProtocolError(f"expected a {expected}, got @type {kind!r}", path="$['@type']")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown DSP message @type {kind!r}", path="$['@type']",
                            hint=f"use one of: {', '.join(MESSAGE_TYPES)}")
    validate(doc, kind)
    return MESSAGE_TYPES[kind].from_json(doc)


def version_response(path: str, *, service_id: str | None = None,
                     identifier_type: str | None = None,
                     auth: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body of ``GET /.well-known/dspace-version``: this node speaks 2025-1 at ``path``."""
    version: dict[str, Any] = {"version": PROTOCOL_VERSION, "path": path, "binding": "HTTPS"}
    if service_id is not None:
        version["serviceId"] = service_id
    if identifier_type is not None:
        version["identifierType"] = identifier_type
    if auth is not None:
        version["auth"] = dict(auth)
    doc = {"protocolVersions": [version]}
    validate(doc, "VersionResponse")
    return doc
