"""A scenario run ended by SIGTERM or SIGHUP cleans up as Ctrl-C does: no server left running,
no run folder (node keys, generated data) left in the temp directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.processes import running


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_run_stopped_by_a_signal_stops_its_nodes_and_removes_its_folder(
    tmp_path: Path, stop: signal.Signals
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    runner = subprocess.Popen(
        [sys.executable, "-m", "dataspace", "demo", "weather", "--size", "small"],
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not servers and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.2)
            for log in temp.glob("dataspace-weather-*/*.log"):
                text = log.read_text(errors="replace")
                if "Uvicorn running" in text:
                    servers += [int(p) for p in re.findall(r"Started server process \[(\d+)\]",
                                                           text)]
        assert servers, "no node server came up"
        runner.send_signal(stop)
        assert runner.wait(timeout=60) == 128 + stop
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert [p.name for p in temp.glob("dataspace-weather-*")] == []
    assert not [pid for pid in servers if running(pid)]


def test_an_ignored_hangup_stays_ignored_and_a_second_signal_cannot_cut_the_clean_up() -> None:
    from dataspace.scenarios.runner import _exit_on_hangup_or_terminate

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    cleaned = []
    try:
        with pytest.raises(SystemExit) as ended, _exit_on_hangup_or_terminate():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            try:
                signal.raise_signal(signal.SIGHUP)  # ignored: the run goes on
                signal.raise_signal(signal.SIGTERM)
            finally:  # the run's clean-up, with another SIGTERM arriving during it
                signal.raise_signal(signal.SIGTERM)
                cleaned.append(True)
        assert ended.value.code == 128 + signal.SIGTERM and cleaned == [True]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]  # restored
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
