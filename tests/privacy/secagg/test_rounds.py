"""The state machines: tampered shares, rounds out of order, strangers, retries, signatures."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataspace.errors import SignatureError
from dataspace.privacy.secagg import (
    NotAParticipant,
    OutOfOrder,
    PairwiseMasking,
    SecAggError,
    SessionConfig,
    ShareRejected,
)
from dataspace.privacy.secagg.messages import Message, decode
from dataspace.privacy.secagg.protocol import MaskingCoordinator, MaskingParty
from privacy.secagg.common import PARTIES, make_config

Inputs = dict[int, npt.NDArray[np.float64]]
STRATEGY = PairwiseMasking()


def _edit(data: bytes, **changes: object) -> bytes:
    return dataclasses.replace(decode(data), **changes).encode()  # type: ignore[arg-type]


def _flip(blob: bytes, at: int = -1) -> bytes:
    raw = bytearray(blob)
    raw[at] ^= 0x01
    return bytes(raw)


def _to_shares_round(
    config: SessionConfig, inputs: Inputs
) -> tuple[MaskingCoordinator, dict[int, MaskingParty], dict[int, bytes]]:
    """Run advertise; return the parties' share messages, not yet delivered."""
    coordinator = STRATEGY.coordinator(config)
    parties = {i: STRATEGY.party(config, i, inputs[i]) for i in PARTIES}
    for p in parties.values():
        coordinator.receive(p.start())
    roster = coordinator.advance()
    return coordinator, parties, {i: parties[i].handle(m) for i, m in roster.items()}


@pytest.mark.parametrize("at", [0, 12, 40, -1])  # nonce, body, tag
def test_a_garbled_share_ciphertext_is_rejected(
    config: SessionConfig, inputs: Inputs, at: int
) -> None:
    coordinator, parties, shares = _to_shares_round(config, inputs)
    msg = decode(shares[2])
    blobs = dict(msg.blobs)
    blobs["ct4"] = _flip(blobs["ct4"], at)
    shares[2] = _edit(shares[2], blobs=blobs)
    for data in shares.values():
        coordinator.receive(data)
    routed = coordinator.advance()
    parties[1].handle(routed[1])  # other recipients are unaffected
    with pytest.raises(ShareRejected, match="AES-GCM"):
        parties[4].handle(routed[4])


def test_a_truncated_share_ciphertext_is_rejected(config: SessionConfig, inputs: Inputs) -> None:
    coordinator, parties, shares = _to_shares_round(config, inputs)
    for data in shares.values():
        coordinator.receive(data)
    routed = decode(coordinator.advance()[3])
    blobs = dict(routed.blobs)
    blobs["ct1"] = blobs["ct1"][:20]
    with pytest.raises(ShareRejected, match="truncated"):
        parties[3].handle(dataclasses.replace(routed, blobs=blobs).encode())


def test_a_share_routed_to_the_wrong_party_is_rejected(
    config: SessionConfig, inputs: Inputs
) -> None:
    coordinator, parties, shares = _to_shares_round(config, inputs)
    for data in shares.values():
        coordinator.receive(data)
    routed = coordinator.advance()
    meant_for_2 = decode(routed[2]).blobs
    swapped = dict(decode(routed[3]).blobs)
    swapped["ct1"] = meant_for_2["ct1"]  # party 1's shares for 2, handed to 3
    with pytest.raises(ShareRejected):
        parties[3].handle(_edit(routed[3], blobs=swapped))


def test_the_coordinator_refuses_out_of_order_messages(
    config: SessionConfig, inputs: Inputs
) -> None:
    coordinator, _parties, _shares = _to_shares_round(config, inputs)
    with pytest.raises(OutOfOrder, match="collecting shares, got advertise"):
        coordinator.receive(STRATEGY.party(config, 1, inputs[1]).start())
    early = Message("masked-input", "pairwise-masking", config.session, 1).encode()
    with pytest.raises(OutOfOrder, match="got masked-input"):
        coordinator.receive(early)
    with pytest.raises(OutOfOrder, match="no result yet"):
        coordinator.result()


def test_a_party_refuses_out_of_order_messages(config: SessionConfig, inputs: Inputs) -> None:
    coordinator, parties, shares = _to_shares_round(config, inputs)
    for data in shares.values():
        coordinator.receive(data)
    routed = coordinator.advance()
    unmask = Message(
        "unmask-request", "pairwise-masking", config.session, 0, fields={"survivors": [1, 2, 3]}
    ).encode()
    with pytest.raises(OutOfOrder, match="expects routed-shares, got unmask-request"):
        parties[1].handle(unmask)  # no revealing before the masked input
    with pytest.raises(OutOfOrder, match="already started"):
        parties[1].start()
    fresh = STRATEGY.party(config, 1, inputs[1])
    with pytest.raises(OutOfOrder, match="expects nothing"):
        fresh.handle(routed[1])
    for i, m in routed.items():
        coordinator.receive(parties[i].handle(m))
    request = coordinator.advance()
    for i, m in request.items():
        coordinator.receive(parties[i].handle(m))
    with pytest.raises(OutOfOrder, match="expects nothing"):
        parties[1].handle(request[1])  # a second unmasking request is never answered
    coordinator.advance()
    assert coordinator.finished
    with pytest.raises(OutOfOrder, match="finished"):
        coordinator.receive(shares[1])


def test_messages_from_strangers_are_refused(config: SessionConfig, inputs: Inputs) -> None:
    coordinator = STRATEGY.coordinator(config)
    with pytest.raises(NotAParticipant):
        STRATEGY.party(config, 9, inputs[1])
    outsider = make_config(parties=(1, 2, 3, 4, 5, 9))
    stranger = STRATEGY.party(dataclasses.replace(outsider, session=config.session), 9, inputs[1])
    with pytest.raises(NotAParticipant, match="party 9 is not a participant"):
        coordinator.receive(stranger.start())
    # Once party 5 has dropped, its later messages are refused too.
    parties = {i: STRATEGY.party(config, i, inputs[i]) for i in PARTIES}
    for i in (1, 2, 3, 4):
        coordinator.receive(parties[i].start())
    late = parties[5].start()
    roster = coordinator.advance()
    assert 5 not in roster
    shares = {i: parties[i].handle(m) for i, m in roster.items()}
    with pytest.raises(OutOfOrder):
        coordinator.receive(late)
    forged = _edit(shares[1], sender=5)
    with pytest.raises(NotAParticipant, match="party 5"):
        coordinator.receive(forged)
    # A party only takes messages from the coordinator.
    with pytest.raises(NotAParticipant, match="only from the coordinator"):
        parties[2].handle(_edit(roster[2], sender=1))


def test_another_sessions_messages_are_refused(config: SessionConfig, inputs: Inputs) -> None:
    other = make_config()
    coordinator = STRATEGY.coordinator(config)
    with pytest.raises(SecAggError, match="another session"):
        coordinator.receive(STRATEGY.party(other, 1, inputs[1]).start())


def test_a_retried_message_is_idempotent_but_a_different_one_is_refused(
    config: SessionConfig, inputs: Inputs
) -> None:
    coordinator = STRATEGY.coordinator(config)
    first = STRATEGY.party(config, 1, inputs[1]).start()
    coordinator.receive(first)
    coordinator.receive(first)
    with pytest.raises(SecAggError, match="two different"):
        coordinator.receive(STRATEGY.party(config, 1, inputs[1]).start())
    assert coordinator.pending() == {2, 3, 4, 5}


def test_garbage_is_not_a_message(config: SessionConfig) -> None:
    coordinator = STRATEGY.coordinator(config)
    good = Message("advertise", "pairwise-masking", config.session, 1, blobs={"c": b"x"}).encode()
    for bad in (b"", b"hello world", good[:-1], good + b"!", b"DSAG\x02" + good[5:]):
        with pytest.raises(SecAggError):
            coordinator.receive(bad)
    with pytest.raises(SecAggError, match="must be 32 bytes"):
        coordinator.receive(good)


def test_key_advertisements_can_be_signed_with_node_keys(
    config: SessionConfig, inputs: Inputs
) -> None:
    """The hook the node layer fills with its Ed25519 node keys."""
    keys = {i: Ed25519PrivateKey.generate() for i in PARTIES}

    def verifier(index: int, body: bytes, signature: bytes) -> None:
        try:
            keys[index].public_key().verify(signature, body)
        except InvalidSignature:
            raise SignatureError(f"party {index}'s key advertisement is not signed") from None

    coordinator = STRATEGY.coordinator(config, verifier=verifier)
    parties = {
        i: STRATEGY.party(config, i, inputs[i], signer=keys[i].sign, verifier=verifier)
        for i in PARTIES
    }
    unsigned = STRATEGY.party(config, 1, inputs[1]).start()
    with pytest.raises(SignatureError):
        coordinator.receive(unsigned)
    for p in parties.values():
        coordinator.receive(p.start())
    roster = coordinator.advance()
    # A coordinator that swaps a key in the roster is caught by the parties.
    swapped = dict(decode(roster[1]).blobs)
    swapped["c2"] = swapped["c3"]
    with pytest.raises(SignatureError):
        parties[1].handle(_edit(roster[1], blobs=swapped))
