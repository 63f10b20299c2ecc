"""Fixtures for the HTTP API: a real node (from the shared ``make_node``), its app, a client,
and one token per role."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient and warns when it falls back to httpx.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from dataspace.node.app import create_app
from dataspace.services import tokens
from dataspace.services.node import Node
from helpers.cluster import Space, start_space

API = "/api/v1"
ROLES = tokens.ROLES
HEADER = "客户编号,姓名,手机号,城市,年龄,月收入"
CITIES = ("北京", "上海", "广州", "深圳", "杭州")


def make_csv(rows: int = 30) -> bytes:
    """A small UTF-8 CSV with Chinese column names and a column of mobile numbers."""
    lines = [HEADER]
    for i in range(rows):
        lines.append(
            f"C{i:04d},客户{i},13{(812345670 + i * 7919) % 1_000_000_000:09d},"
            f"{CITIES[i % len(CITIES)]},{20 + i % 50},{5000 + 137 * i}"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Api:
    """A real node behind the real app, with a token for every role."""

    node: Node
    app: FastAPI
    client: TestClient
    secrets: dict[str, str] = field(default_factory=dict)
    _seq: Iterator[int] = field(default_factory=count)

    def as_(self, role: str) -> dict[str, str]:
        return bearer(self.secrets[role])

    def upload(
        self,
        name: str | None = None,
        *,
        data: bytes | None = None,
        filename: str = "客户.csv",
        role: str = "provider",
        **fields: str,
    ) -> httpx.Response:
        form = dict(fields)
        if name is not None:
            form["name"] = name
        return self.client.post(
            f"{API}/datasets",
            headers=self.as_(role),
            data=form,
            files={"file": (filename, make_csv() if data is None else data, "text/csv")},
        )

    def new_dataset(self) -> str:
        name = f"客户-{next(self._seq)}"
        response = self.upload(name)
        assert response.status_code == 201, response.text
        return name

    def new_token(self, role: str = "consumer") -> tuple[str, str]:
        """Issue a token through the API; returns (id, secret)."""
        response = self.client.post(
            f"{API}/tokens",
            headers=self.as_("admin"),
            json={"name": f"t{next(self._seq)}", "role": role},
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body["token"]["id"], body["secret"]


@pytest.fixture
def api(make_node: Callable[..., tuple[Node, str]]) -> Iterator[Api]:
    node, admin_secret = make_node("api-node")
    app = create_app(node)
    with TestClient(app) as client:
        result = Api(node, app, client, {"admin": admin_secret})
        for role in ROLES:
            if role != "admin":
                result.secrets[role] = tokens.issue(
                    node, name=f"{role}-test", role=role, actor="test"
                )
        yield result


def send_then_hang_up(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], first_chunk: bytes,
    *, scheme: str = "http", server: tuple[str, int] = ("x", 80),
) -> list[dict[str, Any]]:
    """Drive ``app`` over raw ASGI as a client that sends ``first_chunk`` of a longer body and
    closes the connection (TestClient always sends whole bodies); returns what the app sent."""
    import asyncio

    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": first_chunk, "more_body": True},
        {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "http_version": "1.1", "scheme": scheme, "server": server,
             "client": ("127.0.0.1", 1), "root_path": "", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape: {"error": {"code", "message"[, "hint"][, "details"]}}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) <= {"code", "message", "hint", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error.get("hint", ""), str)
    assert isinstance(error.get("details", {}), dict)
    return error


@pytest.fixture
def tax_and_bank(tmp_path: Path) -> Iterator[Space]:
    """A space of two nodes, tax and bank, not serving: tests put tax's app in a TestClient."""
    running = start_space(tmp_path, ["tax", "bank"], serve=False)
    yield running
    running.stop()
