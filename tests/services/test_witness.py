"""Witnessing between members, in process: cosign, extend, refuse forks and rollbacks.

The log's requests reach the witness through the same service call the peer route makes; an
error comes back as the route would answer it (status and error envelope)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dataspace.errors import DataspaceError, UsageError
from dataspace.ledger import audit, log, proof
from dataspace.ledger.checkpoint import Checkpoint, peek_checkpoint
from dataspace.ledger.cosignature import CosignatureVerifier
from dataspace.services import auto_witness, ledger, space, witness
from dataspace.services.node import Node

BANK, TAX, GRID = "bank", "tax-bureau", "power-grid"


@pytest.fixture
def nodes(space_factory: Callable[..., Any]) -> Iterator[dict[str, Node]]:
    cluster = space_factory([BANK, TAX, GRID], serve=False)
    opened = {name: cluster.nodes[name].open() for name in (BANK, TAX, GRID)}
    try:
        yield opened
    finally:
        for node in opened.values():
            node.close()


def _post(nodes: dict[str, Node]) -> Callable[[Node, str, Any], tuple[int, Any]]:
    def post(log_node: Node, witness_name: str, body: Any) -> tuple[int, Any]:
        witness_node = nodes[witness_name]
        caller = space.member(witness_node, log_node.name)
        try:
            return 200, witness.add_checkpoint(witness_node, caller, body)
        except DataspaceError as exc:
            return exc.http_status, {"error": exc.to_dict()}

    return post


def _grow(node: Node, n: int) -> None:
    with node.store.write() as session:
        for i in range(n):
            log.append(session, actor="test", action="test.event", payload={"i": i})


def _witness_key(nodes: dict[str, Node], name: str) -> CosignatureVerifier:
    return CosignatureVerifier.parse(nodes[name].verifier_key())


def test_members_cosign_and_the_proof_bundle_carries_their_cosignatures(
    nodes: dict[str, Node],
) -> None:
    bank = nodes[BANK]
    result = witness.request_cosignatures(bank, post=_post(nodes))
    assert result["witnesses"] == {TAX: {"cosigned": True}, GRID: {"cosigned": True}}
    assert ledger.checkpoint(bank) == result["checkpoint"]  # stored, returned again
    with bank.store.read() as session:
        audit.audit(session, bank.signer.verifier())  # the log still verifies
    bundle = ledger.inclusion_proof(bank, 0)
    keys = [_witness_key(nodes, TAX), _witness_key(nodes, GRID)]
    verified = proof.verify_bundle(bundle, bank.verifier_key(), witnesses=keys)
    assert set(verified.cosigned_by) == {"dataspace/tax-bureau", "dataspace/power-grid"}
    with pytest.raises(DataspaceError, match="witness"):
        proof.verify_bundle(bundle, bank.verifier_key(),
                            witnesses=[*keys, _witness_key(nodes, BANK)])
    actions = [e["entry"]["action"] for e in ledger.entries(nodes[TAX], limit=1000)]
    assert "witness.cosigned" in actions


def test_a_grown_log_is_cosigned_again_with_a_consistency_proof(nodes: dict[str, Node]) -> None:
    bank, post = nodes[BANK], _post(nodes)
    first = witness.request_cosignatures(bank, [TAX], post=post)
    _grow(bank, 5)
    second = witness.request_cosignatures(bank, [TAX], post=post)
    assert second["size"] == first["size"] + 5
    assert second["witnesses"][TAX] == {"cosigned": True}
    again = witness.request_cosignatures(bank, [TAX], post=post)  # same size: cosigned anew
    assert again["witnesses"][TAX] == {"cosigned": True}
    note = ledger.checkpoint(bank)
    assert note.count("\u2014 dataspace/tax-bureau ") == 1  # replaced, not piled up


def test_a_witness_refuses_a_split_view_and_a_rollback(nodes: dict[str, Node]) -> None:
    bank, tax, post = nodes[BANK], nodes[TAX], _post(nodes)
    witness.request_cosignatures(bank, [TAX], post=post)
    cp = peek_checkpoint(ledger.checkpoint(bank))
    caller = space.member(tax, BANK)
    # the same size, another root, signed with the log's own key: a second history
    fork = Checkpoint(cp.origin, cp.size, bytes(32)).sign([bank.signer])
    with pytest.raises(DataspaceError, match="the log forked"):
        witness.add_checkpoint(tax, caller, {"old_size": cp.size, "proof": [],
                                             "checkpoint": fork})
    # a larger tree whose proof does not lead from the cosigned one
    bigger = Checkpoint(cp.origin, cp.size + 3, bytes(32)).sign([bank.signer])
    with pytest.raises(DataspaceError):
        witness.add_checkpoint(tax, caller, {"old_size": cp.size, "proof": ["A" * 43 + "="],
                                             "checkpoint": bigger})
    smaller = Checkpoint(cp.origin, cp.size - 1, bytes(32)).sign([bank.signer])
    with pytest.raises(DataspaceError, match="does not shrink"):
        witness.add_checkpoint(tax, caller, {"old_size": cp.size, "proof": [],
                                             "checkpoint": smaller})
    # nothing of it moved the witness: the honest log is still cosigned
    assert witness.request_cosignatures(bank, [TAX], post=post)["witnesses"][TAX]["cosigned"]
    # ... and the witness kept the evidence: both notes the log signed, in its own ledger
    entries = [e for e in ledger.entries(tax, limit=1000)
               if e["entry"]["action"] in ("witness.cosigned", "witness.refused")]
    cosigned, refused_fork, refused_proof, _again = (e["payload"] for e in entries)
    assert [e["entry"]["action"] for e in entries] == [
        "witness.cosigned", "witness.refused", "witness.refused", "witness.cosigned"]
    assert peek_checkpoint(cosigned["checkpoint"]).root == cp.root
    assert refused_fork["checkpoint"] == fork and refused_fork["forked"] is True
    assert (refused_fork["cosigned_size"], refused_fork["size"]) == (cp.size, cp.size)
    assert refused_fork["cosigned_root"] == cosigned["root"] != refused_fork["root"]
    assert "forked" in refused_fork["reason"]
    assert refused_proof["checkpoint"] == bigger and refused_proof["forked"] is False
    with tax.store.read() as session:
        audit.audit(session, tax.signer.verifier())


def test_a_member_submits_only_its_own_log_and_bad_requests_are_refused(
    nodes: dict[str, Node],
) -> None:
    bank, tax = nodes[BANK], nodes[TAX]
    grid_note = ledger.checkpoint(nodes[GRID])
    with pytest.raises(DataspaceError, match="not signed by any known key"):
        witness.add_checkpoint(tax, space.member(tax, BANK),
                               {"old_size": 0, "proof": [], "checkpoint": grid_note})
    note = ledger.checkpoint(bank)
    for body, match in [
        ([], "JSON object"),
        ({"old_size": -1, "checkpoint": note}, "old_size"),
        ({"old_size": True, "checkpoint": note}, "old_size"),
        ({"old_size": 0, "checkpoint": 5}, "signed note"),
        ({"old_size": 0, "proof": ["%%"], "checkpoint": note}, "proof"),
        ({"old_size": 0, "proof": ["AA=="] * 65, "checkpoint": note}, "at most 64"),
    ]:
        with pytest.raises(DataspaceError, match=match):
            witness.add_checkpoint(tax, space.member(tax, BANK), body)


def test_a_witness_that_is_down_does_not_stop_the_others(nodes: dict[str, Node]) -> None:
    def post(log_node: Node, name: str, body: Any) -> tuple[int, Any]:
        if name == GRID:
            return 502, {"error": {"code": "unreachable", "message": "no answer"}}
        return _post(nodes)(log_node, name, body)

    result = witness.request_cosignatures(nodes[BANK], post=post)
    assert result["witnesses"][TAX] == {"cosigned": True}
    assert result["witnesses"][GRID]["cosigned"] is False
    assert "no answer" in result["witnesses"][GRID]["error"]


def test_a_witness_cannot_rewrite_the_logs_stored_checkpoint(nodes: dict[str, Node]) -> None:
    """Its answer must be exactly its own cosignature: not the log's own line, not another
    witness's key, not garbage — and nothing stored changes when it is not."""
    bank = nodes[BANK]
    witness.request_cosignatures(bank, post=_post(nodes))
    before = ledger.checkpoint(bank)
    own = before.split("\n\n", 1)[1].splitlines()[0]
    grid_line = next(x for x in before.splitlines() if x.startswith("\u2014 dataspace/power-"))
    name, blob = grid_line.removeprefix("\u2014 ").split(" ")
    forged_grid = f"\u2014 {name} {blob[:-8]}AAAAAA==\n"
    forged_own = f"{own[:-8]}AAAAAA==\n"
    for answer in (forged_own, grid_line + "\n", forged_grid, "not a line\n"):
        def post(log_node: Node, name: str, body: Any, answer: str = answer) -> tuple[int, Any]:
            return 200, {"cosignature": answer}

        result = witness.request_cosignatures(bank, [TAX], post=post)
        assert result["witnesses"][TAX]["cosigned"] is False, answer
        assert "bad cosignature" in result["witnesses"][TAX]["error"] or \
            "signature line" in result["witnesses"][TAX]["error"]
        assert ledger.checkpoint(bank) == before
    with bank.store.read() as session:
        audit.audit(session, bank.signer.verifier())


def test_the_stored_note_keeps_within_the_signature_limit(nodes: dict[str, Node]) -> None:
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dataspace.identity.note import NoteSigner, parse_note
    from dataspace.ledger.cosignature import Cosigner

    bank = nodes[BANK]
    note = ledger.checkpoint(bank)
    text = note[: note.index("\n\n") + 1]
    size = peek_checkpoint(note).size
    lines = [Cosigner(NoteSigner(f"w{i}", Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(str(i).encode()).digest()))).cosign(text, 1) for i in range(120)]
    stored = witness._store(bank, size, lines)
    assert len(parse_note(stored).signatures) == 100 and stored.startswith(note)
    assert ledger.inclusion_proof(bank, 0)["checkpoint"] == stored


def test_a_member_cannot_claim_another_members_log(nodes: dict[str, Node]) -> None:
    import dataclasses

    tax, grid = nodes[TAX], nodes[GRID]
    renamed = dataclasses.replace(space.member(tax, GRID), name="somebody-else")
    with pytest.raises(DataspaceError, match="not of somebody-else's log"):
        witness.add_checkpoint(tax, renamed, {"old_size": 0, "proof": [],
                                              "checkpoint": ledger.checkpoint(grid)})


def test_a_cosigned_empty_tree_is_extended_without_a_proof(nodes: dict[str, Node]) -> None:
    from dataspace.ledger import merkle

    bank, tax = nodes[BANK], nodes[TAX]
    empty = Checkpoint(bank.origin, 0, merkle.EMPTY_ROOT).sign([bank.signer])
    witness.add_checkpoint(tax, space.member(tax, BANK),
                           {"old_size": 0, "proof": [], "checkpoint": empty})
    result = witness.request_cosignatures(bank, [TAX], post=_post(nodes))
    assert result["witnesses"][TAX] == {"cosigned": True}


def test_a_serving_node_asks_its_witnesses_only_when_its_log_really_grew(
    nodes: dict[str, Node],
) -> None:
    bank, tax, post = nodes[BANK], nodes[TAX], _post(nodes)
    runner = auto_witness.AutoWitness(bank, [TAX], 60.0, post=post)
    first = runner.round()
    assert first is not None and first["witnesses"] == {TAX: {"cosigned": True}}
    assert runner.cosigned_size == first["size"] == ledger.size(bank)
    assert runner.round() is None  # nothing new
    # the bank witnessing the tax bureau grows the bank's log by witness.cosigned only
    witness.request_cosignatures(tax, [BANK], post=post)
    assert ledger.size(bank) == first["size"] + 1
    assert runner.round() is None
    _grow(bank, 2)
    second = runner.round()
    assert second is not None and second["size"] == first["size"] + 3
    assert "\u2014 dataspace/tax-bureau " in ledger.checkpoint(bank)


def test_a_witness_that_refused_is_asked_again_next_round(nodes: dict[str, Node]) -> None:
    down = {GRID}

    def post(log_node: Node, name: str, body: Any) -> tuple[int, Any]:
        if name in down:
            return 502, {"error": {"code": "unreachable", "message": "no answer"}}
        return _post(nodes)(log_node, name, body)

    runner = auto_witness.AutoWitness(nodes[BANK], [TAX, GRID], 60.0, post=post)
    first = runner.round()
    assert first is not None and first["witnesses"][GRID]["cosigned"] is False
    assert runner.cosigned_size == 0  # not every witness cosigned: ask again
    cosignings = _cosignings(nodes[TAX])
    for _ in range(3):  # the witness that is down is asked again, the other one is not
        again = runner.round()
        assert again is not None and list(again["witnesses"]) == [GRID]
    assert _cosignings(nodes[TAX]) == cosignings
    down.clear()
    second = runner.round()
    assert second is not None and second["witnesses"] == {GRID: {"cosigned": True}}
    assert runner.cosigned_size == second["size"] == first["size"]
    assert runner.round() is None
    note = ledger.checkpoint(nodes[BANK])  # both lines on the one checkpoint
    assert "\u2014 dataspace/tax-bureau " in note and "\u2014 dataspace/power-grid " in note


def _cosignings(node: Node) -> int:
    return sum(e["entry"]["action"] == "witness.cosigned" for e in ledger.entries(node, limit=1000))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"ledger": "tax-bureau"}, "must be a table"),
        ({"ledger": {"witnesses": "tax-bureau"}}, "must be a list of member names"),
        ({"ledger": {"witnesses": ["tax-bureau", 3]}}, "must be a list of member names"),
        ({"ledger": {"witnesses": [""]}}, "must be a list of member names"),
        ({"ledger": {"witnesses": [BANK]}}, "names this node itself"),
        ({"ledger": {"witnesses": [TAX, TAX]}}, "names a member twice"),
    ],
)
def test_a_bad_witnesses_section_is_refused_with_what_is_wrong(
    nodes: dict[str, Node], section: dict[str, Any], message: str
) -> None:
    bank = nodes[BANK]
    bank.config.update(section)
    with pytest.raises(UsageError, match=message):
        auto_witness.configured_witnesses(bank)


def test_no_witnesses_section_means_no_witnessing(nodes: dict[str, Node]) -> None:
    assert auto_witness.configured_witnesses(nodes[BANK]) == []
    assert auto_witness.start(nodes[BANK], []) is None
    with pytest.raises(UsageError, match="must be positive"):
        auto_witness.AutoWitness(nodes[BANK], [TAX], 0.0)


def test_a_witness_that_is_not_a_member_is_refused_before_anyone_is_asked(
    nodes: dict[str, Node],
) -> None:
    asked: list[str] = []

    def post(log_node: Node, name: str, body: Any) -> tuple[int, Any]:
        asked.append(name)
        return _post(nodes)(log_node, name, body)

    with pytest.raises(UsageError, match="not a member of this space: nobody") as refused:
        witness.request_cosignatures(nodes[BANK], [TAX, "nobody"], post=post)
    assert refused.value.hint == f"witnesses are other members: {TAX}, {GRID}"
    assert asked == []


def test_a_configured_witness_that_is_not_a_member_does_not_stop_the_round(
    nodes: dict[str, Node], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bank = nodes[BANK]
    monkeypatch.setattr(auto_witness.AutoWitness, "start", lambda self: None)  # no thread
    with caplog.at_level("WARNING", logger="dataspace.node"):
        runner = auto_witness.start(bank, ["nobody", TAX])
    assert runner is not None
    runner.stop()
    assert "not a member of this space: nobody" in caplog.text
    runner = auto_witness.AutoWitness(bank, ["nobody", TAX], 60.0, post=_post(nodes))
    answers = runner.round()
    assert answers is not None and answers["witnesses"][TAX] == {"cosigned": True}
    assert answers["witnesses"]["nobody"]["cosigned"] is False
    assert "not a member" in answers["witnesses"]["nobody"]["error"]
