"""End to end over real HTTP: two node processes on loopback, catalog → request → FINALIZED.

The bank runs the real CLI in-process (signed requests through ``peer_client``); both nodes'
API servers are uvicorn subprocesses, so every DSP message and callback crosses a socket and
passes ``require_peer``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dataspace.contracts import store as cs
from dataspace.contracts import validate
from dataspace.samples import SAMPLES_DIR as SAMPLES
from dataspace.services import datasets, ledger, offers
from helpers.cluster import Space, start_space


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Space]:
    running = start_space(tmp_path, ["tax-bureau", "bank"])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """The real `dataspace` entry point, in-process: (exit_code, stdout, stderr)."""
    import contextlib
    import io
    from types import SimpleNamespace

    from dataspace.cli import common
    from dataspace.cli.main import main

    monkeypatch.delenv("DATASPACE_NODE", raising=False)

    def run(*args: str | Path) -> Any:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            common.console.file, common.err_console.file = out, err
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = int(exc.code or 0)
            finally:
                common.console.file = None  # type: ignore[assignment]
                common.err_console.file = None  # type: ignore[assignment]
        return SimpleNamespace(exit_code=code, stdout=out.getvalue(), stderr=err.getvalue())

    return run


def _actions(root: Path) -> list[dict[str, Any]]:
    from dataspace.services.node import open_node

    node = open_node(root)
    try:
        return [e for e in ledger.entries(node, limit=1000)]
    finally:
        node.close()


def test_catalog_request_finalized_in_both_ledgers(cluster: Space, cli: Callable[..., Any]
                                                   ) -> None:
    tax, bank = cluster.nodes["tax-bureau"], cluster.nodes["bank"]
    provider = tax.open()
    ds = datasets.add(provider, SAMPLES / "tax_records.csv", name="tax-records",
                      domain="finance", actor="cli:clerk")
    offer = offers.create(provider, "tax-records", actor="cli:clerk", template="aggregate-only",
                          params={"purposes": "finance"}, price="100 CNY", auto_approve=True)
    provider.close()

    version = httpx.get(f"{tax.url}/.well-known/dspace-version", timeout=10)
    assert version.status_code == 200
    validate(version.json(), "VersionResponse")
    assert version.json()["protocolVersions"][0]["path"] == "/dsp"
    unsigned = httpx.post(f"{tax.url}/dsp/catalog/request", json={}, timeout=10)
    assert unsigned.status_code == 401

    node = ["--node", bank.root]
    listed = cli(*node, "catalog", "tax-bureau", "--json")
    assert listed.exit_code == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["id"] == ds["id"] and entry["offers"][0]["id"] == offer["id"]
    assert {c["name"] for c in entry["columns"]} >= {"开票金额"}
    assert "2050347.06" not in listed.stdout  # metadata only, never values
    assert entry["offers"][0]["price"] == "100 CNY"  # what a job costs, before negotiating
    shown = cli(*node, "catalog", "tax-bureau")
    assert "100 CNY" in shown.stdout and "finance" in shown.stdout

    result = cli(*node, "contract", "request", "tax-bureau", "--offer", offer["id"],
                 "--purpose", "credit-risk", "--wait", "20", "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr, tax.log(), bank.log())
    view = json.loads(result.stdout)
    assert view["state"] == "FINALIZED", view
    assert view["agreement"]["signatures"] == {"provider": "verified", "consumer": "verified"}
    agreement_id = view["agreement_id"]

    shown = json.loads(cli(*node, "contract", "show", agreement_id, "--json").stdout)
    assert shown["purpose"] == "credit-risk" and shown["peer"] == "tax-bureau"

    provider = tax.open()
    consumer = bank.open()
    try:
        with provider.store.read() as s:
            row = cs.get_agreement(s, agreement_id, peer="bank")
            cs.verify_signatures(row, provider.signer.public_bytes,
                                 consumer.signer.public_bytes)
            assert (row.offer_id, row.purpose) == (offer["id"], "credit-risk")
        with consumer.store.read() as s:
            mine = cs.get_agreement(s, agreement_id, peer="tax-bureau")
            assert mine.policy == row.policy
            assert mine.provider_signature == row.provider_signature
            assert mine.consumer_signature == row.consumer_signature
    finally:
        provider.close()
        consumer.close()
    for root in (tax.root, bank.root):
        entries = _actions(root)
        acts = [e["entry"]["action"] for e in entries]
        assert "negotiation.finalized" in acts, (root, acts)
        assert "agreement.signed" in acts and "negotiation.requested" in acts

    refused = cli(*node, "contract", "request", "tax-bureau", "--offer", offer["id"],
                  "--purpose", "marketing", "--wait", "20")
    assert refused.exit_code == 6, (refused.stdout, refused.stderr)
    assert "ended TERMINATED: " in refused.stderr and "error:" in refused.stderr
