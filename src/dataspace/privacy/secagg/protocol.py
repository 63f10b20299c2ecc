"""Pairwise masking with dropout recovery: the semi-honest protocol of Bonawitz et al.,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017 (§4, Fig. 4
without the consistency-check round and signatures, which are for the active adversary).

Rounds (U1 ⊇ U2 ⊇ U3 ⊇ U4 are the parties still answering, each of size ≥ t):

0. **advertise** — party i sends two X25519 public keys: c_i (share encryption) and s_i
   (mask agreement), signed by ``signer`` when given. The coordinator broadcasts the roster U1.
1. **shares** — party i draws a self-mask seed b_i, Shamir-shares b_i and its s-private key
   t-of-|U1|, and sends each peer j its two shares AES-GCM-encrypted under
   HKDF(X25519(c_i, c_j)). The coordinator routes them: each j in U2 gets the ciphertexts
   addressed to it.
2. **masked-input** — party i sends y_i = x_i + PRG(b_i) + Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij)
   mod 2^k over j ∈ U2, with s_ij = HKDF(X25519(s_i, s_j)).
   The coordinator broadcasts the survivors U3.
3. **unmask-shares** — party i ∈ U3 reveals its shares of b_j for j ∈ U3 and of s_j for
   j ∈ U2 \\ U3 (never both for the same j). With t of them the coordinator rebuilds the b_j
   and the dropped parties' s-keys, removes PRG(b_j) and the dropped parties' pairwise masks
   from Σ y_j, and decodes.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from dataspace.privacy.secagg import crypto
from dataspace.privacy.secagg.base import (
    AggregateResult,
    Aggregator,
    CoordinatorRole,
    PartyRole,
    SessionConfig,
    Verifier,
    advertisement,
    release,
    sorted_tuple,
)
from dataspace.privacy.secagg.encoding import UintVector
from dataspace.privacy.secagg.errors import NotAParticipant, SecAggError, TooFewSurvivors
from dataspace.privacy.secagg.messages import COORDINATOR, Message, vector_bytes
from dataspace.privacy.secagg.shamir import SHARE_BYTES, Shamir

__all__ = ["MaskingCoordinator", "MaskingParty", "PairwiseMasking"]

PROTOCOL = "pairwise-masking"
_PLAIN = struct.Struct(">II")


def _aad(session: bytes, sender: int, recipient: int) -> bytes:
    return crypto.DOMAIN + b"shares/" + session + _PLAIN.pack(sender, recipient)


def _check_members(what: str, members: Sequence[int], allowed: set[int], t: int) -> None:
    if len(set(members)) != len(members) or not set(members) <= allowed:
        raise NotAParticipant(f"the {what} names parties outside the session or twice")
    if len(members) < t:
        raise TooFewSurvivors(
            f"the {what} has {len(members)} parties, below the threshold {t}; aborting",
            hint="nothing is revealed; retry when more parties are reachable",
        )


class MaskingParty(PartyRole):
    protocol = PROTOCOL
    rounds = ("roster", "routed-shares", "unmask-request")
    input_round = "routed-shares"  # answered with the masked input

    def _setup(self) -> None:
        self._c = X25519PrivateKey.generate()
        self._s = X25519PrivateKey.generate()
        self._b = secrets.token_bytes(crypto.KEY_BYTES)
        self._s_pk: dict[int, X25519PublicKey] = {}
        self._c_pk: dict[int, X25519PublicKey] = {}
        self._u2: tuple[int, ...] = ()
        self._held: dict[int, tuple[bytes, bytes]] = {}  # j -> (share of s_j, share of b_j)

    def start(self) -> bytes:
        self._started()
        c_pk, s_pk = crypto.public_bytes(self._c), crypto.public_bytes(self._s)
        body = advertisement(self.config.session, self.index, c_pk, s_pk)
        sig = self._signer(body) if self._signer else b""
        return self._send("advertise", blobs={"c": c_pk, "s": s_pk, "sig": sig})

    def handle(self, message: bytes) -> bytes:
        msg = self._accept(message)
        if msg.kind == "roster":
            return self._share_keys(msg)
        if msg.kind == "routed-shares":
            return self._masked_input(msg)
        return self._unmask(msg)

    def _share_keys(self, msg: Message) -> bytes:
        u1 = msg.int_list("parties")
        _check_members("roster", u1, set(self.config.parties), self.config.threshold)
        if self.index not in u1:
            raise NotAParticipant(f"party {self.index} is not on the roster")
        for j in u1:
            c_pk, s_pk = msg.blob(f"c{j}", 32), msg.blob(f"s{j}", 32)
            if self._verifier:
                self._verifier(
                    j, advertisement(self.config.session, j, c_pk, s_pk), msg.blob(f"sig{j}")
                )
            self._c_pk[j], self._s_pk[j] = crypto.load_public(c_pk), crypto.load_public(s_pk)
        if self._s_pk[self.index].public_bytes_raw() != crypto.public_bytes(self._s) or (
            self._c_pk[self.index].public_bytes_raw() != crypto.public_bytes(self._c)
        ):
            raise SecAggError("the roster carries other keys for this party", hint="abort")
        shamir = Shamir(self.config.threshold)
        s_secret = int.from_bytes(crypto.private_bytes(self._s), "big")
        s_shares = shamir.split(s_secret, u1)
        b_shares = shamir.split(int.from_bytes(self._b, "big"), u1)
        blobs: dict[str, bytes] = {}
        for j in u1:
            pair = (s_shares[j].y_bytes(), b_shares[j].y_bytes())
            if j == self.index:
                self._held[j] = pair
                continue
            key = crypto.pair_key(
                self._c, self._c_pk[j], b"share-enc", self.config.session, self.index, j
            )
            plain = _PLAIN.pack(self.index, j) + pair[0] + pair[1]
            blobs[f"ct{j}"] = crypto.encrypt(key, plain, _aad(self.config.session, self.index, j))
        return self._send("shares", blobs=blobs)

    def _masked_input(self, msg: Message) -> bytes:
        routed = msg.indexed("ct")
        u2 = sorted_tuple({*routed, self.index})
        _check_members("share routing", u2, set(self._c_pk), self.config.threshold)
        for j, ct in routed.items():
            if j == self.index:
                raise NotAParticipant("a share routed from this party to itself")
            key = crypto.pair_key(
                self._c, self._c_pk[j], b"share-enc", self.config.session, self.index, j
            )
            plain = crypto.decrypt(key, ct, _aad(self.config.session, j, self.index))
            if len(plain) != _PLAIN.size + 2 * SHARE_BYTES or _PLAIN.unpack_from(plain) != (
                j,
                self.index,
            ):
                raise SecAggError(f"the share from party {j} is malformed")
            body = plain[_PLAIN.size :]
            self._held[j] = (body[:SHARE_BYTES], body[SHARE_BYTES:])
        self._u2 = u2
        y = self._x + crypto.prg(self._b, self._x.size)
        for j in u2:
            if j == self.index:
                continue
            seed = crypto.pair_key(
                self._s, self._s_pk[j], b"mask", self.config.session, self.index, j
            )
            if j > self.index:
                y += crypto.prg(seed, y.size)
            else:
                y -= crypto.prg(seed, y.size)
        y = self.config.encoding.wrap(y)
        self._x = np.zeros(0, dtype=np.uint64)  # the plaintext is no longer needed
        return self._send("masked-input", blobs={"y": vector_bytes(y)})

    def _unmask(self, msg: Message) -> bytes:
        u3 = msg.int_list("survivors")
        _check_members("survivor list", u3, set(self._u2), self.config.threshold)
        if self.index not in u3:
            raise NotAParticipant(f"party {self.index} is not among the survivors")
        blobs: dict[str, bytes] = {}
        for j in self._u2:
            s_share, b_share = self._held[j]
            if j in u3:
                blobs[f"b{j}"] = b_share
            else:
                blobs[f"s{j}"] = s_share
        self._held = {}
        return self._send("unmask-shares", blobs=blobs)


class MaskingCoordinator(CoordinatorRole):
    protocol = PROTOCOL
    rounds = ("advertise", "shares", "masked-input", "unmask-shares")

    def __init__(self, config: SessionConfig, *, verifier: Verifier | None = None) -> None:
        super().__init__(config, verifier=verifier)
        self.keys: dict[int, tuple[bytes, bytes, bytes]] = {}  # c_pk, s_pk, signature
        self.masked: dict[int, UintVector] = {}  # the coordinator's whole view of the inputs
        self.u2: tuple[int, ...] = ()
        self.u3: tuple[int, ...] = ()

    def check(self, msg: Message) -> None:
        if msg.kind == "advertise":
            c_pk, s_pk, sig = msg.blob("c", 32), msg.blob("s", 32), msg.blob("sig")
            if self._verifier:
                self._verifier(
                    msg.sender, advertisement(self.config.session, msg.sender, c_pk, s_pk), sig
                )
        elif msg.kind == "shares":
            if set(msg.indexed("ct")) != set(self.keys) - {msg.sender}:
                raise SecAggError(f"party {msg.sender} did not send a share to every roster member")
        elif msg.kind == "masked-input":
            msg.vector("y", self.config.length + 1)
        else:
            names = {f"b{j}" for j in self.u3} | {f"s{j}" for j in set(self.u2) - set(self.u3)}
            if set(msg.blobs) != names or any(len(v) != SHARE_BYTES for v in msg.blobs.values()):
                raise SecAggError(f"party {msg.sender} revealed the wrong set of shares")

    def advance(self) -> dict[int, bytes]:
        t = self.config.threshold
        if self.round == "advertise":
            arrived = self._close(t, "the key roster")
            blobs: dict[str, bytes] = {}
            for i, m in sorted(arrived.items()):
                self.keys[i] = (m.blob("c"), m.blob("s"), m.blob("sig"))
                blobs.update({f"c{i}": m.blob("c"), f"s{i}": m.blob("s"), f"sig{i}": m.blob("sig")})
            roster = self._send(
                "roster", COORDINATOR, fields={"parties": sorted(arrived)}, blobs=blobs
            )
            return dict.fromkeys(arrived, roster)
        if self.round == "shares":
            arrived = self._close(t, "sharing keys")
            self.u2 = sorted_tuple(arrived)
            return {
                j: self._send(
                    "routed-shares",
                    j,
                    blobs={f"ct{i}": arrived[i].blob(f"ct{j}") for i in self.u2 if i != j},
                )
                for j in self.u2
            }
        if self.round == "masked-input":
            arrived = self._close(t, "masked inputs")
            self.u3 = sorted_tuple(arrived)
            self.masked = {i: m.vector("y", self.config.length + 1) for i, m in arrived.items()}
            request = self._send("unmask-request", COORDINATOR, fields={"survivors": list(self.u3)})
            return dict.fromkeys(self.u3, request)
        arrived = self._close(t, "unmasking")
        self._finish(self._unmask(arrived))
        return {}

    def _unmask(self, arrived: dict[int, Message]) -> AggregateResult:
        shamir = Shamir(self.config.threshold)
        size = self.config.length + 1
        total = np.zeros(size, dtype=np.uint64)
        for y in self.masked.values():
            total += y
        for j in self.u3:
            b = self._secret(shamir, arrived, f"b{j}")
            total -= crypto.prg(b, size)
        for d in sorted(set(self.u2) - set(self.u3)):
            s_key = crypto.load_private(self._secret(shamir, arrived, f"s{d}"))
            if crypto.public_bytes(s_key) != self.keys[d][1]:
                raise SecAggError(
                    f"the key rebuilt for dropped party {d} does not match its advertised key",
                    hint="a share was wrong; nothing is released",
                )
            for k in self.u3:
                peer = crypto.load_public(self.keys[k][1])
                mask = crypto.prg(
                    crypto.pair_key(s_key, peer, b"mask", self.config.session, d, k), size
                )
                if d > k:
                    total -= mask
                else:
                    total += mask
        result = release(self.config, total, self.u3)
        self.masked = {}
        return result

    @staticmethod
    def _secret(shamir: Shamir, arrived: dict[int, Message], name: str) -> bytes:
        value = shamir.reconstruct(Shamir.share_from(i, m.blob(name)) for i, m in arrived.items())
        if value >= 1 << 256:
            raise SecAggError("a reconstructed secret is out of range", hint="a share was wrong")
        return value.to_bytes(crypto.KEY_BYTES, "big")


class PairwiseMasking(Aggregator):
    """Bonawitz et al. pairwise masking: tolerates up to n − t dropouts."""

    name = PROTOCOL
    tolerates_dropouts = True
    party_role = MaskingParty
    coordinator_role = MaskingCoordinator
