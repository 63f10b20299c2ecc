"""Validation of DSP 2025-1 messages against the official JSON schemas (shipped as package data).

The schemas are Draft 2019-09 and reference each other by ``https://w3id.org/dspace/2025/1/…``
URIs; every reference is resolved from the local copies through a ``referencing`` registry, so
validation never touches the network. Two upstream ``$ref``s are written ``#definitions/…``
(no slash) — not a JSON pointer; they are normalised to ``#/definitions/…`` on load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft201909Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT201909

from dataspace.contracts.errors import ProtocolError

BASE = "https://w3id.org/dspace/2025/1/"

#: message kind -> schema file (relative to the schemas directory)
SCHEMAS: dict[str, str] = {
    "CatalogRequestMessage": "catalog/catalog-request-message-schema.json",
    "DatasetRequestMessage": "catalog/dataset-request-message-schema.json",
    "Catalog": "catalog/catalog-schema.json",
    "Dataset": "catalog/dataset-schema.json",
    "CatalogError": "catalog/catalog-error-schema.json",
    "ContractRequestMessage": "negotiation/contract-request-message-schema.json",
    "ContractOfferMessage": "negotiation/contract-offer-message-schema.json",
    "ContractAgreementMessage": "negotiation/contract-agreement-message-schema.json",
    "ContractAgreementVerificationMessage":
        "negotiation/contract-agreement-verification-message-schema.json",
    "ContractNegotiationEventMessage": "negotiation/contract-negotiation-event-message-schema.json",
    "ContractNegotiationTerminationMessage":
        "negotiation/contract-negotiation-termination-message-schema.json",
    "ContractNegotiation": "negotiation/contract-negotiation-schema.json",
    "ContractNegotiationError": "negotiation/contract-negotiation-error-schema.json",
    "TransferRequestMessage": "transfer/transfer-request-message-schema.json",
    "TransferStartMessage": "transfer/transfer-start-message-schema.json",
    "TransferCompletionMessage": "transfer/transfer-completion-message-schema.json",
    "TransferSuspensionMessage": "transfer/transfer-suspension-message-schema.json",
    "TransferTerminationMessage": "transfer/transfer-termination-message-schema.json",
    "TransferProcess": "transfer/transfer-process-schema.json",
    "TransferError": "transfer/transfer-error-schema.json",
    "VersionResponse": "common/protocol-version-schema.json",
}

#: kinds whose JSON has no ``@type`` of the same name
_UNTYPED = frozenset({"VersionResponse"})
_DIRS = ("catalog", "common", "negotiation", "transfer")


def _fix_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and "#definitions/" in value:
                value = value.replace("#definitions/", "#/definitions/")
            out[key] = _fix_refs(value)
        return out
    if isinstance(node, list):
        return [_fix_refs(item) for item in node]
    return node


@cache
def _load() -> tuple[Registry, dict[str, dict[str, Any]]]:
    root = resources.files("dataspace.contracts") / "schemas"
    registry: Registry = Registry()
    by_file: dict[str, dict[str, Any]] = {}
    for directory in _DIRS:
        for entry in (root / directory).iterdir():
            if not entry.name.endswith(".json"):
                continue
            schema = _fix_refs(json.loads(entry.read_text(encoding="utf-8")))
            by_file[f"{directory}/{entry.name}"] = schema
            registry = registry.with_resource(
                schema["$id"], Resource.from_contents(schema, default_specification=DRAFT201909)
            )
    return registry.crawl(), by_file


@cache
def _validator(kind: str) -> Draft201909Validator:
    registry, by_file = _load()
    return Draft201909Validator(by_file[SCHEMAS[kind]], registry=registry)


def kinds() -> list[str]:
    """Every message kind :func:`validate` knows."""
    return list(SCHEMAS)


def schema_for(kind: str) -> dict[str, Any]:
    """The (normalised) JSON schema of one message kind."""
    if kind not in SCHEMAS:
        raise ProtocolError(f"unknown DSP message kind {kind!r}",
                            hint=f"use one of: {', '.join(SCHEMAS)}")
    return _load()[1][SCHEMAS[kind]]


def _describe(error: ValidationError) -> str:
    return f"{error.json_path}: {error.message}"


def validate(message: Mapping[str, Any] | Any, kind: str) -> None:
    """Validate ``message`` against the DSP 2025-1 schema of ``kind``.

    Raises :class:`ProtocolError` whose ``details['path']`` is the JSON path of the problem
    (``$.offer.permission[0].action``) and whose message says what is wrong there.
    """
    schema_for(kind)  # unknown kind -> ProtocolError
    if not isinstance(message, Mapping):
        raise ProtocolError(f"a {kind} must be a JSON object, not {type(message).__name__}",
                            path="$")
    error = best_match(_validator(kind).iter_errors(dict(message)))
    if error is not None:
        raise ProtocolError(
            f"invalid {kind}: {_describe(error)}",
            hint="see the DSP 2025-1 schema for this message",
            path=error.json_path,
        )
    if kind not in _UNTYPED and message.get("@type") != kind:
        # Dataset's schema does not pin @type; every message must carry its own type.
        raise ProtocolError(
            f"invalid {kind}: $.@type: expected {kind!r}, got {message.get('@type')!r}",
            path="$['@type']",
        )
