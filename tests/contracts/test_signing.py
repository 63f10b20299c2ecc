"""Ed25519 agreement signatures: known good, and tampered agreements named after the attack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataspace.contracts import canonical_agreement, parse, sign_agreement, verify_agreement
from dataspace.errors import SignatureError

EXAMPLE = Path(__file__).parent / "dsp/negotiation/example/contract-agreement-message.json"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def agreement() -> dict[str, Any]:
    return dict(json.loads(EXAMPLE.read_text())["agreement"])


def test_signature_verifies_for_json_and_parsed_policy() -> None:
    sig = sign_agreement(agreement(), KEY)
    verify_agreement(agreement(), sig, KEY.public_key())
    policy = parse(json.loads(EXAMPLE.read_text())).agreement
    verify_agreement(policy, sig, KEY.public_key())
    verify_agreement(agreement(), sig, KEY.public_key().public_bytes_raw())


def test_canonical_form_ignores_key_order_and_context() -> None:
    doc = agreement()
    shuffled = {"@context": ["x"], **dict(reversed(list(doc.items())))}
    assert canonical_agreement(doc) == canonical_agreement(shuffled)
    assert canonical_agreement(doc).startswith(b"dataspace/agreement/v1\n")


def test_changed_assignee_is_detected() -> None:
    sig = sign_agreement(agreement(), KEY)
    forged = {**agreement(), "assignee": "http://example.com/Mallory"}
    with pytest.raises(SignatureError, match="does not verify"):
        verify_agreement(forged, sig, KEY.public_key())


def test_widened_permission_is_detected() -> None:
    sig = sign_agreement(agreement(), KEY)
    forged = agreement()
    del forged["permission"][0]["constraint"]
    with pytest.raises(SignatureError):
        verify_agreement(forged, sig, KEY.public_key())


def test_signature_by_another_key_is_refused() -> None:
    sig = sign_agreement(agreement(), Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError):
        verify_agreement(agreement(), sig, KEY.public_key())


@pytest.mark.parametrize("sig", ["not base64!", "", "AAAA"])
def test_malformed_signatures_are_refused(sig: str) -> None:
    with pytest.raises(SignatureError):
        verify_agreement(agreement(), sig, KEY.public_key())


def test_offer_cannot_be_signed_as_agreement() -> None:
    with pytest.raises(SignatureError, match="Agreement"):
        sign_agreement({**agreement(), "@type": "Offer"}, KEY)


def test_bad_public_key_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify_agreement(agreement(), sign_agreement(agreement(), KEY), b"short")
