"""What every secure-aggregation strategy shares: the session, the roles, the result.

A strategy (:class:`Aggregator`) makes a :class:`PartyRole` per party and one
:class:`CoordinatorRole`; both are state machines that speak only bytes
(:mod:`dataspace.privacy.secagg.messages`), so the node layer can carry them over HTTP::

    first = party.start()                  # party → coordinator
    coordinator.receive(first)             # ... from every party, until a deadline
    for index, message in coordinator.advance().items():   # coordinator → party
        coordinator.receive(parties[index].handle(message))
    ...                                    # until coordinator.finished
    coordinator.result()

A role refuses a message for another session or protocol, for a round it is not in
(:class:`OutOfOrder`) and from or to a party outside the round (:class:`NotAParticipant`).
A retried identical message is accepted once and ignored after; a different second message
from the same party in the same round is refused.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from dataspace.errors import UsageError
from dataspace.privacy.dp import Noise
from dataspace.privacy.secagg import crypto
from dataspace.privacy.secagg.encoding import FixedPoint, UintVector
from dataspace.privacy.secagg.errors import (
    NotAParticipant,
    OutOfOrder,
    SecAggError,
    TooFewSurvivors,
)
from dataspace.privacy.secagg.messages import COORDINATOR, Message, decode

__all__ = [
    "AggregateResult",
    "Aggregator",
    "CoordinatorRole",
    "PartyRole",
    "SessionConfig",
    "Signer",
    "Verifier",
    "advertisement",
    "encode_input",
    "release",
]

#: Signs a key advertisement (the node key, wired by the node layer).
Signer = Callable[[bytes], bytes]
#: Checks party ``index``'s signature over a key advertisement; raises on failure.
Verifier = Callable[[int, bytes, bytes], None]


def advertisement(session: bytes, index: int, c_pk: bytes, s_pk: bytes = b"") -> bytes:
    """The bytes a party signs to advertise its keys (the node-key signing hook)."""
    return crypto.DOMAIN + b"advertise/" + session + struct.pack(">I", index) + c_pk + s_pk


@dataclass(frozen=True)
class SessionConfig:
    """What every participant agrees before the first message.

    ``session`` is a fresh unique id (the job id, at least 16 bytes) bound into every key
    derivation and message. ``parties`` are the party indices (≥ 1, the roster order);
    ``length`` the vector length; ``threshold`` t (default ⌊n/2⌋ + 1) the fewest parties that
    must remain for the sum to be released.
    """

    session: bytes
    parties: tuple[int, ...]
    length: int
    encoding: FixedPoint
    threshold: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.session, bytes) or not 16 <= len(self.session) <= 64:
            raise UsageError("session must be 16 to 64 bytes (e.g. secrets.token_bytes(16))")
        parties = tuple(self.parties)
        if not parties or len(set(parties)) != len(parties):
            raise UsageError("parties must be a non-empty list of distinct indices")
        if any(
            isinstance(p, bool) or not isinstance(p, int) or not 1 <= p < 2**31 for p in parties
        ):
            raise UsageError("party indices must be integers in [1, 2^31)")
        object.__setattr__(self, "parties", tuple(sorted(parties)))
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise UsageError(f"length must be a positive integer, got {self.length!r}")
        n = len(parties)
        t = self.threshold or n // 2 + 1
        if not 1 <= t <= n:
            raise UsageError(f"threshold must be in [1, {n}], got {self.threshold}")
        object.__setattr__(self, "threshold", t)
        self.encoding.check_capacity(n)

    @property
    def n(self) -> int:
        return len(self.parties)


@dataclass(frozen=True)
class AggregateResult:
    """The released aggregate: ``sum`` (per coordinate), ``count`` and ``mean`` = sum / count.

    ``parties`` are those whose input is in the sum, ``dropped`` those who were not.
    ``error_bound`` is the worst-case fixed-point rounding error of each sum coordinate;
    ``noise`` and ``count_noise`` describe DP noise when it was added.
    """

    sum: npt.NDArray[np.float64]
    count: float
    parties: tuple[int, ...]
    dropped: tuple[int, ...]
    error_bound: float
    noise: Noise | None = field(default=None, compare=False)
    count_noise: Noise | None = field(default=None, compare=False)

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        if self.count <= 0:
            raise SecAggError("the mean of an empty aggregate (count 0) is undefined")
        mean: npt.NDArray[np.float64] = self.sum / self.count
        return mean

    @property
    def epsilon(self) -> float:
        return sum(n.epsilon for n in (self.noise, self.count_noise) if n is not None)

    @property
    def delta(self) -> float:
        return sum(n.delta for n in (self.noise, self.count_noise) if n is not None)


def encode_input(
    config: SessionConfig, index: int, values: Sequence[float] | npt.ArrayLike, count: int
) -> UintVector:
    """Party ``index``'s input as the session's fixed point (count last), refused unless it
    has exactly ``config.length`` values, all finite and within the agreed bound."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size != config.length:
        raise SecAggError(f"party {index} has {x.size} values, the session wants {config.length}")
    return config.encoding.encode(x, count)


def release(
    config: SessionConfig, total: UintVector, parties: tuple[int, ...]
) -> AggregateResult:
    """The aggregate of ``parties``' inputs from the unmasked sum of their encodings (mod 2^k):
    decoded with the overflow check (:meth:`FixedPoint.decode_sum`), the others dropped."""
    encoding = config.encoding
    sums, count = encoding.decode_sum(encoding.wrap(total), len(parties))
    return AggregateResult(
        sum=sums,
        count=count,
        parties=parties,
        dropped=tuple(p for p in config.parties if p not in parties),
        error_bound=encoding.error_bound(len(parties)),
    )


class PartyRole(ABC):
    """One party's side: ``start()`` then ``handle()`` each coordinator message in turn.

    The input is checked and encoded on construction (:func:`encode_input`); a strategy draws
    its fresh keys in :meth:`_setup`."""

    protocol: ClassVar[str]
    #: The coordinator message kind each round expects, in order.
    rounds: ClassVar[tuple[str, ...]]
    #: The round whose reply carries this party's input (masked, or in shares): before it is
    #: answered, nothing derived from the input has left the party.
    input_round: ClassVar[str]

    def __init__(
        self,
        config: SessionConfig,
        index: int,
        values: Sequence[float] | npt.ArrayLike,
        count: int = 1,
        *,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        if index not in config.parties:
            raise NotAParticipant(f"party {index} is not in this session's roster")
        self.config = config
        self.index = index
        self.step = -1  # -1: not started; len(rounds): done
        self._x = encode_input(config, index, values, count)
        self._signer, self._verifier = signer, verifier
        self._setup()

    def _setup(self) -> None:  # noqa: B027 - optional hook
        """Draw the strategy's fresh per-session secrets."""

    @property
    def done(self) -> bool:
        return self.step >= len(self.rounds)

    @property
    def input_sent(self) -> bool:
        """Whether the reply carrying the input may have left: its round was accepted (the
        reply may yet be lost, but is counted as sent)."""
        return self.step > self.rounds.index(self.input_round)

    def _send(
        self,
        kind: str,
        fields: Mapping[str, Any] | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> bytes:
        return Message(
            kind,
            self.protocol,
            self.config.session,
            self.index,
            COORDINATOR,
            dict(fields or {}),
            dict(blobs or {}),
        ).encode()

    def _started(self) -> None:
        if self.step != -1:
            raise OutOfOrder(f"party {self.index} has already started")
        self.step = 0

    def _accept(self, data: bytes) -> Message:
        """Decode a coordinator message and check it belongs to this party's current round."""
        msg = decode(data)
        if msg.session != self.config.session or msg.protocol != self.protocol:
            raise SecAggError("a message from another session or protocol", hint="drop it")
        if msg.sender != COORDINATOR or msg.recipient not in (COORDINATOR, self.index):
            raise NotAParticipant(
                f"party {self.index} takes messages only from the coordinator, addressed to it"
            )
        if self.step < 0 or self.done or msg.kind != self.rounds[self.step]:
            expected = "nothing" if self.step < 0 or self.done else self.rounds[self.step]
            raise OutOfOrder(
                f"party {self.index} expects {expected}, got {msg.kind}",
                hint="messages must follow the protocol's rounds",
            )
        self.step += 1
        return msg

    @abstractmethod
    def start(self) -> bytes:
        """The party's first message."""

    @abstractmethod
    def handle(self, message: bytes) -> bytes:
        """The reply to the coordinator's message for the current round."""


class CoordinatorRole(ABC):
    """The coordinator's side: ``receive()`` party messages, ``advance()`` to close a round."""

    protocol: ClassVar[str]
    #: The party message kind each round collects, in order.
    rounds: ClassVar[tuple[str, ...]]

    def __init__(self, config: SessionConfig, *, verifier: Verifier | None = None) -> None:
        self.config = config
        self._verifier = verifier
        self.step = 0
        self.expected: frozenset[int] = frozenset(config.parties)
        self.inbox: dict[int, Message] = {}
        self._raw: dict[int, bytes] = {}
        self._result: AggregateResult | None = None
        self.aborted: str | None = None

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def round(self) -> str:
        return self.rounds[self.step] if self.step < len(self.rounds) else "done"

    def pending(self) -> frozenset[int]:
        """Parties whose message for the current round has not arrived."""
        return self.expected - self.inbox.keys()

    def receive(self, data: bytes) -> None:
        if self.aborted or self.finished:
            raise OutOfOrder(f"the session is {'aborted' if self.aborted else 'finished'}")
        msg = decode(data)
        if msg.session != self.config.session or msg.protocol != self.protocol:
            raise SecAggError("a message from another session or protocol", hint="drop it")
        if msg.recipient != COORDINATOR:
            raise NotAParticipant("the coordinator takes only messages addressed to it")
        if msg.kind != self.round:
            raise OutOfOrder(
                f"the coordinator is collecting {self.round}, got {msg.kind} from {msg.sender}",
                hint="messages must follow the protocol's rounds",
            )
        if msg.sender not in self.expected:
            raise NotAParticipant(f"party {msg.sender} is not a participant of round {self.round}")
        if msg.sender in self._raw:
            if self._raw[msg.sender] == bytes(data):
                return  # a retried delivery: idempotent
            raise SecAggError(f"party {msg.sender} sent two different {msg.kind} messages")
        self.check(msg)
        self._raw[msg.sender] = bytes(data)
        self.inbox[msg.sender] = msg

    def _send(
        self,
        kind: str,
        recipient: int = COORDINATOR,
        fields: Mapping[str, Any] | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> bytes:
        return Message(
            kind,
            self.protocol,
            self.config.session,
            COORDINATOR,
            recipient,
            dict(fields or {}),
            dict(blobs or {}),
        ).encode()

    def _close(self, at_least: int, why: str) -> dict[int, Message]:
        """End the current round with what arrived; parties not heard from have dropped."""
        if self.aborted or self.finished:
            raise OutOfOrder(f"the session is {'aborted' if self.aborted else 'finished'}")
        arrived = dict(self.inbox)
        if len(arrived) < at_least:
            self.aborted = (
                f"only {len(arrived)} of {len(self.expected)} parties answered {self.round}; "
                f"{why} needs {at_least}"
            )
            raise TooFewSurvivors(
                self.aborted + "; nothing is released",
                hint="retry the job when more parties are reachable",
                survivors=sorted(arrived),
            )
        self.expected = frozenset(arrived)
        self.inbox, self._raw = {}, {}
        self.step += 1
        return arrived

    def _finish(self, result: AggregateResult) -> None:
        self._result = result

    def result(self) -> AggregateResult:
        if self._result is None:
            raise OutOfOrder(f"no result yet: the coordinator is at round {self.round}")
        return self._result

    def check(self, msg: Message) -> None:  # noqa: B027 - optional hook
        """Strategy-specific validation of one party message on arrival."""

    @abstractmethod
    def advance(self) -> dict[int, bytes]:
        """Close the current round: the messages to send, by party index ({} when done)."""


class Aggregator:
    """A secure-aggregation strategy, chosen by name: it makes its ``party_role`` and
    ``coordinator_role``."""

    name: ClassVar[str]
    tolerates_dropouts: ClassVar[bool]
    party_role: ClassVar[type[PartyRole]]
    coordinator_role: ClassVar[type[CoordinatorRole]]

    def party(
        self,
        config: SessionConfig,
        index: int,
        values: Sequence[float] | npt.ArrayLike,
        count: int = 1,
        *,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
    ) -> PartyRole:
        return self.party_role(config, index, values, count, signer=signer, verifier=verifier)

    def coordinator(
        self, config: SessionConfig, *, verifier: Verifier | None = None
    ) -> CoordinatorRole:
        return self.coordinator_role(config, verifier=verifier)


def sorted_tuple(items: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(items))
