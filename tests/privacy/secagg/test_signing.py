"""Key advertisements signed with node keys: known answers, substituted and replayed keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dataspace.errors import VerificationError
from dataspace.privacy.secagg import (
    AdditiveSharing,
    AdvertisementRejected,
    Aggregator,
    PairwiseMasking,
    SessionConfig,
    advertisement,
    ed25519_signer,
    ed25519_verifier,
)
from dataspace.privacy.secagg.messages import decode
from privacy.secagg.common import make_config

PARTIES = (1, 2, 3)
NAMES = {1: "tax-bureau", 2: "grid", 3: "water"}
STRATEGIES = [PairwiseMasking(), AdditiveSharing()]


def _key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32)


def _verifier() -> object:
    return ed25519_verifier({i: _key(i).public_key() for i in PARTIES}, NAMES)


def test_advertisement_bytes_and_signature_known_answer() -> None:
    body = advertisement(bytes(range(16)), 2, b"\x01" * 32, b"\x02" * 32)
    assert body.hex() == (
        b"dataspace/secagg/v1/advertise/".hex()
        + bytes(range(16)).hex()
        + "00000002"
        + "01" * 32
        + "02" * 32
    )
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert key.public_key().public_bytes_raw().hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    signature = ed25519_signer(key)(body)
    assert signature.hex() == (
        "c4d1908c0300e5b412b7bf334bd7147484b05871006f1a62e6ba2b2b5eeba30a"
        "e1ddbc03e44f573bc4b159f781ee57fbc62266d3bc90170a9916ba67fb1ea50f"
    )
    verify = ed25519_verifier({2: key.public_key().public_bytes_raw()})
    verify(2, body, signature)  # accepted
    with pytest.raises(AdvertisementRejected, match="party 2 is not signed by its node key"):
        verify(2, body[:-1] + b"\x03", signature)  # s_pk altered
    with pytest.raises(AdvertisementRejected, match="no trusted node key for party 3"):
        verify(3, body, signature)
    with pytest.raises(AdvertisementRejected, match="party 2 is not signed —"):
        verify(2, body, b"")
    assert issubclass(AdvertisementRejected, VerificationError)


def _session(strategy: Aggregator, config: SessionConfig) -> tuple[dict[int, object], object]:
    verifier = _verifier()
    parties = {
        i: strategy.party(
            config, i, np.full(4, float(i)), signer=ed25519_signer(_key(i)), verifier=verifier
        )
        for i in PARTIES
    }
    coordinator = strategy.coordinator(config, verifier=verifier)
    return parties, coordinator


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_signed_session_runs_to_the_sum(strategy: Aggregator) -> None:
    config = make_config(PARTIES, length=4, threshold=3)
    parties, coordinator = _session(strategy, config)
    for p in parties.values():
        coordinator.receive(p.start())  # type: ignore[attr-defined]
    while not coordinator.finished:  # type: ignore[attr-defined]
        for i, message in coordinator.advance().items():  # type: ignore[attr-defined]
            coordinator.receive(parties[i].handle(message))  # type: ignore[attr-defined]
    assert np.allclose(coordinator.result().sum, np.full(4, 6.0))  # type: ignore[attr-defined]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_a_coordinator_that_substitutes_a_partys_keys_is_refused_by_every_party(
    strategy: Aggregator,
) -> None:
    config = make_config(PARTIES, length=4, threshold=3)
    parties, coordinator = _session(strategy, config)
    for p in parties.values():
        coordinator.receive(p.start())  # type: ignore[attr-defined]
    roster = coordinator.advance()  # type: ignore[attr-defined]
    own = X25519PrivateKey.generate().public_key().public_bytes_raw()
    for victim in (1, 3):
        msg = decode(roster[victim])
        blobs = {**msg.blobs, "c2": own}  # the coordinator's own key in grid's place
        forged = dataclasses.replace(msg, blobs=blobs).encode()
        with pytest.raises(AdvertisementRejected, match=r"party 2 \(grid\) is not signed"):
            parties[victim].handle(forged)  # type: ignore[attr-defined]


def test_keys_signed_by_another_member_or_for_another_session_are_refused() -> None:
    strategy = PairwiseMasking()
    config = make_config(PARTIES, length=4, threshold=3)
    parties, coordinator = _session(strategy, config)
    for p in parties.values():
        coordinator.receive(p.start())  # type: ignore[attr-defined]
    msg = decode(coordinator.advance()[1])  # type: ignore[attr-defined]
    c_pk = s_pk = X25519PrivateKey.generate().public_key().public_bytes_raw()
    # Keys for party 2, signed with water's (party 3's) real node key: still refused.
    sig = _key(3).sign(advertisement(config.session, 2, c_pk, s_pk))
    forged = dataclasses.replace(msg, blobs={**msg.blobs, "c2": c_pk, "s2": s_pk, "sig2": sig})
    with pytest.raises(AdvertisementRejected, match="party 2"):
        parties[1].handle(forged.encode())  # type: ignore[attr-defined]
    # grid's genuine advertisement from an earlier session, replayed into this one.
    old = make_config(PARTIES, length=4, threshold=3)
    sig = _key(2).sign(advertisement(old.session, 2, c_pk, s_pk))
    replayed = dataclasses.replace(msg, blobs={**msg.blobs, "c2": c_pk, "s2": s_pk, "sig2": sig})
    with pytest.raises(AdvertisementRejected, match="party 2"):
        parties[3].handle(replayed.encode())  # type: ignore[attr-defined]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_the_coordinator_refuses_unsigned_or_foreign_signed_advertisements(
    strategy: Aggregator,
) -> None:
    config = make_config(PARTIES, length=4, threshold=3)
    coordinator = strategy.coordinator(config, verifier=_verifier())  # type: ignore[arg-type]
    unsigned = strategy.party(config, 1, np.zeros(4)).start()
    with pytest.raises(AdvertisementRejected, match=r"party 1 \(tax-bureau\) is not signed"):
        coordinator.receive(unsigned)
    impostor = strategy.party(config, 2, np.zeros(4), signer=ed25519_signer(_key(3))).start()
    with pytest.raises(AdvertisementRejected, match=r"party 2 \(grid\)"):
        coordinator.receive(impostor)
