"""The DSP 2025-1 transfer process state machine (pure).

``apply(state, message_type, role)``: the state after ``role`` (the *sender*) sent
``message_type`` in ``state`` (``None``: no transfer yet), or :class:`IllegalTransition`.

    (none)    --TransferRequestMessage (C)-->          REQUESTED
    REQUESTED --TransferStartMessage (P)-->            STARTED
    SUSPENDED --TransferStartMessage (C or P)-->       STARTED   (restart after suspension)
    STARTED   --TransferSuspensionMessage (C or P)-->  SUSPENDED
    STARTED   --TransferCompletionMessage (C or P)-->  COMPLETED
    REQUESTED, STARTED, SUSPENDED --TransferTerminationMessage (C or P)--> TERMINATED

COMPLETED and TERMINATED are terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from dataspace.contracts.errors import ProtocolError
from dataspace.contracts.negotiation import HasPids
from dataspace.contracts.roles import Role, apply_table
from dataspace.errors import DataspaceError


class TransferState(StrEnum):
    REQUESTED = "REQUESTED"
    STARTED = "STARTED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"


TERMINAL = frozenset({TransferState.COMPLETED, TransferState.TERMINATED})

REQUEST = "TransferRequestMessage"
START = "TransferStartMessage"
SUSPENSION = "TransferSuspensionMessage"
COMPLETION = "TransferCompletionMessage"
TERMINATION = "TransferTerminationMessage"
MESSAGES = frozenset({REQUEST, START, SUSPENSION, COMPLETION, TERMINATION})

_S = TransferState
C, P = Role.CONSUMER, Role.PROVIDER

TRANSITIONS: dict[tuple[TransferState | None, str, Role], TransferState] = {
    (None, REQUEST, C): _S.REQUESTED,
    (_S.REQUESTED, START, P): _S.STARTED,
    (_S.SUSPENDED, START, P): _S.STARTED,
    (_S.SUSPENDED, START, C): _S.STARTED,
    (_S.STARTED, SUSPENSION, C): _S.SUSPENDED,
    (_S.STARTED, SUSPENSION, P): _S.SUSPENDED,
    (_S.STARTED, COMPLETION, C): _S.COMPLETED,
    (_S.STARTED, COMPLETION, P): _S.COMPLETED,
    **{(s, TERMINATION, r): _S.TERMINATED
       for s in _S if s not in TERMINAL for r in (C, P)},
}


def apply(state: TransferState | str | None, message_type: str, role: Role | str) -> TransferState:
    """The transfer state after ``role`` sent ``message_type`` in ``state``.

    Raises :class:`IllegalTransition` (HTTP 400) if the spec does not allow it.
    """
    current = None if state is None else _state(state)
    return apply_table("transfer process", TRANSITIONS, MESSAGES, current, message_type, role)


def repeats(state: TransferState | str, message_type: str, role: Role | str) -> bool:
    """Whether ``role`` sending ``message_type`` could have led to ``state`` — so a message
    arriving in that state may be a retried delivery of the one that did (answered, no change)."""
    current, sender = _state(state), Role(role)
    return any(m == message_type and r == sender and after == current
               for (_s, m, r), after in TRANSITIONS.items())


def allowed(state: TransferState | str | None, role: Role | str) -> list[str]:
    """The message types ``role`` may send in ``state``."""
    current = None if state is None else _state(state)
    return sorted(m for (s, m, r) in TRANSITIONS if s == current and r == Role(role))


def message_type(message: Mapping[str, Any] | Any) -> str:
    if isinstance(message, Mapping):
        return str(message.get("@type"))
    return str(getattr(message, "TYPE", None))


def _state(value: TransferState | str) -> TransferState:
    try:
        return TransferState(value)
    except ValueError:
        raise ProtocolError(f"unknown transfer process state {value!r}") from None


def error_body(process: HasPids | None, exc: DataspaceError) -> dict[str, Any]:
    """A TransferError for ``exc`` (pids from ``process``; ``""`` when unknown)."""
    from dataspace.contracts.messages import TransferError

    reason = [exc.message] + ([exc.hint] if exc.hint else [])
    return TransferError(
        provider_pid=(process.provider_pid if process else None) or "",
        consumer_pid=(process.consumer_pid if process else None) or "",
        code=exc.code,
        reason=tuple(reason),
    ).to_json()
