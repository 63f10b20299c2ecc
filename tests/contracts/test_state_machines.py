"""Every (state × message × sender) of both DSP state machines against the spec's tables."""

from __future__ import annotations

import contextlib
import itertools

import pytest

from dataspace.contracts import negotiation as cn
from dataspace.contracts import transfer as tp
from dataspace.contracts.errors import IllegalTransition, ProtocolError
from dataspace.contracts.roles import Role
from dataspace.errors import DataspaceError, InputError

# Written out from DSP 2025-1 "Contract Negotiation Protocol": state, message, sender -> state.
# "-" is "no negotiation yet"; C consumer, P provider.
NEGOTIATION_SPEC = """
-          ContractRequestMessage                    C  REQUESTED
-          ContractOfferMessage                      P  OFFERED
REQUESTED  ContractOfferMessage                      P  OFFERED
REQUESTED  ContractAgreementMessage                  P  AGREED
OFFERED    ContractRequestMessage                    C  REQUESTED
OFFERED    ContractNegotiationEventMessage:ACCEPTED  C  ACCEPTED
ACCEPTED   ContractAgreementMessage                  P  AGREED
AGREED     ContractAgreementVerificationMessage      C  VERIFIED
VERIFIED   ContractNegotiationEventMessage:FINALIZED P  FINALIZED
REQUESTED  ContractNegotiationTerminationMessage     C  TERMINATED
REQUESTED  ContractNegotiationTerminationMessage     P  TERMINATED
OFFERED    ContractNegotiationTerminationMessage     C  TERMINATED
OFFERED    ContractNegotiationTerminationMessage     P  TERMINATED
ACCEPTED   ContractNegotiationTerminationMessage     C  TERMINATED
ACCEPTED   ContractNegotiationTerminationMessage     P  TERMINATED
AGREED     ContractNegotiationTerminationMessage     C  TERMINATED
AGREED     ContractNegotiationTerminationMessage     P  TERMINATED
VERIFIED   ContractNegotiationTerminationMessage     C  TERMINATED
VERIFIED   ContractNegotiationTerminationMessage     P  TERMINATED
"""

# DSP 2025-1 "Transfer Process Protocol" and its HTTPS binding (the consumer may POST a
# TransferStartMessage to restart a suspended transfer).
TRANSFER_SPEC = """
-          TransferRequestMessage      C  REQUESTED
REQUESTED  TransferStartMessage        P  STARTED
SUSPENDED  TransferStartMessage        P  STARTED
SUSPENDED  TransferStartMessage        C  STARTED
STARTED    TransferSuspensionMessage   C  SUSPENDED
STARTED    TransferSuspensionMessage   P  SUSPENDED
STARTED    TransferCompletionMessage   C  COMPLETED
STARTED    TransferCompletionMessage   P  COMPLETED
REQUESTED  TransferTerminationMessage  C  TERMINATED
REQUESTED  TransferTerminationMessage  P  TERMINATED
STARTED    TransferTerminationMessage  C  TERMINATED
STARTED    TransferTerminationMessage  P  TERMINATED
SUSPENDED  TransferTerminationMessage  C  TERMINATED
SUSPENDED  TransferTerminationMessage  P  TERMINATED
"""

ROLES = {"C": Role.CONSUMER, "P": Role.PROVIDER}


def _table(text: str) -> dict[tuple[str | None, str, Role], str]:
    out = {}
    for line in text.strip().splitlines():
        state, message, role, new = line.split()
        out[(None if state == "-" else state, message, ROLES[role])] = new
    return out


def _observed(module, states) -> dict[tuple[str | None, str, Role], str]:  # type: ignore[no-untyped-def]
    out = {}
    for state, message, role in itertools.product([None, *states], sorted(module.MESSAGES), Role):
        with contextlib.suppress(IllegalTransition):
            out[(state, message, role)] = module.apply(state, message, role).value
    return out


def test_negotiation_table_is_exactly_the_spec() -> None:
    states = [s.value for s in cn.NegotiationState]
    assert _observed(cn, states) == _table(NEGOTIATION_SPEC)


def test_transfer_table_is_exactly_the_spec() -> None:
    states = [s.value for s in tp.TransferState]
    assert _observed(tp, states) == _table(TRANSFER_SPEC)


NEG_CASES = list(itertools.product([None, *cn.NegotiationState], sorted(cn.MESSAGES), Role))
TP_CASES = list(itertools.product([None, *tp.TransferState], sorted(tp.MESSAGES), Role))


@pytest.mark.parametrize(("state", "message", "role"), NEG_CASES)
def test_each_negotiation_combination(state, message, role) -> None:  # type: ignore[no-untyped-def]
    expected = _table(NEGOTIATION_SPEC).get((None if state is None else state.value, message, role))
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            cn.apply(state, message, role)
        assert info.value.http_status == 400
        assert info.value.details["message_type"] == message
        assert isinstance(info.value, ProtocolError | InputError)
    else:
        assert cn.apply(state, message, role) == expected


@pytest.mark.parametrize(("state", "message", "role"), TP_CASES)
def test_each_transfer_combination(state, message, role) -> None:  # type: ignore[no-untyped-def]
    expected = _table(TRANSFER_SPEC).get((None if state is None else state.value, message, role))
    if expected is None:
        with pytest.raises(IllegalTransition):
            tp.apply(state, message, role)
    else:
        assert tp.apply(state, message, role) == expected


@pytest.mark.parametrize("terminal", sorted(cn.TERMINAL))
def test_terminal_negotiation_states_accept_nothing(terminal: cn.NegotiationState) -> None:
    for role in Role:
        assert cn.allowed(terminal, role) == []


def test_allowed_lists_what_a_role_may_send() -> None:
    assert cn.allowed("OFFERED", "consumer") == [
        "ContractNegotiationEventMessage:ACCEPTED", "ContractNegotiationTerminationMessage",
        "ContractRequestMessage"]
    assert tp.allowed(None, "consumer") == ["TransferRequestMessage"]


def test_consumer_cannot_finalize_and_provider_cannot_accept() -> None:
    with pytest.raises(IllegalTransition, match="consumer"):
        cn.apply("VERIFIED", cn.FINALIZED_EVENT, "consumer")
    with pytest.raises(IllegalTransition, match="provider"):
        cn.apply("OFFERED", cn.ACCEPTED_EVENT, "provider")


def test_message_type_splits_events() -> None:
    assert cn.message_type({"@type": "ContractNegotiationEventMessage",
                            "eventType": "ACCEPTED"}) == cn.ACCEPTED_EVENT
    assert cn.message_type({"@type": "ContractRequestMessage"}) == cn.REQUEST
    assert tp.message_type({"@type": "TransferStartMessage"}) == tp.START


@pytest.mark.parametrize(("call", "match"), [
    (lambda: cn.apply("STARTED", cn.REQUEST, "consumer"), "unknown contract negotiation state"),
    (lambda: tp.apply("AGREED", tp.START, "provider"), "unknown transfer process state"),
    (lambda: cn.apply(None, "TransferRequestMessage", "consumer"), "not a contract negotiation"),
    (lambda: tp.apply(None, tp.REQUEST, "auditor"), "unknown role"),
])
def test_bad_inputs_are_protocol_errors_not_transitions(call, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=match) as info:
        call()
    assert not isinstance(info.value, IllegalTransition)


class _Proc:
    provider_pid = "urn:uuid:p"
    consumer_pid = None


def test_error_bodies_are_schema_valid() -> None:
    from dataspace.contracts.schema import validate

    exc: DataspaceError
    try:
        cn.apply("AGREED", cn.OFFER, "provider")
    except IllegalTransition as e:
        exc = e
    body = cn.error_body(_Proc(), exc)
    validate(body, "ContractNegotiationError")
    assert body["code"] == "illegal_transition"
    assert body["consumerPid"] == ""
    body = tp.error_body(None, exc)
    validate(body, "TransferError")


@pytest.mark.parametrize(("state", "message", "role", "repeat"), [
    (tp.TransferState.STARTED, tp.START, Role.PROVIDER, True),      # the start, retried
    (tp.TransferState.STARTED, tp.START, Role.CONSUMER, True),      # a restart, retried
    (tp.TransferState.COMPLETED, tp.COMPLETION, Role.CONSUMER, True),
    (tp.TransferState.TERMINATED, tp.TERMINATION, Role.PROVIDER, True),
    (tp.TransferState.SUSPENDED, tp.SUSPENSION, Role.CONSUMER, True),
    (tp.TransferState.REQUESTED, tp.REQUEST, Role.CONSUMER, True),
    (tp.TransferState.REQUESTED, tp.REQUEST, Role.PROVIDER, False),  # never the provider's
    (tp.TransferState.SUSPENDED, tp.START, Role.CONSUMER, False),   # would be a transition
    (tp.TransferState.COMPLETED, tp.TERMINATION, Role.CONSUMER, False),
    (tp.TransferState.STARTED, tp.COMPLETION, Role.PROVIDER, False),
])
def test_a_transfer_message_repeats_only_what_could_have_led_to_the_state(
    state: tp.TransferState, message: str, role: Role, repeat: bool
) -> None:
    assert tp.repeats(state, message, role) is repeat
