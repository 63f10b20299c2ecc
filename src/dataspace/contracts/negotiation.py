"""The DSP 2025-1 contract negotiation state machine (pure).

Both parties keep the same state; a message moves it once the receiver ACKs. ``apply(state,
message_type, role)`` gives the state after ``role`` (the *sender*) sent ``message_type`` in
``state`` (``None``: no negotiation yet), or raises :class:`IllegalTransition`.

    (none)    --ContractRequestMessage (C)-->            REQUESTED
    (none)    --ContractOfferMessage (P)-->              OFFERED
    REQUESTED --ContractOfferMessage (P)-->              OFFERED
    REQUESTED --ContractAgreementMessage (P)-->          AGREED
    OFFERED   --ContractRequestMessage (C)-->            REQUESTED
    OFFERED   --event ACCEPTED (C)-->                    ACCEPTED
    ACCEPTED  --ContractAgreementMessage (P)-->          AGREED
    AGREED    --ContractAgreementVerificationMessage (C)--> VERIFIED
    VERIFIED  --event FINALIZED (P)-->                   FINALIZED
    any non-terminal --ContractNegotiationTerminationMessage (C or P)--> TERMINATED

FINALIZED and TERMINATED are terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

from dataspace.contracts.errors import ProtocolError
from dataspace.contracts.roles import Role, apply_table
from dataspace.errors import DataspaceError


class NegotiationState(StrEnum):
    REQUESTED = "REQUESTED"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    AGREED = "AGREED"
    VERIFIED = "VERIFIED"
    FINALIZED = "FINALIZED"
    TERMINATED = "TERMINATED"


TERMINAL = frozenset({NegotiationState.FINALIZED, NegotiationState.TERMINATED})

REQUEST = "ContractRequestMessage"
OFFER = "ContractOfferMessage"
AGREEMENT = "ContractAgreementMessage"
VERIFICATION = "ContractAgreementVerificationMessage"
ACCEPTED_EVENT = "ContractNegotiationEventMessage:ACCEPTED"
FINALIZED_EVENT = "ContractNegotiationEventMessage:FINALIZED"
TERMINATION = "ContractNegotiationTerminationMessage"

#: every message type that moves a negotiation (events split by ``eventType``)
MESSAGES = frozenset({REQUEST, OFFER, AGREEMENT, VERIFICATION, ACCEPTED_EVENT, FINALIZED_EVENT,
                      TERMINATION})

_S = NegotiationState
C, P = Role.CONSUMER, Role.PROVIDER

TRANSITIONS: dict[tuple[NegotiationState | None, str, Role], NegotiationState] = {
    (None, REQUEST, C): _S.REQUESTED,
    (None, OFFER, P): _S.OFFERED,
    (_S.REQUESTED, OFFER, P): _S.OFFERED,
    (_S.REQUESTED, AGREEMENT, P): _S.AGREED,
    (_S.OFFERED, REQUEST, C): _S.REQUESTED,
    (_S.OFFERED, ACCEPTED_EVENT, C): _S.ACCEPTED,
    (_S.ACCEPTED, AGREEMENT, P): _S.AGREED,
    (_S.AGREED, VERIFICATION, C): _S.VERIFIED,
    (_S.VERIFIED, FINALIZED_EVENT, P): _S.FINALIZED,
    **{(s, TERMINATION, r): _S.TERMINATED
       for s in _S if s not in TERMINAL for r in (C, P)},
}


def apply(state: NegotiationState | str | None, message_type: str,
          role: Role | str) -> NegotiationState:
    """The negotiation state after ``role`` sent ``message_type`` in ``state``.

    Raises :class:`IllegalTransition` (HTTP 400) if the spec does not allow it.
    """
    current = None if state is None else _state(state)
    return apply_table("contract negotiation", TRANSITIONS, MESSAGES, current, message_type, role)


def allowed(state: NegotiationState | str | None, role: Role | str) -> list[str]:
    """The message types ``role`` may send in ``state``."""
    current = None if state is None else _state(state)
    return sorted(m for (s, m, r) in TRANSITIONS if s == current and r == Role(role))


def message_type(message: Mapping[str, Any] | Any) -> str:
    """The transition key of a message (JSON or typed): events become ``…:ACCEPTED`` etc."""
    if isinstance(message, Mapping):
        kind, event = message.get("@type"), message.get("eventType")
    else:
        kind, event = getattr(message, "TYPE", None), getattr(message, "event_type", None)
    if kind == "ContractNegotiationEventMessage":
        return f"{kind}:{event}"
    return str(kind)


def _state(value: NegotiationState | str) -> NegotiationState:
    try:
        return NegotiationState(value)
    except ValueError:
        raise ProtocolError(f"unknown contract negotiation state {value!r}") from None


class HasPids(Protocol):
    @property
    def provider_pid(self) -> str | None: ...
    @property
    def consumer_pid(self) -> str | None: ...


def error_body(process: HasPids | None, exc: DataspaceError) -> dict[str, Any]:
    """A ContractNegotiationError for ``exc`` (pids from ``process``; ``""`` when unknown)."""
    from dataspace.contracts.messages import ContractNegotiationError

    reason = [exc.message] + ([exc.hint] if exc.hint else [])
    return ContractNegotiationError(
        provider_pid=(process.provider_pid if process else None) or "",
        consumer_pid=(process.consumer_pid if process else None) or "",
        code=exc.code,
        reason=tuple(reason),
    ).to_json()
