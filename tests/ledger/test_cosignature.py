"""Witness cosignatures (C2SP tlog-cosignature/v1): the spec's message, known answers, and
every way a cosigned note can be bent."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataspace.errors import SignatureError
from dataspace.identity.note import NoteSigner, open_note
from dataspace.ledger.checkpoint import Checkpoint
from dataspace.ledger.cosignature import (
    CosignatureVerifier,
    Cosigner,
    check_quorum,
    cosigner_key_id,
    signed_message,
)

# The checkpoint and time of the example in c2sp.org/tlog-cosignature.
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_TIME = 1679315147


def _signer(name: str, seed: str) -> NoteSigner:
    raw = hashlib.sha256(seed.encode()).digest()
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(raw))


LOG = _signer("dataspace/bank", "log")
WITNESS = _signer("dataspace/tax", "witness")
NOTE = Checkpoint("dataspace/bank", 7, hashlib.sha256(b"root").digest()).sign([LOG])
TEXT = NOTE[: NOTE.index("\n\n") + 1]


def test_the_signed_message_is_the_specs() -> None:
    assert signed_message(SPEC_TEXT, SPEC_TIME) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


def test_the_key_id_uses_algorithm_byte_4() -> None:
    pub = WITNESS.public_bytes
    expected = hashlib.sha256(b"dataspace/tax\n\x04" + pub).digest()[:4]
    assert cosigner_key_id("dataspace/tax", pub) == expected
    assert expected != WITNESS.key_id  # the note key's ID (0x01) differs


def test_a_cosignature_line_has_key_id_big_endian_time_and_signature() -> None:
    line = Cosigner(WITNESS).cosign(TEXT, SPEC_TIME)
    name, blob = line.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = base64.b64decode(blob)
    assert name == "dataspace/tax" and len(raw) == 4 + 8 + 64
    assert raw[:4] == cosigner_key_id(name, WITNESS.public_bytes)
    assert struct.unpack(">Q", raw[4:12]) == (SPEC_TIME,)
    # Ed25519 is deterministic: the same checkpoint and time give the same line
    assert Cosigner(WITNESS).cosign(TEXT, SPEC_TIME) == line


def test_a_cosigned_note_verifies_for_the_witness_and_still_opens_for_the_log() -> None:
    cosigned = NOTE + Cosigner(WITNESS).cosign(TEXT, SPEC_TIME)
    assert Cosigner(WITNESS).verifier().verify(cosigned) == SPEC_TIME
    assert open_note(cosigned, [LOG.verifier()]).verified_by == ["dataspace/bank"]


def _bent(line: str, change: str) -> str:
    name, blob = line.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(blob))
    if change == "time":
        raw[11] ^= 1
    elif change == "signature":
        raw[-1] ^= 1
    return f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"


@pytest.mark.parametrize("change", ["time", "signature", "text"])
def test_a_bent_cosignature_does_not_verify(change: str) -> None:
    line = Cosigner(WITNESS).cosign(TEXT, SPEC_TIME)
    note = NOTE + (line if change == "text" else _bent(line, change))
    if change == "text":
        note = note.replace("\n7\n", "\n8\n", 1)
    with pytest.raises(SignatureError, match="does not verify"):
        Cosigner(WITNESS).verifier().verify(note)


def test_a_forged_line_beside_a_good_one_rejects_the_note() -> None:
    line = Cosigner(WITNESS).cosign(TEXT, SPEC_TIME)
    with pytest.raises(SignatureError, match="does not verify"):
        Cosigner(WITNESS).verifier().verify(NOTE + line + _bent(line, "signature"))


def test_a_cosignature_by_another_key_of_the_same_name_is_not_the_witnesss() -> None:
    impostor = _signer("dataspace/tax", "impostor")
    note = NOTE + Cosigner(impostor).cosign(TEXT, SPEC_TIME)
    with pytest.raises(SignatureError, match="carries no cosignature"):
        Cosigner(WITNESS).verifier().verify(note)


def test_the_log_signing_its_own_note_again_is_no_cosignature() -> None:
    """A note signature (0x01) by the witness's key is not a cosignature (0x04)."""
    note = Checkpoint("dataspace/bank", 7, hashlib.sha256(b"root").digest()).sign([LOG, WITNESS])
    with pytest.raises(SignatureError, match="carries no cosignature"):
        Cosigner(WITNESS).verifier().verify(note)


def test_witness_keys_parse_from_a_node_key_or_a_cosigner_key() -> None:
    from_node_pub = CosignatureVerifier.parse(WITNESS.verifier_key())
    cosigner = Cosigner(WITNESS).verifier()
    assert from_node_pub.key_id == cosigner.key_id
    assert CosignatureVerifier.parse(cosigner.vkey()).key_id == cosigner.key_id
    name, _key_id, key = cosigner.vkey().split("+", 2)
    with pytest.raises(SignatureError, match="names key ID"):
        CosignatureVerifier.parse(f"{name}+00000000+{key}")
    with pytest.raises(SignatureError, match="malformed"):
        CosignatureVerifier.parse("not a key")


def test_a_quorum_counts_valid_cosignatures_of_the_named_witnesses() -> None:
    grid = _signer("dataspace/grid", "grid")
    power = _signer("dataspace/power", "power")
    verifiers = [Cosigner(s).verifier() for s in (WITNESS, grid, power)]
    note = NOTE + Cosigner(WITNESS).cosign(TEXT, 100) + Cosigner(grid).cosign(TEXT, 200)
    assert check_quorum(note, verifiers, 2) == {"dataspace/tax": 100, "dataspace/grid": 200}
    with pytest.raises(SignatureError, match="2 of the 3 witness cosignatures needed"):
        check_quorum(note, verifiers)  # all three by default
    with pytest.raises(SignatureError, match="is not one"):
        check_quorum(note, verifiers, 0)


def test_timestamps_must_fit_63_bits() -> None:
    with pytest.raises(SignatureError, match="out of range"):
        signed_message(TEXT, 2**63)


def test_one_key_under_two_names_counts_once_or_not_at_all() -> None:
    alias = CosignatureVerifier("tax-alias", WITNESS.public_bytes)
    note = NOTE + Cosigner(WITNESS).cosign(TEXT, 100)
    with pytest.raises(SignatureError, match="one key is listed as two witnesses"):
        check_quorum(note, [Cosigner(WITNESS).verifier(), alias], 2, now=1000)


def test_a_cosignature_from_the_future_is_refused() -> None:
    note = NOTE + Cosigner(WITNESS).cosign(TEXT, 10_000)
    verifier = Cosigner(WITNESS).verifier()
    assert check_quorum(note, [verifier], now=10_000 - 600) == {"dataspace/tax": 10_000}
    with pytest.raises(SignatureError, match="in the future"):
        check_quorum(note, [verifier], now=10_000 - 601)
