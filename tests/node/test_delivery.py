"""DeliveryResponse over a real uvicorn server and real sockets: a download read to its end
settles as complete with every byte counted; one whose client hangs up midway settles as
broken, with fewer bytes than the file has."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from dataspace.node.delivery import DeliveryResponse

SIZE = 48 << 20  # far more than loopback's socket buffers can hold at once


class Served:
    """One server with one route streaming ``path``; each settle lands in ``outcomes``."""

    def __init__(self, path: Path) -> None:
        self.outcomes: list[tuple[bool, int]] = []
        self.settled = threading.Event()

        async def download(request: Request) -> DeliveryResponse:
            async def settle(complete: bool, sent: int) -> None:
                self.outcomes.append((complete, sent))
                self.settled.set()

            return DeliveryResponse(path, settle=settle, media_type="application/octet-stream")

        app = Starlette(routes=[Route("/file", download)])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def wait_settled(self) -> tuple[bool, int]:
        assert self.settled.wait(30), "the response never settled"
        self.settled.clear()
        return self.outcomes[-1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, bytes]]:
    path = tmp_path_factory.mktemp("delivery") / "extract.bin"
    content = os.urandom(SIZE)
    path.write_bytes(content)
    running = Served(path)
    running.thread.start()
    deadline = time.monotonic() + 20
    while not running.server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield running, content
    running.server.should_exit = True
    running.thread.join(10)


def test_a_download_read_to_the_end_settles_complete(served: tuple[Served, Any]) -> None:
    running, content = served
    answer = httpx.get(f"http://127.0.0.1:{running.port}/file", timeout=30)
    assert answer.status_code == 200 and answer.content == content
    assert answer.headers["content-length"] == str(SIZE)
    assert running.wait_settled() == (True, SIZE)


def test_a_client_that_hangs_up_midway_settles_broken(served: tuple[Served, Any]) -> None:
    running, _ = served
    with socket.create_connection(("127.0.0.1", running.port)) as client:
        client.sendall(b"GET /file HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = 0
        while received < 256 << 10:
            received += len(client.recv(65536))
    complete, sent = running.wait_settled()
    assert not complete and 0 < sent < SIZE
