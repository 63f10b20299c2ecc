"""PSI jobs with the RR22 engine across real node processes on loopback.

The same space, data and agreements as the DH-PSI tests (:mod:`node.test_mp_e2e`): the bank
holds 300 统一社会信用代码, 70 % of which the tax bureau holds too, typed as clerks type them.
Skipped when spu's PSI engine is not installed (``make spu``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from typing import Any

import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from dataspace.cli.main import app
from dataspace.errors import UsageError
from dataspace.privacy.psi import rr22_available
from dataspace.privacy.psi.errors import PsiEngineFailed
from dataspace.services import mp_rr22, multiparty
from dataspace.services.node import Node, open_node
from helpers.ledger import payloads
from node import test_mp_e2e as dh
from node.test_mp_e2e import BANK, GRID, KEY, TAX, _job_at, _kept, _norm

shared_space = dh.shared_space  # the DH tests' space, data and agreements (module fixtures)
psi_space = dh.psi_space

pytestmark = [
    pytest.mark.skipif(not rr22_available(), reason="spu is not installed (make spu)"),
    pytest.mark.xdist_group("rr22-nodes"),  # one worker, one space: jobs never overlap
]


def _rr22_with_tax(
    bank: Node, agreements: dict[str, str], mode: str, **kw: Any
) -> dict[str, Any]:
    """The bank's RR22 job with the tax bureau on the shared companies dataset."""
    return multiparty.run_psi(
        bank,
        agreements=[agreements[TAX]],
        dataset="companies",
        key=KEY,
        mode=mode,
        engine="rr22",
        **kw,
    )


def _failed_at_bank_and_tax(space: Any, bank: Node) -> dict[str, Any]:
    """The bank's latest job, checked FAILED with nothing released at both nodes."""
    failed = multiparty.list_jobs(bank)[0]
    assert failed["state"] == "FAILED" and failed["result"] is None
    at_tax = _job_at(space, TAX, failed["id"])
    assert at_tax["state"] == "FAILED" and at_tax["result"] is None
    return failed


def test_rr22_two_party_both_and_align_metered_and_logged(
    psi_space: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    space, agreements, sets = psi_space
    # exactly these steps: no status step, however slowly a loaded machine runs the engines
    monkeypatch.setattr(multiparty, "RR22_STATUS_EVERY", 1e6)
    expected = sets[BANK] & sets[TAX]
    assert 0.6 <= len(expected) / len(sets[BANK]) <= 0.8
    bank = open_node(space.nodes[BANK].root)
    try:
        both = _rr22_with_tax(bank, agreements, "both", peers=[TAX])
        result = both["result"]
        assert both["state"] == "SUCCEEDED" and both["params"]["engine"] == "rr22"
        assert result["engine"] == "rr22" and result["size"] == len(expected)
        assert result["own_size"] == len(sets[BANK])
        assert result["per_peer"] == [
            {"peer": TAX, "peer_size": len(sets[TAX]), "size": len(expected)}
        ]
        keys = multiparty.intersection_keys(bank, both["id"]).column("credit_code").to_pylist()
        assert _norm(keys) == expected and len(keys) == len(expected)
        at_tax = _job_at(space, TAX, both["id"])
        assert at_tax["state"] == "SUCCEEDED" and at_tax["result"]["size"] == len(expected)
        assert set(_kept(space, TAX, at_tax)) == expected
        assert [s["name"] for s in both["steps"]] == ["open", "rr22", "finish"]

        # The same agreements, admission, metering and ledger as a DH job.
        tax = open_node(space.nodes[TAX].root)
        try:
            mine = payloads(bank, "mp.step", both["id"])
            theirs = payloads(tax, "mp.step", both["id"])
            assert len(mine) == len(theirs) == 3
            assert [s["request_sha256"] for s in mine] == [
                s["info"]["request_sha256"] for s in theirs
            ]
            [completed] = payloads(tax, "job.completed", both["id"])
            assert completed["usage_id"] and completed["action"] == "psi"
            assert completed["result"]["engine"] == "rr22"
            [released] = payloads(bank, "mp.completed", both["id"])
            assert released["participants"] == [[TAX, agreements[TAX]]]
        finally:
            tax.close()

        align = _rr22_with_tax(bank, agreements, "align")
        mine_rows = _kept(space, BANK, align)
        theirs_rows = _kept(space, TAX, _job_at(space, TAX, align["id"]))
        assert mine_rows == theirs_rows and set(mine_rows) == expected
        assert len(mine_rows) == len(expected)  # one row per key, in the same order at both
    finally:
        bank.close()


def test_rr22_three_party_chain_from_the_cli(psi_space: Any) -> None:
    space, agreements, sets = psi_space
    root = space.nodes[BANK].root
    out = root / "common-rr22.csv"
    cli = CliRunner()
    ran = cli.invoke(
        app,
        [
            "--node", str(root), "psi",
            "--agreement", agreements[TAX], "--with", TAX,
            "--agreement", agreements[GRID], "--with", GRID,
            "--on", KEY, "--dataset", "companies", "--engine", "rr22",
            "--out", str(out), "--json",
        ],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    view = json.loads(ran.stdout)
    expected = sets[BANK] & sets[TAX] & sets[GRID]
    assert view["state"] == "SUCCEEDED" and view["result"]["size"] == len(expected)
    assert _norm(pacsv.read_csv(out).column("credit_code").to_pylist()) == expected
    assert _job_at(space, GRID, view["id"])["state"] == "SUCCEEDED"
    shown = cli.invoke(app, ["--node", str(root), "job", "show", view["id"]])
    assert shown.exit_code == 0 and "engine rr22" in shown.output, shown.output


def test_rr22_from_the_api_and_size_refused(psi_space: Any) -> None:
    space, agreements, sets = psi_space
    bank = open_node(space.nodes[BANK].root)
    try:
        before = len(multiparty.list_jobs(bank))
        with pytest.raises(UsageError, match="mode size is not available with the rr22"):
            _rr22_with_tax(bank, agreements, "size")
        assert len(multiparty.list_jobs(bank)) == before  # refused before anything was sent
    finally:
        bank.close()
    body = {"agreements": [agreements[TAX]], "dataset": "companies", "key": KEY}
    with space.nodes[BANK].api() as api:
        refused = api.post("/api/v1/mp/psi", json={**body, "mode": "size", "engine": "rr22"})
        assert refused.status_code == 400 and "DH engine" in refused.text, refused.text
        started = api.post("/api/v1/mp/psi", json={**body, "mode": "me", "engine": "rr22"})
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        for _ in range(1200):
            view = api.get(f"/api/v1/mp/jobs/{job_id}").json()
            if view["state"] != "RUNNING":
                break
            time.sleep(0.1)
    assert view["state"] == "SUCCEEDED", (view.get("error"), _job_at(space, TAX, job_id))
    assert view["params"]["engine"] == "rr22"
    assert view["result"]["size"] == len(sets[BANK] & sets[TAX])
    at_tax = _job_at(space, TAX, job_id)  # mode me: the sender keeps nothing
    assert at_tax["state"] == "SUCCEEDED" and "rows_file" not in at_tax["result"]


def test_rr22_peer_killed_mid_run_fails_everywhere_and_retry_succeeds(psi_space: Any) -> None:
    """The tax bureau's node dies with its engine after it answered the ``rr22`` step, while
    its engine is frozen mid-run (SIGSTOP once linked): without the freeze, both engines
    could finish before the kill lands, and under load they sometimes did."""
    space, agreements, sets = psi_space
    bank = open_node(space.nodes[BANK].root)
    tax_process = space.nodes[TAX]
    assert tax_process.process is not None
    frozen: list[int] = []
    stop = threading.Event()
    node_pid = tax_process.process.pid  # it leads its session: its RR22 child is in it
    watcher = threading.Thread(
        target=_stop_once_linked, args=(node_pid, frozen, stop, False), daemon=True
    )

    def kill_tax_with_its_engine(event: dict[str, Any], progress: dict[str, Any]) -> None:
        if event["node"] == TAX and event["name"] == "rr22":
            assert frozen, "the tax bureau answered before its engine linked"
            os.killpg(node_pid, signal.SIGKILL)

    try:
        watcher.start()
        started = time.monotonic()
        with pytest.raises(PsiEngineFailed) as info:
            _rr22_with_tax(
                bank, agreements, "both", step_timeout=45, progress=kill_tax_with_its_engine
            )
        assert info.value.details["node"] == TAX and "did not answer" in info.value.message
        assert time.monotonic() - started < 30  # its refused status told, not the 45 s timeout
        failed = multiparty.list_jobs(bank)[0]
        assert failed["state"] == "FAILED" and failed["result"] is None
        assert "RR22" in failed["error"]["message"] and failed["pending_aborts"] == [TAX]

        tax_process.stop()  # reaps the killed node
        tax_process.start()
        try:
            again = multiparty.retry(bank, failed["id"])
        except PsiEngineFailed:
            retried = multiparty.list_jobs(bank)[0]["id"]
            raise AssertionError(("retry failed", _job_at(space, TAX, retried))) from None
        assert again["state"] == "SUCCEEDED" and again["retry_of"] == failed["id"]
        assert again["params"]["engine"] == "rr22" and again["params"]["mode"] == "both"
        keys = multiparty.intersection_keys(bank, again["id"]).column("credit_code").to_pylist()
        assert _norm(keys) == sets[BANK] & sets[TAX]
        at_tax = _job_at(space, TAX, failed["id"])  # told when the bank retried
        assert at_tax["state"] == "FAILED" and at_tax["result"] is None
    finally:
        stop.set()
        watcher.join(5)
        bank.close()
        if tax_process.process is None or tax_process.process.poll() is not None:
            tax_process.stop()  # the next tests share this space: leave the bureau running
            tax_process.start()


def test_rr22_initiator_whose_own_link_port_is_taken_fails_at_once_everywhere(
    psi_space: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program takes the initiator's port between the probe and the engine's bind:
    the engine refuses it with the address, and the job ends within seconds, not at the
    step timeout, FAILED at both nodes and naming the initiator as the side that failed."""
    space, agreements, _sets = psi_space
    bank = open_node(space.nodes[BANK].root)
    try:
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            monkeypatch.setattr(mp_rr22, "free_port", lambda _host, _ports: taken)
            started = time.monotonic()
            with pytest.raises(PsiEngineFailed, match="cannot be bound") as info:
                _rr22_with_tax(bank, agreements, "both", step_timeout=60)
            assert time.monotonic() - started < 20
        assert f"(on {BANK})" in info.value.message and str(taken) in info.value.message
        _failed_at_bank_and_tax(space, bank)
    finally:
        bank.close()


def _engine_of(pid: int) -> tuple[int, dict[str, Any]] | None:
    """The RR22 engine process ``pid`` started and its config (from /proc: Linux)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and any(part.endswith(b"rr22_engine.py") for part in command):
            return int(entry), json.loads(command[-2] if command[-1] == b"" else command[-1])
    return None


def _stop_once_linked(
    pid: int, stopped: list[int], stop: threading.Event, kill: bool = True
) -> None:
    """Watch for ``pid``'s RR22 engine; the moment its link is up (its "linked" marker), stop
    it (SIGSTOP: it cannot finish meanwhile) and, by default, kill it — always mid-run, never
    late."""
    while not stop.is_set():
        found = _engine_of(pid)
        if found is None:
            time.sleep(0.002)
            continue
        engine, config = found
        while not stop.is_set() and not os.path.exists(config["linked"]):
            time.sleep(0.001)
        if not stop.is_set():
            os.kill(engine, signal.SIGSTOP)
            if kill:
                os.kill(engine, signal.SIGKILL)
            stopped.append(engine)
        return


def test_rr22_participant_engine_killed_mid_run_fails_the_job_within_seconds(
    psi_space: Any,
) -> None:
    """The participant's node lives on, its engine dies right after the link came up: the
    initiator learns it from a status step, not from its own engine's timeout."""
    space, agreements, _sets = psi_space
    tax_process = space.nodes[TAX].process
    assert tax_process is not None
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=_stop_once_linked, args=(tax_process.pid, killed, stop), daemon=True
    )
    bank = open_node(space.nodes[BANK].root)
    try:
        watcher.start()
        started = time.monotonic()
        with pytest.raises(PsiEngineFailed) as info:
            _rr22_with_tax(bank, agreements, "both", step_timeout=90)
        assert killed and info.value.details["node"] == TAX
        assert "the engine was killed (SIGKILL)" in info.value.message
        assert time.monotonic() - started < 30  # a status step told, not the 90 s timeout
        _failed_at_bank_and_tax(space, bank)
    finally:
        stop.set()
        watcher.join(5)
        bank.close()
