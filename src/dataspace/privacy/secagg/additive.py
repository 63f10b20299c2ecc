"""Additive secret sharing: the simpler strategy when no party drops out.

Party i splits its encoded vector x_i into n random shares mod 2^k that sum to x_i
(n − 1 drawn from a fresh PRG seed, the last one x_i minus their sum), keeps its own share and
sends share j to party j, AES-GCM-encrypted under HKDF(X25519(c_i, c_j)) and routed through the
coordinator. Each party adds the shares it holds and sends the partial sum; the coordinator
adds the n partial sums, which is Σ x_i.

Rounds: **advertise** (one X25519 key) → **shares** → **partial-sum**. Every party of the
roster must answer every round: one dropout aborts the session (use ``pairwise-masking``
when dropouts are expected). Any n − 1 colluding parties, coordinator included, learn nothing
beyond the sum about the remaining party's input. Traffic is O(n · length) per party.
"""

from __future__ import annotations

import secrets
import struct

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from dataspace.privacy.secagg import crypto
from dataspace.privacy.secagg.base import (
    Aggregator,
    CoordinatorRole,
    PartyRole,
    advertisement,
    release,
)
from dataspace.privacy.secagg.errors import NotAParticipant, SecAggError
from dataspace.privacy.secagg.messages import COORDINATOR, Message, vector_bytes

__all__ = ["AdditiveCoordinator", "AdditiveParty", "AdditiveSharing"]

PROTOCOL = "additive"


def _aad(session: bytes, sender: int, recipient: int) -> bytes:
    return crypto.DOMAIN + b"additive/" + session + struct.pack(">II", sender, recipient)


class AdditiveParty(PartyRole):
    protocol = PROTOCOL
    rounds = ("roster", "routed-shares")
    input_round = "roster"  # answered with the input's shares, sealed to the other parties

    def _setup(self) -> None:
        self._c = X25519PrivateKey.generate()
        self._peers: dict[int, X25519PublicKey] = {}

    def start(self) -> bytes:
        self._started()
        c_pk = crypto.public_bytes(self._c)
        sig = (
            self._signer(advertisement(self.config.session, self.index, c_pk))
            if self._signer
            else b""
        )
        return self._send("advertise", blobs={"c": c_pk, "sig": sig})

    def handle(self, message: bytes) -> bytes:
        msg = self._accept(message)
        if msg.kind == "roster":
            return self._share(msg)
        return self._partial_sum(msg)

    def _key(self, j: int) -> bytes:
        return crypto.pair_key(
            self._c, self._peers[j], b"additive", self.config.session, self.index, j
        )

    def _share(self, msg: Message) -> bytes:
        roster = msg.int_list("parties")
        if sorted(roster) != list(self.config.parties):
            raise NotAParticipant("additive sharing needs the whole roster", hint="abort")
        for j in roster:
            c_pk = msg.blob(f"c{j}", 32)
            if self._verifier:
                self._verifier(j, advertisement(self.config.session, j, c_pk), msg.blob(f"sig{j}"))
            self._peers[j] = crypto.load_public(c_pk)
        if self._peers[self.index].public_bytes_raw() != crypto.public_bytes(self._c):
            raise SecAggError("the roster carries another key for this party", hint="abort")
        own = self._x.copy()
        blobs: dict[str, bytes] = {}
        for j in roster:
            if j == self.index:
                continue
            share = crypto.prg(secrets.token_bytes(crypto.KEY_BYTES), own.size)
            own -= share
            share = self.config.encoding.wrap(share)
            aad = _aad(self.config.session, self.index, j)
            blobs[f"ct{j}"] = crypto.encrypt(self._key(j), vector_bytes(share), aad)
        self._x = self.config.encoding.wrap(own)
        return self._send("shares", blobs=blobs)

    def _partial_sum(self, msg: Message) -> bytes:
        routed = msg.indexed("ct")
        if set(routed) != set(self._peers) - {self.index}:
            raise NotAParticipant("additive sharing needs a share from every other party")
        total = self._x
        for j, ct in sorted(routed.items()):
            plain = crypto.decrypt(self._key(j), ct, _aad(self.config.session, j, self.index))
            if len(plain) != 8 * total.size:
                raise SecAggError(f"the share from party {j} has the wrong length")
            total += np.frombuffer(plain, dtype="<u8").astype(np.uint64)
        self._x = np.zeros(0, dtype=np.uint64)
        return self._send(
            "partial-sum", blobs={"z": vector_bytes(self.config.encoding.wrap(total))}
        )


class AdditiveCoordinator(CoordinatorRole):
    protocol = PROTOCOL
    rounds = ("advertise", "shares", "partial-sum")

    def check(self, msg: Message) -> None:
        if msg.kind == "advertise":
            c_pk, sig = msg.blob("c", 32), msg.blob("sig")
            if self._verifier:
                self._verifier(
                    msg.sender, advertisement(self.config.session, msg.sender, c_pk), sig
                )
        elif msg.kind == "shares":
            if set(msg.indexed("ct")) != set(self.config.parties) - {msg.sender}:
                raise SecAggError(f"party {msg.sender} did not send a share to every other party")
        else:
            msg.vector("z", self.config.length + 1)

    def advance(self) -> dict[int, bytes]:
        n = self.config.n
        why = "additive sharing (no dropouts)"
        if self.round == "advertise":
            arrived = self._close(n, why)
            blobs: dict[str, bytes] = {}
            for i, m in sorted(arrived.items()):
                blobs.update({f"c{i}": m.blob("c"), f"sig{i}": m.blob("sig")})
            roster = self._send(
                "roster", COORDINATOR, fields={"parties": sorted(arrived)}, blobs=blobs
            )
            return dict.fromkeys(arrived, roster)
        if self.round == "shares":
            arrived = self._close(n, why)
            return {
                j: self._send(
                    "routed-shares",
                    j,
                    blobs={f"ct{i}": arrived[i].blob(f"ct{j}") for i in arrived if i != j},
                )
                for j in arrived
            }
        arrived = self._close(n, why)
        total = np.zeros(self.config.length + 1, dtype=np.uint64)
        for m in arrived.values():
            total += m.vector("z", self.config.length + 1)
        self._finish(release(self.config, total, self.config.parties))
        return {}


class AdditiveSharing(Aggregator):
    """n-of-n additive secret sharing: no dropouts, n − 1 colluders learn nothing."""

    name = PROTOCOL
    tolerates_dropouts = False
    party_role = AdditiveParty
    coordinator_role = AdditiveCoordinator
