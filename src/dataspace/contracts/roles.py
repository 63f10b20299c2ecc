"""The two roles of a DSP process, and the shared core of the state machines."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from dataspace.contracts.errors import IllegalTransition, ProtocolError


class Role(StrEnum):
    """Which side of a process a party is on. In ``apply`` it is the *sender* of the message."""

    CONSUMER = "consumer"
    PROVIDER = "provider"

    @property
    def peer(self) -> Role:
        return Role.PROVIDER if self is Role.CONSUMER else Role.CONSUMER


S = TypeVar("S", bound=StrEnum)


def apply_table(
    process: str,
    table: Mapping[tuple[S | None, str, Role], S],
    messages: frozenset[str],
    state: S | None,
    message_type: str,
    role: Role | str,
) -> S:
    try:
        sender = Role(role)
    except ValueError:
        raise ProtocolError(f"unknown role {role!r}", hint="use consumer or provider") from None
    if message_type not in messages:
        raise ProtocolError(f"{message_type!r} is not a {process} message",
                            hint=f"use one of: {', '.join(sorted(messages))}")
    new = table.get((state, message_type, sender))
    if new is None:
        allowed = sorted(m for (s, m, r) in table if s == state and r == sender)
        where = f"in state {state.value}" if state is not None else "to start a process"
        raise IllegalTransition(
            f"a {message_type} from the {sender.value} is not allowed {where}",
            hint=("the {} may send: {}".format(sender.value, ", ".join(allowed)) if allowed
                  else f"the {sender.value} may send nothing {where}"),
            process=process,
            state=None if state is None else state.value,
            message_type=message_type,
            role=sender.value,
        )
    return new
