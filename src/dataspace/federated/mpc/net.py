"""An in-process network of byte mailboxes, and the log of every opened value.

Parties are objects in one process; everything one hands another goes through
:meth:`Network.send` as the bytes of :mod:`wire` — the same bytes the HTTP orchestration
will carry between nodes — and is counted per link.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dataspace.federated.errors import MalformedMessage
from dataspace.federated.mpc.wire import Message, decode, encode, encode_arrays


@dataclass
class LinkStats:
    messages: int = 0
    bytes: int = 0


class Network:
    """Mailboxes keyed by (sender, recipient); messages are delivered in order."""

    def __init__(self) -> None:
        self._boxes: dict[tuple[str, str], deque[bytes]] = defaultdict(deque)
        self._seq: dict[str, int] = defaultdict(int)
        self.links: dict[tuple[str, str], LinkStats] = defaultdict(LinkStats)

    def send(self, sender: str, recipient: str, tag: str, array: npt.NDArray[np.generic]) -> int:
        return self._send(
            sender, recipient, lambda seq: encode(Message(sender, recipient, tag, array, seq))
        )

    def send_arrays(
        self, sender: str, recipient: str, tag: str, arrays: Sequence[npt.NDArray[np.uint64]]
    ) -> int:
        """Several arrays as one message (:func:`~.wire.pack_arrays`'s payload)."""
        return self._send(
            sender, recipient, lambda seq: encode_arrays(sender, recipient, tag, arrays, seq)
        )

    def _send(self, sender: str, recipient: str, make: Callable[[int], bytes]) -> int:
        """File the message ``make`` encodes with the sender's next sequence number."""
        seq = self._seq[sender]
        self._seq[sender] = seq + 1
        data = make(seq)
        self._boxes[(sender, recipient)].append(data)
        stats = self.links[(sender, recipient)]
        stats.messages += 1
        stats.bytes += len(data)
        return len(data)

    def recv(self, recipient: str, sender: str, tag: str) -> npt.NDArray[np.generic]:
        box = self._boxes[(sender, recipient)]
        if not box:
            raise MalformedMessage(f"{recipient} expected {tag!r} from {sender}, nothing arrived")
        msg = decode(box.popleft())
        if msg.recipient != recipient or msg.sender != sender or msg.tag != tag:
            raise MalformedMessage(
                f"{recipient} expected {tag!r} from {sender}, got {msg.tag!r} "
                f"from {msg.sender} to {msg.recipient}"
            )
        return msg.array

    def pending(self) -> int:
        return sum(len(box) for box in self._boxes.values())

    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.links.values())


@dataclass(frozen=True)
class Opening:
    """One value revealed in the clear: what it is, to whom, its shape, and when."""

    what: str
    to: tuple[str, ...]
    shape: tuple[int, ...]
    step: str = ""


@dataclass
class OpenLog:
    """Every value opened in the clear (``openings``), and a count of the masked openings
    inside Beaver multiplications, which are uniformly random and reveal nothing."""

    openings: list[Opening] = field(default_factory=list)
    masked_openings: int = 0
    masked_elements: int = 0
    step: str = ""

    def opened(self, what: str, to: tuple[str, ...], shape: tuple[int, ...]) -> None:
        self.openings.append(Opening(what, to, shape, self.step))

    def masked(self, elements: int) -> None:
        self.masked_openings += 1
        self.masked_elements += elements
