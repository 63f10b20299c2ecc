"""A node's HTTP API as the scenarios drive it (admin token, loopback)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pyarrow as pa

from dataspace.outbound import http_client
from dataspace.services.job_wire import decode_meta, error_from_envelope, from_ipc

TIMEOUT = 120.0


class NodeApi:
    """Thin, synchronous calls against one node's `/api/v1`; errors become DataspaceErrors."""

    def __init__(self, name: str, url: str, token: str) -> None:
        self.name = name
        self.url = url
        self._http = http_client(
            base_url=url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
        )

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self._http.request(method, path, **kw)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"code": "error", "message": response.text[:500]}}
            raise error_from_envelope(body, response.status_code)
        return response

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self._send(method, path, **kw).json()

    # -- identity and catalog --------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return dict(self.json("GET", "/node"))

    def create_offer(self, **body: Any) -> dict[str, Any]:
        return dict(self.json("POST", "/offers", json=body))

    def catalog(self, peer: str) -> list[dict[str, Any]]:
        return list(self.json("GET", f"/peers/{peer}/catalog"))

    def negotiate(self, peer: str, offer_id: str, purpose: str) -> dict[str, Any]:
        body = {"peer": peer, "offer_id": offer_id, "purpose": purpose, "wait_seconds": 60}
        return dict(self.json("POST", "/contracts", json=body))

    # -- jobs ------------------------------------------------------------------------------
    def query(self, agreement_id: str, sql: str) -> tuple[pa.Table, dict[str, Any]]:
        response = self._send(
            "POST", "/jobs/query", json={"agreement_id": agreement_id, "sql": sql}
        )
        return from_ipc(response.content), decode_meta(response.headers.get("dataspace-job"))

    def _wait_mp(self, view: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        job_id = view["id"]
        deadline = time.monotonic() + timeout
        while view.get("state") not in ("SUCCEEDED", "FAILED", "DENIED"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"multi-party job {job_id} still {view.get('state')}")
            time.sleep(0.1)
            view = dict(self.json("GET", f"/mp/jobs/{job_id}"))
        if view["state"] != "SUCCEEDED":
            error = view.get("error") or {}
            raise error_from_envelope({"error": error} if error else view, 409)
        return view

    def psi(self, **body: Any) -> dict[str, Any]:
        return self._wait_mp(dict(self.json("POST", "/mp/psi", json=body)))

    def aggregate(self, **body: Any) -> dict[str, Any]:
        return self._wait_mp(dict(self.json("POST", "/mp/aggregate", json=body)))

    def transfer(self, agreement_id: str, mode: str) -> dict[str, Any]:
        body = {"agreement_id": agreement_id, "mode": mode, "wait": 60}
        return dict(self.json("POST", "/transfers", json=body))

    # -- metering and ledger ---------------------------------------------------------------
    def usage(self) -> list[dict[str, Any]]:
        return list(self.json("GET", "/usage"))

    def bill(self, agreement_id: str) -> dict[str, Any]:
        return dict(self.json("GET", "/bills", params={"agreement": agreement_id}))

    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start: int | None = 0
        while start is not None:
            page = self.json("GET", "/ledger/entries", params={"start": start, "limit": 500})
            out.extend(page["entries"])
            start = page["next"]
        return out

    def checkpoint(self) -> str:
        return self._send("GET", "/ledger/checkpoint").text

    def inclusion_proof(self, index: int) -> dict[str, Any]:
        return dict(self.json("GET", "/ledger/proofs/inclusion", params={"index": index}))
