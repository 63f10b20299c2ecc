"""Contract negotiation on both sides, through the service functions.

Two nodes of one space (real membership list, no servers): messages travel through an
in-memory transport that validates every body against the DSP schemas and dispatches it to the
receiving node's handler, as the router would, with the follow-up messages run afterwards.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from dataspace.contracts import ContractAgreementMessage, build, parse, sign_agreement, validate
from dataspace.contracts import store as cs
from dataspace.contracts.messages import policy_from_wire
from dataspace.errors import Conflict, NotFound, UsageError
from dataspace.identity.keys import load_private_key
from dataspace.identity.membership import Member
from dataspace.ledger import log
from dataspace.policy import Policy, PolicyType
from dataspace.samples import SAMPLES_DIR as SAMPLES
from dataspace.services import catalog, datasets, neg_provider, offers, space
from dataspace.services import negotiation as ng
from dataspace.services.node import Node, open_node

PATH = re.compile(r"^/dsp/negotiations/(?P<pid>[^/]+)/(?P<what>.+)$")


@dataclass
class Pair:
    tax: Node
    bank: Node
    offer: str
    dataset: str
    queue: list[Callable[[], None]] = field(default_factory=list)
    sent: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    answers: list[tuple[int, Any]] = field(default_factory=list)

    def member(self, of: Node, name: str) -> Member:
        return space.member(of, name)

    def transport(self, node: Node, peer: str, method: str, path: str,
                  body: Mapping[str, Any] | None) -> tuple[int, Any]:
        target = {"tax": self.tax, "bank": self.bank}[peer]
        sender = space.member(target, node.name)
        doc = None if body is None else json.loads(json.dumps(body))
        self.sent.append((node.name, path, doc))
        if doc is not None:
            parse(doc, doc["@type"])  # everything the node sends is schema-valid
        status, answer = self.dispatch(target, sender, method, path, doc)
        self.answers.append((status, answer))
        if answer is not None:
            kind = answer.get("@type")
            validate(answer, kind)  # and everything it answers
        return status, answer

    def dispatch(self, node: Node, peer: Member, method: str, path: str,
                 doc: Any) -> tuple[int, Any]:
        if path == "/dsp/catalog/request":
            return 200, catalog.catalog_doc(node, peer_url(node) + "/dsp")
        if path == "/dsp/negotiations/request":
            reply = ng.handle_request(node, peer, doc, transport=self.transport)
        elif method == "GET":
            reply = ng.handle_get(node, peer, path.rsplit("/", 1)[1])
        else:
            m = PATH.match(path)
            assert m, path
            pid, what = m["pid"], m["what"]
            handlers: dict[str, Callable[[], ng.Reply]] = {
                "agreement": lambda: ng.handle_agreement(node, peer, pid, doc,
                                                         transport=self.transport),
                "agreement/verification": lambda: ng.handle_verification(
                    node, peer, pid, doc, transport=self.transport),
                "events": lambda: ng.handle_message(node, peer, pid, doc,
                                                    "ContractNegotiationEventMessage"),
                "termination": lambda: ng.handle_message(
                    node, peer, pid, doc, "ContractNegotiationTerminationMessage"),
            }
            reply = handlers[what]()
        self.queue.extend(reply.after)
        return reply.status, reply.body

    def pump(self) -> None:
        while self.queue:
            self.queue.pop(0)()

    def request(self, purpose: str = "credit-risk", offer: str | None = None) -> dict[str, Any]:
        view = ng.request_contract(self.bank, "tax", offer_id=offer or self.offer,
                                   purpose=purpose, actor="cli:analyst",
                                   transport=self.transport)
        self.pump()
        return ng.show_contract(self.bank, view["id"])

    def provider_view(self, consumer_view: dict[str, Any]) -> dict[str, Any]:
        return ng.show_contract(self.tax, consumer_view["provider_pid"])


def peer_url(node: Node) -> str:
    return space.self_member(node).url


def actions(node: Node) -> list[str]:
    from dataspace.services import ledger

    return [e["entry"]["action"] for e in ledger.entries(node, limit=1000)]


@pytest.fixture
def pair(space_factory: Callable[..., Any]) -> Iterator[Pair]:
    cluster = space_factory(["tax", "bank"], serve=False)  # on PostgreSQL when the suite is
    tax, bank = cluster.nodes["tax"].open(), cluster.nodes["bank"].open()
    ds = datasets.add(tax, SAMPLES / "tax_records.csv", name="tax-records", domain="finance",
                      actor="cli:clerk")
    offer = offers.create(tax, "tax-records", actor="cli:clerk", template="aggregate-only",
                          params={"purposes": "finance", "min_group_size": "5"},
                          price="100 CNY", auto_approve=True)
    yield Pair(tax, bank, offer["id"], ds["id"])
    tax.close()
    bank.close()


def test_auto_approve_reaches_finalized_with_both_signatures_in_both_stores(pair: Pair) -> None:
    view = pair.request()
    assert view["state"] == "FINALIZED", view
    provider = pair.provider_view(view)
    assert provider["state"] == "FINALIZED"
    for side in (view, provider):
        ag = side["agreement"]
        assert ag["signatures"] == {"provider": "verified", "consumer": "verified"}
        assert ag["offer_id"] == pair.offer and ag["purpose"] == "credit-risk"
        assert ag["provider"] == "tax" and ag["consumer"] == "bank"
        assert ag["target"] == pair.dataset
    assert view["agreement"]["policy"] == provider["agreement"]["policy"]
    purpose = view["agreement"]["policy"]["permission"][0]["constraint"][-1]
    assert purpose == {"leftOperand": "purpose", "operator": "eq", "rightOperand": "credit-risk"}
    for node in (pair.tax, pair.bank):
        got = actions(node)
        for step in ("negotiation.requested", "negotiation.agreed", "agreement.signed",
                     "agreement.countersigned", "negotiation.verified",
                     "negotiation.finalized"):
            assert step in got, (node.name, step, got)
    with pair.tax.store.read() as session:
        row = cs.get_agreement(session, view["agreement_id"], peer="bank")
        cs.verify_signatures(row, pair.tax.signer.public_bytes, pair.bank.signer.public_bytes)
    types = [doc["@type"] for _, _, doc in pair.sent if doc]
    assert types == ["CatalogRequestMessage", "ContractRequestMessage",
                     "ContractAgreementMessage", "ContractAgreementVerificationMessage",
                     "ContractNegotiationEventMessage"]
    agreement_msg = next(d for _, _, d in pair.sent if d and d["@type"] ==
                         "ContractAgreementMessage")
    assert ng.SIGNATURE in agreement_msg


def test_wrong_purpose_is_terminated_with_the_reasons(pair: Pair) -> None:
    view = pair.request(purpose="marketing")
    assert view["state"] == "TERMINATED"
    assert view["agreement"] is None
    assert any("purpose" in r for r in view["reason"]), view["reason"]
    assert "negotiation.denied" in actions(pair.tax)
    assert "negotiation.terminated" in actions(pair.bank)
    termination = pair.sent[-1][2]
    assert termination is not None
    assert termination["@type"] == "ContractNegotiationTerminationMessage"
    assert termination["code"] == "policy_denied"


def test_assignee_not_allowed_is_terminated(pair: Pair) -> None:
    restricted = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                               params={"purposes": "finance", "assignee": "someone-else"},
                               auto_approve=True)
    view = pair.request(offer=restricted["id"])
    assert view["state"] == "TERMINATED"
    assert any("assignee" in r for r in view["reason"]), view["reason"]


def test_expired_offer_is_terminated(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    # an offer published while valid that has expired since (creating an already-expired
    # offer is refused, so the check at creation time is what this skips)
    monkeypatch.setattr(offers, "_require_grants_now", lambda policy: None)
    old = offers.create(pair.tax, "tax-records", actor="t", template="raw-transfer",
                        params={"purposes": "finance", "expires": "2020-01-01T00:00:00+08:00"},
                        auto_approve=True)
    view = pair.request(offer=old["id"])
    assert view["state"] == "TERMINATED"
    assert any("dateTime" in r for r in view["reason"]), view["reason"]


def test_manual_approval_waits_in_requested_then_finalizes(pair: Pair) -> None:
    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])
    assert view["state"] == "REQUESTED"
    assert pair.provider_view(view)["state"] == "REQUESTED"
    ng.approve(pair.tax, view["provider_pid"], actor="cli:boss", transport=pair.transport)
    pair.pump()
    assert ng.show_contract(pair.bank, view["id"])["state"] == "FINALIZED"
    assert "negotiation.approved" in actions(pair.tax)


@pytest.mark.parametrize("lost", ["ContractAgreementMessage",
                                  "ContractAgreementVerificationMessage"])
def test_a_message_delivered_again_after_its_answer_was_lost_changes_nothing(
    pair: Pair, lost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer handled the message but its answer never came back: delivery sends it again,
    which must be answered 200 -- a 400 made the sender terminate a contract both had signed."""
    monkeypatch.setattr(catalog.time, "sleep", lambda _s: None)
    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])
    honest, dropped = pair.transport, []

    def losing(node: Node, peer: str, method: str, path: str,
               body: Mapping[str, Any] | None) -> tuple[int, Any]:
        answer = honest(node, peer, method, path, body)
        if body is not None and body.get("@type") == lost and not dropped:
            dropped.append(answer)
            raise catalog.DeliveryFailed("read timeout")  # handled there, answer lost
        return answer

    pair.transport = losing  # type: ignore[method-assign]
    ng.approve(pair.tax, view["provider_pid"], actor="cli:boss", transport=losing)
    pair.pump()
    assert dropped and dropped[0][0] == 200
    repeats = [a for (_n, _p, doc), a in zip(pair.sent, pair.answers, strict=True)
               if doc is not None and doc["@type"] == lost]
    assert [status for status, _ in repeats] == [200, 200]
    assert ng.show_contract(pair.bank, view["id"])["state"] == "FINALIZED"
    assert pair.provider_view(view)["state"] == "FINALIZED"
    for node in (pair.tax, pair.bank):  # one entry per step, not one per delivery
        assert actions(node).count("negotiation.verified") == 1


def test_a_consumer_withdraws_a_request_the_provider_has_not_agreed_to(pair: Pair) -> None:
    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])
    with pytest.raises(UsageError, match="as provider"):
        ng.withdraw(pair.tax, view["provider_pid"], reason="x", actor="cli:boss")
    ended = ng.withdraw(pair.bank, view["id"], reason="bought elsewhere", actor="cli:analyst",
                        transport=pair.transport)
    assert ended["state"] == "TERMINATED"
    provider = pair.provider_view(view)
    assert provider["state"] == "TERMINATED"
    assert provider["reason"] == ["withdrawn: bought elsewhere"]
    with pytest.raises(Conflict, match="is TERMINATED: it can no longer be approved"):
        ng.approve(pair.tax, view["provider_pid"], actor="cli:boss", transport=pair.transport)
    assert "negotiation.approved" not in actions(pair.tax)


def test_a_contract_both_signed_cannot_be_withdrawn(pair: Pair) -> None:
    view = pair.request()
    assert view["state"] == "FINALIZED"
    with pytest.raises(Conflict, match="FINALIZED"):  # the state forbids it: 409
        ng.withdraw(pair.bank, view["id"], reason="x", actor="cli:analyst",
                    transport=pair.transport)
    assert ng.show_contract(pair.bank, view["id"])["state"] == "FINALIZED"


def test_a_withdrawal_overtaken_by_the_agreement_leaves_the_contract_standing(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider's agreement lands between the check and the termination: the contract
    stands, and the consumer is told so."""
    from dataspace.services import neg_consumer

    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])
    ending = neg_consumer.terminate

    def agreed_first(*args: Any, **kwargs: Any) -> None:
        ng.approve(pair.tax, view["provider_pid"], actor="cli:boss", transport=pair.transport)
        ending(*args, **kwargs)

    monkeypatch.setattr(neg_consumer, "terminate", agreed_first)
    with pytest.raises(Conflict, match="before it could be withdrawn"):
        ng.withdraw(pair.bank, view["id"], reason="x", actor="cli:analyst",
                    transport=pair.transport)
    pair.pump()
    assert ng.show_contract(pair.bank, view["id"])["state"] == "FINALIZED"


def test_a_finalized_event_that_never_came_is_learnt_by_asking_the_provider(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider finalizes but cannot deliver the event (and does not retry): the consumer
    stayed VERIFIED and could not ask for a transfer under a contract both had signed."""
    from dataspace.services import neg_consumer, transfers

    monkeypatch.setattr(catalog.time, "sleep", lambda _s: None)
    honest = pair.transport

    def unreachable_for_events(node: Node, peer: str, method: str, path: str,
                               body: Mapping[str, Any] | None) -> tuple[int, Any]:
        if body is not None and body.get("@type") == "ContractNegotiationEventMessage":
            raise catalog.DeliveryFailed("the consumer is briefly unreachable")
        if path.startswith("/dsp/transfers"):  # transfers are not this test's subject
            raise catalog.DeliveryFailed("no transfer endpoint here")
        return honest(node, peer, method, path, body)

    pair.transport = unreachable_for_events  # type: ignore[method-assign]
    view = pair.request()
    assert (view["state"], pair.provider_view(view)["state"]) == ("VERIFIED", "FINALIZED")
    before = actions(pair.bank).count("negotiation.finalized")
    with pytest.raises(catalog.DeliveryFailed, match="transfers/request"):  # past the check
        transfers.request_transfer(pair.bank, agreement_id=view["agreement_id"], mode="raw",
                                   transport=pair.transport)  # asks first: no "not finalized"
    assert ng.show_contract(pair.bank, view["id"])["state"] == "FINALIZED"
    assert actions(pair.bank).count("negotiation.finalized") == before + 1
    assert not neg_consumer.catch_up(pair.bank, view["id"], transport=pair.transport)


def test_asking_the_provider_moves_nothing_unless_it_says_finalized(pair: Pair) -> None:
    from dataspace.services import neg_consumer

    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])  # REQUESTED: nothing to catch up on
    assert not neg_consumer.catch_up(pair.bank, view["id"], transport=pair.transport)
    with pair.bank.store.write() as session:  # as if VERIFIED here, the provider still waits
        cs.get_negotiation(session, view["id"], peer=None).state = "VERIFIED"
    assert not neg_consumer.catch_up(pair.bank, view["id"], transport=pair.transport)
    assert ng.show_contract(pair.bank, view["id"])["state"] == "VERIFIED"


def test_manual_reject_terminates_both_sides_with_the_reason(pair: Pair) -> None:
    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])
    ng.reject(pair.tax, view["provider_pid"], reason="not this quarter", actor="cli:boss",
              transport=pair.transport)
    consumer = ng.show_contract(pair.bank, view["id"])
    assert consumer["state"] == "TERMINATED"
    assert consumer["reason"] == ["rejected: not this quarter"]
    assert pair.provider_view(view)["state"] == "TERMINATED"


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501], ids=["empty", "blank", "too-long"])
def test_ending_a_request_needs_a_reason_and_a_refusal_changes_nothing(
    pair: Pair, reason: str
) -> None:
    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])
    logged = {n.name: actions(n) for n in (pair.tax, pair.bank)}
    with pytest.raises(UsageError, match="rejecting a request needs a reason of 1 to 500"):
        ng.reject(pair.tax, view["provider_pid"], reason=reason, actor="cli:boss",
                  transport=pair.transport)
    with pytest.raises(UsageError, match="withdrawing a request needs a reason of 1 to 500"):
        ng.withdraw(pair.bank, view["id"], reason=reason, actor="cli:analyst",
                    transport=pair.transport)
    assert ng.show_contract(pair.bank, view["id"])["state"] == "REQUESTED"
    assert pair.provider_view(view)["state"] == "REQUESTED"
    assert {n.name: actions(n) for n in (pair.tax, pair.bank)} == logged
    ng.reject(pair.tax, view["provider_pid"], reason="  not this quarter\n", actor="cli:boss",
              transport=pair.transport)
    assert ng.show_contract(pair.bank, view["id"])["reason"] == ["rejected: not this quarter"]


def test_approving_twice_is_a_conflict(pair: Pair) -> None:
    """A user's action the state no longer takes is a 409 (an integrator met 400
    illegal_transition, a peer protocol error, for approving a FINALIZED request)."""
    view = pair.request()
    approved = actions(pair.tax).count("negotiation.approved")
    with pytest.raises(Conflict, match="is FINALIZED: it can no longer be approved"):
        ng.approve(pair.tax, view["provider_pid"], actor="x", transport=pair.transport)
    assert actions(pair.tax).count("negotiation.approved") == approved  # refused: not logged


def test_a_finished_negotiation_cannot_be_rejected_or_approved_by_its_consumer(
    pair: Pair,
) -> None:
    from dataspace.errors import UsageError

    view = pair.request()  # auto-approved: FINALIZED
    assert pair.provider_view(view)["state"] == "FINALIZED"
    with pytest.raises(Conflict, match="it can no longer be rejected"):
        ng.reject(pair.tax, view["provider_pid"], reason="too late", actor="x",
                  transport=pair.transport)
    assert pair.provider_view(view)["state"] == "FINALIZED"
    with pytest.raises(UsageError, match="requested as consumer"):
        ng.approve(pair.bank, view["id"], actor="x", transport=pair.transport)
    assert "negotiation.approved" not in actions(pair.bank)


def test_withdrawn_offer_is_refused(pair: Pair) -> None:
    cat = catalog.fetch_catalog(pair.bank, "tax", transport=pair.transport)
    offers.withdraw(pair.tax, pair.offer, actor="t")
    # the consumer still holds the old catalog: send the request anyway
    dataset_id, offer_doc = catalog.find_offer(cat, pair.offer)
    monkey_catalog = {"dataset": [{"@id": dataset_id, "hasPolicy": [offer_doc]}]}
    original = catalog.fetch_catalog
    catalog.fetch_catalog = lambda *a, **k: monkey_catalog  # type: ignore[assignment]
    try:
        view = pair.request()
    finally:
        catalog.fetch_catalog = original  # type: ignore[assignment]
    assert view["state"] == "TERMINATED"
    status, body = pair.answers[-1]
    assert status == 400
    validate(body, "ContractNegotiationError")
    assert body["code"] == "offer_unavailable"
    assert "negotiation.refused" in actions(pair.tax)


def test_an_offer_withdrawn_while_an_approval_signs_is_not_agreed_under(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A withdrawal that comes while the provider signs an approval either waits for the
    agreement (which the ledger then shows first) or is seen by it — never an agreement
    entered after the offer's withdrawal."""
    manual = offers.create(pair.tax, "tax-records", actor="test", template="aggregate-only",
                           params={"purposes": "credit-risk"})
    view = pair.request(offer=manual["id"])
    withdrawing: list[threading.Thread] = []
    real_sign = neg_provider.sign_agreement

    def sign_while_withdrawn(agreement: Any, key: Any) -> str:
        thread = threading.Thread(
            target=offers.withdraw, args=(pair.tax, manual["id"]), kwargs={"actor": "test"})
        thread.start()
        withdrawing.append(thread)
        time.sleep(0.5)  # the withdrawal runs now, unless the approval holds it back
        return real_sign(agreement, key)

    monkeypatch.setattr(neg_provider, "sign_agreement", sign_while_withdrawn)
    ng.approve(pair.tax, view["provider_pid"], actor="test", transport=pair.transport)
    withdrawing[0].join(30)
    done = actions(pair.tax)
    assert "offer.withdrawn" in done
    if "agreement.signed" in done:
        assert done.index("agreement.signed") < done.index("offer.withdrawn")


def test_withdrawn_offer_leaves_the_catalog(pair: Pair) -> None:
    offers.withdraw(pair.tax, pair.offer, actor="t")
    cat = catalog.fetch_catalog(pair.bank, "tax", transport=pair.transport)
    assert not cat.get("dataset")
    with pytest.raises(NotFound):
        ng.request_contract(pair.bank, "tax", offer_id=pair.offer, purpose="credit-risk",
                            actor="x", transport=pair.transport)


def test_a_contracts_times_carry_their_offset(pair: Pair) -> None:
    """updated_at read '2026-12-02T16:52:36.359331' (SQLite's naive UTC), beside tokens and
    jobs with '+00:00'."""
    agreement = pair.request()["agreement_id"]
    assert agreement
    [listed] = [c for c in ng.list_contracts(pair.bank) if c["agreement_id"] == agreement]
    assert listed["updated_at"].endswith("+00:00")
    assert ng.show_contract(pair.bank, agreement)["agreement"]["signed_at"].endswith("+00:00")


def test_a_node_asking_itself_for_a_contract_is_told_so(pair: Pair) -> None:
    """It fetched its own catalog and said "no such offer", which misled."""
    with pytest.raises(UsageError, match="tax cannot contract with itself"):
        ng.request_contract(pair.tax, "tax", offer_id=pair.offer, purpose="credit-risk",
                            actor="x", transport=pair.transport)


def _member(pair: Pair, of: Node, name: str) -> Member:
    return space.member(of, name)


def test_illegal_transition_is_400_with_a_schema_valid_error(pair: Pair) -> None:
    view = pair.request()
    bank = _member(pair, pair.tax, "bank")
    event = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
             "@type": "ContractNegotiationEventMessage", "providerPid": view["provider_pid"],
             "consumerPid": view["id"], "eventType": "FINALIZED"}
    reply = ng.handle_message(pair.tax, bank, view["provider_pid"], event,
                              "ContractNegotiationEventMessage")
    assert reply.status == 400
    assert reply.body is not None
    validate(reply.body, "ContractNegotiationError")
    assert reply.body["code"] == "illegal_transition"
    assert reply.body["providerPid"] == view["provider_pid"]
    assert "negotiation.refused" in actions(pair.tax)


def test_foreign_or_unknown_pid_is_404(pair: Pair) -> None:
    view = pair.request()
    tax_as_seen_by_bank = _member(pair, pair.bank, "tax")
    # the bank's own pid, addressed by someone who is not its peer (tax asks the bank about
    # the provider's pid, which the bank does not hold)
    for pid in (view["provider_pid"], "urn:uuid:nope"):
        reply = ng.handle_get(pair.bank, tax_as_seen_by_bank, pid)
        assert reply.status == 404
        assert reply.body is not None
        validate(reply.body, "ContractNegotiationError")
    stranger = Member("mallory", "http://127.0.0.1:1", pair.bank.verifier_key(), ("consumer",))
    assert ng.handle_get(pair.tax, stranger, view["provider_pid"]).status == 404


def test_a_message_for_the_other_side_cannot_move_a_process(pair: Pair) -> None:
    """The consumer signs its own ContractAgreementMessage and posts it to the provider's
    negotiation awaiting approval: 404 as for a foreign pid, nothing moves, no signature by
    the provider, and approval still works. The mirror (a verification message posted to a
    consumer's process) is refused the same way."""
    manual = offers.create(pair.tax, "tax-records", actor="test", template="aggregate-only",
                           params={"purposes": "credit-risk"})
    view = pair.request(offer=manual["id"])
    provider_pid = view["provider_pid"]
    with pair.tax.store.read() as session:
        requested = policy_from_wire(cs.get_negotiation(session, provider_pid, peer="bank").offer)
    forged = Policy(uid="urn:uuid:forged-agreement", type=PolicyType.AGREEMENT,
                    assigner="bank", assignee="tax", target=requested.target,
                    permissions=requested.permissions, prohibitions=requested.prohibitions,
                    obligations=requested.obligations,
                    extras=(("timestamp", "2026-01-01T00:00:00Z"),))
    doc = build(ContractAgreementMessage(provider_pid=provider_pid, consumer_pid=provider_pid,
                                         agreement=forged))
    doc[ng.SIGNATURE] = sign_agreement(forged, load_private_key(pair.bank.root / "keys" /
                                                                "node.key"))
    reply = ng.handle_agreement(pair.tax, _member(pair, pair.tax, "bank"), provider_pid, doc,
                                transport=pair.transport)
    assert reply.status == 404
    assert pair.provider_view(view)["state"] == "REQUESTED"
    assert "agreement.signed" not in actions(pair.tax)

    verification = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                    "@type": "ContractAgreementVerificationMessage",
                    "providerPid": view["id"], "consumerPid": view["id"], ng.SIGNATURE: "x"}
    reply = ng.handle_verification(pair.bank, _member(pair, pair.bank, "tax"), view["id"],
                                   verification, transport=pair.transport)
    assert reply.status == 404

    ng.approve(pair.tax, provider_pid, actor="test", transport=pair.transport)
    pair.pump()
    assert ng.show_contract(pair.bank, view["id"])["state"] == "FINALIZED"


def test_malformed_message_is_400_naming_the_json_path(pair: Pair) -> None:
    bank = _member(pair, pair.tax, "bank")
    doc = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
           "@type": "ContractRequestMessage", "consumerPid": "urn:uuid:c",
           "callbackAddress": peer_url(pair.bank) + "/dsp",
           "offer": {"@id": pair.offer, "@type": "Offer", "permission": [{"action": 7}]}}
    reply = ng.handle_request(pair.tax, bank, doc, transport=pair.transport)
    assert reply.status == 400
    assert reply.body is not None
    validate(reply.body, "ContractNegotiationError")
    assert "$.offer" in reply.body["reason"][0]


def test_a_members_refused_messages_are_logged_within_a_budget(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member sending messages it knows are refused cannot grow the ledger without bound:
    past peer_denied_log_per_minute in a minute they are counted into the next entry."""
    from dataspace.services import dsp_process

    bank = _member(pair, pair.tax, "bank")
    doc = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
           "@type": "ContractRequestMessage", "consumerPid": "urn:uuid:c",
           "callbackAddress": peer_url(pair.bank) + "/dsp",
           "offer": {"@id": pair.offer, "@type": "Offer", "permission": [{"action": 7}]}}
    clock = [6_000_000.0]
    monkeypatch.setattr(dsp_process.time, "time", lambda: clock[0])
    budget = int(pair.tax.limits.peer_denied_log_per_minute)

    def refused() -> list[dict[str, Any]]:
        with pair.tax.store.read() as session:
            return [e.payload for e in log.entries(session, 0, 10_000)
                    if e.entry["action"] == "negotiation.refused"]

    before = len(refused())
    for _ in range(budget + 5):
        assert ng.handle_request(pair.tax, bank, doc, transport=pair.transport).status == 400
    assert len(refused()) - before <= budget
    clock[0] += 60
    assert ng.handle_request(pair.tax, bank, doc, transport=pair.transport).status == 400
    assert refused()[-1]["suppressed_before"] >= 5


def test_a_refusal_whose_entry_failed_is_counted_into_the_next(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from dataspace.errors import StoreError
    from dataspace.services import dsp_process

    bank = _member(pair, pair.tax, "bank")
    doc = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
           "@type": "ContractRequestMessage", "consumerPid": "urn:uuid:c",
           "callbackAddress": peer_url(pair.bank) + "/dsp",
           "offer": {"@id": pair.offer, "@type": "Offer", "permission": [{"action": 7}]}}

    def failing_append(*_args: Any, **_kwargs: Any) -> None:
        raise StoreError("state database error: disk I/O error")

    monkeypatch.setattr(dsp_process, "log", SimpleNamespace(append=failing_append))
    with pytest.raises(StoreError):
        ng.handle_request(pair.tax, bank, doc, transport=pair.transport)
    monkeypatch.undo()
    assert ng.handle_request(pair.tax, bank, doc, transport=pair.transport).status == 400
    with pair.tax.store.read() as session:
        last = [e.payload for e in log.entries(session, 0, 10_000)
                if e.entry["action"] == "negotiation.refused"][-1]
    assert last["suppressed_before"] == 1


def test_altered_offer_is_refused(pair: Pair) -> None:
    bank = _member(pair, pair.tax, "bank")
    with pair.tax.store.read() as session:
        stored = offers.offer_policy(offers.get(session, pair.offer))
    import dataclasses

    loosened = dataclasses.replace(stored, permissions=tuple(
        dataclasses.replace(r, constraints=r.constraints[:1]) for r in stored.permissions))
    from dataspace.contracts import ContractRequestMessage, build

    doc = build(ContractRequestMessage(consumer_pid="urn:uuid:c2",
                                       offer=ng.with_purpose(loosened, "credit-risk"),
                                       callback_address=peer_url(pair.bank) + "/dsp"))
    reply = ng.handle_request(pair.tax, bank, doc, transport=pair.transport)
    assert reply.status == 400
    assert reply.body is not None and reply.body["code"] == "offer_unavailable"


def test_an_offer_claimed_for_another_assigner_is_refused_and_nothing_stored(
    pair: Pair
) -> None:
    import dataclasses

    from dataspace.contracts import ContractRequestMessage, build

    bank = _member(pair, pair.tax, "bank")
    with pair.tax.store.read() as session:
        stored = offers.offer_policy(offers.get(session, pair.offer))
        before = len(ng.list_contracts(pair.tax))
    claimed = dataclasses.replace(stored, assigner="bank")
    doc = build(ContractRequestMessage(consumer_pid="urn:uuid:c3",
                                       offer=ng.with_purpose(claimed, "credit-risk"),
                                       callback_address=peer_url(pair.bank) + "/dsp"))
    reply = ng.handle_request(pair.tax, bank, doc, transport=pair.transport)
    assert reply.status == 400 and reply.body is not None
    assert reply.body["code"] == "offer_unavailable"
    assert "assigner 'bank'" in json.dumps(reply.body)
    assert len(ng.list_contracts(pair.tax)) == before


def test_callback_outside_the_member_url_is_refused(pair: Pair) -> None:
    bank = _member(pair, pair.tax, "bank")
    with pair.tax.store.read() as session:
        stored = offers.offer_policy(offers.get(session, pair.offer))
    from dataspace.contracts import ContractRequestMessage, build

    doc = build(ContractRequestMessage(consumer_pid="urn:uuid:c3",
                                       offer=ng.with_purpose(stored, "credit-risk"),
                                       callback_address="http://169.254.169.254/dsp"))
    reply = ng.handle_request(pair.tax, bank, doc, transport=pair.transport)
    assert reply.status == 400
    assert reply.body is not None and "callbackAddress" in reply.body["reason"][0]


def test_forged_provider_signature_is_refused(pair: Pair) -> None:
    manual = offers.create(pair.tax, "tax-records", actor="t", template="aggregate-only",
                           params={"purposes": "finance"})
    view = pair.request(offer=manual["id"])
    original = pair.transport

    def tamper(node: Node, peer: str, method: str, path: str,
               body: Mapping[str, Any] | None) -> tuple[int, Any]:
        if body and body.get("@type") == "ContractAgreementMessage":
            body = json.loads(json.dumps(body))
            body["agreement"]["permission"][0]["constraint"][0]["rightOperand"] = ["any-purpose"]
        return original(node, peer, method, path, body)

    ng.approve(pair.tax, view["provider_pid"], actor="x", transport=tamper)
    pair.pump()
    assert ng.show_contract(pair.bank, view["id"])["state"] == "TERMINATED"
    assert ng.show_contract(pair.tax, view["provider_pid"])["state"] == "TERMINATED"
    status, body = pair.answers[-2]
    assert status == 400 and body["code"] == "protocol_error"


def test_a_replayed_initial_request_gets_the_same_ack(pair: Pair) -> None:
    pair.request()
    _, _, doc = next(s for s in pair.sent if s[2] and s[2]["@type"] == "ContractRequestMessage")
    bank = _member(pair, pair.tax, "bank")
    reply = ng.handle_request(pair.tax, bank, doc, transport=pair.transport)
    assert reply.status == 201 and not reply.after
    assert reply.body is not None and reply.body["state"] == "FINALIZED"


def test_copies_of_one_initial_request_at_once_open_one_negotiation(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer's request and its retry arriving together (PostgreSQL runs them side by
    side; the policy check is slowed to widen the window): one provider process, the same
    ACK to every copy."""
    decide = neg_provider.provisional_decision

    def slowly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return decide(*args, **kwargs)

    monkeypatch.setattr(neg_provider, "provisional_decision", slowly)
    pair.request()
    _, _, doc = next(s for s in pair.sent if s[2] and s[2]["@type"] == "ContractRequestMessage")
    doc = {**doc, "consumerPid": "urn:uuid:sent-twice"}
    bank = _member(pair, pair.tax, "bank")
    start = threading.Barrier(6)
    replies: list[Any] = []

    def send() -> None:
        start.wait()
        replies.append(ng.handle_request(pair.tax, bank, doc, transport=pair.transport))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status for r in replies] == [201] * 6
    assert len({r.body["providerPid"] for r in replies}) == 1
    with pair.tax.store.read() as session:
        rows = [r for r in cs.list_negotiations(session) if r.consumer_pid == "urn:uuid:sent-twice"]
    assert len(rows) == 1


def test_unreachable_provider_terminates_locally(pair: Pair, monkeypatch: Any) -> None:
    from dataspace.services.catalog import DeliveryFailed

    monkeypatch.setattr(catalog.time, "sleep", lambda s: None)
    cat = catalog.fetch_catalog(pair.bank, "tax", transport=pair.transport)
    monkeypatch.setattr(catalog, "fetch_catalog", lambda *a, **k: cat)

    def down(*args: Any) -> tuple[int, Any]:
        raise DeliveryFailed("connection refused")

    with pytest.raises(DeliveryFailed):
        ng.request_contract(pair.bank, "tax", offer_id=pair.offer, purpose="credit-risk",
                            actor="x", transport=down)
    [row] = ng.list_contracts(pair.bank)
    assert row["state"] == "TERMINATED"


def test_reopened_node_reads_the_same_contract(pair: Pair) -> None:
    view = pair.request()
    again = open_node(pair.bank.root)
    try:
        assert ng.show_contract(again, view["agreement_id"])["state"] == "FINALIZED"
    finally:
        again.close()
