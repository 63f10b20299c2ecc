"""The RR22 engine of PSI jobs, in process: refusals, the link's identity, row positions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dataspace.errors import DataspaceError, UsageError
from dataspace.policy import from_template
from dataspace.privacy.psi import KeySpec, rr22_available
from dataspace.privacy.psi.columnar import encode_hex
from dataspace.privacy.psi.errors import PsiEngineFailed, PsiUnavailable
from dataspace.services import datasets, mp_party, mp_rr22, multiparty
from dataspace.services.mp_wire import (
    MultipartyFailed,
    PeerRefused,
    pack_frame,
    refusal,
    unpack_frame,
)
from dataspace.services.node import Node, open_node
from helpers.agreements import make_agreement

KEY = "credit_code:uscc"
CODES = ["91110108MA01ABCD1X", "91110108MA01ABCD2X", "91110108MA01ABCD3X", "911101085929123457"]
needs_spu = pytest.mark.skipif(not rr22_available(), reason="spu is not installed (make spu)")


@pytest.fixture
def tax(make_node: Callable[..., tuple[Node, str]], tmp_path: Path) -> tuple[Node, str]:
    node, _ = make_node("tax-bureau")
    csv = tmp_path / "companies.csv"
    csv.write_text("credit_code,revenue\n" + "".join(f"{c},1\n" for c in CODES), encoding="utf-8")
    view = datasets.add(node, csv, name="companies", actor="t")
    psi = from_template("psi-only", purposes=["finance"], output="pseudonymized")
    return node, make_agreement(
        node, "bank", dataset_id=view["id"], purpose="credit-risk", offer=psi
    )


def _open(agreement: str, job: str, **extra: Any) -> bytes:
    header = {"job_id": job, "step": 0, "name": "open", "kind": "psi", "agreement_id": agreement}
    return pack_frame({**header, "key": KEY, "mode": "me", "engine": "rr22", **extra})


def test_positions_keep_every_matched_row_or_one_per_key_in_key_order() -> None:
    spec = KeySpec.parse("k:text")
    values = ["bb", "a", None, "bb", "c", "a", "ab"]
    source = mp_rr22.Input(
        np.array([10, 11, 12, 13, 14, 15, 16]), encode_hex([pa.array(values)], spec)
    )
    assert source.distinct == 4
    wanted = ["bb", "a", "z", "ab"]
    keys = encode_hex([pa.array(wanted)], spec)
    assert mp_rr22.positions(source, keys, "me").tolist() == [10, 11, 13, 15, 16]
    # align: one row per key, the first, ordered by the encoded key's bytes
    encoded = {v: spec.encode_row((v,)) for v in ("a", "ab", "bb")}
    order = sorted(encoded, key=lambda v: encoded[v])  # the length prefix first: a, ab, bb
    first = {"a": 11, "ab": 16, "bb": 10}
    assert mp_rr22.positions(source, keys, "align").tolist() == [first[v] for v in order]
    assert mp_rr22.positions(source, keys.slice(2, 1), "me").tolist() == []


def test_the_engine_is_checked_before_anything_is_sent(
    tax: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, agreement = tax
    kw: dict[str, Any] = {"agreements": [agreement], "dataset": "companies", "key": KEY}
    with pytest.raises(UsageError, match="unknown PSI engine"):
        multiparty.start_psi(node, engine="rr23", **kw)
    with pytest.raises(UsageError, match="use the DH engine") as info:
        multiparty.start_psi(node, mode="size", engine="rr22", **kw)
    assert "mode size is not available" in info.value.message
    monkeypatch.setattr(mp_rr22, "rr22_available", lambda: False)
    with pytest.raises(PsiUnavailable) as missing:
        multiparty.start_psi(node, engine="rr22", **kw)
    assert "make spu" in str(missing.value.hint)
    assert multiparty.list_jobs(node) == []  # nothing claimed


def test_a_participant_refuses_rr22_size_before_admission(tax: tuple[Node, str]) -> None:
    node, agreement = tax
    with pytest.raises(UsageError, match="mode size is not available"):
        mp_party.handle_step(node, "bank", _open(agreement, "job-rr22-size-0001", mode="size"))
    view = multiparty.get_job(node, "job-rr22-size-0001")
    assert view["state"] == "FAILED" and view["result"] is None


@needs_spu
def test_a_participant_opens_a_link_identity_and_wipes_it_when_the_job_ends(
    tax: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, agreement = tax
    monkeypatch.setattr(mp_rr22, "own_host", lambda _node: "127.0.0.1")
    job = "job-rr22-open-0001"
    answer = mp_party.handle_step(node, "bank", _open(agreement, job))
    header, blobs = unpack_frame(answer)
    assert header["engine"] == "rr22" and header["address"].startswith("127.0.0.1:")
    assert blobs[0].startswith(b"-----BEGIN CERTIFICATE-----")
    run = mp_party._SESSIONS[job].rr22
    assert run is not None and run.endpoint.private_key.stat().st_mode & 0o077 == 0
    folder = run.endpoint.folder
    assert folder.parent == node.tmp_dir / "rr22"  # the node's own scratch, swept on open
    assert folder.stat().st_mode & 0o077 == 0 and run.source.distinct == len(CODES)
    with pytest.raises(UsageError, match="not one of an RR22"):  # no DH step on an RR22 job
        mp_party.handle_step(node, "bank", pack_frame({"job_id": job, "step": 1, "name": "hello"}))
    assert multiparty.get_job(node, job)["state"] == "FAILED"
    assert not folder.exists()  # the session ended: certificate and key wiped


def test_link_ports_are_a_checked_range_and_a_taken_or_reserved_port_is_never_handed_out() -> None:
    assert mp_rr22.link_ports("20000-32767") == range(20000, 32768)
    for bad in ("20000", "a-b", "30000-20000", "80-90", "60000-70000"):
        with pytest.raises(UsageError, match="rr22_link_ports"):
            mp_rr22.link_ports(bad)
    with socket.socket() as squatter:  # something else holds this port
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        with pytest.raises(MultipartyFailed, match="no free TCP port"):
            mp_rr22.free_port("127.0.0.1", range(taken, taken + 1))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    handed = mp_rr22.free_port("127.0.0.1", range(free, free + 1))
    try:
        assert handed == free
        with pytest.raises(MultipartyFailed, match="no free TCP port"):
            mp_rr22.free_port("127.0.0.1", range(free, free + 1))  # reserved for its link
    finally:
        with mp_rr22._PORTS_LOCK:
            mp_rr22._PORTS_IN_USE.discard(handed)
    assert mp_rr22.free_port("127.0.0.1", range(free, free + 1)) == free  # released
    with mp_rr22._PORTS_LOCK:
        mp_rr22._PORTS_IN_USE.discard(free)


def test_closing_a_run_frees_its_port_only_once_its_engine_is_gone(tmp_path: Path) -> None:
    folder = tmp_path / "link"
    folder.mkdir()
    port = mp_rr22.free_port("127.0.0.1", mp_rr22.link_ports("20000-32767"))  # reserved
    endpoint = mp_rr22.Endpoint(folder, folder / "self.crt", folder / "self.key",
                                f"127.0.0.1:{port}", port)
    run = mp_rr22.Run(endpoint, source=None, mode="me")  # type: ignore[arg-type]
    held_until_gone: list[bool] = []

    def engine() -> None:  # stands in for run_rr22_hex: killed on stop, then reaped
        run.stopping.wait(10)
        time.sleep(0.3)
        held_until_gone.append(not endpoint.closed and endpoint.port in mp_rr22._PORTS_IN_USE)

    run.thread = threading.Thread(target=engine)
    run.thread.start()
    run.close()
    assert held_until_gone == [True]
    assert endpoint.closed and endpoint.port not in mp_rr22._PORTS_IN_USE
    assert not endpoint.folder.exists()


@needs_spu
def test_a_participant_whose_link_port_is_taken_fails_the_rr22_step_at_once(
    tax: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, agreement = tax
    monkeypatch.setattr(mp_rr22, "own_host", lambda _node: "127.0.0.1")
    job = "job-rr22-taken-0001"
    header, _ = unpack_frame(mp_party.handle_step(node, "bank", _open(agreement, job)))
    port = int(header["address"].rpartition(":")[2])
    initiator = mp_rr22.Endpoint.create(node)
    try:
        with socket.socket() as squatter:  # another program took the port since "open"
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            started = time.monotonic()
            step = {"job_id": job, "step": 1, "name": "rr22", "size": 3, "timeout": 60}
            with pytest.raises(PsiEngineFailed, match="cannot be bound"):
                mp_party.handle_step(
                    node,
                    "bank",
                    pack_frame({**step, "address": initiator.address}, [initiator.pem]),
                )
            assert time.monotonic() - started < 15
    finally:
        initiator.close()
    failed = multiparty.get_job(node, job)
    assert failed["state"] == "FAILED" and "cannot be bound" in failed["error"]["message"]


def test_files_a_killed_process_left_are_swept_when_the_node_opens(
    tax: tuple[Node, str],
) -> None:
    node, _ = tax
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid names files no live process writes
    scratch = mp_rr22.scratch(node)
    stale = scratch / f"dataspace-rr22-{gone.pid}-link-abc"
    live = scratch / f"dataspace-rr22-{os.getpid()}-link-def"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "self.key").write_text("secret", encoding="ascii")
    assert scratch == node.tmp_dir / "rr22" and scratch.stat().st_mode & 0o077 == 0
    open_node(node.root).close()
    assert not stale.exists() and (live / "self.key").exists()


@needs_spu
def test_a_participant_reports_its_run_and_a_run_that_failed_fails_the_status_step(
    tax: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The initiator asks how this side's run goes while its own engine waits; an engine that
    died here fails that step with the reason, and the job here, at once."""
    node, agreement = tax
    monkeypatch.setattr(mp_rr22, "own_host", lambda _node: "127.0.0.1")
    job = "job-rr22-status-0001"
    mp_party.handle_step(node, "bank", _open(agreement, job))

    def status(step: int) -> dict[str, Any]:
        frame = pack_frame({"job_id": job, "step": step, "name": "status"})
        return unpack_frame(mp_party.handle_step(node, "bank", frame))[0]

    assert status(1)["state"] == "waiting"  # no link started yet
    run = mp_party._SESSIONS[job].rr22
    assert run is not None
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    run.thread, run.error = ended, PsiEngineFailed("RR22 failed: the engine was killed")
    with pytest.raises(PsiEngineFailed, match="engine was killed"):
        status(2)
    failed = multiparty.get_job(node, job)
    assert failed["state"] == "FAILED" and "engine was killed" in failed["error"]["message"]


class _StepsToThisNode:
    """The initiator's side of the steps, delivered to an in-process participant; an error
    comes back the way the node's API and the wire deliver it (an envelope, then a refusal)."""

    def __init__(self, node: Node, job: str) -> None:
        self.node, self.job = node, job

    def step(self, link: Any, name: str, blobs: Any = (), **header: Any) -> Any:
        frame = pack_frame({"job_id": self.job, "step": link.next_step, "name": name, **header})
        link.next_step += 1
        try:
            return unpack_frame(mp_party.handle_step(self.node, "bank", frame))
        except DataspaceError as exc:
            answer = json.dumps({"error": exc.to_dict()}).encode()
            raise refusal(link.peer, exc.http_status, answer) from exc


@needs_spu
def test_an_engine_failure_the_participant_reports_at_finish_fails_the_job_as_its_engines(
    tax: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The participant's engine died after the initiator's own run had ended (no status step
    saw it): its refusal of "finish" fails the job as that engine's failure, on that node."""
    node, agreement = tax
    monkeypatch.setattr(mp_rr22, "own_host", lambda _node: "127.0.0.1")
    job = "job-rr22-finish-0001"
    mp_party.handle_step(node, "bank", _open(agreement, job))
    run = mp_party._SESSIONS[job].rr22
    assert run is not None
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    run.thread, run.error = ended, PsiEngineFailed("RR22 failed: the engine was killed (SIGKILL)")
    link = multiparty._Link("tax-bureau", agreement, next_step=1)
    with pytest.raises(PsiEngineFailed, match=r"engine was killed \(SIGKILL\)") as info:
        multiparty._finish_psi(_StepsToThisNode(node, job), link)  # type: ignore[arg-type]
    assert info.value.code == "psi_engine_failed" and info.value.details["node"] == "tax-bureau"
    mp_party.handle_abort(node, "bank", job, "test over")  # no session outlives the test


@needs_spu
def test_any_other_refusal_of_finish_stays_the_peers_refusal(
    tax: tuple[Node, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, agreement = tax
    monkeypatch.setattr(mp_rr22, "own_host", lambda _node: "127.0.0.1")
    job = "job-rr22-finish-0002"
    mp_party.handle_step(node, "bank", _open(agreement, job))
    link = multiparty._Link("tax-bureau", agreement, next_step=5)  # out of sequence
    with pytest.raises(PeerRefused, match="out of sequence") as info:
        multiparty._finish_psi(_StepsToThisNode(node, job), link)  # type: ignore[arg-type]
    assert info.value.details["peer_code"] == "conflict"
    mp_party.handle_abort(node, "bank", job, "test over")  # no session outlives the test
