"""Two real node processes on loopback: offer → negotiation → DSP transfer → file, ledgers, bill.

The tax bureau publishes its taxpayers under the ``raw-transfer`` template (raw, and a
pseudonymized variant); the bank negotiates with the real services, asks for the rows, and the
provider's node decides, prepares the extract, and the bank's node pulls and verifies it. Every
DSP message and the pull cross a socket and pass ``require_peer``.
"""

from __future__ import annotations

import hashlib
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from dataspace.contracts import validate
from dataspace.ledger import log
from dataspace.services import datasets, negotiation, offers, transfers
from dataspace.services import usage as usage_service
from dataspace.services.node import Node
from dataspace.services.peers import peer_client

TAX, BANK = "tax-bureau", "bank"


def _taxpayers(path: Path) -> Path:
    lines = ["person_id,district,tax_paid,note"]
    for n in range(40):
        lines.append(f"P{n:05d},d{n % 3},{1000 + 11 * n},n{n}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _actions(node: Node) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with node.store.read() as session:
        for row in log.entries(session, 0, 10_000):
            item = row.to_dict()
            out.setdefault(item["entry"]["action"], []).append(item["payload"])
    return out


def _agree(bank: Node, offer_id: str) -> str:
    started = negotiation.request_contract(bank, TAX, offer_id=offer_id, purpose="credit-risk",
                                           actor="test")
    view = negotiation.wait(bank, started["id"], 20)
    assert view["state"] == "FINALIZED", view
    return str(view["agreement_id"])


@pytest.fixture
def space(space_factory: Callable[..., Any], tmp_path: Path) -> Any:
    return space_factory([TAX, BANK])


def test_transfer_between_two_nodes(space: Any, tmp_path: Path) -> None:
    tax, bank = space.nodes[TAX].open(), space.nodes[BANK].open()
    try:
        datasets.add(tax, _taxpayers(tmp_path / "tax.csv"), name="taxpayers", actor="t")
        datasets.reclassify(tax, "taxpayers", column="person_id", category="id_card_cn",
                            actor="t")
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        common = {"purposes": "finance", "expires": expires,
                  "fields": "person_id,district,tax_paid"}
        raw = offers.create(tax, "taxpayers", actor="t", template="raw-transfer",
                            params=common, price="7 CNY", auto_approve=True)
        pseudo = offers.create(tax, "taxpayers", actor="t", template="raw-transfer",
                               params={**common, "output": "pseudonymized"}, auto_approve=True)
        raw_agreement, pseudo_agreement = _agree(bank, raw["id"]), _agree(bank, pseudo["id"])

        # raw: the allowed columns only, hash and rows verified, in the bank's received/
        started = transfers.request_transfer(bank, agreement_id=raw_agreement, mode="raw",
                                             actor="test")
        done = transfers.wait(bank, started["id"], 20)
        assert done["state"] == "COMPLETED", (done, space.nodes[TAX].log())
        received = Path(done["file"])
        assert received.parent == space.nodes[BANK].root / "received"
        assert stat.S_IMODE(received.parent.stat().st_mode) == 0o700  # the bank's alone
        assert hashlib.sha256(received.read_bytes()).hexdigest() == done["sha256"]
        table = pq.read_table(received)
        assert table.column_names == ["person_id", "district", "tax_paid"]  # no "note"
        assert table.num_rows == done["rows"] == 40
        assert "P00007" in table.column("person_id").to_pylist()
        out = transfers.copy_received(done, tmp_path / "mine.parquet")
        assert hashlib.sha256(out.read_bytes()).hexdigest() == done["sha256"]

        provider_view = transfers.show_transfer(tax, done["provider_pid"])
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while provider_view["state"] != "COMPLETED" and datetime.now(UTC) < deadline:
            time.sleep(0.05)
            provider_view = transfers.show_transfer(tax, done["provider_pid"])
        assert provider_view["state"] == "COMPLETED"
        assert provider_view["sha256"] == done["sha256"]

        # pseudonymized: identifiers replaced by per-agreement HMACs, the rest untouched
        p = transfers.wait(bank, transfers.request_transfer(
            bank, agreement_id=pseudo_agreement, mode="pseudonymized", actor="test")["id"], 20)
        assert p["state"] == "COMPLETED", p
        ptable = pq.read_table(p["file"])
        ids = ptable.column("person_id").to_pylist()
        assert all(len(v) == 64 and int(v, 16) >= 0 for v in ids)
        assert "P00007" not in ids
        assert ptable.column("tax_paid").to_pylist() == table.column("tax_paid").to_pylist()

        # raw under the pseudonymized agreement: refused with the reason, logged and metered
        denied = transfers.wait(bank, transfers.request_transfer(
            bank, agreement_id=pseudo_agreement, mode="raw", actor="test")["id"], 20)
        assert denied["state"] == "TERMINATED"
        assert any("output" in r for r in denied["reason"]), denied

        # after completion the pull is refused (HTTP, signed by the bank, with its token)
        with bank.store.read() as session:
            from dataspace.store.models_contracts import TransferProcessRow

            address = session.get(TransferProcessRow, done["id"]).data_address
        token = next(p["value"] for p in address["endpointProperties"]
                     if p["name"] == "authorization")
        path = address["endpoint"].split(space.nodes[TAX].url, 1)[1]
        with peer_client(bank, TAX) as client:
            again = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert again.status_code == 409, again.text
            ack = client.get(f"/dsp/transfers/{done['provider_pid']}")
            assert ack.status_code == 200
            validate(ack.json(), "TransferProcess")
            assert ack.json()["state"] == "COMPLETED"
            repeated = client.post(f"/dsp/transfers/{done['provider_pid']}/completion", json={
                "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                "@type": "TransferCompletionMessage", "providerPid": done["provider_pid"],
                "consumerPid": done["id"]})
            assert repeated.status_code == 200  # a retried delivery: answered, no change
            assert repeated.json()["state"] == "COMPLETED"
            late = client.post(f"/dsp/transfers/{done['provider_pid']}/suspension", json={
                "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                "@type": "TransferSuspensionMessage", "providerPid": done["provider_pid"],
                "consumerPid": done["id"]})
            assert late.status_code == 400
            validate(late.json(), "TransferError")
            assert late.json()["code"] == "illegal_transition"

        mine, theirs = _actions(bank), _actions(tax)
        for action in ("transfer.requested", "transfer.started", "transfer.received"):
            assert action in mine, (action, sorted(mine))
        for action in ("transfer.requested", "transfer.started", "transfer.served",
                       "transfer.completed", "transfer.denied", "transfer.pull_refused"):
            assert action in theirs, (action, sorted(theirs))
        started_entry = next(e for e in theirs["transfer.started"] if e["pid"] ==
                             done["provider_pid"])
        assert started_entry["sha256"] == done["sha256"] and started_entry["mode"] == "raw"
        assert started_entry["columns"] == ["person_id", "district", "tax_paid"]
        assert next(e["sha256"] for e in mine["transfer.received"]) == done["sha256"]

        # over the API the received file is named under the node, not by its server path
        with space.nodes[BANK].api() as api:
            shown = api.get(f"/api/v1/transfers/{done['id']}").json()
            listed = api.get("/api/v1/transfers").json()
        assert shown["file"] == f"received/{received.name}"
        assert str(space.nodes[BANK].root) not in str(listed)

        # the provider's bill shows the transfer at the offer's price; the denial at zero
        statement = usage_service.statement(tax, agreement_id=raw_agreement)
        lines = statement["lines"]
        assert [(ln["action"], ln["status"]) for ln in lines] == [("transfer", "completed")]
        assert Decimal(lines[0]["amount"]) == Decimal("7")
        denied_lines = usage_service.list_usage(tax, agreement_id=pseudo_agreement)
        assert {(u["status"], Decimal(u["amount"])) for u in denied_lines} >= {
            ("denied", Decimal(0))}
    finally:
        tax.close()
        bank.close()

