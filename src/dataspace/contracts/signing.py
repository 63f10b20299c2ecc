"""Ed25519 signatures over contract agreements (pure).

Both sides sign the same bytes: the domain tag ``dataspace/agreement/v1`` and a newline,
followed by the canonical JSON of the ODRL Agreement exactly as the ContractAgreementMessage
carries it (without ``@context``): keys sorted, no insignificant whitespace, UTF-8, numbers as
Python's ``json`` writes them, NaN/Infinity refused. The tag keeps an agreement signature from
being replayed as any other signed object of this node (checkpoints, requests).

Signatures are standard base64 of the 64-byte Ed25519 signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dataspace.contracts.messages import policy_to_wire
from dataspace.errors import SignatureError
from dataspace.policy import Policy

DOMAIN = b"dataspace/agreement/v1\n"


def canonical_agreement(agreement: Policy | Mapping[str, Any]) -> bytes:
    """The bytes both parties sign for ``agreement`` (an ODRL Agreement)."""
    doc = policy_to_wire(agreement) if isinstance(agreement, Policy) else dict(agreement)
    doc.pop("@context", None)
    if doc.get("@type") != "Agreement":
        raise SignatureError("only an ODRL Agreement can be signed",
                             hint="sign the agreement of a ContractAgreementMessage")
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SignatureError(f"the agreement is not canonical JSON: {exc}") from exc
    return DOMAIN + text.encode("utf-8")


def sign_agreement(agreement: Policy | Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """Sign the canonical agreement; returns the base64 signature."""
    return base64.b64encode(key.sign(canonical_agreement(agreement))).decode("ascii")


def _public(key: Ed25519PublicKey | bytes) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}") from exc


def verify_agreement(agreement: Policy | Mapping[str, Any], signature: str,
                     key: Ed25519PublicKey | bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``key``'s over ``agreement``."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise SignatureError("the agreement signature is not valid base64") from exc
    if len(raw) != 64:
        raise SignatureError(f"an Ed25519 signature has 64 bytes, this one {len(raw)}")
    try:
        _public(key).verify(raw, canonical_agreement(agreement))
    except InvalidSignature:
        raise SignatureError(
            "the agreement signature does not verify",
            hint="the agreement was changed after signing, or signed by another key",
        ) from None
