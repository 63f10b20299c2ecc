"""Joining a space, and peers that authenticate each other over real sockets."""

from __future__ import annotations

import httpx
import pytest

from dataspace.errors import UsageError
from dataspace.identity.membership import Member, MembershipError
from dataspace.ledger import log
from dataspace.services import peers, space
from dataspace.services.node import Node


def _list(operator: Node, nodes: list[Node], serial: int) -> str:
    members = [
        Member(n.name, f"http://127.0.0.1:{9000 + i}", n.verifier_key(), ("provider",))
        for i, n in enumerate(nodes)
    ]
    return space.issue_membership(operator, members, space="s", serial=serial, actor="op")


def test_join_verifies_the_operator_and_refuses_a_rollback(make_node) -> None:
    operator, _ = make_node("operator")
    bank, _ = make_node("bank")
    tax, _ = make_node("tax")
    first, second = _list(operator, [bank, tax], 2), _list(operator, [bank], 3)
    space.join(bank, second, operator.verifier_key(), actor="t")
    with pytest.raises(MembershipError, match="rollback"):
        space.join(bank, first, operator.verifier_key(), actor="t")
    assert [m.name for m in space.membership(bank).members] == ["bank"]
    with node_store(bank) as session:
        actions = [e.entry["action"] for e in log.entries(session, 0, 100)]
    assert actions.count("space.joined") == 1


def test_join_refuses_a_list_without_this_node_or_from_another_operator(make_node) -> None:
    operator, _ = make_node("operator")
    other_operator, _ = make_node("rogue")
    bank, _ = make_node("bank")
    tax, _ = make_node("tax")
    with pytest.raises(UsageError, match="does not name this node"):
        space.join(bank, _list(operator, [tax], 1), operator.verifier_key(), actor="t")
    with pytest.raises(Exception, match=r"signature|verif"):
        space.join(bank, _list(other_operator, [bank], 1), operator.verifier_key(), actor="t")
    space.join(bank, _list(operator, [bank], 1), operator.verifier_key(), actor="t")
    with pytest.raises(UsageError, match="another operator"):
        space.join(bank, _list(other_operator, [bank], 2), other_operator.verifier_key(), actor="t")


def test_a_node_outside_any_space_says_how_to_join(node: Node) -> None:
    with pytest.raises(UsageError, match="space join"):
        space.membership(node)


def node_store(node: Node):
    return node.store.read()


def _denied(node: Node) -> list[dict]:
    with node.store.read() as session:
        rows = log.entries(session, 0, 1000)
    return [r.payload for r in rows if r.entry["action"] == "peer.denied"]


def test_signed_requests_between_real_nodes(space_factory, make_node) -> None:
    """A member's signed request is accepted; unsigned, tampered, replayed and non-member
    requests are refused, each entered in the receiver's ledger, and the node keeps serving."""
    started = space_factory(["tax-bureau", "bank"])
    bank = started.nodes["bank"].open()
    tax = started.nodes["tax-bureau"]
    with peers.peer_client(bank, "tax-bureau") as client:
        answer = client.get("/peer/v1/whoami")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "caller": "bank",
            "node": "tax-bureau",
            "roles": ["provider", "consumer"],
        }
        signed = client.build_request("GET", "/peer/v1/whoami")
        client.auth.sign(signed)  # type: ignore[union-attr]
        assert client.send(signed, auth=None).status_code == 200
        replayed = client.send(signed, auth=None)
        assert replayed.status_code == 401
        assert replayed.json()["error"]["code"] == "replayed_request"
    unsigned = httpx.get(f"{tax.url}/peer/v1/whoami")
    assert unsigned.status_code == 401
    stranger, _ = make_node("stranger")
    from dataspace.identity.peer import PeerAuth

    with httpx.Client(base_url=tax.url, auth=PeerAuth(stranger.signer)) as rogue:
        refused = rogue.get("/peer/v1/whoami")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_a_member"
    with peers.peer_client(bank, "tax-bureau") as client:
        assert client.get("/peer/v1/whoami").status_code == 200  # still serving
    tax_node = tax.open()
    codes = [d["code"] for d in _denied(tax_node)]
    tax_node.close()
    assert codes.count("replayed_request") == 1
    assert "not_a_member" in codes and len(codes) == 3
    bank.close()


@pytest.mark.parametrize("days", [0, 3651, 99_999_999])
def test_a_membership_list_valid_for_no_time_or_for_ages_is_refused(node: Node, days) -> None:
    with pytest.raises(UsageError, match=f"valid for 1 to 3650 days, not {days}"):
        space.issue_membership(node, [], space="pilot", serial=1, valid_days=days, actor="t")


def test_a_list_that_would_not_parse_names_the_input_at_fault(make_node) -> None:
    operator, _ = make_node("operator")
    bank, _ = make_node("bank")
    good = Member(bank.name, "http://127.0.0.1:9000", bank.verifier_key(), ("provider",))
    bad_url = Member("grid", "http://a b", bank.verifier_key(), ("provider",))
    cases = [("", [good], "the space '' or serial 1"), ("pilot", [good, bad_url], "member 'grid'")]
    for name, members, says in cases:
        with pytest.raises(UsageError, match=f"cannot sign this list: {says}: ") as refused:
            space.issue_membership(operator, members, space=name, serial=1, actor="t")
        assert "NAME,URL,KEY" in str(refused.value.hint)
    with operator.store.read() as session:
        actions = [e.entry["action"] for e in log.entries(session, 0, 100)]
    assert "space.membership_issued" not in actions
