"""The real server: `python -m dataspace.node.server` on a free loopback port, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dataspace.node.server import SERVE_LOCK
from dataspace.scenarios.cluster import free_port
from dataspace.scratch import ALIVE_DIR, process_tag
from dataspace.services.node import Node
from helpers.processes import running

from .conftest import API, assert_envelope, bearer, make_csv


def _wait_for_health(
    base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            return httpx.get(f"{base}{API}/health", timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not answer /health in time")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_real_server_serves_and_stops_cleanly(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path, stop: signal.Signals
) -> None:
    node, admin = make_node("served")
    # a result a job killed before its commit left: the server removes it as it starts
    orphan = node.root / "results" / f"{'ab' * 32}.arrow"
    orphan.parent.mkdir()
    orphan.write_bytes(b"ARROW1")
    os.utime(orphan, (0, 0))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "DATASPACE_NODE"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataspace.node.server",
                "--node",
                str(node.root),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            health = _wait_for_health(base, proc)
            assert health.json()["node"] == "served"
            with httpx.Client(base_url=base, timeout=30.0) as client:
                assert client.get(f"{API}/ledger/checkpoint").text.startswith(node.origin + "\n")
                assert_envelope(client.get(f"{API}/datasets"), 401, "unauthorized")
                created = client.post(
                    f"{API}/datasets",
                    headers=bearer(admin),
                    data={"name": "电表读数"},
                    files={"file": ("电表.csv", make_csv(), "text/csv")},
                )
                assert created.status_code == 201, created.text
                listed = client.get(f"{API}/datasets", headers=bearer(admin)).json()
                assert [d["name"] for d in listed] == ["电表读数"]
                assert_envelope(client.get(f"{API}/nope"), 404, "not_found")
            if stop is signal.SIGTERM:  # a second server of the same node is refused
                second = subprocess.run(
                    [sys.executable, "-m", "dataspace.node.server", "--node", str(node.root),
                     "--port", str(free_port())],
                    capture_output=True, text=True, timeout=60, env=env,
                )
                assert second.returncode == 5, second.stderr
                assert f"already being served (process {proc.pid})" in second.stderr
                assert httpx.get(f"{base}{API}/health", timeout=5).json()["node"] == "served"
            proc.send_signal(stop)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in output, output
    assert "Finished server process" in output and "node served stopped" in output
    assert not orphan.exists() and "removed 1 result file(s) no job records" in output
    assert "DH-PSI X25519: " in output  # which implementation blinds, and why
    assert set(os.listdir(node.tmp_dir)) <= {ALIVE_DIR, SERVE_LOCK}
    assert os.listdir(node.alive_dir) == [process_tag()]  # the server's lock went with it


def test_server_reports_a_missing_node(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATASPACE_NODE"}
    result = subprocess.run(
        [sys.executable, "-m", "dataspace.node.server", "--node", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert "no node at" in result.stderr


def test_a_server_stops_when_the_process_holding_its_lifeline_is_killed(
    tmp_path: Path,
) -> None:
    # a scenario runner killed outright (SIGKILL: no finally runs) must not leave its node
    # servers running: each holds a pipe whose write end only the runner had
    runner = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from dataspace.scenarios import cluster\n"
            f"c = cluster.create(Path({str(tmp_path / 'w')!r}), ['solo'], space='lifeline')\n"
            "c.nodes['solo'].start()\n"
            "print(c.nodes['solo'].process.pid, flush=True)\n"
            "time.sleep(600)\n"
        )],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        server = int(runner.stdout.readline())
        assert running(server)
    finally:
        runner.kill()
        runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()
    deadline = time.monotonic() + 30
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not running(server)
    finally:
        if running(server):
            os.kill(server, signal.SIGKILL)
    log = (tmp_path / "w" / "solo.log").read_text(encoding="utf-8", errors="replace")
    assert "the process that started this server is gone: stopping" in log
    assert "Finished server process" in log and "Traceback" not in log


def test_a_stop_descriptor_that_is_not_an_open_pipe_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dataspace.node.server import stop_when_parent_goes

    serving = threading.Event()
    with (tmp_path / "plain-file").open("wb") as plain:
        assert stop_when_parent_goes(plain.fileno(), serving) is None
    closed = os.open(tmp_path / "plain-file", os.O_RDONLY)
    os.close(closed)
    assert stop_when_parent_goes(closed, serving) is None
    assert caplog.text.count("is not an open pipe: ignored") == 2


def test_servers_started_to_outlive_their_runner_keep_serving(tmp_path: Path) -> None:
    # `dataspace demo --keep`: the runner prints the URLs and exits; the nodes stay up
    runner = subprocess.run(
        [sys.executable, "-c", (
            "from pathlib import Path\n"
            "from dataspace.scenarios import cluster\n"
            f"c = cluster.create(Path({str(tmp_path / 'w')!r}), ['solo'], space='kept')\n"
            "c.start(outlive=True)\n"
            "print(c.nodes['solo'].process.pid, c.nodes['solo'].url)\n"
        )],
        capture_output=True, text=True, timeout=120, check=True,
    )
    pid_text, url = runner.stdout.split()
    server = int(pid_text)
    try:
        time.sleep(1.0)  # a lifeline's end of file would have stopped it by now
        assert running(server)
        assert httpx.get(f"{url}{API}/health", timeout=5).json()["node"] == "solo"
    finally:
        os.kill(server, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while running(server) and time.monotonic() < deadline:
            time.sleep(0.1)


def test_a_lifeline_ending_signals_only_while_the_server_serves() -> None:
    from dataspace.node.server import stop_when_parent_goes

    got: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        for serving_now in (False, True):
            serving = threading.Event()
            if serving_now:
                serving.set()
            read_end, write_end = os.pipe()
            thread = stop_when_parent_goes(read_end, serving)
            assert thread is not None
            os.close(write_end)  # the parent is gone
            thread.join(5)
            os.close(read_end)
            deadline = time.monotonic() + 5
            while serving_now and not got and time.monotonic() < deadline:
                time.sleep(0.01)  # the handler runs in the main thread
            assert got == ([signal.SIGTERM] if serving_now else [])
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_serve_lock_that_cannot_be_opened_is_a_clear_error(
    make_node: Callable[..., tuple[Node, str]],
) -> None:
    from dataspace.errors import StoreError, UsageError
    from dataspace.ledger import log
    from dataspace.node.server import serve

    node, _ = make_node("locked-out")
    (node.tmp_dir / SERVE_LOCK).mkdir()  # e.g. a root-owned file the service user cannot open
    with pytest.raises(UsageError, match="cannot open the node's serve lock") as refused:
        serve(node, "127.0.0.1", free_port())
    assert "the user that owns its directory" in str(refused.value.hint)
    with pytest.raises(StoreError, match="closed"), node.store.read() as session:
        log.size(session)  # nothing served, and the node was closed all the same


def test_a_connection_that_never_finishes_its_request_head_is_closed(
    make_node: Callable[..., tuple[Node, str]], tmp_path: Path
) -> None:
    """Slowloris: without a head deadline each such connection holds a descriptor for ever."""
    import contextlib
    import socket
    import tomllib

    import tomli_w

    node, _ = make_node("slow")
    config_path = node.root / "node.toml"
    config = tomllib.loads(config_path.read_text())
    config["limits"] = {"http_head_timeout_seconds": 1.0}
    config_path.write_text(tomli_w.dumps(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATASPACE_NODE"}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataspace.node.server", "--node", str(node.root),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        opened = contextlib.ExitStack()
        try:
            _wait_for_health(f"http://127.0.0.1:{port}", proc)
            silent = socket.create_connection(("127.0.0.1", port))
            partial = socket.create_connection(("127.0.0.1", port))
            slow_but_whole = socket.create_connection(("127.0.0.1", port))
            for sock in (silent, partial, slow_but_whole):
                opened.callback(sock.close)
            partial.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # and no more
            slow_but_whole.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
            time.sleep(0.5)
            slow_but_whole.sendall(b"Host: x\r\nConnection: close\r\n\r\n")
            started = time.monotonic()
            for sock in (silent, partial):
                sock.settimeout(10)
                assert sock.recv(1024) == b""  # closed by the server, no answer
            assert time.monotonic() - started < 5
            slow_but_whole.settimeout(10)
            assert slow_but_whole.recv(1024).startswith(b"HTTP/1.1 200")
            assert httpx.get(f"http://127.0.0.1:{port}{API}/health").status_code == 200
        finally:
            opened.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_a_port_in_use_is_one_line_not_the_servers_log(
    make_node: Callable[..., tuple[Node, str]]
) -> None:
    import socket

    node, _ = make_node("busy")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "DATASPACE_NODE"}
        done = subprocess.run(
            [sys.executable, "-m", "dataspace", "--node", str(node.root), "serve",
             "--port", str(port)],
            capture_output=True, text=True, env=env, timeout=120,
        )
    assert done.returncode == 5, done.stderr
    assert f"error: port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "Errno" not in done.stderr and "Traceback" not in done.stderr
