"""DSP 2025-1 messages: the official examples, our builders, and mutated messages."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from dataspace.contracts import messages as m
from dataspace.contracts.errors import ProtocolError
from dataspace.contracts.schema import SCHEMAS, validate
from dataspace.policy import from_template

DSP = Path(__file__).parent / "dsp"
EXAMPLES = sorted(p for p in DSP.glob("*/example/*.json") if "did-service" not in p.name)
MESSAGE_EXAMPLES = [p for p in EXAMPLES if p.parent.parent.name != "common"]


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def kind_of(doc: dict[str, Any]) -> str:
    return str(doc.get("@type", "VersionResponse"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shared_example_validates(path: Path) -> None:
    doc = load(path)
    validate(doc, kind_of(doc))


@pytest.mark.parametrize("path", MESSAGE_EXAMPLES, ids=lambda p: p.name)
def test_every_shared_example_round_trips(path: Path) -> None:
    doc = load(path)
    parsed = m.parse(doc)
    assert m.build(parsed) == doc
    assert m.parse(m.build(parsed)) == parsed


def test_packaged_schemas_are_the_shared_ones() -> None:
    root = resources.files("dataspace.contracts") / "schemas"
    for rel in SCHEMAS.values():
        assert (root / rel).read_text(encoding="utf-8") == (DSP / rel).read_text(encoding="utf-8")
    assert (root / "LICENSE").read_text(encoding="utf-8").startswith(
        (DSP / "LICENSE").read_text(encoding="utf-8")[:200])


# --- builders ----------------------------------------------------------------------------------

PIDS: dict[str, Any] = {"provider_pid": "urn:uuid:p-1", "consumer_pid": "urn:uuid:c-1"}


def _offer() -> Any:
    return from_template("aggregate-only", purposes=["credit-risk"], uid="urn:uuid:offer-1",
                         target="urn:uuid:ds-1", min_group_size=10)


def _catalog_offer() -> Any:
    import dataclasses

    return dataclasses.replace(_offer(), target=None)  # catalog offers carry no target


def _agreement() -> Any:
    import dataclasses

    from dataspace.policy import PolicyType

    return dataclasses.replace(
        _offer(), type=PolicyType.AGREEMENT, uid="urn:uuid:agr-1", assigner="tax-bureau",
        assignee="bank-a", extras=(("timestamp", "2026-01-05T10:00:00Z"),))


def _address() -> m.DataAddress:
    return m.DataAddress(endpoint_type="https://w3id.org/idsa/v4.1/HTTP",
                         endpoint="https://bank-a.example/in",
                         endpoint_properties=(m.EndpointProperty(name="authType", value="bearer"),))


BUILT = [
    m.CatalogRequestMessage(),
    m.CatalogRequestMessage(filter=()),
    m.DatasetRequestMessage(dataset="urn:uuid:ds-1"),
    m.CatalogError(code="404", reason=("no such catalog",)),
    m.Catalog(id="urn:uuid:cat-1", participant_id="tax-bureau",
              services=(m.DataService(id="urn:uuid:svc", endpoint_url="https://tax.example/dsp"),),
              datasets=(m.Dataset(id="urn:uuid:ds-1", offers=(_catalog_offer(),),
                                  distributions=(m.Distribution(format="governed-sql",
                                                                access_service="urn:uuid:svc"),)),)),
    m.Dataset(id="urn:uuid:ds-1", offers=(_catalog_offer(),), distributions=(
        m.Distribution(format="governed-sql", access_service=m.DataService(
            id="urn:uuid:svc", endpoint_url="https://tax.example/dsp")),)),
    m.ContractRequestMessage(consumer_pid="urn:uuid:c-1", offer=_offer(),
                             callback_address="https://bank-a.example/dsp/callback"),
    m.ContractRequestMessage(offer=_offer(), **PIDS),
    m.ContractOfferMessage(provider_pid="urn:uuid:p-1", offer=_offer(),
                           callback_address="https://tax.example/dsp"),
    m.ContractOfferMessage(offer=_offer(), **PIDS),
    m.ContractAgreementMessage(agreement=_agreement(), **PIDS),
    m.ContractAgreementVerificationMessage(**PIDS),
    m.ContractNegotiationEventMessage(event_type="ACCEPTED", **PIDS),
    m.ContractNegotiationEventMessage(event_type="FINALIZED", **PIDS),
    m.ContractNegotiationTerminationMessage(code="rejected", reason=("purpose not allowed",),
                                            **PIDS),
    m.ContractNegotiationTerminationMessage(**PIDS),
    m.ContractNegotiation(state="REQUESTED", **PIDS),
    m.ContractNegotiationError(code="illegal_transition", reason=("no",), **PIDS),
    m.TransferRequestMessage(consumer_pid="urn:uuid:c-1", agreement_id="urn:uuid:agr-1",
                             format="HttpData-PUSH", callback_address="https://bank-a.example/cb",
                             data_address=_address()),
    m.TransferRequestMessage(consumer_pid="urn:uuid:c-1", agreement_id="urn:uuid:agr-1",
                             format="HttpData-PULL", callback_address="https://bank-a.example/cb"),
    m.TransferStartMessage(data_address=_address(), **PIDS),
    m.TransferStartMessage(**PIDS),
    m.TransferCompletionMessage(**PIDS),
    m.TransferSuspensionMessage(code="paused", reason=("maintenance",), **PIDS),
    m.TransferTerminationMessage(**PIDS),
    m.TransferProcess(state="STARTED", **PIDS),
    m.TransferError(code="x", reason=("y",), **PIDS),
]


@pytest.mark.parametrize("message", BUILT, ids=lambda msg: type(msg).__name__)
def test_builder_output_validates_and_parses_back(message: Any) -> None:
    doc = m.build(message)
    assert doc["@context"] == ["https://w3id.org/dspace/2025/1/context.jsonld"]
    assert doc["@type"] == message.TYPE
    validate(doc, message.TYPE)
    assert m.parse(doc) == message


def test_every_message_kind_has_a_builder() -> None:
    built = {type(msg).TYPE for msg in BUILT}
    assert built == set(SCHEMAS) - {"VersionResponse"}


def test_numeric_right_operands_travel_as_typed_literals() -> None:
    doc = m.build(m.ContractRequestMessage(offer=_offer(), **PIDS))
    text = json.dumps(doc)
    assert '"@type": "xsd:integer"' in text
    assert m.parse(doc).offer == _offer()


def test_builder_refuses_an_offer_without_target() -> None:
    import dataclasses

    offer = dataclasses.replace(_offer(), target=None)
    with pytest.raises(ProtocolError, match=r"target"):
        m.build(m.ContractOfferMessage(offer=offer, **PIDS))


def test_version_response_validates() -> None:
    doc = m.version_response("/dsp", service_id="tax-bureau")
    assert doc["protocolVersions"][0] == {"version": "2025-1", "path": "/dsp", "binding": "HTTPS",
                                          "serviceId": "tax-bureau"}


# --- mutated messages are refused --------------------------------------------------------------


def _required_members(path: Path) -> list[tuple[Path, str]]:
    doc = load(path)
    return [(path, key) for key in doc if key in _required(kind_of(doc))]


def _required(kind: str) -> set[str]:
    from dataspace.contracts.schema import schema_for

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(node.get("required", []) if isinstance(node.get("required"), list)
                         else [])
            for key in ("allOf",):
                for sub in node.get(key, []):
                    walk(sub)
            ref = node.get("$ref", "")
            if ref.startswith("#/definitions/"):
                walk(schema_for(kind)["definitions"][ref.split("/")[-1]])

    walk(schema_for(kind))
    return found


MISSING = [pair for p in MESSAGE_EXAMPLES for pair in _required_members(p)]


def test_every_message_kind_has_required_member_cases() -> None:
    assert len({load(p)["@type"] for p, _ in MISSING}) == 20


@pytest.mark.parametrize(("path", "key"), MISSING, ids=lambda v: getattr(v, "name", v))
def test_missing_required_member_is_refused(path: Path, key: str) -> None:
    doc = load(path)
    kind = doc["@type"]
    del doc[key]
    with pytest.raises(ProtocolError) as info:
        validate(doc, kind)
    assert info.value.http_status == 400
    with pytest.raises(ProtocolError):
        m.parse(doc, kind)


@pytest.mark.parametrize("path", MESSAGE_EXAMPLES, ids=lambda p: p.name)
def test_wrong_type_is_refused(path: Path) -> None:
    doc = load(path)
    kind = doc["@type"]
    doc["@type"] = "ContractRequestMessage" if kind != "ContractRequestMessage" else "Offer"
    with pytest.raises(ProtocolError):
        validate(doc, kind)
    with pytest.raises(ProtocolError, match="expected"):
        m.parse(doc, kind)


@pytest.mark.parametrize(("name", "key", "bad"), [
    ("negotiation/example/contract-negotiation.json", "state", "STARTED"),
    ("negotiation/example/contract-negotiation.json", "state", "requested"),
    ("transfer/example/transfer-process.json", "state", "OFFERED"),
    ("negotiation/example/contract-negotiation-event-message.json", "eventType", "AGREED"),
    ("negotiation/example/contract-negotiation-event-message.json", "eventType", "dspace:ACCEPTED"),
])
def test_wrong_state_value_is_refused(name: str, key: str, bad: str) -> None:
    doc = load(DSP / name)
    doc[key] = bad
    with pytest.raises(ProtocolError) as info:
        m.parse(doc)
    assert info.value.details["path"] == f"$.{key}"


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda d: d["offer"].pop("@id"), "$.offer"),
    (lambda d: d["offer"]["permission"][0].pop("action"), "$.offer.permission[0]"),
    (lambda d: d["offer"]["permission"][0]["constraint"][0].update(operator="like"),
     "$.offer.permission[0].constraint[0]"),
    (lambda d: d.update(providerPid=42), "$.providerPid"),
    (lambda d: d.update({"@context": ["https://example.com/other.jsonld"]}), "$['@context']"),
])
def test_error_names_the_json_path(mutate: Any, path: str) -> None:
    doc = copy.deepcopy(load(DSP / "negotiation/example/contract-request-message.json"))
    mutate(doc)
    with pytest.raises(ProtocolError) as info:
        m.parse(doc)
    assert info.value.details["path"].startswith(path)
    assert path in info.value.message


def test_initial_request_needs_callback_or_provider_pid() -> None:
    doc = load(DSP / "negotiation/example/contract-request-message_initial.json")
    del doc["callbackAddress"]
    with pytest.raises(ProtocolError):
        m.parse(doc)


def test_dataset_with_wrong_type_is_refused() -> None:
    doc = load(DSP / "catalog/example/dataset.json")
    doc["@type"] = "Catalog"
    with pytest.raises(ProtocolError):
        m.parse(doc, "Dataset")


@pytest.mark.parametrize("doc", [[], "x", None, {"@type": "Nope"}, {}])
def test_non_messages_are_refused(doc: Any) -> None:
    with pytest.raises(ProtocolError):
        m.parse(doc)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown DSP message kind"):
        validate({}, "Offer")
