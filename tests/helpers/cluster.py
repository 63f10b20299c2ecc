"""A space of real nodes on loopback: each its own directory, keys and uvicorn process.

``start_space(tmp_path, ["tax-bureau", "bank"])`` creates an operator node and one node per
name, signs a membership list naming every node with its URL and key, has each node join it,
and starts each node's API server as a subprocess on a free loopback port. ``Space.stop()``
(called by the ``space_factory`` fixture at teardown) terminates them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dataspace.identity.membership import Member
from dataspace.services import space as space_service
from dataspace.services.node import Node, init_node, open_node

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningNode:
    name: str
    root: Path
    url: str
    admin_token: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def node(self) -> Node:
        return open_node(self.root)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=60
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def start(self) -> None:
        assert self.log_path is not None
        port = self.url.rsplit(":", 1)[1]
        env = {**os.environ, "DATASPACE_NODE": str(self.root)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dataspace", "serve", "--port", port],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node {self.name} exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"node {self.name} did not start in {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None


@dataclass
class Space:
    operator: Node
    operator_key: str
    nodes: dict[str, RunningNode] = field(default_factory=dict)

    def stop(self) -> None:
        for running in self.nodes.values():
            running.stop()
        self.operator.close()


def start_space(
    tmp_path: Path,
    names: list[str],
    *,
    database_url: str | None = None,
    schema_for: dict[str, str] | None = None,
    serve: bool = True,
    dealer: bool = False,
) -> Space:
    """Create (and by default start) a space of nodes; see the module docstring."""
    schema_for = schema_for or {}
    operator, operator_secret = init_node(
        tmp_path / "operator",
        "operator",
        database_url=database_url,
        database_schema=schema_for.get("operator"),
    )
    result = Space(operator=operator, operator_key=operator.verifier_key())
    members = []
    for name in names:
        created, secret = init_node(
            tmp_path / name,
            name,
            database_url=database_url,
            database_schema=schema_for.get(name),
        )
        url = f"http://127.0.0.1:{free_port()}"
        members.append(Member(name, url, created.verifier_key(), ("provider", "consumer")))
        result.nodes[name] = RunningNode(
            name, created.root, url, secret, log_path=tmp_path / f"{name}.log"
        )
        created.close()
    if dealer:  # the operator serves too, as the dealer of multi-party protocols
        url = f"http://127.0.0.1:{free_port()}"
        members.append(Member("operator", url, result.operator_key, ("operator", "dealer")))
        result.nodes["operator"] = RunningNode(
            "operator", operator.root, url, operator_secret, log_path=tmp_path / "operator.log"
        )
    note = space_service.issue_membership(
        operator, members, space="test-space", serial=1, actor="test"
    )
    for running in result.nodes.values():
        if running.name == "operator":
            space_service.join(operator, note, result.operator_key, actor="test")
            continue
        member_node = open_node(running.root)
        space_service.join(member_node, note, result.operator_key, actor="test")
        member_node.close()
    if serve:
        try:
            for running in result.nodes.values():
                running.start()
        except BaseException:
            result.stop()
            raise
    return result
