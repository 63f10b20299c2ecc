"""Stopping a cluster's node processes: every one is told before any is waited for, each once."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dataspace.scenarios.cluster import NodeProcess, stop_all


class _Process:
    """A stand-in for a server's Popen that records what is done to it."""

    def __init__(self, name: str, calls: list[tuple[str, str]], *, running: bool = True,
                 hangs: bool = False) -> None:
        self.name, self.calls, self.running, self.hangs = name, calls, running, hangs

    def poll(self) -> int | None:
        return None if self.running else 0

    def terminate(self) -> None:
        self.calls.append(("terminate", self.name))

    def kill(self) -> None:
        self.calls.append(("kill", self.name))
        self.hangs, self.running = False, False

    def wait(self, timeout: float) -> int:
        self.calls.append(("wait", self.name))
        if self.hangs:
            raise subprocess.TimeoutExpired("serve", timeout)
        self.running = False
        return 0


def _node(name: str, process: _Process | None, tmp_path: Path) -> NodeProcess:
    node = NodeProcess(name, tmp_path / name, "http://127.0.0.1:1", "t", tmp_path / f"{name}.log")
    node.process = process  # type: ignore[assignment]
    return node


def test_every_node_is_told_before_any_is_waited_for_and_each_only_once(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    nodes = [_node("a", _Process("a", calls), tmp_path),
             _node("b", _Process("b", calls, hangs=True), tmp_path),
             _node("c", _Process("c", calls, running=False), tmp_path),  # exited already
             _node("d", None, tmp_path)]  # never started
    stop_all(nodes)
    assert calls == [("terminate", "a"), ("terminate", "b"),
                     ("wait", "a"), ("wait", "b"), ("kill", "b"), ("wait", "b"), ("wait", "c")]
    assert all(n.process is None for n in nodes)


def test_a_node_stopped_again_after_a_restart_is_told_again(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    node = _node("a", _Process("a", calls), tmp_path)
    node.stop()
    node.process = _Process("a", calls)  # type: ignore[assignment]
    node.stop()
    assert calls == [("terminate", "a"), ("wait", "a")] * 2
