"""Negotiations, agreements and transfers in the store (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataspace.contracts import negotiation as cn
from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts.errors import IllegalTransition, ProtocolError
from dataspace.contracts.roles import Role
from dataspace.contracts.signing import sign_agreement
from dataspace.errors import NotFound, SignatureError
from dataspace.policy import PolicyType, from_template

C, P = Role.CONSUMER, Role.PROVIDER
PEER = "bank-a"


def _offer() -> Any:
    return from_template("aggregate-only", purposes=["credit-risk"], uid="urn:uuid:offer-1",
                         target="urn:uuid:ds-1")


def _agreement() -> Any:
    return dataclasses.replace(_offer(), type=PolicyType.AGREEMENT, uid="urn:uuid:agr-1",
                               assigner="tax-bureau", assignee="bank-a",
                               extras=(("timestamp", "2026-01-05T10:00:00Z"),))


def _finalized(session: Any) -> str:
    row = cs.create_negotiation(session, role=P, peer=PEER, message_type=cn.REQUEST, sender=C,
                                offer=_offer(), consumer_pid="urn:uuid:c-1",
                                callback_address="https://bank-a.example/cb")
    pid = row.id
    cs.advance_negotiation(session, pid, cn.AGREEMENT, sender=P, peer=None, agreement=_agreement())
    cs.advance_negotiation(session, pid, cn.VERIFICATION, sender=C, peer=PEER,
                           consumer_pid="urn:uuid:c-1", provider_pid=pid)
    cs.advance_negotiation(session, pid, cn.FINALIZED_EVENT, sender=P, peer=None)
    cs.record_agreement(session, pid, peer=None)
    return pid


def test_provider_negotiation_runs_to_finalized(node: Any) -> None:
    with node.store.write() as s:
        pid = _finalized(s)
    with node.store.read() as s:
        row = cs.get_negotiation(s, pid, peer=PEER)
        assert row.state == "FINALIZED"
        assert row.provider_pid == pid and row.consumer_pid == "urn:uuid:c-1"
        assert row.agreement is not None and row.agreement["@type"] == "Agreement"
        agreement = cs.get_agreement(s, "urn:uuid:agr-1", peer=PEER)
        assert (agreement.provider, agreement.consumer, agreement.target) == (
            "tax-bureau", "bank-a", "urn:uuid:ds-1")


def test_consumer_side_counter_offer_and_accept(node: Any) -> None:
    with node.store.write() as s:
        row = cs.create_negotiation(s, role=C, peer="tax-bureau", message_type=cn.REQUEST,
                                    sender=C, offer=_offer())
        pid = row.id
        assert row.consumer_pid == pid and row.provider_pid is None
        cs.advance_negotiation(s, pid, cn.OFFER, sender=P, peer="tax-bureau",
                               provider_pid="urn:uuid:p-9", offer=_offer())
        row = cs.advance_negotiation(s, pid, cn.ACCEPTED_EVENT, sender=C, peer=None)
        assert (row.state, row.provider_pid) == ("ACCEPTED", "urn:uuid:p-9")
        assert cs.find_negotiation(s, peer="tax-bureau", provider_pid="urn:uuid:p-9") is not None


def test_illegal_transition_leaves_the_state(node: Any) -> None:
    with node.store.write() as s:
        row = cs.create_negotiation(s, role=P, peer=PEER, message_type=cn.REQUEST, sender=C,
                                    offer=_offer(), consumer_pid="urn:uuid:c-1")
        pid = row.id
    with pytest.raises(IllegalTransition), node.store.write() as s:
        cs.advance_negotiation(s, pid, cn.VERIFICATION, sender=C, peer=PEER)
    with node.store.read() as s:
        assert cs.get_negotiation(s, pid, peer=PEER).state == "REQUESTED"


def test_unknown_and_foreign_processes_are_both_not_found(node: Any) -> None:
    with node.store.write() as s:
        pid = _finalized(s)
    with node.store.write() as s:
        with pytest.raises(NotFound) as unknown:
            cs.advance_negotiation(s, "urn:uuid:nope", cn.TERMINATION, sender=C, peer=PEER)
        with pytest.raises(NotFound) as foreign:
            cs.advance_negotiation(s, pid, cn.TERMINATION, sender=C, peer="insurer-b")
        assert unknown.value.http_status == foreign.value.http_status == 404
        with pytest.raises(NotFound):
            cs.get_agreement(s, "urn:uuid:agr-1", peer="insurer-b")
        with pytest.raises(NotFound):
            cs.create_transfer(s, role=P, peer="insurer-b", agreement_id="urn:uuid:agr-1",
                               format="HttpData-PULL", consumer_pid="urn:uuid:t-c")


def test_pids_in_a_message_must_match_the_process(node: Any) -> None:
    with node.store.write() as s:
        row = cs.create_negotiation(s, role=P, peer=PEER, message_type=cn.REQUEST, sender=C,
                                    offer=_offer(), consumer_pid="urn:uuid:c-1")
        with pytest.raises(ProtocolError, match="consumerPid"):
            cs.advance_negotiation(s, row.id, cn.TERMINATION, sender=C, peer=PEER,
                                   consumer_pid="urn:uuid:someone-else")


def test_agreement_message_needs_a_complete_agreement(node: Any) -> None:
    with node.store.write() as s:
        row = cs.create_negotiation(s, role=P, peer=PEER, message_type=cn.REQUEST, sender=C,
                                    offer=_offer(), consumer_pid="urn:uuid:c-1")
        with pytest.raises(ProtocolError, match="assignee"):
            cs.advance_negotiation(s, row.id, cn.AGREEMENT, sender=P, peer=None,
                                   agreement=dataclasses.replace(_agreement(), assignee=None))


def test_transfer_runs_and_needs_a_finalized_agreement(node: Any) -> None:
    with node.store.write() as s:
        pid = cs.create_negotiation(s, role=P, peer=PEER, message_type=cn.REQUEST, sender=C,
                                    offer=_offer(), consumer_pid="urn:uuid:c-1").id
        cs.advance_negotiation(s, pid, cn.AGREEMENT, sender=P, peer=None, agreement=_agreement())
        cs.record_agreement(s, pid, peer=None)
        with pytest.raises(ProtocolError, match="not finalized"):
            cs.create_transfer(s, role=P, peer=PEER, agreement_id="urn:uuid:agr-1",
                               format="HttpData-PULL", consumer_pid="urn:uuid:t-c")
        cs.advance_negotiation(s, pid, cn.VERIFICATION, sender=C, peer=PEER)
        cs.advance_negotiation(s, pid, cn.FINALIZED_EVENT, sender=P, peer=None)
        t = cs.create_transfer(s, role=P, peer=PEER, agreement_id="urn:uuid:agr-1",
                               format="HttpData-PULL", consumer_pid="urn:uuid:t-c",
                               callback_address="https://bank-a.example/cb")
        assert t.state == "REQUESTED"
        address = {"@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                   "endpoint": "https://tax.example/data"}
        cs.advance_transfer(s, t.id, tp.START, sender=P, peer=None, data_address=address)
        cs.advance_transfer(s, t.id, tp.SUSPENSION, sender=C, peer=PEER)
        cs.advance_transfer(s, t.id, tp.START, sender=C, peer=PEER)
        row = cs.advance_transfer(s, t.id, tp.COMPLETION, sender=C, peer=PEER)
        assert row.state == "COMPLETED" and row.data_address == address
        with pytest.raises(IllegalTransition):
            cs.advance_transfer(s, t.id, tp.TERMINATION, sender=P, peer=None)
        with pytest.raises(NotFound):
            cs.get_transfer(s, t.id, peer="insurer-b")


def test_both_signatures_are_verified_and_kept(node: Any) -> None:
    provider_key, consumer_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with node.store.write() as s:
        _finalized(s)
        row = cs.get_agreement(s, "urn:uuid:agr-1", peer=PEER)
        policy = row.policy
        cs.add_signature(s, row.id, P, sign_agreement(policy, provider_key),
                         provider_key.public_key(), peer=None)
        with pytest.raises(SignatureError):
            cs.add_signature(s, row.id, C, sign_agreement(policy, provider_key),
                             consumer_key.public_key(), peer=PEER)
        with pytest.raises(SignatureError, match="consumer"):
            cs.verify_signatures(row, provider_key.public_key(), consumer_key.public_key())
        cs.add_signature(s, row.id, C, sign_agreement(policy, consumer_key),
                         consumer_key.public_key(), peer=PEER)
    with node.store.read() as s:
        row = cs.get_agreement(s, "urn:uuid:agr-1", peer=None)
        cs.verify_signatures(row, provider_key.public_key(), consumer_key.public_key())


def test_two_concurrent_messages_cannot_both_move_a_process(node: Any) -> None:
    with node.store.write() as s:
        pid = cs.create_negotiation(s, role=P, peer=PEER, message_type=cn.REQUEST, sender=C,
                                    offer=_offer(), consumer_pid="urn:uuid:c-1").id
        cs.advance_negotiation(s, pid, cn.AGREEMENT, sender=P, peer=None, agreement=_agreement())
    barrier = threading.Barrier(2)
    results: list[str] = []

    def verify() -> None:
        barrier.wait()
        try:
            with node.store.write() as s:
                cs.advance_negotiation(s, pid, cn.VERIFICATION, sender=C, peer=PEER)
            results.append("moved")
        except IllegalTransition:
            results.append("refused")

    threads = [threading.Thread(target=verify) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == ["moved", "refused"]
    with node.store.read() as s:
        assert cs.get_negotiation(s, pid, peer=None).state == "VERIFIED"
