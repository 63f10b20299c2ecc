"""A space of real nodes on loopback for a scenario: an operator and one node per party.

Each node has its own directory, keys and state database, and runs ``dataspace serve`` as its
own process on a free 127.0.0.1 port. The operator signs the membership list naming every node
with its URL and key; each node joins it before it starts.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dataspace.identity.membership import Member
from dataspace.outbound import http_client
from dataspace.services import space as space_service
from dataspace.services.node import Node, init_node, open_node
from dataspace.settings import ENV_NODE, ENV_STOP_WITH_FD

START_TIMEOUT = 60.0
ACTOR = "dataspace-demo"
OPERATOR = "operator"


PORT_QUARANTINE_SECONDS = 600.0


def free_port() -> int:
    """A free loopback port that no other process of this user was handed recently.

    A port is only free until someone binds it; between here and the node's start another
    process (a parallel test worker, a second demo) could be handed the same one by the
    kernel. So every port handed out is recorded, under a file lock, in a per-user file in the
    temp dir, and is not handed out again for ten minutes.
    """
    path = Path(tempfile.gettempdir()) / f"dataspace-ports-{os.getuid()}"
    try:
        with path.open("a+", encoding="ascii") as book:
            fcntl.flock(book, fcntl.LOCK_EX)
            book.seek(0)
            now = time.time()
            recent = {
                port: at
                for port, at in _ports(book.read())
                if now - at < PORT_QUARANTINE_SECONDS
            }
            port = _bind_free()
            for _ in range(100):
                if port not in recent:
                    break
                port = _bind_free()
            recent[port] = now
            book.seek(0)
            book.truncate()
            book.write("".join(f"{p} {at:.0f}\n" for p, at in recent.items()))
            return port
    except OSError:  # no usable temp dir: the kernel's choice alone
        return _bind_free()


def _bind_free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports(text: str) -> list[tuple[int, float]]:
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit():
            try:
                out.append((int(fields[0]), float(fields[1])))
            except ValueError:
                continue
    return out


@dataclass
class NodeProcess:
    name: str
    root: Path
    url: str
    admin_token: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _lifeline: int | None = field(default=None, repr=False)  # write end of the server's stop pipe
    _signalled: bool = field(default=False, repr=False)  # SIGTERM sent to this process

    def open(self) -> Node:
        return open_node(self.root)

    def api(self) -> httpx.Client:
        """An HTTP client for this node's API with its admin token."""
        return http_client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=60
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, outlive: bool = False) -> None:
        """Start the server. Unless ``outlive``, it stops when this process ends, however it
        ends: it holds a pipe whose write end only this process has (a killed runner leaves
        no server behind); ``outlive`` leaves it running after this process exits."""
        port = self.url.rsplit(":", 1)[1]
        self._cut_lifeline()  # a previous server of this node's (killed, not stopped)
        env = {**os.environ, ENV_NODE: str(self.root)}
        env.pop(ENV_STOP_WITH_FD, None)  # a server started by a server: not its parent's pipe
        passed: tuple[int, ...] = ()
        if not outlive:
            watch, self._lifeline = os.pipe()
            env[ENV_STOP_WITH_FD] = str(watch)
            passed = (watch,)
        try:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "dataspace", "serve", "--port", port],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    pass_fds=passed,
                )
                self._signalled = False
        finally:
            for fd in passed:  # the server's now; ours would keep the pipe open
                os.close(fd)
        deadline = time.monotonic() + START_TIMEOUT
        # One client for the whole wait: a new one per poll costs ~35 ms of CPU (its TLS
        # context), taken from the server that is starting up on the same cores.
        with http_client(base_url=self.url, timeout=1) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited:\n{self.log()[-2000:]}")
                try:
                    answer = probe.get("/api/v1/health")
                    if answer.status_code == 200 and answer.json().get("node") == self.name:
                        return
                    if answer.status_code == 200:  # another process holds our port: wait
                        time.sleep(0.1)
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.1)
        raise RuntimeError(
            f"node {self.name} did not start in {START_TIMEOUT:.0f}s:\n{self.log()[-2000:]}"
        )

    def signal_stop(self) -> None:
        """Ask the server to stop (SIGTERM) without waiting for it: :meth:`stop` waits."""
        if self.process is not None and self.process.poll() is None and not self._signalled:
            self.process.terminate()
            self._signalled = True

    def stop(self) -> None:
        self.signal_stop()
        if self.process is not None:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process, self._signalled = None, False
        self._cut_lifeline()

    def _cut_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None


def stop_all(nodes: Iterable[NodeProcess]) -> None:
    """Stop node processes side by side: each is told first, then each is waited for."""
    nodes = list(nodes)
    for running in nodes:
        running.signal_stop()
    for running in nodes:
        running.stop()


def start_all(nodes: Iterable[NodeProcess], *, outlive: bool = False) -> None:
    """Start node processes side by side (each takes a second or two to come up); raises the
    first failure to start. ``outlive``: see :meth:`NodeProcess.start`."""
    nodes = list(nodes)
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        for future in [pool.submit(n.start, outlive=outlive) for n in nodes]:
            future.result()


@dataclass
class Cluster:
    workdir: Path
    operator_key: str
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def start(self, *, outlive: bool = False) -> None:
        start_all(self.nodes.values(), outlive=outlive)

    def stop(self) -> None:
        stop_all(self.nodes.values())


def create(
    workdir: Path,
    names: list[str],
    *,
    space: str,
    dealer: bool = False,
    actor: str = ACTOR,
    database_url: str | None = None,
    schema_for: dict[str, str] | None = None,
) -> Cluster:
    """Initialise the operator and every node, sign the membership list, join; not started.

    With ``dealer`` the operator is a member with role ``dealer`` (the randomness dealer of
    federated training) and is served too, as ``cluster.nodes["operator"]``. With
    ``database_url`` every node keeps its state there, in the schema ``schema_for`` names.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    schema_for = schema_for or {}

    def init(name: str) -> tuple[Node, str]:
        return init_node(
            workdir / name, name, database_url=database_url, database_schema=schema_for.get(name)
        )

    operator, operator_secret = init(OPERATOR)
    try:
        cluster = Cluster(workdir=workdir, operator_key=operator.verifier_key())
        members = []
        for name in names:
            created, secret = init(name)
            url = f"http://127.0.0.1:{free_port()}"
            members.append(Member(name, url, created.verifier_key(), ("provider", "consumer")))
            cluster.nodes[name] = NodeProcess(
                name, created.root, url, secret, log_path=workdir / f"{name}.log"
            )
            created.close()
        if dealer:
            url = f"http://127.0.0.1:{free_port()}"
            members.append(Member(OPERATOR, url, cluster.operator_key, ("operator", "dealer")))
            cluster.nodes[OPERATOR] = NodeProcess(
                OPERATOR,
                operator.root,
                url,
                operator_secret,
                log_path=workdir / f"{OPERATOR}.log",
            )
        note = space_service.issue_membership(operator, members, space=space, serial=1, actor=actor)
        if dealer:
            space_service.join(operator, note, cluster.operator_key, actor=actor)
    finally:
        operator.close()
    for running in cluster.nodes.values():
        if running.name == OPERATOR:
            continue
        member_node = running.open()
        try:
            space_service.join(member_node, note, cluster.operator_key, actor=actor)
        finally:
            member_node.close()
    return cluster
