"""Participant side of multi-party jobs, in process: frames, idempotence, refusals, timeouts."""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dataspace.errors import Conflict, DataspaceError, InputError, NotFound, UsageError
from dataspace.identity.membership import Member
from dataspace.ledger import log
from dataspace.policy import PolicyDenied, from_template
from dataspace.policy.model import Constraint, Operator
from dataspace.privacy.psi import Initiator, PsiMessageRefused
from dataspace.privacy.secagg import (
    AdvertisementRejected,
    FixedPoint,
    OverflowRisk,
    PairwiseMasking,
    SessionConfig,
    ed25519_verifier,
    local_noise,
)
from dataspace.privacy.secagg.messages import decode
from dataspace.services import datasets, mp_party, multiparty, space
from dataspace.services import mp_store as ms
from dataspace.services import usage as usage_service
from dataspace.services.mp_wire import MultipartyFailed, pack_frame, unpack_frame
from dataspace.services.node import Node
from dataspace.store.models_compute import JobRow
from helpers.agreements import make_agreement

KEY = "credit_code:uscc"
CODES = ["91110108MA01ABCD1X", "91110108MA01ABCD2X", "91110108MA01ABCD3X", "911101085929123457"]


@pytest.fixture
def tax(make_node: Callable[..., tuple[Node, str]], tmp_path: Path) -> tuple[Node, dict[str, str]]:
    node, _ = make_node("tax-bureau")
    csv = tmp_path / "companies.csv"
    csv.write_text("credit_code,revenue\n" + "".join(f"{c},1\n" for c in CODES), encoding="utf-8")
    view = datasets.add(node, csv, name="companies", actor="t")
    psi = from_template("psi-only", purposes=["finance"], output="pseudonymized")
    sql = from_template("aggregate-only", purposes=["finance"])
    agreements = {
        kind: make_agreement(node, "bank", dataset_id=view["id"], purpose="credit-risk", offer=p)
        for kind, p in (("psi", psi), ("sql", sql))
    }
    return node, agreements


def _open(agreement: str, job: str, **extra: Any) -> bytes:
    return pack_frame(
        {
            "job_id": job,
            "step": 0,
            "name": "open",
            "kind": "psi",
            "agreement_id": agreement,
            "key": KEY,
            "mode": "me",
            **extra,
        }
    )


def _entries(node: Node, action: str) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = [r.to_dict() for r in log.entries(session, 0, 10_000)]
    return [r["payload"] for r in rows if r["entry"]["action"] == action]


def test_frames_round_trip_and_refuse_truncation() -> None:
    body = pack_frame({"job_id": "j", "step": 3}, [b"a" * 5, b"", b"xyz"])
    assert unpack_frame(body) == ({"job_id": "j", "step": 3}, [b"a" * 5, b"", b"xyz"])
    for bad in (body[:-1], b"XXXX" + body[4:], body[:7]):
        with pytest.raises(InputError):
            unpack_frame(bad)


def _psi_until_finish(node: Node, agreement: str, job: str) -> None:
    """A PSI in mode ``both`` run here up to its ``finish`` (step 4), as its initiator would
    run it."""
    mp_party.handle_step(node, "bank", _open(agreement, job, mode="both"))
    a = Initiator(job, KEY, mode="both")
    a.load([pa.array([*CODES[:2], "91110108MA01ZZZZ9X"])])

    def step(n: int, name: str, blobs: list[bytes]) -> list[bytes]:
        frame = pack_frame({"job_id": job, "step": n, "name": name}, blobs)
        return unpack_frame(mp_party.handle_step(node, "bank", frame))[1]

    for blob in step(1, "hello", [a.hello()]):
        a.receive(blob)
    back: list[bytes] = []
    for i, chunk in enumerate(a.outgoing()):
        for blob in step(2 + i, f"points#{i}", [chunk]):
            back += a.receive(blob)
    step(3, "matches", back)


def test_a_finish_sent_again_after_its_answer_was_lost_gets_the_same_answer(
    tax: Any
) -> None:
    """`finish` ends the session here; its resend after a lost answer met "no longer holds
    the session": the initiator failed a job this node had completed and metered, and under
    a one-job agreement could never get its result."""
    node, agreements = tax
    job = "job-finish-resent-0001"
    _psi_until_finish(node, agreements["psi"], job)
    finish = pack_frame({"job_id": job, "step": 4, "name": "finish"}, [])
    first = mp_party.handle_step(node, "bank", finish)
    assert mp_party.handle_step(node, "bank", finish) == first
    assert multiparty.get_job(node, job)["state"] == "SUCCEEDED"
    with pytest.raises(MultipartyFailed, match="no longer holds"):  # another request
        mp_party.handle_step(node, "bank", pack_frame(
            {"job_id": job, "step": 5, "name": "finish"}, []))


def test_an_abort_after_this_nodes_finish_fails_the_job_and_drops_its_rows(tax: Any) -> None:
    """Another party's finish (or the initiator's own) failed after this node's: the abort
    met a SUCCEEDED job and left it so, with the intersection's rows kept here."""
    node, agreements = tax
    job = "job-abort-after-finish-01"
    _psi_until_finish(node, agreements["psi"], job)
    mp_party.handle_step(node, "bank", pack_frame({"job_id": job, "step": 4, "name": "finish"}))
    kept = node.data_dir / mp_party.ALIGN_DIR / f"{job}.parquet"
    assert kept.exists() and multiparty.get_job(node, job)["state"] == "SUCCEEDED"

    answer = mp_party.handle_abort(node, "bank", job, "the grid's finish failed")
    assert answer["state"] == "FAILED"
    assert not kept.exists()
    view = multiparty.get_job(node, job)
    assert view["error"]["message"] == "the initiator bank ended the job: the grid's finish failed"
    [failed] = [e for e in _entries(node, "job.failed") if e["job_id"] == job]
    assert failed["cause"] == "aborted-after-commit"
    assert mp_party.handle_abort(node, "bank", job, "again")["state"] == "FAILED"  # idempotent
    assert len([e for e in _entries(node, "job.failed") if e["job_id"] == job]) == 1
    assert mp_party.handle_abort(node, "grid", job, "not its job")["state"] == "UNKNOWN"


def test_an_aborted_participant_is_metered_with_what_it_did(tax: Any) -> None:
    """The abort, a job's most common end at a participant, wrote no usage record: the rows
    it scanned and the answers it sent went unmetered."""
    node, agreements = tax
    job = "job-aborted-metered-0001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job, mode="both"))
    a = Initiator(job, KEY, mode="both")
    a.load([pa.array(CODES[:2])])
    mp_party.handle_step(node, "bank", pack_frame({"job_id": job, "step": 1, "name": "hello"},
                                                  [a.hello()]))
    assert mp_party.handle_abort(node, "bank", job, "the grid refused")["state"] == "FAILED"
    [failed] = [e for e in _entries(node, "job.failed") if e["job_id"] == job]
    assert failed["cause"] == "aborted" and failed["usage_id"] is not None
    [line] = usage_service.list_usage(node, agreement_id=agreements["psi"])
    assert (line["id"], line["status"], line["rows_scanned"]) == (
        failed["usage_id"], "failed", len(CODES))
    assert line["bytes_out"] > 0 and Decimal(line["amount"]) == 0  # its answer to hello


def test_a_psi_revealing_more_than_the_agreement_allows_is_told_to_ask_for_the_size(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """A psi-only offer releases the intersection's size by default; the CLI's default
    reveals matched rows, and the refusal ("output lteq 'aggregate-only'") never said what
    to do."""
    node, _ = make_node("tax-bureau")
    agreement = _psi_agreement(node, tmp_path, output="aggregate-only")
    with pytest.raises(PolicyDenied) as denied:
        mp_party.handle_step(node, "bank", _open(agreement, "job-psi-reveal-me-01"))
    assert "`--reveal size`" in (denied.value.hint or "")
    assert "tax-bureau's whose output allows pseudonymized" in (denied.value.hint or "")
    mp_party.handle_step(node, "bank", _open(agreement, "job-psi-reveal-size1", mode="size"))
    assert multiparty.get_job(node, "job-psi-reveal-size1")["state"] == "RUNNING"
    mp_party.handle_abort(node, "bank", "job-psi-reveal-size1", "test over")
    # an agreement for training permits no PSI at all: no size to ask for
    view = datasets.list_datasets(node)[0]
    training = make_agreement(node, "bank", dataset_id=view["id"], purpose="credit-risk",
                              offer=from_template("federated-train", purposes=["finance"]))
    with pytest.raises(PolicyDenied) as denied:
        mp_party.handle_step(node, "bank", _open(training, "job-psi-under-train1"))
    assert "--reveal size" not in (denied.value.hint or "")


def test_a_job_is_retried_once_and_a_retry_that_could_not_start_gives_its_claim_back(
    tax: Any
) -> None:
    node, agreements = tax
    job = "job-retried-once-0001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job))
    ms.claim_retry(node, job)
    with pytest.raises(Conflict, match="is being retried right now"):  # a double click
        ms.claim_retry(node, job)
    ms.settle_retry(node, job, None)  # that attempt could not be started
    ms.claim_retry(node, job)
    ms.settle_retry(node, job, "job-retried-once-0002")
    with pytest.raises(Conflict, match="retried already, as job-retried-once-0002") as info:
        ms.claim_retry(node, job)
    assert "job retry job-retried-once-0002" in (info.value.hint or "")
    mp_party.handle_abort(node, "bank", job, "test over")


def test_an_open_that_arrives_after_its_abort_is_refused(tax: Any) -> None:
    """The abort and the open crossed: the abort found no job here, and the late open then
    started one its initiator had given up, holding the agreement's slot until it timed
    out."""
    node, agreements = tax
    job = "job-open-after-abort-1"
    assert mp_party.handle_abort(node, "bank", job, "the grid refused")["state"] == "UNKNOWN"
    with pytest.raises(Conflict, match="was ended by its initiator bank before it opened here"):
        mp_party.handle_step(node, "bank", _open(agreements["psi"], job))
    with pytest.raises(NotFound):  # nothing was started, nothing holds the slot
        multiparty.get_job(node, job)
    other = "job-open-after-abort-2"  # another job, and another initiator's, are unaffected
    mp_party.remember_aborted_unopened(node, other, "insurer")
    mp_party.handle_step(node, "bank", _open(agreements["psi"], other))
    assert multiparty.get_job(node, other)["state"] == "RUNNING"
    mp_party.handle_abort(node, "bank", other, "test over")


def test_a_job_running_here_beats_and_one_ended_meanwhile_keeps_no_result(
    tax: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The initiator's own row was failed as timed out (by `job list` in another process)
    while it worked alone; it then stored nothing, but its participants had finished and
    kept their rows, and its rows file stayed."""
    node, _ = tax
    job_id = "job-ended-meanwhile-01"
    ms.create_row(node, job_id=job_id, role=ms.INITIATOR, agreement_id="agr", peer="grid",
                  action=ms.PSI, request={"mp": {}, "idle_timeout": 60.0})
    ms.set_meta(node, job_id, heartbeat=0.0)  # long silent: the reaper's
    ms.beat(node, job_id)  # what the running job's ticker does
    ms.reap(node)
    assert multiparty.get_job(node, job_id)["state"] == "RUNNING"

    kept = node.data_dir / mp_party.ALIGN_DIR / f"{job_id}.parquet"
    aborted: list[tuple[list[str], str]] = []

    def run(r: Any) -> dict[str, Any]:  # the protocol ran; then the row was failed
        ms.fail(node, job_id, MultipartyFailed("no step for 1 s: the job timed out"),
                actor="node:x")
        return mp_party.write_rows(node, job_id, np.arange(3), ordered=False)

    monkeypatch.setattr(multiparty, "_run_psi", run)
    monkeypatch.setattr(multiparty.mp_initiator, "abort_peers",
                        lambda node, job, peers, reason, attempts=1: aborted.append(
                            (list(peers), reason)) or [])
    job = multiparty.Job(job_id, ms.PSI, {}, [multiparty._Link("grid", "agr")], "t",
                         step_timeout=1.0, idle_timeout=1.0)
    with pytest.raises(MultipartyFailed, match="ended before its result was stored"):
        multiparty.execute(node, job)
    assert not kept.exists()
    assert aborted == [(["grid"], "the initiator's job ended before it stored the result: "
                                  "no step for 1 s: the job timed out")]
    assert multiparty.get_job(node, job_id)["state"] == "FAILED"


def test_a_resent_step_gets_the_same_answer_and_never_a_new_one(tax: Any) -> None:
    node, agreements = tax
    job = "job-idempotent-0001"
    first = mp_party.handle_step(node, "bank", _open(agreements["psi"], job))
    assert mp_party.handle_step(node, "bank", _open(agreements["psi"], job)) == first
    a = Initiator(job, KEY, mode="me")
    a.load([pa.array(CODES[:2])])
    hello = pack_frame({"job_id": job, "step": 1, "name": "hello"}, [a.hello()])
    answer = mp_party.handle_step(node, "bank", hello)
    assert mp_party.handle_step(node, "bank", hello) == answer  # cached, not recomputed
    other = pack_frame({"job_id": job, "step": 1, "name": "hello"}, [b"different"])
    with pytest.raises(Conflict):
        mp_party.handle_step(node, "bank", other)
    with pytest.raises(Conflict):  # out of sequence
        mp_party.handle_step(node, "bank", pack_frame({"job_id": job, "step": 5, "name": "x"}))
    with pytest.raises(NotFound):  # another initiator cannot reach (or learn of) the job
        mp_party.handle_step(node, "grid", _open(agreements["psi"], job))
    view = multiparty.get_job(node, job)
    assert view["state"] == "RUNNING" and [e["name"] for e in view["steps"]] == ["open", "hello"]
    mp_party.handle_abort(node, "bank", job, "test over")
    assert multiparty.get_job(node, job)["state"] == "FAILED"


def test_a_participant_whose_agreement_does_not_allow_psi_refuses(tax: Any) -> None:
    node, agreements = tax
    with pytest.raises(PolicyDenied):
        mp_party.handle_step(node, "bank", _open(agreements["sql"], "job-denied-00001"))
    view = multiparty.get_job(node, "job-denied-00001")
    assert view["state"] == "DENIED" and view["steps"][-1]["state"] == "refused"
    [denied] = _entries(node, "job.denied")
    assert denied["job_id"] == "job-denied-00001" and denied["usage_id"]


@pytest.mark.parametrize(("mode", "admitted"),
                         [("size", True), ("align", False), ("me", False), ("both", False)])
def test_an_aggregate_only_psi_agreement_admits_the_size_only(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path, mode: str, admitted: bool
) -> None:
    """align keeps, at the initiator, the positions of its rows whose keys the participant
    holds — what me tells it — so it needs output pseudonymized as me and both do."""
    node, _ = make_node("tax-bureau")
    agreement = _psi_agreement(node, tmp_path, output="aggregate-only")
    job = f"job-{mode}-output-000"
    if admitted:
        mp_party.handle_step(node, "bank", _open(agreement, job, mode=mode))
        assert multiparty.get_job(node, job)["state"] == "RUNNING"
        mp_party.handle_abort(node, "bank", job, "test over")
    else:
        with pytest.raises(PolicyDenied, match="output"):
            mp_party.handle_step(node, "bank", _open(agreement, job, mode=mode))


def test_a_size_query_over_fewer_keys_than_the_node_floor_is_refused(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """A count over one initiator key is a membership test: in size mode the participant
    answers only sets of at least k distinct keys (here the node floor, 10)."""
    node, _ = make_node("tax-bureau")
    agreement = _psi_agreement(node, tmp_path, output="aggregate-only")
    job = "job-size-one-key-01"
    mp_party.handle_step(node, "bank", _open(agreement, job, mode="size"))
    a = Initiator(job, KEY, mode="size")
    a.load([pa.array([CODES[0]] * 20)])  # 20 rows, one distinct key
    hello = pack_frame({"job_id": job, "step": 1, "name": "hello"}, [a.hello()])
    with pytest.raises(PsiMessageRefused, match="sets of at least 10"):
        mp_party.handle_step(node, "bank", hello)
    assert multiparty.get_job(node, job)["state"] == "FAILED"


def test_an_initiator_set_beyond_the_agreements_peer_set_size_is_refused(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """peerSetSize caps what the initiator can test for membership: a HELLO announcing more
    identifiers fails the job here before one of them is blinded; up to the bound runs."""
    node, _ = make_node("tax-bureau")
    agreement = _psi_agreement(node, tmp_path, max_peer_set=3)
    results = {}
    for job, keys in (("job-peer-set-four-1", CODES), ("job-peer-set-three", CODES[:3])):
        mp_party.handle_step(node, "bank", _open(agreement, job))
        a = Initiator(job, KEY, mode="me")
        a.load([pa.array(keys)])
        hello = pack_frame({"job_id": job, "step": 1, "name": "hello"}, [a.hello()])
        try:
            mp_party.handle_step(node, "bank", hello)
        except PsiMessageRefused as exc:
            results[job] = str(exc)
        else:
            mp_party.handle_abort(node, "bank", job, "test over")
    assert set(results) == {"job-peer-set-four-1"}
    assert "holds 4 identifiers; the agreement lets it bring at most 3" in results[
        "job-peer-set-four-1"]
    view = multiparty.get_job(node, "job-peer-set-four-1")
    assert view["state"] == "FAILED" and "at most 3" in view["error"]["message"]


def test_a_participant_times_out_by_itself_when_the_initiator_goes_silent(tax: Any) -> None:
    node, agreements = tax
    job = "job-silent-000001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job, idle_timeout=1))
    deadline = time.monotonic() + 10
    while multiparty.get_job(node, job)["state"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    view = multiparty.get_job(node, job)
    assert view["state"] == "FAILED" and "timed out" in view["error"]["message"]
    # its secrets are gone: no step can continue it, and the initiator is told why (the
    # answer said "it ended, or the node restarted": a retry then timed out the same way)
    with pytest.raises(MultipartyFailed) as info:
        mp_party.handle_step(node, "bank", pack_frame({"job_id": job, "step": 1, "name": "x"}))
    message = info.value.message  # the watchdog's words or the reaper's, whichever came first
    assert f"no longer holds job {job}'s session: it ended here (FAILED: no step from the " \
        "initiator" in message and "for 1 s: the job timed out" in message
    assert "neither a step nor a keep-alive" in (info.value.hint or "")


def test_a_keep_alive_holds_a_session_whose_initiator_works_alone(tax: Any) -> None:
    """A three-party PSI runs its participants in turn: the second waited, idle, while the
    first ran, and timed the job out (idle 120 s: any chain over ~1M identifiers)."""
    node, agreements = tax
    job = "job-kept-alive-0001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job, idle_timeout=1))
    until = time.monotonic() + 3  # three idle timeouts
    while time.monotonic() < until:
        assert mp_party.handle_alive(node, "bank", job) == {"job_id": job, "state": "RUNNING"}
        ms.watch(node, job, False)  # as another process's reaper, which holds no session,
        ms.reap(node)  # sees it: the row's heartbeat is beaten too, so it is spared
        ms.watch(node, job)
        time.sleep(0.2)
    assert multiparty.get_job(node, job)["state"] == "RUNNING"
    # another member's keep-alive learns nothing and keeps nothing alive
    assert mp_party.handle_alive(node, "grid", job) == {"job_id": job, "state": "UNKNOWN"}
    assert mp_party.handle_alive(node, "bank", "job-never-opened-01")["state"] == "UNKNOWN"
    deadline = time.monotonic() + 10
    while multiparty.get_job(node, job)["state"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    ended = mp_party.handle_alive(node, "bank", job)
    assert ended["state"] == "FAILED" and "timed out" in ended["reason"]


def test_keep_alives_do_not_keep_a_job_past_the_longest_a_participant_allows(
    tax: Any,
) -> None:
    """A keep-alive every few seconds held a session, its loaded rows and its agreement's slot
    for as long as the initiator cared to send them."""
    from dataspace.settings import Limits

    node, agreements = tax
    node.limits = Limits({"mp_max_job_seconds": 2.0})
    job = "job-kept-too-long-01"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job, idle_timeout=1))
    deadline = time.monotonic() + 10
    while job in mp_party._SESSIONS and time.monotonic() < deadline:
        mp_party.handle_alive(node, "bank", job)
        time.sleep(0.2)
    view = multiparty.get_job(node, job)
    assert view["state"] == "FAILED"
    assert "ran for longer than 2 s, the most tax-bureau allows" in view["error"]["message"]
    assert "mp_max_job_seconds" in view["error"]["hint"]


def test_the_initiators_keep_alive_stops_at_a_participant_that_ended_the_job(
    tax: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, _ = tax
    answers = {
        "grid": {"state": "RUNNING"},
        "insurer": {"state": "SUCCEEDED"},  # finished its part: nothing more to keep alive
        "hospital": {"state": "FAILED", "reason": "no step from the initiator for 9 s"},
    }
    told: list[str] = []

    def call_peer(node: Node, peer: str, path: str, body: bytes, **kw: Any) -> bytes:
        assert path == "/peer/v1/mp/alive" and json.loads(body) == {"job_id": "job-k"}
        told.append(peer)
        return json.dumps(answers[peer]).encode()

    monkeypatch.setattr(multiparty.mp_initiator, "call_peer", call_peer)
    with multiparty.mp_initiator.KeepAlive(node, "job-k", list(answers), idle=3.0) as alive:
        alive.check()  # nothing heard yet
        deadline = time.monotonic() + 10
        while told.count("grid") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(MultipartyFailed) as info:
            alive.check()
    assert told.count("grid") >= 2 and told.count("insurer") == told.count("hospital") == 1
    assert info.value.message == ("hospital ended job job-k there (FAILED: no step from the "
                                  "initiator for 9 s)")
    assert info.value.details["node"] == "hospital"


def test_a_step_after_a_restart_fails_the_job_with_the_restart_as_its_reason(tax: Any) -> None:
    node, agreements = tax
    job = "job-restarted-000001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job))
    with mp_party._REGISTRY:  # what a restart does to the sessions: they live in memory only
        mp_party._SESSIONS.pop(job)
    with pytest.raises(MultipartyFailed, match="the node restarted and its secrets are gone"):
        mp_party.handle_step(node, "bank", pack_frame({"job_id": job, "step": 1, "name": "x"}))
    view = multiparty.get_job(node, job)
    assert view["state"] == "FAILED" and "restarted" in view["error"]["message"]


def test_a_failure_names_its_job_in_the_details_and_the_retry_hint() -> None:
    from dataspace.services.mp_initiator import name_the_job

    exc = MultipartyFailed("grid did not answer", hint="check that grid is up, then "
                           "`dataspace job retry`", node="grid")
    name_the_job(exc, "job-1")
    assert exc.hint == "check that grid is up, then `dataspace job retry job-1`"
    assert exc.details["job_id"] == "job-1" and exc.details["node"] == "grid"
    prediction = MultipartyFailed("x", hint="then `dataspace job retry`")
    name_the_job(prediction, "job-2", instead="`dataspace predict` again")
    assert prediction.hint == "then `dataspace predict` again"
    denied = NotFound("no agreement x", hint="see `dataspace contract list`")
    name_the_job(denied, "job-3")  # no retry to name: the hint stays
    assert denied.details["job_id"] == "job-3" and "job-3" not in str(denied.hint)


def test_ctrl_c_cancels_a_job_rather_than_reporting_a_crash() -> None:
    from dataspace.services.mp_initiator import run_or_fail

    recorded: list[DataspaceError] = []

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(MultipartyFailed) as info:
        run_or_fail(interrupted, recorded.append, "training")
    assert recorded == [info.value]
    assert info.value.message == "training was cancelled by its initiator (interrupted)"
    assert info.value.details["cause"] == "cancelled"

    def broken() -> None:
        raise ZeroDivisionError("x")

    with pytest.raises(MultipartyFailed, match=r"training stopped unexpectedly \(Zero"):
        run_or_fail(broken, recorded.append, "training")


def test_a_restarted_server_fails_the_jobs_it_served_and_leaves_the_ones_it_started(
    tax: Any,
) -> None:
    """A provider or dealer killed mid-training kept its part RUNNING for good after it came
    back: no session, no watchdog, and the reaper read PSI and aggregation rows only."""
    node, agreements = tax
    psi = "job-served-psi-0001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], psi))
    with mp_party._REGISTRY:  # the restart: sessions live in memory only
        mp_party._SESSIONS.pop(psi)
    rows = {"job-served-train-01": ("provider", "federated-train", "RUNNING"),
            "job-served-deal-001": ("dealer", "federated-train", "RUNNING"),
            "job-served-pred-001": ("provider", "federated-predict", "QUEUED"),
            "job-started-here-01": (ms.INITIATOR, "federated-train", "RUNNING"),
            "job-served-query-01": ("provider", "governed-query", "RUNNING")}
    for job, (role, action, state) in rows.items():
        ms.create_row(node, job_id=job, role=role, agreement_id="agr", peer="bank",
                      action=action, request={}, state=state)
    ended = ms.fail_orphaned(node)
    assert sorted(ended) == sorted([psi, "job-served-train-01", "job-served-deal-001",
                                    "job-served-pred-001"])
    failed = {p["job_id"]: p for p in _entries(node, "job.failed")}
    assert set(ended) <= set(failed) and failed[psi]["cause"] == "restart"
    assert "server stopped while the job ran" in failed["job-served-deal-001"]["message"]
    with node.store.read() as session:
        states = {job: session.get(JobRow, job).state for job in rows}
    assert states["job-started-here-01"] == states["job-served-query-01"] == "RUNNING"
    assert ms.fail_orphaned(node) == []  # once


def test_a_job_the_reaper_ended_gets_no_step_from_its_watchdog_after_its_end(tax: Any) -> None:
    node, agreements = tax
    job = "job-reaped-000001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job, idle_timeout=1))
    # another path ends it first (the reaper, run by any request, or an abort) ...
    assert ms.fail(node, job, MultipartyFailed("no step: the job timed out", cause="timeout"),
                   actor="node:tax-bureau", cause="timeout")
    # ... then the session's own watchdog fires on its next tick
    deadline = time.monotonic() + 10
    while job in mp_party._SESSIONS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job not in mp_party._SESSIONS
    steps = [p for p in _entries(node, "mp.step") if p["job_id"] == job]
    assert [p for p in steps if p.get("state") in ("failed", "refused")] == []
    assert len([p for p in _entries(node, "job.failed") if p["job_id"] == job]) == 1
    assert multiparty.get_job(node, job)["state"] == "FAILED"


def _psi_agreement(node: Node, tmp_path: Path, **template: Any) -> str:
    csv = tmp_path / "companies.csv"
    csv.write_text("credit_code,revenue\n" + "".join(f"{c},1\n" for c in CODES), encoding="utf-8")
    view = datasets.add(node, csv, name="companies", actor="t")
    template = {"output": "pseudonymized", **template}
    offer = from_template("psi-only", purposes=["finance"], **template)
    return make_agreement(node, "bank", dataset_id=view["id"], purpose="credit-risk", offer=offer)


def test_a_running_job_takes_the_agreements_only_slot(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    node, _ = make_node("tax-bureau")
    agreement = _psi_agreement(node, tmp_path, max_jobs=1)
    mp_party.handle_step(node, "bank", _open(agreement, "job-slot-first-01"))
    with pytest.raises(PolicyDenied, match="count"):  # the first has not finished, yet counts
        mp_party.handle_step(node, "bank", _open(agreement, "job-slot-second-1"))
    assert multiparty.get_job(node, "job-slot-second-1")["state"] == "DENIED"
    mp_party.handle_abort(node, "bank", "job-slot-first-01", "test over")  # frees the slot
    mp_party.handle_step(node, "bank", _open(agreement, "job-slot-third-01"))
    assert multiparty.get_job(node, "job-slot-third-01")["state"] == "RUNNING"
    mp_party.handle_abort(node, "bank", "job-slot-third-01", "test over")


def test_two_concurrent_openings_against_count_1_admit_exactly_one(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    node, _ = make_node("tax-bureau")
    agreement = _psi_agreement(node, tmp_path, max_jobs=1)
    jobs = [f"job-race-{i}-000001" for i in range(2)]
    start = threading.Barrier(len(jobs))
    outcome: dict[str, str] = {}

    def open_job(job: str) -> None:
        start.wait()
        try:
            mp_party.handle_step(node, "bank", _open(agreement, job))
            outcome[job] = "admitted"
        except PolicyDenied:
            outcome[job] = "denied"

    threads = [threading.Thread(target=open_job, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcome.values()) == ["admitted", "denied"]
    states = {job: multiparty.get_job(node, job)["state"] for job in jobs}
    assert sorted(states.values()) == ["DENIED", "RUNNING"]
    for job in jobs:
        mp_party.handle_abort(node, "bank", job, "test over")


def _aggregation_party(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path,
    revenue: Callable[[int], str] = lambda i: "2", values: pa.Array | None = None,
    min_group: int | None = None, epsilon_budget: float | None = None,
) -> tuple[Node, Node, str]:
    """tax-bureau (party 1, in a space with grid and bank) with a secure-aggregate agreement
    over its companies' ``revenue`` (row i's value as CSV text; empty is null)."""
    operator, _ = make_node("operator")
    nodes = {name: make_node(name)[0] for name in ("tax-bureau", "grid", "bank")}
    members = [
        Member(n.name, f"http://127.0.0.1:{9000 + i}", n.verifier_key(), ("provider",))
        for i, n in enumerate(nodes.values())
    ]
    note = space.issue_membership(operator, members, space="s", serial=1, actor="op")
    tax = nodes["tax-bureau"]
    space.join(tax, note, operator.verifier_key(), actor="t")
    if values is None:
        source = tmp_path / "revenue.csv"
        source.write_text("credit_code,revenue\n" + "".join(
            f"{c},{revenue(i)}\n" for i, c in enumerate(CODES)), encoding="utf-8")
    else:  # typed values a CSV would read as text
        source = tmp_path / "revenue.parquet"
        pq.write_table(pa.table({"credit_code": CODES, "revenue": values}), source)
    view = datasets.add(tax, source, name="revenue", actor="t")
    policy = from_template(
        "psi-only", purposes=["finance"], output="aggregate-only", fields=["revenue"]
    )
    rule = dataclasses.replace(policy.permissions[0], action="secure-aggregate")
    if min_group is not None:
        rule = dataclasses.replace(rule, constraints=(
            *rule.constraints, Constraint("minGroupSize", Operator.GTEQ, min_group)))
    if epsilon_budget is not None:
        rule = dataclasses.replace(rule, constraints=(
            *rule.constraints, Constraint("epsilon", Operator.LTEQ, epsilon_budget)))
    policy = dataclasses.replace(policy, permissions=(rule,))
    agreement = make_agreement(
        tax, "bank", dataset_id=view["id"], purpose="credit-risk", offer=policy
    )
    return tax, nodes["grid"], agreement


def _open_aggregation(agreement: str, job: str, config: SessionConfig, **extra: Any) -> bytes:
    return pack_frame(
        {
            "job_id": job,
            "step": 0,
            "name": "open",
            "kind": "secure-aggregate",
            "agreement_id": agreement,
            "columns": ["revenue"],
            "op": "sum",
            "session": config.session.hex(),
            "parties": list(config.parties),
            "members": [[1, "tax-bureau"], [2, "grid"]],
            "index": 1,
            "bound": config.encoding.bound,
            "scale_bits": 16,
            "max_count": config.encoding.max_count,
            "threshold": config.threshold,
            "strategy": "pairwise-masking",
            **extra,
        }
    )


@pytest.mark.parametrize("op", ["mean", "count"])
def test_a_private_mean_or_count_is_refused_before_anything_runs(
    make_node: Callable[..., tuple[Node, str]], op: str
) -> None:
    """With no agreed bound on each party's rows, a DP count's noise (sensitivity 2^31)
    drowned the answer (a count of -8.6e9 for 200 rows): refused up front, naming --op sum."""
    node, _ = make_node("bank")
    with pytest.raises(UsageError, match="--op sum"):
        multiparty.start_aggregate(node, agreements=["a1"], columns=["revenue"], op=op,
                                   epsilon=1.0)


def test_a_roster_with_a_substituted_key_fails_the_aggregation_with_the_reason(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    tax, grid, agreement = _aggregation_party(make_node, tmp_path)
    config = SessionConfig(
        secrets.token_bytes(16), (1, 2), 1, FixedPoint(1e6, 16, max_count=2**31), threshold=2
    )
    job = "job-agg-swapped-01"
    _, [advert] = unpack_frame(
        mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config))
    )
    # The coordinator's side, with grid's real node key: both advertisements verify.
    names = {1: "tax-bureau", 2: "grid"}
    keys = {1: tax.signer.public_bytes, 2: grid.signer.public_bytes}
    coordinator = PairwiseMasking().coordinator(config, verifier=ed25519_verifier(keys, names))
    coordinator.receive(advert)
    coordinator.receive(PairwiseMasking().party(config, 2, [5.0], signer=grid.signer.sign).start())
    roster = decode(coordinator.advance()[1])
    # A malicious coordinator puts its own keys in grid's place before relaying the roster.
    own = X25519PrivateKey.generate().public_key().public_bytes_raw()
    forged = dataclasses.replace(roster, blobs={**roster.blobs, "c2": own, "s2": own}).encode()
    step = pack_frame({"job_id": job, "step": 1, "name": "round#1"}, [forged])
    with pytest.raises(AdvertisementRejected, match=r"party 2 \(grid\) is not signed"):
        mp_party.handle_step(tax, "bank", step)
    view = multiparty.get_job(tax, job)
    assert view["state"] == "FAILED"
    assert view["error"]["code"] == "secagg_advertisement_rejected"
    assert "substituted" in view["error"]["message"]
    [failed] = [e for e in _entries(tax, "job.failed") if e["job_id"] == job]
    assert failed["code"] == "secagg_advertisement_rejected"


def test_an_aggregation_that_could_unmask_this_nodes_input_is_refused(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """A threshold of 1 among several parties (its own share of its mask seed is the seed: a
    coordinator claiming every other party dropped out would unmask it inside a "sum"), or
    below a majority: refused before anything of this node's data is sent."""
    tax, _, agreement = _aggregation_party(make_node, tmp_path)
    encoding = FixedPoint(1e6, 16, max_count=2**31)
    members = [[1, "tax-bureau"], [2, "grid"], [3, "operator"]]
    cases = {
        "job-agg-t-one-001": (SessionConfig(secrets.token_bytes(16), (1, 2), 1, encoding,
                                            threshold=1), None),
        "job-agg-t-minor-1": (SessionConfig(secrets.token_bytes(16), (1, 2, 3), 1, encoding,
                                            threshold=1), members),
    }
    for job, (config, members) in cases.items():
        extra = {"members": members} if members else {}
        with pytest.raises(AdvertisementRejected, match="could release this node's input"):
            mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config, **extra))
        assert multiparty.get_job(tax, job)["state"] == "FAILED"


def test_a_session_refused_on_its_terms_costs_no_epsilon(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """The session's own terms are checked before the ε is charged: a malformed opening
    (a threshold that could unmask, a party list without this node) burnt the provider's ε,
    which is never refunded."""
    from dataspace.privacy.budget import get_budget

    tax, grid, agreement = _aggregation_party(make_node, tmp_path, epsilon_budget=5.0)
    dp = local_noise(1e6, 1, 1.0)
    encoding = FixedPoint(dp.encoded_bound, 16, max_count=2**31)
    unsafe = {
        "job-agg-eps-t-one": ({"threshold": 1}, "could release this node's input"),
        "job-agg-eps-names": ({"members": [[1, "grid"], [2, "tax-bureau"]]}, "not tax-bureau"),
        "job-agg-eps-bound": ({"bound": "lots"}, "not a number"),
    }
    for job, (change, message) in unsafe.items():
        config = SessionConfig(secrets.token_bytes(16), (1, 2), 1, encoding, threshold=2)
        opening = _open_aggregation(agreement, job, config, **{"bound": 1e6, "epsilon": 1.0,
                                                               **change})
        with pytest.raises(DataspaceError, match=message):
            mp_party.handle_step(tax, "bank", opening)
    with pytest.raises(NotFound):  # nothing was ever charged
        get_budget(tax.store, agreement)
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1, encoding, threshold=2)
    _sum_with_tax(tax, grid, agreement, "job-agg-eps-ok", config, bound=1e6, epsilon=1.0)
    assert get_budget(tax.store, agreement).epsilon_spent == 1


def test_another_member_learns_nothing_of_an_ended_job_by_reusing_its_id(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    tax, _, agreement = _aggregation_party(make_node, tmp_path)
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                           FixedPoint(1e6, 16, max_count=2**31), threshold=1)
    job = "job-agg-ended-001"
    with pytest.raises(AdvertisementRejected):
        mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config))
    with pytest.raises(MultipartyFailed) as info:
        mp_party.handle_step(tax, "grid", _open_aggregation(agreement, job, config))
    assert info.value.message == f"no multi-party job {job!r} with grid here"
    with pytest.raises(Conflict, match="already ended here: FAILED"):  # its own initiator
        mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config))


def test_a_bound_below_the_local_sum_is_no_oracle(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """The initiator picks the bound. The tax bureau's local sum is 8.0: a bound of 1.0 and
    one of 100.0 are both opened alike (a refusal below it would tell, and a binary search on
    the bound would read the sum); the input is clipped to the bound instead."""
    tax, _, agreement = _aggregation_party(make_node, tmp_path)
    for n, bound in enumerate((1.0, 100.0)):
        config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                               FixedPoint(bound, 16, max_count=2**31), threshold=2)
        job = f"job-agg-bound-0{n}"
        mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config))
        assert multiparty.get_job(tax, job)["state"] == "RUNNING"
        party = mp_party._SESSIONS[job].party
        assert party is not None
        value, count = config.encoding.signed(party._x)
        assert value / 2**16 == min(8.0, bound) and count == len(CODES)
        mp_party.handle_abort(tax, "bank", job, "test over")


def test_an_initiator_chosen_max_count_is_refused_before_it_can_probe_the_row_count(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """max_count 1 made a party with more rows refuse 'count must be in [0, 1], got 200': a
    free probe of its row count. Any max_count but the fixed one is refused, whatever the
    data, and the refusal names no count."""
    tax, _, agreement = _aggregation_party(make_node, tmp_path)
    for n, max_count in enumerate((1, len(CODES), 2**40)):
        config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                               FixedPoint(1e6, 16, max_count=max_count), threshold=2)
        with pytest.raises(AdvertisementRejected, match="max_count") as info:
            mp_party.handle_step(tax, "bank",
                                 _open_aggregation(agreement, f"job-agg-maxc-0{n}", config))
        assert info.value.message == (
            f"an aggregation's max_count is {2**31}, not {max_count!r}")  # no row count in it


def test_a_mean_counts_the_rows_whose_values_are_present(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """Every other revenue is missing: the mean's count is the rows with a value, not every
    row (a null counted as a row halved the mean)."""
    tax, _, agreement = _aggregation_party(make_node, tmp_path,
                                           revenue=lambda i: "" if i % 2 else "10")
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                           FixedPoint(1e6, 16, max_count=2**31), threshold=2)
    job = "job-agg-mean-0001"
    mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config, op="mean"))
    party = mp_party._SESSIONS[job].party
    assert party is not None
    total, count = config.encoding.signed(party._x)
    present = (len(CODES) + 1) // 2
    assert (total / 2**16, count) == (10.0 * present, present)
    mp_party.handle_abort(tax, "bank", job, "test over")


def test_an_aggregation_naming_an_unknown_or_wrong_party_is_refused(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    tax, _, agreement = _aggregation_party(make_node, tmp_path)
    config = SessionConfig(
        secrets.token_bytes(16), (1, 2), 1, FixedPoint(1e6, 16, max_count=2**31), threshold=2
    )
    cases = {
        "job-agg-stranger-1": ([[1, "tax-bureau"], [2, "mallory"]], "not on tax-bureau's"),
        "job-agg-wrongidx-1": ([[1, "grid"], [2, "tax-bureau"]], "names 'grid', not tax"),
        "job-agg-nomember-1": (None, "one distinct node for every party"),
        "job-agg-coordin-01": ([[1, "tax-bureau"], [2, "bank"]], "lists itself"),
    }
    for job, (members, reason) in cases.items():
        with pytest.raises(AdvertisementRejected, match=reason):
            mp_party.handle_step(
                tax, "bank", _open_aggregation(agreement, job, config, members=members)
            )
        assert multiparty.get_job(tax, job)["state"] == "FAILED"


def test_a_private_sum_is_noised_by_each_party_before_it_is_masked(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """The coordinator is the consumer's node: with --epsilon it must never unmask an exact
    sum. Played as the coordinator here, with grid contributing an exact 0, the sum is tax's
    4 × 2 plus tax's own noise -- never 8 -- and tax sent no row count."""
    tax, grid, agreement = _aggregation_party(make_node, tmp_path)
    dp = local_noise(1e6, 1, 1.0)
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                           FixedPoint(dp.encoded_bound, 16, max_count=2**31), threshold=2)
    result = _sum_with_tax(tax, grid, agreement, "job-agg-private-01", config,
                           bound=1e6, epsilon=1.0)
    assert result.count == 0
    assert result.sum[0] != pytest.approx(8.0, abs=1.0)
    assert abs(result.sum[0] - 8.0) < 20 * dp.noise.scale  # noise, not garbage


def _sum_with_tax(tax: Node, grid: Node, agreement: str, job: str, config: SessionConfig,
                  **header: Any) -> Any:
    """Coordinate one aggregation as the initiator would: tax through its step handler,
    grid in-process contributing an exact 0."""
    _, [advert] = unpack_frame(mp_party.handle_step(
        tax, "bank", _open_aggregation(agreement, job, config, **header)))
    coordinator = PairwiseMasking().coordinator(config)
    coordinator.receive(advert)
    other = PairwiseMasking().party(config, 2, [0.0], 0, signer=grid.signer.sign)
    coordinator.receive(other.start())
    step = 0
    while messages := coordinator.advance():
        step += 1
        if 1 in messages:
            frame = pack_frame({"job_id": job, "step": step, "name": f"round#{step}"},
                               [messages[1]])
            coordinator.receive(unpack_frame(mp_party.handle_step(tax, "bank", frame))[1][0])
        if 2 in messages:
            coordinator.receive(other.handle(messages[2]))
    result = coordinator.result()
    mp_party.handle_abort(tax, "bank", job, "test over")  # no session outlives the test
    return result


def test_epsilon_comes_back_when_others_end_the_job_before_the_noised_input_left(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """A five-party private sum failing at another party cost every provider its ε, job after
    job, with nothing released: the budget ran out on retries. Only what others end — the
    initiator's abort, its silence — before the masked input was sent is given back."""
    from dataspace.privacy.budget import get_budget, list_spends

    tax, grid, agreement = _aggregation_party(make_node, tmp_path, epsilon_budget=5.0)
    dp = local_noise(1e6, 1, 1.0)
    encoding = FixedPoint(dp.encoded_bound, 16, max_count=2**31)

    def opened(job: str, rounds: int, **header: Any) -> None:
        """Open at tax and answer its first ``rounds`` coordinator rounds."""
        config = SessionConfig(secrets.token_bytes(16), (1, 2), 1, encoding, threshold=2)
        reply, [advert] = unpack_frame(mp_party.handle_step(tax, "bank", _open_aggregation(
            agreement, job, config, bound=1e6, epsilon=1.0, **header)))
        assert "rows" not in reply["event"]  # with ε the exact row count is not told either
        coordinator = PairwiseMasking().coordinator(config)
        coordinator.receive(advert)
        other = PairwiseMasking().party(config, 2, [0.0], 0, signer=grid.signer.sign)
        coordinator.receive(other.start())
        for step in range(1, rounds + 1):
            messages = coordinator.advance()
            frame = pack_frame({"job_id": job, "step": step, "name": f"round#{step}"},
                               [messages[1]])
            coordinator.receive(unpack_frame(mp_party.handle_step(tax, "bank", frame))[1][0])
            coordinator.receive(other.handle(messages[2]))

    def spent() -> Decimal:
        return get_budget(tax.store, agreement).epsilon_spent

    opened("job-agg-refund-keys", 1)  # keys shared; the masked input not yet
    assert spent() == 1
    mp_party.handle_abort(tax, "bank", "job-agg-refund-keys", "the grid refused")
    assert spent() == 0
    [refund] = [e for e in _entries(tax, "dp.refunded")]
    assert refund["job_id"] == "job-agg-refund-keys"
    assert (Decimal(refund["epsilon"]), Decimal(refund["epsilon_left"])) == (1, 5)
    assert "the grid refused" in refund["reason"]
    [line] = usage_service.list_usage(tax, agreement_id=agreement)
    assert Decimal(line["epsilon_spent"]) == 0  # what the job cost in the end
    mp_party.handle_abort(tax, "bank", "job-agg-refund-keys", "again")  # idempotent
    assert spent() == 0 and len(_entries(tax, "dp.refunded")) == 1

    opened("job-agg-refund-sent", 2)  # the masked input left: survivors could unmask it
    mp_party.handle_abort(tax, "bank", "job-agg-refund-sent", "the grid vanished")
    assert spent() == 1

    opened("job-agg-refund-idle", 0, idle_timeout=1)  # the initiator fell silent
    assert spent() == 2
    deadline = time.monotonic() + 10
    while "job-agg-refund-idle" in mp_party._SESSIONS and time.monotonic() < deadline:
        time.sleep(0.1)  # (not reading the job: that runs the reaper, which holds no session)
    assert multiparty.get_job(tax, "job-agg-refund-idle")["state"] == "FAILED"
    assert spent() == 1

    # its own step failing (here a garbled round) is no one else's doing: ε stays spent
    opened("job-agg-refund-own", 0)
    bad = pack_frame({"job_id": "job-agg-refund-own", "step": 1, "name": "round#1"}, [b"junk"])
    with pytest.raises(DataspaceError):
        mp_party.handle_step(tax, "bank", bad)
    assert multiparty.get_job(tax, "job-agg-refund-own")["state"] == "FAILED"
    assert sum(s.epsilon for s in list_spends(tax.store, agreement)) == spent()


def test_a_refund_racing_another_spend_of_the_budget_does_not_deadlock(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the refund took the ledger head (the abort's step event) before the budget
    row, and a reservation takes them the other way round: "deadlock detected", and the abort
    failed with the job left RUNNING. Each side is held where the other would wait."""
    from dataspace.privacy import budget

    tax, _, agreement = _aggregation_party(make_node, tmp_path, epsilon_budget=5.0)
    if tax.store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: no lock order to get wrong")
    dp = local_noise(1e6, 1, 1.0)
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                           FixedPoint(dp.encoded_bound, 16, max_count=2**31), threshold=2)
    job = "job-agg-refund-race"
    mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config, bound=1e6,
                                                        epsilon=1.0))
    refunding, reserving = threading.Event(), threading.Event()
    real_refund, real_append = budget.refund_in, log.append

    def slow_refund(*args: Any, **kwargs: Any) -> Any:  # the abort, inside the job's end
        refunding.set()
        reserving.wait(5)
        return real_refund(*args, **kwargs)

    def slow_append(session: Any, **kwargs: Any) -> Any:  # the reservation, budget row held
        if kwargs.get("action") == budget.SPENT_ACTION:
            reserving.set()
            refunding.wait(5)
        return real_append(session, **kwargs)

    monkeypatch.setattr(budget, "refund_in", slow_refund)
    monkeypatch.setattr(log, "append", slow_append)
    failures: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            call()
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(lambda: mp_party.handle_abort(
                   tax, "bank", job, "the grid refused"),)),
               threading.Thread(target=run, args=(lambda: budget.reserve(
                   tax.store, agreement, "1", "0", "job-other-spend"),))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert multiparty.get_job(tax, job)["state"] == "FAILED"
    assert budget.get_budget(tax.store, agreement).epsilon_spent == 1  # the other's only


@pytest.mark.parametrize(("values", "expected"), [
    (pa.array([2**62, 2**62, 2**62, 1], pa.int64()), 1e6),  # int64 would wrap to -2^62 + 1
    (pa.array([1.5, float("inf"), float("nan"), 2.5]), 4.0),  # non-finite values are missing
])
def test_a_local_sum_never_wraps_and_skips_non_finite_values(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path,
    values: pa.Array, expected: float,
) -> None:
    """Huge integers sum exactly (then clip to the bound, +1e6, not the wrapped -1e6); inf and
    NaN are missing values, neither clipped into the sum nor a refusal telling the initiator
    the column holds one."""
    tax, grid, agreement = _aggregation_party(make_node, tmp_path, values=values)
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                           FixedPoint(1e6, 16, max_count=2**31), threshold=2)
    job = f"job-agg-local-sum-{values.type}"  # sessions are per process: one id per case
    result = _sum_with_tax(tax, grid, agreement, job, config)
    assert result.sum[0] == pytest.approx(expected)


@pytest.mark.parametrize("k", [5, 4])
def test_an_aggregation_over_fewer_rows_than_the_agreements_min_group_is_refused(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path, k: int
) -> None:
    """minGroupSize is said to be enforced by the compute layer: a party's sum over fewer
    rows than k is refused (4 companies here, k = 5); at k = 4 the same job runs."""
    tax, grid, agreement = _aggregation_party(make_node, tmp_path, min_group=k)
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                           FixedPoint(1e6, 16, max_count=2**31), threshold=2)
    job = f"job-agg-min-group-{k}"
    if k > len(CODES):
        with pytest.raises(UsageError, match=f"at least {k} rows"):
            mp_party.handle_step(tax, "bank", _open_aggregation(agreement, job, config))
    else:
        assert _sum_with_tax(tax, grid, agreement, job, config).sum[0] == pytest.approx(8.0)


def test_with_epsilon_the_row_floor_is_not_an_exact_oracle_and_only_sums_run(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """With ε the party hides its row count (it sends 0): refusing below minGroupSize would
    tell it exactly, for no ε, so the noise protects the sum instead; and a mean or count
    with ε (whose noise is not set) is refused at the party as start_aggregate refuses it."""
    tax, grid, agreement = _aggregation_party(make_node, tmp_path, min_group=5)
    dp = local_noise(1e6, 1, 1.0)
    config = SessionConfig(secrets.token_bytes(16), (1, 2), 1,
                           FixedPoint(dp.encoded_bound, 16, max_count=2**31), threshold=2)
    with pytest.raises(UsageError, match="private aggregation is a sum"):
        mp_party.handle_step(tax, "bank", _open_aggregation(
            agreement, "job-agg-private-mean", config, bound=1e6, epsilon=1.0, op="mean"))
    result = _sum_with_tax(tax, grid, agreement, "job-agg-private-k5", config,
                           bound=1e6, epsilon=1.0)
    assert result.count == 0  # 4 rows under k = 5, answered with noise


def test_a_private_aggregation_too_wide_for_the_ring_is_refused_at_start(
    make_node: Callable[..., tuple[Node, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ε each party encodes bound + 28 noise scales: the capacity check at start uses
    that bound (30 parties × 1e9 fit the ring; with ε = 0.1 over 10 columns they do not),
    instead of the job failing once claimed."""
    node, _ = make_node("bank")
    monkeypatch.setattr(multiparty, "_links", lambda *args: [object()] * 30)
    columns = [f"c{i}" for i in range(10)]
    FixedPoint(1e9, 16, max_count=2**31).check_capacity(30)
    with pytest.raises(OverflowRisk, match="scale_bits"):
        multiparty.start_aggregate(node, agreements=["a"], columns=columns, epsilon=0.1,
                                   bound=1e9)
    assert multiparty.list_jobs(node) == []


def test_a_peer_key_for_someone_who_takes_no_part_is_refused(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """A misspelt participant's key was ignored: its participant then looked for the
    initiator's column name and refused with "no column"."""
    tax, _ = make_node("tax-bureau")
    bank, _ = make_node("bank")
    csv = tmp_path / "companies.csv"
    csv.write_text("credit_code,revenue\n" + "".join(f"{c},1\n" for c in CODES),
                   encoding="utf-8")
    view = datasets.add(tax, csv, name="companies", actor="t")
    agreement = make_agreement(tax, "bank", consumer=bank, dataset_id=view["id"],
                               purpose="credit-risk",
                               offer=from_template("psi-only", purposes=["finance"]))
    with pytest.raises(UsageError, match="peer_keys names grid, which takes no part") as info:
        multiparty.start_psi(bank, agreements=[agreement], dataset="companies", key=KEY,
                             peer_keys={"grid": "code:uscc"})
    assert info.value.hint == "participants: tax-bureau"


def test_a_peer_key_without_kinds_takes_the_kinds_of_on() -> None:
    """`--peer-key tax-bureau=uscc` was refused ("other kinds than 'credit_code:uscc'"): the
    docs and the hint name PEER=COLUMN, the kind being --on's."""
    from dataspace.privacy.psi.normalize import KeySpec

    key = "credit_code:uscc"
    spec = KeySpec.parse(key)
    assert multiparty._peer_key(None, key, spec) == key
    assert multiparty._peer_key("纳税人识别号", key, spec) == "纳税人识别号:uscc"
    assert multiparty._peer_key("uscc:uscc", key, spec) == "uscc:uscc"
    two = "name:text,phone:phone"
    assert multiparty._peer_key("名称, 电话", two, KeySpec.parse(two)) == "名称:text,电话:phone"
    assert multiparty._peer_key("名称", two, KeySpec.parse(two)) == "名称"  # refused after


def test_listing_multi_party_jobs_by_a_state_none_can_have_is_refused(tax: Any) -> None:
    node, _ = tax
    with pytest.raises(UsageError, match="no job has the state 'BOGUS'"):
        multiparty.list_jobs(node, state="BOGUS")
    assert multiparty.list_jobs(node, state="running") == []
