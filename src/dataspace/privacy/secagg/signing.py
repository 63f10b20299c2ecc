"""Key advertisements signed with the parties' Ed25519 node keys.

Round 0 of both strategies advertises each party's X25519 public keys. Unsigned, whoever
relays the roster (the coordinator) could hand the parties keys of its own and read the
shares meant for a peer. With these hooks every party signs its advertisement with its node
key, and every receiver — each party for the whole roster, and the coordinator — checks it
against the key it already trusts for that node (the space's membership list)::

    party = strategy.party(config, i, values, signer=ed25519_signer(node_key))
    party = strategy.party(config, i, values, verifier=ed25519_verifier({1: pk1, 2: pk2}))

The signed bytes are :func:`~dataspace.privacy.secagg.base.advertisement`:
``"dataspace/secagg/v1/advertise/" || session || index (u32) || c_pk || s_pk``, so a
signature binds the keys to one party index of one session and cannot be replayed in another.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dataspace.privacy.secagg.base import Signer, Verifier
from dataspace.privacy.secagg.errors import AdvertisementRejected

__all__ = ["ed25519_signer", "ed25519_verifier"]

SIGNATURE_BYTES = 64


def ed25519_signer(key: Ed25519PrivateKey) -> Signer:
    """Sign advertisements with ``key`` (Ed25519, RFC 8032: deterministic)."""
    return key.sign


def ed25519_verifier(
    keys: Mapping[int, Ed25519PublicKey | bytes], names: Mapping[int, str] | None = None
) -> Verifier:
    """Check party ``index``'s advertisement against ``keys[index]``; raise if it fails.

    ``names`` (party index → node name) only make the error say whose key failed.
    """
    trusted = {
        i: k if isinstance(k, Ed25519PublicKey) else Ed25519PublicKey.from_public_bytes(k)
        for i, k in keys.items()
    }

    def verify(index: int, message: bytes, signature: bytes) -> None:
        who = f"party {index}" + (f" ({names[index]})" if names and index in names else "")
        key = trusted.get(index)
        if key is None:
            raise AdvertisementRejected(
                f"no trusted node key for {who}: its key advertisement cannot be checked",
                hint="every party of the session must be on the space's membership list",
            )
        if len(signature) != SIGNATURE_BYTES:
            raise AdvertisementRejected(
                f"the key advertisement of {who} is not signed",
                hint="each party signs its keys with its node key; abort the session",
            )
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise AdvertisementRejected(
                f"the key advertisement of {who} is not signed by its node key: the keys were "
                "substituted or altered on the way",
                hint="do not trust the coordinator that relayed them; abort the session",
            ) from None

    return verify
