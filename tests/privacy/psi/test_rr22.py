"""RR22 through spu's compiled PSI engine: two real processes on loopback, exact answers.

The runs need spu installed (``make spu``; CI installs it). Without it only the refusal with
the install hint is checked.
"""

from __future__ import annotations

import importlib.util
import random
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dataspace.privacy.psi import KeySpec, PsiUnavailable, rr22_available, run_rr22
from dataspace.privacy.psi import rr22 as rr22_module
from dataspace.privacy.psi.errors import PsiConfigError, PsiEngineFailed
from dataspace.privacy.psi.rr22 import TlsIdentity
from dataspace.scenarios.cluster import free_port
from dataspace.scratch import remove_libpsi_traces

needs_spu = pytest.mark.skipif(not rr22_available(), reason="spu is not installed (make spu)")


def test_without_spu_the_engine_is_refused_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "spu" else real_find_spec(name, *a),
    )
    rr22_module._spu.cache_clear()
    try:
        assert rr22_available() is False
        with pytest.raises(PsiUnavailable, match="spu") as info:
            run_rr22([["91110108MA0123456X"]], "uscc", rank=0, addresses=["a:1", "b:2"])
        assert "make spu" in str(info.value.hint)
    finally:
        rr22_module._spu.cache_clear()


def _run_pair(
    sets: Sequence[Sequence[Sequence[object]]], spec: str, **kw: Any
) -> list[list[bytes] | BaseException]:
    """Both ranks at once (threads: each one's engine runs in its own child process)."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    tls = kw.pop("tls", [None, None])
    out: list[list[bytes] | BaseException] = [[], []]

    def side(rank: int) -> None:
        try:
            result = run_rr22(sets[rank], spec, rank=rank, addresses=addresses, tls=tls[rank], **kw)
            assert result.cpu_seconds > 0  # the engine process's own CPU, for metering
            out[rank] = result.keys
        except BaseException as exc:  # reported to the test
            out[rank] = exc

    threads = [threading.Thread(target=side, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _keys(rows: Sequence[Sequence[object]], spec: str) -> set[bytes]:
    key = KeySpec.parse(spec)
    return {enc for row in rows if (enc := key.encode_row(row)) is not None}


@needs_spu
def test_rr22_gives_the_receiver_exactly_the_intersection_and_the_sender_nothing() -> None:
    rng = random.Random(7)
    common = [f"C{rng.getrandbits(40):010x}" for _ in range(700)]
    a = [(x,) for x in common + [f"A{i}" for i in range(300)]]
    b = [(x,) for x in common + [f"B{i}" for i in range(250)] + common[:50]]  # duplicates too
    rng.shuffle(a)
    got = _run_pair([a, b], "text")
    assert set(got[0]) == _keys(a, "text") & _keys(b, "text") and len(got[0]) == 700
    assert got[1] == []


@needs_spu
def test_rr22_leaves_no_working_files_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the engine library writes the sorted keys and the intersection's row numbers under
    # TMPDIR; they must go with the run's private folder, not stay readable in the system's
    system_tmp, scratch = tmp_path / "system-tmp", tmp_path / "scratch"
    system_tmp.mkdir()
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    rows = [[(f"K{i}",) for i in range(200)], [(f"K{i}",) for i in range(100, 300)]]
    got = _run_pair(rows, "text", workdir=scratch)
    assert isinstance(got[0], list) and len(got[0]) == 100
    assert list(system_tmp.iterdir()) == [] and list(scratch.iterdir()) == []
    # its run traces it writes under /tmp whatever TMPDIR says: they name the run's folder
    assert not remove_libpsi_traces(scratch)


@needs_spu
def test_rr22_normalises_identifiers_and_composite_keys_before_matching() -> None:
    # the same credit codes written two ways (full-width, lower case) and a composite key
    a = [("９１１１０１０８ＭＡ０１２３４５６Ｘ", "13800138000"), ("91110000000000001A", "1")]
    b = [("91110108ma0123456x", "138 0013 8000"), ("91110000000000002B", "1")]
    got = _run_pair([a, b], "code:uscc,phone:phone", broadcast=True)
    want = _keys(a, "code:uscc,phone:phone") & _keys(b, "code:uscc,phone:phone")
    assert len(want) == 1 and set(got[0]) == want and set(got[1]) == want


@needs_spu
def test_rr22_over_mutual_tls_and_a_peer_with_another_certificate_is_refused(
    tmp_path: Path,
) -> None:
    made = {name: TlsIdentity.create(tmp_path, name) for name in ("bank", "tax", "mallory")}
    rows = [[(f"K{i}",) for i in range(50)]] * 2

    def identity(me: str, peer: str) -> TlsIdentity:
        return TlsIdentity(*made[me], peer_certificate=made[peer][0])

    ok = _run_pair(rows, "text", tls=[identity("bank", "tax"), identity("tax", "bank")])
    assert isinstance(ok[0], list) and len(ok[0]) == 50
    refused = _run_pair(
        rows,
        "text",
        tls=[identity("bank", "tax"), identity("mallory", "bank")],
        timeout_seconds=6,
    )
    assert all(isinstance(r, PsiEngineFailed) for r in refused), refused


@needs_spu
def test_rr22_refuses_more_than_two_parties_and_stops_when_the_peer_never_comes() -> None:
    with pytest.raises(PsiConfigError):
        run_rr22([("a",)], "text", rank=2, addresses=["127.0.0.1:1", "127.0.0.1:2"])
    alone = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(PsiEngineFailed, match="did not finish"):
        run_rr22([("a",)], "text", rank=0, addresses=alone, timeout_seconds=3)


@needs_spu
def test_a_taken_own_port_fails_at_once_and_says_so() -> None:
    with socket.socket() as squatter:  # something else listens on this side's port
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{taken}"]
        started = time.monotonic()
        said = f"127.0.0.1:{taken} .this node.s RR22 link address. cannot be bound"
        with pytest.raises(PsiEngineFailed, match=said):
            run_rr22([("a",)], "text", rank=1, addresses=addresses, timeout_seconds=30)
        assert time.monotonic() - started < 15  # not the whole timeout


@needs_spu
def test_linked_is_set_only_once_the_peer_is_there_and_stop_kills_the_engine() -> None:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    alone, stop = threading.Event(), threading.Event()
    threading.Timer(1.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(PsiEngineFailed, match="stopped before it finished"):
        run_rr22(
            [("a",)], "text", rank=0, addresses=addresses, timeout_seconds=60,
            linked=alone, stop=stop,
        )  # fmt: skip
    assert not alone.is_set() and time.monotonic() - started < 15

    linked = [threading.Event(), threading.Event()]
    got: list[Any] = [None, None]

    def side(rank: int) -> None:
        got[rank] = run_rr22(
            [(f"K{i}",) for i in range(20)], "text", rank=rank, addresses=addresses,
            timeout_seconds=60, linked=linked[rank],
        )  # fmt: skip

    threads = [threading.Thread(target=side, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(e.is_set() for e in linked) and len(got[0].keys) == 20


@needs_spu
def test_an_engine_whose_wait_is_interrupted_is_killed_not_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def interrupted(*args: Any) -> tuple[int | None, float]:
        raise KeyboardInterrupt

    monkeypatch.setattr(rr22_module.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(rr22_module, "_reap", interrupted)
    alone = [f"127.0.0.1:{free_port()}" for _ in range(2)]  # no peer: it would wait 60 s
    with pytest.raises(KeyboardInterrupt):
        run_rr22([("a",)], "text", rank=0, addresses=alone, timeout_seconds=60)
    assert len(started) == 1 and started[0].returncode is not None  # killed and reaped
