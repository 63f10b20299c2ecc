"""Participant side of multi-party jobs, in process: frames, idempotence, refusals, timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dataspace.errors import Conflict, InputError, NotFound
from dataspace.ledger import log
from dataspace.policy import PolicyDenied, from_template
from dataspace.privacy.psi import Initiator
from dataspace.services import datasets, mp_party, multiparty
from dataspace.services.mp_wire import MultipartyFailed, pack_frame, unpack_frame
from dataspace.services.node import Node
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


def test_size_mode_needs_only_an_aggregate_only_output(tax: Any) -> None:
    assert mp_party.psi_output("size") == mp_party.psi_output("align") == "aggregate-only"
    assert mp_party.psi_output("me") == mp_party.psi_output("both") == "pseudonymized"


def test_a_participant_times_out_by_itself_when_the_initiator_goes_silent(tax: Any) -> None:
    node, agreements = tax
    job = "job-silent-000001"
    mp_party.handle_step(node, "bank", _open(agreements["psi"], job, idle_timeout=1))
    deadline = time.monotonic() + 10
    while multiparty.get_job(node, job)["state"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    view = multiparty.get_job(node, job)
    assert view["state"] == "FAILED" and "timed out" in view["error"]["message"]
    with pytest.raises(MultipartyFailed):  # its secrets are gone: no step can continue it
        mp_party.handle_step(node, "bank", pack_frame({"job_id": job, "step": 1, "name": "x"}))
