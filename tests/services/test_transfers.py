"""Transfer processes: the provider's policy decision, the data plane, and every DSP transfer
transition at the HTTP level (real apps, requests signed by a real member; no peer servers —
outgoing messages are captured)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from dataspace.contracts import store as cs
from dataspace.contracts import transfer as tp
from dataspace.contracts import validate
from dataspace.contracts.roles import Role
from dataspace.errors import Conflict, DataspaceError, Forbidden, NotFound, UsageError
from dataspace.identity.peer import PeerAuth
from dataspace.ledger import log
from dataspace.node.app import create_app
from dataspace.policy import PolicyDenied, from_template
from dataspace.services import (
    datasets,
    jobs,
    space,
    transfer_backlog,
    transfer_sweep,
    transfers,
)
from dataspace.services import usage as usage_service
from dataspace.services.node import Node
from dataspace.services.space import self_member
from dataspace.store.models_contracts import TransferExtractRow
from helpers.agreements import make_agreement

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

TAX, BANK = "tax-bureau", "bank"
CTX = ["https://w3id.org/dspace/2025/1/context.jsonld"]


@dataclasses.dataclass
class Pair:
    tax: Node
    bank: Node
    dataset_id: str
    sent: list[tuple[str, str, dict[str, Any]]]

    def transport(self, node: Node, peer: str, method: str, path: str,
                  body: Any) -> tuple[int, Any]:
        self.sent.append((peer, path, dict(body or {})))
        return 200, None

    def agreement(self, template: str, **params: Any) -> str:
        return make_agreement(self.tax, BANK, consumer=self.bank, dataset_id=self.dataset_id,
                              purpose="credit-risk", price_terms={"per_job": "3.00 CNY"},
                              offer=from_template(template, purposes=["finance"], **params))

    def request(self, agreement_id: str, mode: str, *, run: bool = True) -> str:
        bank = space.member(self.tax, BANK)
        doc = {"@context": CTX, "@type": "TransferRequestMessage",
               "consumerPid": cs.new_pid(), "agreementId": agreement_id,
               "format": transfers.format_for(mode),
               "callbackAddress": bank.url + "/dsp"}
        reply = transfers.handle_request(self.tax, bank, doc, transport=self.transport)
        assert reply.status == 201, reply.body
        assert reply.body is not None
        validate(reply.body, "TransferProcess")
        if run:
            reply.run_after()
        return str(reply.body["providerPid"])


def _people(path: Path) -> Path:
    lines = ["person_id,district,tax_paid"]
    lines += [f"P{n:05d},d{n % 2},{100 + n}" for n in range(12)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def pair(space_factory: Callable[..., Any], tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    cluster = space_factory([TAX, BANK], serve=False)
    tax, bank = cluster.nodes[TAX].open(), cluster.nodes[BANK].open()
    view = datasets.add(tax, _people(tmp_path / "p.csv"), name="people", actor="t")
    datasets.reclassify(tax, "people", column="person_id", category="id_card_cn", actor="t")
    result = Pair(tax, bank, view["id"], [])
    monkeypatch.setattr(transfers, "TRANSPORT", result.transport)

    def no_pull(node: Node, peer: str) -> httpx.Client:
        raise httpx.ConnectError("no peer servers in this test")

    monkeypatch.setattr(transfers, "CLIENTS", no_pull)
    try:
        yield result
    finally:
        tax.close()
        bank.close()


def _entries(node: Node, action: str) -> list[dict[str, Any]]:
    with node.store.read() as session:
        rows = [r.to_dict() for r in log.entries(session, 0, 10_000)]
    return [r["payload"] for r in rows if r["entry"]["action"] == action]


def _tokens(pair: Pair) -> list[str]:
    """The pull tokens of the start messages sent so far, in order."""
    tokens = []
    for _, path, body in pair.sent:
        if path.endswith("/start"):
            validate(body, "TransferStartMessage")
            props = {p["name"]: p["value"] for p in body["dataAddress"]["endpointProperties"]}
            tokens.append(str(props["authorization"]))
    return tokens


def _token(pair: Pair) -> str:
    return _tokens(pair)[0]


def _parquet_bytes(**columns: list[Any]) -> bytes:
    import io

    import pyarrow as pa

    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


# --- the provider's decision -------------------------------------------------------------------


def test_aggregate_only_agreement_refuses_a_transfer_with_reasons(pair: Pair) -> None:
    agreement = pair.agreement("aggregate-only", min_group_size=5)
    pid = pair.request(agreement, "raw")
    assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
    [(_, path, body)] = pair.sent
    assert path.endswith("/termination") and body["code"] == "policy_denied"
    validate(body, "TransferTerminationMessage")
    [denied] = _entries(pair.tax, "transfer.denied")
    assert denied["pid"] == pid and denied["reasons"]
    text = " ".join(denied["reasons"])
    assert "transfer" in text and "output" in text, text
    [line] = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert (line["action"], line["status"]) == ("transfer", "denied")
    assert Decimal(line["amount"]) == 0


def test_expired_raw_transfer_is_refused(pair: Pair) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=past)
    pid = pair.request(agreement, "raw")
    assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
    [denied] = _entries(pair.tax, "transfer.denied")
    assert any("dateTime" in r for r in denied["reasons"]), denied


def test_pseudonymized_agreement_refuses_raw(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, output="pseudonymized")
    pid = pair.request(agreement, "raw")
    assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
    assert any("output" in r for r in _entries(pair.tax, "transfer.denied")[0]["reasons"])


def test_allowed_raw_transfer_sends_allowed_fields_only_and_pulls_once(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, fields=["person_id", "tax_paid"])
    pid = pair.request(agreement, "raw")
    view = transfers.show_transfer(pair.tax, pid)
    assert view["state"] == "STARTED" and view["columns"] == ["person_id", "tax_paid"]
    token = _token(pair)
    bank = space.member(pair.tax, BANK)

    with pytest.raises(NotFound):  # another member cannot pull, even with the token
        transfers.serve_pull(pair.tax, dataclasses.replace(bank, name="insurer"), pid,
                             f"Bearer {token}")
    with pytest.raises(Forbidden):
        transfers.serve_pull(pair.tax, bank, pid, "Bearer wrong")
    path, facts = transfers.serve_pull(pair.tax, bank, pid, f"Bearer {token}")
    table = pq.read_table(path)
    assert table.column_names == ["person_id", "tax_paid"] and table.num_rows == 12
    assert facts["sha256"] == view["sha256"]
    with pytest.raises(Forbidden, match="used"):
        transfers.serve_pull(pair.tax, bank, pid, f"Bearer {token}")
    assert usage_service.list_usage(pair.tax, agreement_id=agreement) == []  # not out yet

    assert transfers.settle_pull(pair.tax, pid, sent=facts["bytes"], complete=True) == "billed"
    [line] = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert (line["status"], Decimal(line["amount"]), line["result_rows"]) == (
        "completed", Decimal("3.00"), 12)
    [served] = _entries(pair.tax, "transfer.served")
    assert served["usage_id"] == line["id"] and served["price"]["amount"] == "3.00"

    reply = transfers.handle_message(pair.tax, bank, pid, {
        "@context": CTX, "@type": tp.COMPLETION, "providerPid": pid,
        "consumerPid": view["consumer_pid"]}, tp.COMPLETION)
    assert reply.status == 200 and not path.exists()
    assert len(usage_service.list_usage(pair.tax, agreement_id=agreement)) == 1  # billed once
    with pytest.raises(Conflict):
        transfers.serve_pull(pair.tax, bank, pid, f"Bearer {token}")
    assert len(_entries(pair.tax, "transfer.pull_refused")) == 4


def test_expired_token_is_refused(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pid = pair.request(pair.agreement("raw-transfer", expires=future), "pseudonymized")
    token = _token(pair)
    with pair.tax.store.write() as session:
        ext = session.get(TransferExtractRow, pid)
        assert ext is not None
        ext.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(Forbidden, match="expired"):
        transfers.serve_pull(pair.tax, space.member(pair.tax, BANK), pid, f"Bearer {token}")


def test_a_count_limit_holds_for_transfers_requested_before_any_pull(pair: Pair) -> None:
    """Granted-but-unpulled transfers take their slot: three requests under max_jobs=1 sent
    before any pull (and three more at once, from threads) start one transfer each time."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    pids = [pair.request(agreement, "pseudonymized") for _ in range(3)]
    states = [transfers.show_transfer(pair.tax, pid)["state"] for pid in pids]
    assert states == ["STARTED", "TERMINATED", "TERMINATED"]
    denied = _entries(pair.tax, "transfer.denied")
    assert len(denied) == 2 and all("count" in " ".join(d["reasons"]) for d in denied)

    with pair.tax.store.write() as session:  # the grant lapses unpulled: its slot is free
        ext = session.get(TransferExtractRow, pids[0])
        assert ext is not None
        ext.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    waiting = [pair.request(agreement, "pseudonymized", run=False) for _ in range(3)]
    threads = [threading.Thread(target=transfers.provide, args=(pair.tax, pid),
                                kwargs={"transport": pair.transport}) for pid in waiting]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    states = sorted(transfers.show_transfer(pair.tax, pid)["state"] for pid in waiting)
    assert states == ["STARTED", "TERMINATED", "TERMINATED"]


def _pulled(pair: Pair, agreement: str) -> tuple[str, dict[str, Any]]:
    """A fresh transfer under ``agreement``, its token spent on a pull; its pid and facts."""
    pair.sent.clear()
    pid = pair.request(agreement, "pseudonymized")
    _, facts = transfers.serve_pull(pair.tax, space.member(pair.tax, BANK), pid,
                                    f"Bearer {_token(pair)}")
    return pid, facts


@pytest.mark.parametrize("complete", [True, False])
def test_a_settled_pull_leaves_no_extract_even_without_a_completion(
    pair: Pair, complete: bool
) -> None:
    """The consumer's completion message may never come: the extract stayed on disk for good
    (a sweep 30 days later removed nothing)."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    pid, facts = _pulled(pair, agreement)
    with pair.tax.store.read() as session:
        row = session.get(TransferExtractRow, pid)
        assert row is not None and row.path
        extract = Path(row.path)
    assert extract.exists()
    sent = facts["bytes"] if complete else facts["bytes"] // 2  # half: billed all the same
    assert transfers.settle_pull(pair.tax, pid, sent=sent, complete=complete) == "billed"
    assert not extract.exists()
    # sent in full: STARTED until it completes; cut off: ended, as the consumer's pull failed
    assert transfers.show_transfer(pair.tax, pid)["state"] == (
        "STARTED" if complete else "TERMINATED")
    if not complete:
        [ended] = _entries(pair.tax, "transfer.terminated")
        assert ended["code"] == "delivery_cut"
        assert ended["reason"][0].startswith(f"the connection closed after {sent} of "
                                             f"{facts['bytes']} bytes; billed")


def test_one_use_permissions_count_holds_across_transfers_and_jobs(pair: Pair) -> None:
    """Under `use` with count <= 1, a query was admitted after a billed transfer: jobs counted
    only jobs."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    base = from_template("raw-transfer", purposes=["finance"], expires=future, max_jobs=1)
    use = dataclasses.replace(
        base, permissions=(dataclasses.replace(base.permissions[0], action="use"),))
    agreement = make_agreement(pair.tax, BANK, consumer=pair.bank, dataset_id=pair.dataset_id,
                               purpose="credit-risk", offer=use)
    pid, facts = _pulled(pair, agreement)
    assert transfers.settle_pull(pair.tax, pid, sent=facts["bytes"], complete=True) == "billed"
    with pytest.raises(PolicyDenied, match="count"):
        jobs.run_job(pair.tax, agreement_id=agreement, consumer=BANK,
                     sql="SELECT count(*) AS n FROM people")
    lines = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert [(u["action"], u["status"]) for u in lines if u["status"] == "completed"] == [
        ("transfer", "completed")]


def test_a_delivery_broken_midway_is_not_billed_and_gives_its_slot_back(pair: Pair) -> None:
    """Under max_jobs=1, a pull still going out holds the slot; when its connection breaks,
    the transfer ends unbilled, with how far it got, and the consumer may ask again."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    pid, facts = _pulled(pair, agreement)
    second = pair.request(agreement, "pseudonymized")  # while the first is being delivered
    assert transfers.show_transfer(pair.tax, second)["state"] == "TERMINATED"

    cut = facts["bytes"] // 20  # 5 %: below the share that is billed
    assert transfers.settle_pull(pair.tax, pid, sent=cut, complete=False) == "terminated"
    view = transfers.show_transfer(pair.tax, pid)
    assert view["state"] == "TERMINATED"
    lines = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert [line["status"] for line in lines] == ["denied"]  # the second request's
    [ended] = [e for e in _entries(pair.tax, "transfer.terminated") if e["pid"] == pid]
    assert ended["code"] == "delivery_broken"
    assert ended["reason"] == [f"the connection closed after {cut} of {facts['bytes']} bytes; "
                               "not billed"]
    assert transfers.settle_pull(pair.tax, pid, sent=cut, complete=False) == "settled"

    again, _ = _pulled(pair, agreement)  # the slot is free again
    assert transfers.show_transfer(pair.tax, again)["state"] == "STARTED"


def test_a_delivery_cut_late_is_billed_and_keeps_its_slot(pair: Pair) -> None:
    """Past a tenth of the bytes the consumer holds decodable row groups: billed, counted."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    pid, facts = _pulled(pair, agreement)
    assert transfers.settle_pull(pair.tax, pid, sent=facts["bytes"] // 2, complete=False) == (
        "billed")
    [line] = [u for u in usage_service.list_usage(pair.tax, agreement_id=agreement)
              if u["status"] == "completed"]
    assert line["job_id"] == pid
    second = pair.request(agreement, "pseudonymized")
    assert transfers.show_transfer(pair.tax, second)["state"] == "TERMINATED"  # count used


def test_terminating_mid_stream_does_not_free_the_slot(pair: Pair) -> None:
    """A consumer that sends its termination while the bytes still flow keeps receiving them:
    the pull holds its slot until the delivery is settled, and is billed when it completes."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    pid, facts = _pulled(pair, agreement)
    view = transfers.show_transfer(pair.tax, pid)
    reply = transfers.handle_message(pair.tax, space.member(pair.tax, BANK), pid, {
        "@context": CTX, "@type": tp.TERMINATION, "providerPid": pid,
        "consumerPid": view["consumer_pid"], "code": "changed-mind"}, tp.TERMINATION)
    assert reply.status == 200
    second = pair.request(agreement, "pseudonymized")
    assert transfers.show_transfer(pair.tax, second)["state"] == "TERMINATED"
    assert transfers.settle_pull(pair.tax, pid, sent=facts["bytes"], complete=True) == "billed"


@pytest.mark.parametrize(
    ("change", "path"),
    [({"consumerPid": ""}, "consumerPid"), ({"consumerPid": "../negotiations/x"}, "consumerPid"),
     ({"callbackAddress": "/dsp\x00"}, "callbackAddress"),
     ({"callbackAddress": "/dsp x"}, "callbackAddress")],
    ids=["empty-pid", "pid-with-slash", "nul-callback", "space-callback"],
)
def test_a_request_naming_no_routable_pid_or_callback_is_refused(
    pair: Pair, change: dict[str, str], path: str
) -> None:
    """Both were accepted (201), making processes no later message could reach."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    bank = space.member(pair.tax, BANK)
    doc = {"@context": CTX, "@type": "TransferRequestMessage", "consumerPid": cs.new_pid(),
           "agreementId": agreement, "format": transfers.format_for("raw"),
           "callbackAddress": bank.url + "/dsp"}
    if "callbackAddress" in change:
        change = {"callbackAddress": bank.url + change["callbackAddress"]}
    reply = transfers.handle_request(pair.tax, bank, doc | change, transport=pair.transport)
    assert reply.status == 400 and f"{path} " in " ".join(reply.body["reason"]), reply.body
    assert transfers.list_transfers(pair.tax) == []


def test_a_request_for_a_removed_dataset_is_ended_with_the_reason(pair: Pair) -> None:
    """provide() raised NotFound in the background: the process stayed REQUESTED, the
    consumer was never told and the sweep never ended it."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    datasets.remove(pair.tax, "people", actor="t")
    pid = pair.request(agreement, "raw")
    assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
    [(_, path, body)] = pair.sent
    assert path.endswith("/termination") and "no longer on this node" in json.dumps(body)


def test_a_dataset_removed_while_its_extract_goes_out_is_still_billed(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    pid, facts = _pulled(pair, agreement)
    datasets.remove(pair.tax, "people", actor="test")
    assert transfers.settle_pull(pair.tax, pid, sent=facts["bytes"], complete=True) == "billed"
    [line] = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert line["job_id"] == pid and line["dataset"] == pair.dataset_id  # its name is gone with it


def test_a_refused_query_under_the_transfers_id_cannot_stop_its_bill(pair: Pair) -> None:
    """The consumer learns the provider's process id before the pull; a query it sends under
    that id as its job id is refused and metered as denied, and the delivery is billed still."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    pair.sent.clear()
    pid = pair.request(agreement, "raw")
    with pytest.raises(DataspaceError):
        jobs.run_job(pair.tax, agreement_id=agreement, consumer=BANK, sql="SELECT 1", job_id=pid)
    _, facts = transfers.serve_pull(pair.tax, space.member(pair.tax, BANK), pid,
                                    f"Bearer {_token(pair)}")
    assert transfers.settle_pull(pair.tax, pid, sent=facts["bytes"], complete=True) == "billed"
    lines = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert sorted((u["job_id"], u["action"], u["status"]) for u in lines) == [
        (pid, "governed-query", "denied"), (pid, "transfer", "completed")]


def test_a_completion_before_the_end_of_the_stream_bills_once(pair: Pair) -> None:
    """The consumer's verified completion may arrive before the provider has seen its own
    stream end: it bills the delivery, and the stream's end then finds it billed."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    pid, facts = _pulled(pair, agreement)
    view = transfers.show_transfer(pair.tax, pid)
    transfers.handle_message(pair.tax, space.member(pair.tax, BANK), pid, {
        "@context": CTX, "@type": tp.COMPLETION, "providerPid": pid,
        "consumerPid": view["consumer_pid"]}, tp.COMPLETION)
    assert len(usage_service.list_usage(pair.tax, agreement_id=agreement)) == 1
    assert transfers.settle_pull(pair.tax, pid, sent=facts["bytes"], complete=True) == "settled"
    assert transfers.settle_pull(pair.tax, pid, sent=0, complete=False) == "settled"
    assert len(usage_service.list_usage(pair.tax, agreement_id=agreement)) == 1
    assert transfers.show_transfer(pair.tax, pid)["state"] == "COMPLETED"
    assert len([e for e in _entries(pair.tax, "transfer.served") if e["pid"] == pid]) == 1


def test_a_delivery_a_restart_cut_off_is_ended_unbilled_by_the_sweep(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    cut, _ = _pulled(pair, agreement)
    done, facts = _pulled(pair, agreement)
    transfers.settle_pull(pair.tax, done, sent=facts["bytes"], complete=True)

    assert transfer_sweep.sweep(pair.tax, transport=pair.transport)["terminated"] == [cut]
    assert transfers.show_transfer(pair.tax, cut)["state"] == "TERMINATED"
    assert transfers.show_transfer(pair.tax, done)["state"] == "STARTED"  # billed, awaiting
    [ended] = [e for e in _entries(pair.tax, "transfer.terminated") if e["pid"] == cut]
    assert ended["code"] == "delivery_interrupted"
    [told] = [body for peer, path, body in pair.sent if path.endswith("/termination")]
    assert told["code"] == "delivery_interrupted" and told["providerPid"] == cut
    [line] = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert line["job_id"] == done


def _settled(pair: Pair, agreement: str, share: float = 1.0) -> tuple[str, datetime]:
    """A fresh transfer pulled and billed (its delivery cut at ``share`` of the bytes, or
    complete); its pid and a moment just after the settlement."""
    pid, facts = _pulled(pair, agreement)
    outcome = transfers.settle_pull(pair.tax, pid, sent=int(facts["bytes"] * share),
                                    complete=share == 1.0)
    assert outcome == "billed"
    return pid, datetime.now(UTC)


def test_a_billed_delivery_the_consumer_never_confirms_is_completed_by_the_provider(
    pair: Pair,
) -> None:
    """The consumer's completion message may be lost (it is sent once, best effort): the
    provider's transfer stayed STARTED for good although its data had left and been billed."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    pid, settled = _settled(pair, agreement)
    grace = timedelta(seconds=pair.tax.limits["transfer_completion_grace_seconds"])
    assert transfer_sweep.sweep_while_serving(
        pair.tax, settled + grace / 2, transport=pair.transport)["completed"] == []
    assert transfers.show_transfer(pair.tax, pid)["state"] == "STARTED"

    pair.sent.clear()
    later = settled + grace + timedelta(seconds=5)
    swept = transfer_sweep.sweep_while_serving(pair.tax, later, transport=pair.transport)
    assert swept == {"terminated": [], "completed": [pid], "removed": [], "told": []}
    view = transfers.show_transfer(pair.tax, pid)
    assert view["state"] == "COMPLETED"
    [entry] = [e for e in _entries(pair.tax, "transfer.completed") if e["pid"] == pid]
    assert entry["by"] == TAX and entry["peer"] == BANK and entry["rows"] == 12
    assert "confirmed nothing within 900 s" in entry["reason"][0]
    [(peer, path, body)] = pair.sent
    validate(body, "TransferCompletionMessage")
    assert peer == BANK and path.endswith(f"/transfers/{view['consumer_pid']}/completion")
    assert body["providerPid"] == pid and body["consumerPid"] == view["consumer_pid"]
    assert transfer_sweep.complete_unconfirmed(pair.tax, later, transport=pair.transport) == []
    lines = usage_service.list_usage(pair.tax, agreement_id=agreement)
    assert [(u["job_id"], u["status"]) for u in lines] == [(pid, "completed")]  # billed once


def test_only_full_deliveries_nobody_ended_are_completed_by_the_provider(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    streaming, _ = _pulled(pair, agreement)  # pulled, its delivery not settled yet
    broken, facts = _pulled(pair, agreement)  # cut early: terminated, unbilled
    transfers.settle_pull(pair.tax, broken, sent=facts["bytes"] // 20, complete=False)
    cut, _ = _settled(pair, agreement, share=0.5)  # cut late: billed, and ended there
    ended, _ = _settled(pair, agreement)  # the consumer's termination arrived (a bad hash)
    view = transfers.show_transfer(pair.tax, ended)
    transfers.handle_message(pair.tax, space.member(pair.tax, BANK), ended, {
        "@context": CTX, "@type": tp.TERMINATION, "providerPid": ended,
        "consumerPid": view["consumer_pid"], "code": "hash_mismatch"}, tp.TERMINATION)
    confirmed, _ = _settled(pair, agreement)  # the consumer's completion arrived
    view = transfers.show_transfer(pair.tax, confirmed)
    transfers.handle_message(pair.tax, space.member(pair.tax, BANK), confirmed, {
        "@context": CTX, "@type": tp.COMPLETION, "providerPid": confirmed,
        "consumerPid": view["consumer_pid"]}, tp.COMPLETION)
    unconfirmed, settled = _settled(pair, agreement)  # sent in full, no word since
    others = (streaming, broken, cut, ended, confirmed)
    before = {pid: transfers.show_transfer(pair.tax, pid)["state"] for pid in others}
    assert before == {streaming: "STARTED", broken: "TERMINATED", cut: "TERMINATED",
                      ended: "TERMINATED", confirmed: "COMPLETED"}

    later = settled + timedelta(days=2)
    assert transfer_sweep.unconfirmed_deliveries(pair.tax, later) == [unconfirmed]
    assert transfer_sweep.complete_unconfirmed(pair.tax, later, pair.transport) == [unconfirmed]
    assert transfers.show_transfer(pair.tax, unconfirmed)["state"] == "COMPLETED"
    assert {pid: transfers.show_transfer(pair.tax, pid)["state"] for pid in others} == before
    completed = [e["pid"] for e in _entries(pair.tax, "transfer.completed")]
    assert sorted(completed) == sorted([confirmed, unconfirmed])


def test_a_delivery_the_consumer_ends_as_the_sweep_reads_it_stays_ended(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep read it unconfirmed; the consumer's termination lands before the sweep takes
    the transfer's lock: the transfer stays TERMINATED, with no completion in the ledger."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    pid, _ = _settled(pair, agreement)
    monkeypatch.setattr(transfer_sweep, "unconfirmed_deliveries", lambda node, now=None: [pid])
    view = transfers.show_transfer(pair.tax, pid)
    transfers.handle_message(pair.tax, space.member(pair.tax, BANK), pid, {
        "@context": CTX, "@type": tp.TERMINATION, "providerPid": pid,
        "consumerPid": view["consumer_pid"], "code": "hash_mismatch"}, tp.TERMINATION)
    pair.sent.clear()
    assert transfer_sweep.complete_unconfirmed(pair.tax, transport=pair.transport) == []
    assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
    assert _entries(pair.tax, "transfer.completed") == [] and pair.sent == []


def test_pseudonyms_differ_between_agreements(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    bank = space.member(pair.tax, BANK)
    ids = []
    for _ in range(2):
        agreement = pair.agreement("raw-transfer", expires=future, output="pseudonymized")
        pair.sent.clear()
        pid = pair.request(agreement, "pseudonymized")
        path, _ = transfers.serve_pull(pair.tax, bank, pid, f"Bearer {_token(pair)}")
        table = pq.read_table(path)
        assert table.column("tax_paid").to_pylist() == [100 + n for n in range(12)]
        ids.append(table.column("person_id").to_pylist())
    assert "P00000" not in ids[0]
    assert not set(ids[0]) & set(ids[1])  # no join across agreements


def _pseudonymized_extract(pair: Pair, csv: Path, lines: list[str]) -> dict[str, list[Any]]:
    """The CSV ``lines`` registered at the tax bureau, and the extract a pseudonymized
    transfer of it under a fresh agreement sends the bank, as columns."""
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    view = datasets.add(pair.tax, csv, name=csv.stem, actor="t")
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = make_agreement(
        pair.tax, BANK, consumer=pair.bank, dataset_id=view["id"], purpose="credit-risk",
        offer=from_template("raw-transfer", purposes=["finance"], expires=future,
                            output="pseudonymized"))
    pair.sent.clear()
    pid = pair.request(agreement, "pseudonymized")
    path, _ = transfers.serve_pull(pair.tax, space.member(pair.tax, BANK), pid,
                                   f"Bearer {_token(pair)}")
    return pq.read_table(path).to_pydict()


def test_pseudonymized_output_leaves_no_personal_value_in_clear(
    pair: Pair, tmp_path: Path
) -> None:
    """Review found a record number (no detector knows it), an address (personal, not an
    identifier) and free-text notes holding an ID number sent in clear, and one phone
    number written four ways given four pseudonyms."""
    from dataspace.catalog.classify.id_card import check_char

    def resident(i: int) -> str:
        body = f"110105{1950 + i}0{i % 9 + 1}1{i % 9}{i:03d}"
        return body + check_char(body)

    phones = ["13800138000", "+86 138 0013 8000", "138-0013-8000", "0086 13800138000"]
    lines = ["patient_id,mrn,phone,家庭地址,note,score"]
    for i in range(40):
        note = f"患者身份证{resident(i)}已核验" if i % 10 == 0 else ["复诊", "出院", "随访"][i % 3]
        lines.append(f"{resident(i)},MR2023{i:06d},{phones[i % 4]},"
                     f"北京市朝阳区建国路{i}号1单元{i}室,{note},{i}")
    table = _pseudonymized_extract(pair, tmp_path / "patients.csv", lines)
    assert table["score"] == list(range(40))
    shown = json.dumps(table, ensure_ascii=False)
    # (no short digit strings: a hex pseudonym may hold any of them)
    for clear in (resident(0), "MR2023", "13800138000", "+86", "138-0013", "建国路", "已核验"):
        assert clear not in shown
    assert len(set(table["phone"])) == 1  # one number, one pseudonym
    [started] = _entries(pair.tax, "transfer.started")[-1:]
    assert started["pseudonymized"] == ["mrn", "note", "patient_id", "phone", "家庭地址"]


@pytest.mark.parametrize(("firms", "rows_each", "twist"), [
    (20, 2, None),
    (20, 2, "one firm also under a second number"),  # let every name through, once
    (20, 2, "one number also in lower case"),  # two spellings, one pseudonym
    (9, 10, None),  # fewer than ten names
])
def test_a_column_naming_what_an_identifier_stands_for_is_pseudonymized_too(
    pair: Pair, tmp_path: Path, firms: int, rows_each: int, twist: str | None
) -> None:
    """A tax bureau's firms: the tax number was replaced by pseudonyms but the firm's name
    went in clear beside it (not nearly unique: each name on several rows), so every
    pseudonym read back as the firm it stood for."""
    import random

    from dataspace.samples.generate import make_uscc

    rng = random.Random(5)
    codes = sorted({make_uscc(rng, "110108") for _ in range(firms + 10)})[:firms]
    lines = ["纳税人识别号,纳税人名称,行业,年度,纳税额"]
    for i, code in enumerate(codes):
        for year in range(2024 - rows_each, 2024):
            lines.append(f"{code},北京第{i}号科技有限公司,{['制造', '零售', '物流'][i % 3]},"
                         f"{year},{1000 + i}")
    if twist == "one firm also under a second number":
        lines.append(f"{codes[1]},北京第0号科技有限公司,制造,2024,5")
    elif twist == "one number also in lower case":
        lines.append(f"{codes[0].lower()},北京第0号科技有限公司,制造,2024,5")
    table = _pseudonymized_extract(pair, tmp_path / "firms.csv", lines)
    assert not [n for n in table["纳税人名称"] if "公司" in n]
    assert len(set(table["纳税人名称"])) == firms  # still one pseudonym per firm: rows join
    assert sorted(set(table["行业"])) == ["制造", "物流", "零售"]  # many firms each: kept
    [started] = _entries(pair.tax, "transfer.started")[-1:]
    assert started["pseudonymized"] == ["纳税人名称", "纳税人识别号"]


def _delete_duty_offer(constraints: list[dict[str, Any]]) -> Any:
    from dataspace.policy import parse_policy

    return parse_policy({
        "@context": CTX, "@id": cs.new_pid(), "@type": "Offer",
        "permission": [{
            "action": "transfer",
            "constraint": [{"leftOperand": "purpose", "operator": "isAnyOf",
                            "rightOperand": ["finance"]}],
            "duty": [{"action": "delete", "constraint": constraints}],
        }],
    })


def test_a_delete_duty_is_passed_on_and_a_due_or_unschedulable_one_refuses(pair: Pair) -> None:
    """The duty was recorded by the evaluator and then ignored: a transfer whose data had to be
    deleted yesterday was granted, and the consumer was never told of any deadline."""
    def requested(constraints: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        agreement = make_agreement(pair.tax, BANK, consumer=pair.bank,
                                   dataset_id=pair.dataset_id, purpose="credit-risk",
                                   offer=_delete_duty_offer(constraints))
        pair.sent.clear()
        pid = pair.request(agreement, "raw")
        [(_, _, body)] = pair.sent
        return transfers.show_transfer(pair.tax, pid)["state"], body

    now = datetime.now(UTC)
    due = {"leftOperand": "dateTime", "operator": "lteq"}
    state, body = requested([due | {"rightOperand": (now - timedelta(days=1)).isoformat()}])
    assert state == "TERMINATED" and "delete duty fell due" in json.dumps(body)
    state, body = requested([{"leftOperand": "dateTime", "operator": "gteq",
                              "rightOperand": now.isoformat()}])
    assert state == "TERMINATED" and "needs a deadline" in json.dumps(body)
    deadline = (now + timedelta(days=30)).replace(microsecond=0)
    state, body = requested([due | {"rightOperand": deadline.isoformat()}])
    assert state == "STARTED"
    props = {p["name"]: p["value"] for p in body["dataAddress"]["endpointProperties"]}
    assert datetime.fromisoformat(props[transfers.NS + "deleteBy"]) == deadline
    [started] = _entries(pair.tax, "transfer.started")
    assert datetime.fromisoformat(started["delete_by"]) == deadline


@pytest.mark.parametrize("stated", ["2026-12-31T16:00:00+08:00", "2026-12-31", "soon"])
def test_the_consumer_keeps_the_deadline_its_start_message_states(
    pair: Pair, stated: str
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    provider_pid, consumer_pid = _seed(pair.bank, Role.CONSUMER, TAX, agreement, "REQUESTED")
    body = _body(tp.START, provider_pid, consumer_pid)
    body["dataAddress"]["endpointProperties"].append(
        {"@type": "EndpointProperty", "name": transfers.NS + "deleteBy", "value": stated})
    with TestClient(create_app(pair.bank), base_url=self_member(pair.bank).url) as client:
        answer = client.post(f"/dsp/transfers/{consumer_pid}/start",
                             auth=PeerAuth(pair.tax.signer), json=body)
    if stated[-6:] != "+08:00":  # no offset, or no date: refused, nothing recorded
        assert answer.status_code == 400 and "deleteBy" in answer.text
        return
    assert answer.status_code == 200, answer.text
    with pair.bank.store.read() as session:
        ext = session.get(TransferExtractRow, consumer_pid)
        assert ext is not None and ext.delete_by is not None
        assert ext.delete_by.replace(tzinfo=UTC) == datetime(2026, 12, 31, 8, 0, tzinfo=UTC)


def test_a_received_file_is_deleted_when_its_duty_falls_due_with_evidence(pair: Pair) -> None:
    received = pair.bank.root / "received"
    received.mkdir(exist_ok=True)
    kept = received / "abc-1.parquet"
    kept.write_bytes(b"PAR1 rows PAR1")
    deadline = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    _, consumer_pid = _seed(pair.bank, Role.CONSUMER, TAX, agreement, "COMPLETED")
    with pair.bank.store.write() as session:
        ext = session.get(TransferExtractRow, consumer_pid)
        assert ext is not None
        ext.path, ext.sha256, ext.delete_by = str(kept), "ab" * 32, deadline
    assert transfer_sweep.delete_due(pair.bank, now=deadline - timedelta(seconds=1)) == []
    assert kept.exists()
    with pytest.raises(UsageError, match="must be deleted by 2026-12-31T16:00:00"):
        transfers.copy_received(transfers.show_transfer(pair.bank, consumer_pid),
                                pair.bank.root / "copy.parquet")
    assert transfer_sweep.delete_due(pair.bank, now=deadline) == [consumer_pid]
    assert not kept.exists()
    [deleted] = _entries(pair.bank, "transfer.deleted")
    assert deleted["sha256"] == "ab" * 32 and deleted["file"] == "abc-1.parquet"
    assert transfer_sweep.delete_due(pair.bank, now=deadline + timedelta(days=1)) == []



def test_the_servers_thread_deletes_a_file_falling_due_and_outlives_a_failed_round(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    received = pair.bank.root / "received"
    received.mkdir(exist_ok=True)
    kept = received / "abc-2.parquet"
    kept.write_bytes(b"PAR1 rows PAR1")
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, consumer_pid = _seed(pair.bank, Role.CONSUMER, TAX,
                            pair.agreement("raw-transfer", expires=future), "COMPLETED")
    with pair.bank.store.write() as session:
        ext = session.get(TransferExtractRow, consumer_pid)
        assert ext is not None
        ext.path, ext.sha256 = str(kept), "cd" * 32
        ext.delete_by = datetime.now(UTC) - timedelta(seconds=1)
    rounds: list[int] = []
    real = transfer_sweep.delete_due

    def first_round_fails(node: Node, now: datetime | None = None) -> list[str]:
        rounds.append(1)
        if len(rounds) == 1:
            raise OSError("a disk hiccup")
        return real(node, now)

    monkeypatch.setattr(transfer_sweep, "delete_due", first_round_fails)
    running = transfer_backlog.keep_sweeping(pair.bank, every=0.05)
    try:
        # wait for the ledger entry, not the file: the round deletes the file inside its
        # transaction, so the file can be gone a moment before the entry is committed
        give_up = time.monotonic() + 20
        while not _entries(pair.bank, "transfer.deleted") and time.monotonic() < give_up:
            time.sleep(0.05)
    finally:
        running.stop()
    assert not kept.exists() and len(rounds) >= 2
    assert [e["file"] for e in _entries(pair.bank, "transfer.deleted")] == ["abc-2.parquet"]

def test_stopping_the_delete_duty_thread_waits_for_the_round_in_flight(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server closes the node's store right after stopping the thread: a round still
    # running then would reopen a connection that nothing closes
    started, ended = threading.Event(), threading.Event()

    def slow_round(node: Node, now: datetime | None = None) -> list[str]:
        started.set()
        time.sleep(0.5)
        with node.store.read():
            pass
        ended.set()
        return []

    monkeypatch.setattr(transfer_sweep, "delete_due", slow_round)
    running = transfer_backlog.keep_sweeping(pair.bank, every=0.01)
    assert started.wait(20)
    running.stop()
    assert ended.is_set()
    running.stop()  # stopping twice is harmless


# --- every transition at the HTTP level ---------------------------------------------------------

PATHS = {tp.START: "start", tp.COMPLETION: "completion", tp.SUSPENSION: "suspension",
         tp.TERMINATION: "termination"}
TO_STATE = {
    "REQUESTED": [], "STARTED": [(tp.START, Role.PROVIDER)],
    "SUSPENDED": [(tp.START, Role.PROVIDER), (tp.SUSPENSION, Role.PROVIDER)],
    "COMPLETED": [(tp.START, Role.PROVIDER), (tp.COMPLETION, Role.PROVIDER)],
    "TERMINATED": [(tp.TERMINATION, Role.PROVIDER)],
}


def _seed(node: Node, role: Role, peer: str, agreement: str, state: str) -> tuple[str, str]:
    provider_pid, consumer_pid = cs.new_pid(), cs.new_pid()
    with node.store.write() as session:
        row = cs.create_transfer(session, role=role, peer=peer, agreement_id=agreement,
                                 format=transfers.format_for("raw"), consumer_pid=consumer_pid,
                                 provider_pid=provider_pid)
        # a grant's live token, as a provider's start sets it (a suspended one may resume)
        live = datetime.now(UTC) + timedelta(minutes=5) if role is Role.PROVIDER else None
        session.add(TransferExtractRow(id=row.id, mode="raw", token_expires_at=live))
        for message, sender in TO_STATE[state]:
            cs.advance_transfer(session, row.id, message, sender=sender, peer=peer)
    return provider_pid, consumer_pid


def _body(kind: str, provider_pid: str, consumer_pid: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"@context": CTX, "@type": kind, "providerPid": provider_pid,
                           "consumerPid": consumer_pid}
    if kind == tp.START:
        doc["dataAddress"] = {"@type": "DataAddress", "endpointType": transfers.HTTP_ENDPOINT,
                              "endpoint": "http://127.0.0.1:9/peer/v1/transfers/x/data",
                              "endpointProperties": [{"@type": "EndpointProperty",
                                                      "name": "authorization", "value": "t"}]}
    return doc


@pytest.mark.parametrize("side", [Role.PROVIDER, Role.CONSUMER])
def test_every_transition_over_http(pair: Pair, side: Role) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    me, other = (pair.tax, pair.bank) if side is Role.PROVIDER else (pair.bank, pair.tax)
    sender = side.peer
    auth = PeerAuth(other.signer)
    with TestClient(create_app(me), base_url=self_member(me).url) as client:
        for state in TO_STATE:
            for kind, suffix in PATHS.items():
                provider_pid, consumer_pid = _seed(me, side, other.name, agreement, state)
                own = provider_pid if side is Role.PROVIDER else consumer_pid
                response = client.post(f"/dsp/transfers/{own}/{suffix}", auth=auth,
                                       json=_body(kind, provider_pid, consumer_pid))
                legal = (tp.TransferState(state), kind, sender) in tp.TRANSITIONS
                # a consumer's start carries its own data address, which a repeat must match
                repeat = tp.repeats(state, kind, sender) and not (
                    kind == tp.START and side is Role.CONSUMER)
                where = f"{side.value} {state} {kind}"
                if legal or repeat:
                    assert response.status_code == 200, (where, response.text)
                else:
                    assert response.status_code == 400, (where, response.text)
                    validate(response.json(), "TransferError")
                    assert response.json()["code"] == "illegal_transition", where
                    assert response.json()["providerPid"] == provider_pid
        # unknown and foreign pids: 404, schema-valid
        unknown = client.post("/dsp/transfers/urn:uuid:none/termination", auth=auth,
                              json=_body(tp.TERMINATION, "urn:uuid:none", "urn:uuid:none"))
        assert unknown.status_code == 404
        validate(unknown.json(), "TransferError")
        got = client.get("/dsp/transfers/urn:uuid:none", auth=auth)
        assert got.status_code == 404
        validate(got.json(), "TransferError")
        # malformed JSON, a schema-invalid body, a pid that does not match the URL
        provider_pid, consumer_pid = _seed(me, side, other.name, agreement, "STARTED")
        own = provider_pid if side is Role.PROVIDER else consumer_pid
        bad = client.post(f"/dsp/transfers/{own}/completion", auth=auth, content=b"{",
                          headers={"content-type": "application/json"})
        assert bad.status_code == 400
        validate(bad.json(), "TransferError")
        invalid = client.post(f"/dsp/transfers/{own}/completion", auth=auth,
                              json={"@context": CTX, "@type": tp.COMPLETION})
        assert invalid.status_code == 400
        validate(invalid.json(), "TransferError")
        wrong = _body(tp.COMPLETION, provider_pid, consumer_pid)
        wrong["providerPid" if side is Role.PROVIDER else "consumerPid"] = "urn:uuid:other"
        mismatch = client.post(f"/dsp/transfers/{own}/completion", auth=auth, json=wrong)
        assert mismatch.status_code == 400
        ack = client.get(f"/dsp/transfers/{own}", auth=auth)
        assert ack.status_code == 200 and ack.json()["state"] == "STARTED"
        validate(ack.json(), "TransferProcess")
        unsigned = client.post(f"/dsp/transfers/{own}/completion",
                               json=_body(tp.COMPLETION, provider_pid, consumer_pid))
        assert unsigned.status_code == 401
    assert _entries(me, "transfer.refused")


def test_initial_request_over_http(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    bank = space.member(pair.tax, BANK)
    auth = PeerAuth(pair.bank.signer)
    doc = {"@context": CTX, "@type": tp.REQUEST, "consumerPid": cs.new_pid(),
           "agreementId": agreement, "format": transfers.format_for("raw"),
           "callbackAddress": bank.url + "/dsp"}
    with TestClient(create_app(pair.tax), base_url=self_member(pair.tax).url) as client:
        created = client.post("/dsp/transfers/request", auth=auth, json=doc)
        assert created.status_code == 201, created.text
        validate(created.json(), "TransferProcess")
        assert created.json()["state"] == "REQUESTED"
        again = client.post("/dsp/transfers/request", auth=auth, json=doc)  # a retry
        assert again.status_code == 201
        assert again.json()["providerPid"] == created.json()["providerPid"]
        for change, status in (({"agreementId": "urn:uuid:none"}, 404),
                               ({"format": "example:HTTP_PUSH"}, 400),
                               ({"callbackAddress": "http://evil.example/dsp"}, 400)):
            body = {**doc, "consumerPid": cs.new_pid(), **change}
            refused = client.post("/dsp/transfers/request", auth=auth, json=body)
            assert refused.status_code == status, (change, refused.text)
            validate(refused.json(), "TransferError")
    # the background decision ran: the start went to the bank's callback
    assert any(path.endswith("/start") for _, path, _ in pair.sent), pair.sent
    assert json.dumps(pair.sent)  # plain JSON


def test_a_suspended_grant_keeps_its_slot(pair: Pair) -> None:
    """Suspending a granted transfer, asking again, then restarting the first would give two
    pulls under max_jobs=1: the suspended grant keeps its slot."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    bank = space.member(pair.tax, BANK)
    first = pair.request(agreement, "raw")
    consumer_pid = transfers.show_transfer(pair.tax, first)["consumer_pid"]
    reply = transfers.handle_message(pair.tax, bank, first, {
        "@context": CTX, "@type": tp.SUSPENSION, "providerPid": first,
        "consumerPid": consumer_pid, "code": "pause"}, tp.SUSPENSION)
    assert reply.status == 200 and transfers.show_transfer(pair.tax, first)["state"] == "SUSPENDED"
    second = pair.request(agreement, "raw")
    assert transfers.show_transfer(pair.tax, second)["state"] == "TERMINATED"
    assert "count" in " ".join(_entries(pair.tax, "transfer.denied")[-1]["reasons"])


def _consumer_started(pair: Pair, monkeypatch: pytest.MonkeyPatch,
                      handler: Callable[[httpx.Request], httpx.Response], *, sha: str,
                      rows: int, size: int) -> str:
    """A transfer the bank consumes, started with the given statements; its pull is served by
    ``handler`` (the provider's data plane, scripted)."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    tax_url = space.member(pair.bank, TAX).url.rstrip("/")
    provider_pid, consumer_pid = cs.new_pid(), cs.new_pid()
    with pair.bank.store.write() as session:
        row = cs.create_transfer(session, role=Role.CONSUMER, peer=TAX, agreement_id=agreement,
                                 format=transfers.format_for("raw"), consumer_pid=consumer_pid,
                                 provider_pid=provider_pid)
        session.add(TransferExtractRow(id=row.id, mode="raw"))
    monkeypatch.setattr(transfers, "CLIENTS", lambda node, peer: httpx.Client(
        base_url=tax_url, transport=httpx.MockTransport(handler)))
    properties = [("authorization", "t"), (transfers.NS + "sha256", sha),
                  (transfers.NS + "rows", str(rows)), (transfers.NS + "bytes", str(size))]
    doc = {"@context": CTX, "@type": tp.START, "providerPid": provider_pid,
           "consumerPid": consumer_pid,
           "dataAddress": {"@type": "DataAddress", "endpointType": transfers.HTTP_ENDPOINT,
                           "endpoint": f"{tax_url}/peer/v1/transfers/{provider_pid}/data",
                           "endpointProperties": [{"@type": "EndpointProperty", "name": n,
                                                   "value": v} for n, v in properties]}}
    reply = transfers.handle_message(pair.bank, space.member(pair.bank, TAX), consumer_pid, doc,
                                     tp.START)
    assert reply.status == 200, reply.body
    return consumer_pid


class _Broken(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"PAR1" + b"x" * 100_000
        raise httpx.ReadError("connection reset mid-stream")


class _Endless(httpx.SyncByteStream):
    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(64):
            self.sent += 1 << 20
            yield b"\0" * (1 << 20)


def _received(pair: Pair) -> list[Path]:
    return list((pair.bank.root / transfers.RECEIVED_DIR).glob("*"))


@pytest.mark.parametrize("case", ["broken stream", "not parquet", "larger than stated"])
def test_a_failed_pull_ends_the_transfer_and_leaves_no_file(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    body = b"not a parquet file"
    endless = _Endless()
    handler, sha, size, reason = {
        "broken stream": (lambda r: httpx.Response(200, stream=_Broken()), "0" * 64, 200_000,
                          "ReadError"),
        "not parquet": (lambda r: httpx.Response(200, content=body),
                        hashlib.sha256(body).hexdigest(), len(body), "not a Parquet file"),
        "larger than stated": (lambda r: httpx.Response(200, stream=endless), "0" * 64, 10,
                               "passes 10 bytes"),
    }[case]
    pid = _consumer_started(pair, monkeypatch, handler, sha=sha, rows=1, size=size)
    transfers.pull(pair.bank, pid, transport=pair.transport)
    view = transfers.show_transfer(pair.bank, pid)
    assert view["state"] == "TERMINATED"
    assert reason in " ".join(_entries(pair.bank, "transfer.terminated")[-1]["reason"])
    assert _received(pair) == []  # no partial download stays
    if case == "larger than stated":
        assert endless.sent <= 1 << 20  # it stopped at the first chunk past the stated size


def test_a_failed_extract_leaves_no_file(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pid = pair.request(pair.agreement("raw-transfer", expires=future), "raw")
    assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
    assert list((pair.tax.root / transfers.EXTRACT_DIR).iterdir()) == []


def test_a_retried_message_is_answered_again_and_changes_nothing(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivery retries after a lost answer; a 400 for the repeat would end the transfer."""
    pid = _consumer_started(pair, monkeypatch, lambda r: httpx.Response(409), sha="0" * 64,
                            rows=1, size=10)
    with pair.bank.store.read() as session:
        row = cs.get_transfer(session, pid, peer=None)
        doc = {"@context": CTX, "@type": tp.START, "providerPid": row.provider_pid,
               "consumerPid": pid, "dataAddress": row.data_address}
    tax = space.member(pair.bank, TAX)
    again = transfers.handle_message(pair.bank, tax, pid, doc, tp.START)
    assert again.status == 200 and again.after == []  # no second pull is scheduled
    assert transfers.show_transfer(pair.bank, pid)["state"] == "STARTED"
    moved = json.loads(json.dumps(doc))
    moved["dataAddress"]["endpoint"] += "-elsewhere"
    refused = transfers.handle_message(pair.bank, tax, pid, moved, tp.START)
    assert refused.status == 400  # not the same start: still an illegal transition


def test_a_start_repeated_after_the_pull_completed_changes_nothing(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On loopback a small pull can complete before the provider's retry of a START whose
    answer was lost: a 400 then made the provider terminate a transfer it had delivered."""
    pid = _consumer_started(pair, monkeypatch, lambda r: httpx.Response(409), sha="0" * 64,
                            rows=1, size=10)
    with pair.bank.store.write() as session:
        row = cs.get_transfer(session, pid, peer=None)
        row.state = tp.TransferState.COMPLETED.value  # the pull finished meanwhile
        doc = {"@context": CTX, "@type": tp.START, "providerPid": row.provider_pid,
               "consumerPid": pid, "dataAddress": row.data_address}
    tax = space.member(pair.bank, TAX)
    again = transfers.handle_message(pair.bank, tax, pid, doc, tp.START)
    assert again.status == 200 and again.after == []
    assert transfers.show_transfer(pair.bank, pid)["state"] == "COMPLETED"
    moved = json.loads(json.dumps(doc))
    moved["dataAddress"]["endpoint"] += "-elsewhere"
    assert transfers.handle_message(pair.bank, tax, pid, moved, tp.START).status == 400


def test_a_grant_lapsing_while_the_server_runs_is_ended_by_the_sweeping_thread(
    pair: Pair,
) -> None:
    # the start-up sweep ran before this token lapsed (a restart moments after a crash)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pid = pair.request(pair.agreement("raw-transfer", expires=future), "raw")
    received = pair.bank.root / transfers.RECEIVED_DIR
    received.mkdir(exist_ok=True)
    partial = received / ".abc.part"  # a pull going on: the running sweep leaves it
    partial.write_bytes(b"half")
    with pair.tax.store.write() as session:
        ext = session.get(TransferExtractRow, pid)
        assert ext is not None and ext.path
        extract = Path(ext.path)
        ext.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    running = transfer_backlog.keep_sweeping(pair.tax, every=0.05)
    try:
        deadline = time.monotonic() + 20
        while transfers.show_transfer(pair.tax, pid)["state"] != "TERMINATED" and (
                time.monotonic() < deadline):
            time.sleep(0.05)
    finally:
        running.stop()
    assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
    assert not extract.exists()
    assert transfer_sweep.sweep_while_serving(pair.bank) == {"terminated": [], "completed": [],
                                                       "removed": [], "told": []}
    assert partial.exists()


def test_a_grant_pulled_after_the_sweep_read_it_as_lapsed_is_not_ended(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pid = pair.request(pair.agreement("raw-transfer", expires=future), "raw")
    # the sweep read it unpulled and lapsed; a pull whose token was checked just before it
    # lapsed is accepted before the sweep takes the transfer's lock
    monkeypatch.setattr(transfer_sweep, "lapsed_grants", lambda node, now=None: [pid])
    with pair.tax.store.write() as session:
        ext = session.get(TransferExtractRow, pid)
        assert ext is not None
        ext.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        ext.pulled_at = datetime.now(UTC) - timedelta(seconds=2)
    assert transfer_sweep.end_lapsed_grants(pair.tax) == []
    assert transfers.show_transfer(pair.tax, pid)["state"] == "STARTED"
    assert _entries(pair.tax, "transfer.terminated") == []


def test_a_lapsed_grant_and_a_partial_download_are_ended_at_start(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    lapsed, live = pair.request(agreement, "raw"), pair.request(agreement, "raw")
    with pair.tax.store.write() as session:
        ext = session.get(TransferExtractRow, lapsed)
        assert ext is not None and ext.path
        extract = Path(ext.path)
        ext.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    folder = pair.bank.root / transfers.RECEIVED_DIR
    folder.mkdir(exist_ok=True)
    (folder / ".abc.part").write_bytes(b"half")
    assert transfer_sweep.sweep(pair.tax, transport=pair.transport)["terminated"] == [lapsed]
    assert transfers.show_transfer(pair.tax, lapsed)["state"] == "TERMINATED"
    assert transfers.show_transfer(pair.tax, live)["state"] == "STARTED"  # its token runs
    assert not extract.exists()
    assert "grant_lapsed" in [e["code"] for e in _entries(pair.tax, "transfer.terminated")]
    [told] = [body for peer, path, body in pair.sent if path.endswith("/termination")]
    assert told["code"] == "grant_lapsed" and told["providerPid"] == lapsed  # not left waiting
    assert transfer_sweep.sweep(pair.bank)["removed"] == [".abc.part"]
    assert transfer_sweep.sweep(pair.tax) == {"terminated": [], "removed": []}


def _work_off(node: Node, backlog: transfer_backlog.Backlog, pair: Pair,
              done: Callable[[], bool]) -> None:
    """Run the sweeping thread with ``backlog`` as a starting server does: nothing is done
    before the server serves; then wait (20 s at most) until ``done()``."""
    serving = threading.Event()
    running = transfer_backlog.keep_sweeping(node, every=60, serving=serving.is_set,
                                             transport=pair.transport, backlog=backlog)
    try:
        time.sleep(0.3)
        assert not done()  # not yet up
        serving.set()
        deadline = time.monotonic() + 20
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        running.stop()


def test_the_peers_of_what_the_start_up_ended_are_told_once_the_server_serves(
    pair: Pair,
) -> None:
    """The start-up sweep told each peer before the server listened: a peer that was down
    cost three tries per transfer, all before the node could serve anyone."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    lapsed = pair.request(agreement, "raw")
    cut, _ = _pulled(pair, agreement)  # its delivery cut off by the restart
    with pair.tax.store.write() as session:
        ext = session.get(TransferExtractRow, lapsed)
        assert ext is not None
        ext.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    pair.sent.clear()
    backlog, swept = transfer_backlog.take_backlog(pair.tax)
    assert sorted(swept["terminated"]) == sorted([lapsed, cut])
    assert {pid: transfers.show_transfer(pair.tax, pid)["state"] for pid in (lapsed, cut)} == {
        lapsed: "TERMINATED", cut: "TERMINATED"}
    assert pair.sent == []  # nobody told yet
    assert sorted((row.id, code) for row, code, _ in backlog.notices) == sorted(
        [(lapsed, "grant_lapsed"), (cut, "delivery_interrupted")])

    _work_off(pair.tax, backlog, pair, lambda: len(pair.sent) >= 2)
    told = {body["providerPid"]: body["code"] for _, path, body in pair.sent
            if path.endswith("/termination")}
    assert told == {lapsed: "grant_lapsed", cut: "delivery_interrupted"}


def _cancel(pair: Pair, pid: str) -> None:
    """The consumer's termination, as the provider receives it."""
    with pair.tax.store.read() as session:
        consumer_pid = cs.get_transfer(session, pid, peer=None).consumer_pid
    doc = {"@context": CTX, "@type": "TransferTerminationMessage", "providerPid": pid,
           "consumerPid": consumer_pid, "code": "cancelled"}
    bank = space.member(pair.tax, BANK)
    assert transfers.handle_message(pair.tax, bank, pid, doc, tp.TERMINATION).status == 200


@pytest.mark.parametrize("when", ["before", "while writing"])
def test_a_transfer_ended_before_it_starts_leaves_no_extract(
    pair: Pair, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five requests cancelled under a one-transfer agreement left five copies of the raw
    data on disk that no transfer referred to and no sweep removed."""
    from dataspace.services import transfer_provider

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    folder = pair.tax.root / transfers.EXTRACT_DIR
    written = transfer_provider._write_extract
    for _ in range(5):
        pid = pair.request(agreement, "raw", run=False)
        if when == "before":
            _cancel(pair, pid)
        else:
            def cancelled_meanwhile(*args: Any, _pid: str = pid) -> Any:
                made = written(*args)
                _cancel(pair, _pid)
                return made

            monkeypatch.setattr(transfer_provider, "_write_extract", cancelled_meanwhile)
        transfers.provide(pair.tax, pid, transport=pair.transport)
        assert transfers.show_transfer(pair.tax, pid)["state"] == "TERMINATED"
        assert list(folder.glob("*.parquet")) == []
    assert _entries(pair.tax, "transfer.started") == []


def test_the_sweep_deletes_old_extracts_no_transfer_refers_to(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    live = pair.request(pair.agreement("raw-transfer", expires=future), "raw")
    folder = pair.tax.root / transfers.EXTRACT_DIR
    (kept,) = folder.glob("*.parquet")
    old, fresh = folder / "old.parquet", folder / "fresh.parquet"
    for orphan in (old, fresh):
        orphan.write_bytes(b"PAR1")
    grace = transfer_sweep.ORPHAN_GRACE.total_seconds()
    long_ago = datetime.now(UTC).timestamp() - grace - 1
    for path in (old, kept):  # the referenced extract is as old: it stays
        os.utime(path, (long_ago, long_ago))
    assert transfer_sweep.sweep(pair.tax)["removed"] == ["old.parquet"]
    assert sorted(p.name for p in folder.glob("*.parquet")) == sorted([kept.name, fresh.name])
    assert transfers.show_transfer(pair.tax, live)["state"] == "STARTED"


def test_the_sweep_deletes_old_received_files_no_transfer_records(pair: Pair) -> None:
    # the node stopped between naming a verified pull's file and recording it: a file no
    # delete duty would ever reach
    received = pair.bank.root / "received"
    received.mkdir(exist_ok=True)
    recorded, unrecorded = received / "ab-1.parquet", received / "cd-2.parquet"
    for file in (recorded, unrecorded):
        file.write_bytes(b"PAR1 rows PAR1")
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, consumer_pid = _seed(pair.bank, Role.CONSUMER, TAX,
                            pair.agreement("raw-transfer", expires=future), "COMPLETED")
    with pair.bank.store.write() as session:
        ext = session.get(TransferExtractRow, consumer_pid)
        assert ext is not None
        ext.path, ext.sha256 = str(recorded), "ab" * 32
    long_ago = datetime.now(UTC).timestamp() - transfer_sweep.ORPHAN_GRACE.total_seconds() - 1
    for file in (recorded, unrecorded):
        os.utime(file, (long_ago, long_ago))
    assert transfer_sweep.sweep(pair.bank)["removed"] == ["cd-2.parquet"]
    assert [p.name for p in received.glob("*.parquet")] == ["ab-1.parquet"]


# --- a user ends a transfer --------------------------------------------------------------------


def test_the_provider_ends_a_started_transfer_and_its_grant_pulls_nothing(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    pid = pair.request(agreement, "raw")
    token = _token(pair)
    with pair.tax.store.read() as session:
        ext = session.get(TransferExtractRow, pid)
        assert ext is not None and ext.path
        extract = Path(ext.path)
    end = dict(actor="user:alice", transport=pair.transport)
    with pytest.raises(Forbidden, match="as provider"):  # a consumer token: not its side
        transfers.end_transfer(pair.tax, pid, reason="x", role="consumer", **end)
    with pytest.raises(UsageError, match="reason"):
        transfers.end_transfer(pair.tax, pid, reason="  ", role="provider", **end)
    assert transfers.show_transfer(pair.tax, pid)["state"] == "STARTED" and extract.exists()

    view = transfers.end_transfer(pair.tax, pid, reason=" agreement under review ",
                                  role="provider", **end)
    assert view["state"] == "TERMINATED" and view["reason"] == ["agreement under review"]
    assert not extract.exists()
    _, path, body = pair.sent[-1]
    assert path.endswith("/termination")
    validate(body, "TransferTerminationMessage")
    assert body["code"] == "ended_by_user" and body["reason"] == ["agreement under review"]
    [ended] = _entries(pair.tax, "transfer.terminated")
    assert (ended["pid"], ended["code"], ended["by"]) == (pid, "ended_by_user", TAX)
    with pytest.raises(Conflict):  # the one-time token of the grant is worthless now
        transfers.serve_pull(pair.tax, space.member(pair.tax, BANK), pid, f"Bearer {token}")
    with pytest.raises(Conflict, match="already TERMINATED"):
        transfers.end_transfer(pair.tax, pid, reason="again", role="admin", **end)
    assert usage_service.list_usage(pair.tax, agreement_id=agreement) == []  # nothing billed


def test_the_consumer_ends_its_transfer_and_the_provider_is_told(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    sent: list[tuple[str, dict[str, Any]]] = []

    def provider(node: Node, peer: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        sent.append((path, body))
        return 201, {"@context": CTX, "@type": "TransferProcess", "providerPid": "urn:uuid:p1",
                     "consumerPid": body["consumerPid"], "state": "REQUESTED"}

    view = transfers.request_transfer(pair.bank, agreement_id=agreement, mode="raw", actor="t",
                                      transport=provider)
    assert view["state"] == "REQUESTED"
    with pytest.raises(Forbidden, match="as consumer"):
        transfers.end_transfer(pair.bank, view["id"], reason="x", actor="t", role="provider")
    ended = transfers.end_transfer(pair.bank, view["id"], reason="no longer needed",
                                   actor="t", role="consumer", transport=provider)
    assert ended["state"] == "TERMINATED"
    path, body = sent[-1]
    assert path.endswith("/transfers/urn:uuid:p1/termination")
    assert body["providerPid"] == "urn:uuid:p1" and body["reason"] == ["no longer needed"]
    assert _entries(pair.bank, "transfer.terminated")[-1]["reason"] == ["no longer needed"]
    with pytest.raises(NotFound):
        transfers.end_transfer(pair.bank, "urn:uuid:none", reason="x", actor="t")


def test_a_transfer_ended_while_its_data_arrives_keeps_no_file(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's user ends the transfer while the pull streams: the download verifies, but
    the transfer is TERMINATED, so the file is deleted rather than kept without a record."""
    data = _parquet_bytes(person_id=[f"P{n:05d}" for n in range(12)])
    pid_box: list[str] = []

    def serve_and_end_meanwhile(request: httpx.Request) -> httpx.Response:
        transfers.end_transfer(pair.bank, pid_box[0], reason="cancelled", actor="t",
                               transport=pair.transport)
        return httpx.Response(200, content=data)

    pid = _consumer_started(pair, monkeypatch, serve_and_end_meanwhile,
                            sha=hashlib.sha256(data).hexdigest(), rows=12, size=len(data))
    pid_box.append(pid)
    transfers.pull(pair.bank, pid, transport=pair.transport)
    assert transfers.show_transfer(pair.bank, pid)["state"] == "TERMINATED"
    assert _received(pair) == []
    assert _entries(pair.bank, "transfer.received") == []



def test_once_pulled_a_grant_cannot_be_revoked_and_its_file_waits_for_the_settlement(
    pair: Pair,
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    revoked, cancelled = pair.request(agreement, "raw"), pair.request(agreement, "raw")
    bank = space.member(pair.tax, BANK)
    tokens = _tokens(pair)
    path, facts = transfers.serve_pull(pair.tax, bank, revoked, f"Bearer {tokens[0]}")
    with pytest.raises(Conflict, match="has been pulled"):
        transfers.end_transfer(pair.tax, revoked, reason="too late", actor="t", role="provider",
                               transport=pair.transport)
    assert transfers.show_transfer(pair.tax, revoked)["state"] == "STARTED" and path.exists()
    assert transfers.settle_pull(pair.tax, revoked, sent=facts["bytes"], complete=True) == "billed"
    assert not path.exists()

    # The consumer ends its transfer while the provider streams the file: the file stays
    # until the delivery settles (it is being read), then goes.
    path, facts = transfers.serve_pull(pair.tax, bank, cancelled, f"Bearer {tokens[1]}")
    _cancel(pair, cancelled)
    assert transfers.show_transfer(pair.tax, cancelled)["state"] == "TERMINATED"
    assert path.exists()
    assert transfers.settle_pull(pair.tax, cancelled, sent=0, complete=False) == "settled"
    assert not path.exists()
    assert len(usage_service.list_usage(pair.tax, agreement_id=agreement)) == 1  # the first


def test_a_delivery_cut_by_a_restart_after_the_consumer_ended_it_leaves_no_file(
    pair: Pair,
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pid = pair.request(pair.agreement("raw-transfer", expires=future), "raw")
    path, _ = transfers.serve_pull(pair.tax, space.member(pair.tax, BANK), pid,
                                   f"Bearer {_token(pair)}")
    _cancel(pair, pid)
    assert path.exists()  # the stream never settled: the server died
    transfer_sweep.sweep(pair.tax)
    assert not path.exists()


def _verified_pull_whose_record_fails(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, fault: Exception
) -> str:
    """A started transfer whose data will arrive whole and verified, and whose recording
    raises ``fault``; its consumer pid."""
    from dataspace.services import transfer_consumer

    data = _parquet_bytes(person_id=["P1", "P2"])
    pid = _consumer_started(pair, monkeypatch, lambda r: httpx.Response(200, content=data),
                            sha=hashlib.sha256(data).hexdigest(), rows=2, size=len(data))

    def failing(*args: Any, **kwargs: Any) -> None:
        raise fault

    monkeypatch.setattr(transfer_consumer, "_record_received", failing)
    return pid


def test_verified_data_that_cannot_be_recorded_ends_the_transfer_and_is_deleted(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataspace.errors import StoreError

    pid = _verified_pull_whose_record_fails(pair, monkeypatch,
                                            StoreError("the database is locked"))
    transfers.pull(pair.bank, pid, transport=pair.transport)
    assert transfers.show_transfer(pair.bank, pid)["state"] == "TERMINATED"
    assert _received(pair) == []
    [ended] = _entries(pair.bank, "transfer.terminated")
    assert ended["code"] == "record_failed" and "database is locked" in ended["reason"][0]
    _, path, body = pair.sent[-1]
    assert path.endswith("/termination") and body["code"] == "record_failed"


def test_a_fault_while_recording_verified_data_leaves_no_unrecorded_file(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = _verified_pull_whose_record_fails(
        pair, monkeypatch, RuntimeError("a fault that is not the store's refusal"))
    with pytest.raises(RuntimeError, match="not the store's refusal"):
        transfers.pull(pair.bank, pid, transport=pair.transport)
    assert _received(pair) == []


def test_a_request_the_last_server_never_provided_is_provided_once_the_next_one_serves(
    pair: Pair,
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    stalled = pair.request(agreement, "raw", run=False)  # answered 201, then the server stopped
    with pair.tax.store.write() as session:  # it had reserved its slot, long ago
        ext = session.get(TransferExtractRow, stalled)
        assert ext is not None
        ext.token_expires_at = datetime.now(UTC) - timedelta(hours=1)
    assert transfer_sweep.sweep(pair.tax)["terminated"] == []  # a reservation, not a grant
    assert transfer_backlog.stalled_requests(pair.tax) == [stalled]
    backlog = transfer_backlog.Backlog(requests=transfer_backlog.stalled_requests(pair.tax))
    _work_off(pair.tax, backlog, pair,
              lambda: transfers.show_transfer(pair.tax, stalled)["state"] != "REQUESTED")
    assert transfers.show_transfer(pair.tax, stalled)["state"] == "STARTED"
    assert len(_tokens(pair)) == 1  # the consumer was sent its start message
    assert transfer_backlog.stalled_requests(pair.tax) == []


def test_a_stalled_request_no_longer_allowed_is_refused_and_the_consumer_told(
    pair: Pair,
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    pair.request(agreement, "raw")  # the one transfer the agreement allows
    stalled = pair.request(agreement, "raw", run=False)
    assert transfer_backlog.resume_requests(pair.tax, [stalled], transport=pair.transport) == [
        stalled]
    assert transfers.show_transfer(pair.tax, stalled)["state"] == "TERMINATED"
    assert "count" in " ".join(_entries(pair.tax, "transfer.denied")[-1]["reasons"])
    path, body = pair.sent[-1][1:]
    assert path.endswith("/termination") and body["consumerPid"]
    assert transfer_backlog.stalled_requests(pair.tax) == []


def test_resuming_stops_when_the_server_stops(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    stalled = pair.request(pair.agreement("raw-transfer", expires=future), "raw", run=False)
    assert transfer_backlog.resume_requests(pair.tax, [stalled], transport=pair.transport,
                                          stopped=lambda: True) == []
    assert transfers.show_transfer(pair.tax, stalled)["state"] == "REQUESTED"  # next start's
    assert pair.sent == []


def test_a_pull_the_last_server_did_not_finish_is_pulled_again_once_the_next_one_serves(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer restarted before (or while) it pulled: its transfer stayed STARTED for good,
    with nothing received, although the token might still have worked."""
    data = _parquet_bytes(person_id=["a", "b", "c"])
    pid = _consumer_started(pair, monkeypatch, lambda r: httpx.Response(200, content=data),
                            sha=hashlib.sha256(data).hexdigest(), rows=3, size=len(data))
    folder = pair.bank.root / transfers.RECEIVED_DIR
    folder.mkdir(exist_ok=True)
    (folder / ".cut.part").write_bytes(data[:10])  # what the cut-off pull had written
    assert transfer_sweep.sweep(pair.bank)["removed"] == [".cut.part"]
    assert list(transfer_backlog.unfinished_pulls(pair.bank)) == [pid]
    backlog = transfer_backlog.Backlog(pulls=transfer_backlog.unfinished_pulls(pair.bank))
    _work_off(pair.bank, backlog, pair,
              lambda: transfers.show_transfer(pair.bank, pid)["state"] != "STARTED")
    assert transfers.show_transfer(pair.bank, pid)["state"] == "COMPLETED"
    [file] = _received(pair)
    assert file.read_bytes() == data
    [entry] = _entries(pair.bank, "transfer.received")
    assert entry["pid"] == pid and entry["rows"] == 3
    [(peer, path, _)] = pair.sent
    assert peer == TAX and path.endswith("/completion")
    assert transfer_backlog.unfinished_pulls(pair.bank) == {}


def test_a_pull_whose_token_went_with_the_cut_off_pull_ends_with_the_providers_refusal(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = {"error": "forbidden", "message": "the pull token has been used"}
    pid = _consumer_started(pair, monkeypatch, lambda r: httpx.Response(403, json=refusal),
                            sha="0" * 64, rows=1, size=10)
    pids = transfer_backlog.unfinished_pulls(pair.bank)
    assert transfer_backlog.retry_pulls(pair.bank, pids, stopped=lambda: True) == []
    assert transfers.show_transfer(pair.bank, pid)["state"] == "STARTED"  # the next start's

    assert transfer_backlog.retry_pulls(pair.bank, pids, transport=pair.transport) == [pid]
    assert transfers.show_transfer(pair.bank, pid)["state"] == "TERMINATED"
    [ended] = _entries(pair.bank, "transfer.terminated")
    assert "HTTP 403" in ended["reason"][0] and "token has been used" in ended["reason"][0]
    [(peer, path, body)] = pair.sent
    assert peer == TAX and path.endswith("/termination") and body["consumerPid"] == pid
    assert _received(pair) == [] and transfer_backlog.unfinished_pulls(pair.bank) == {}


def test_a_pull_resumed_by_a_start_since_the_restart_is_not_pulled_twice(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider suspended and restarted the transfer before the retry reached it: the
    new start's handler pulls with the new token, and a retry would have pulled beside it."""
    pulls: list[str] = []
    data = _parquet_bytes(person_id=["a"])

    def serve(request: httpx.Request) -> httpx.Response:
        pulls.append(request.headers["Authorization"])
        return httpx.Response(200, content=data)

    pid = _consumer_started(pair, monkeypatch, serve, sha=hashlib.sha256(data).hexdigest(),
                            rows=1, size=len(data))
    backlog = transfer_backlog.unfinished_pulls(pair.bank)
    view = transfers.show_transfer(pair.bank, pid)
    tax = space.member(pair.bank, TAX)
    ids = {"providerPid": view["provider_pid"], "consumerPid": pid}
    transfers.handle_message(pair.bank, tax, pid, {"@context": CTX, "@type": tp.SUSPENSION,
                                                   **ids, "code": "pause"}, tp.SUSPENSION)
    with pair.bank.store.read() as session:
        address = cs.get_transfer(session, pid, peer=None).data_address
    assert address is not None
    resumed = json.loads(json.dumps(address).replace('"value": "t"', '"value": "t2"'))
    reply = transfers.handle_message(pair.bank, tax, pid, {
        "@context": CTX, "@type": tp.START, **ids, "dataAddress": resumed}, tp.START)
    assert reply.status == 200, reply.body
    assert transfer_backlog.retry_pulls(pair.bank, backlog, transport=pair.transport) == []
    assert pulls == []  # the start's own pull (its handler's) is the only one
    reply.run_after()
    assert pulls == ["Bearer t2"]
    assert transfers.show_transfer(pair.bank, pid)["state"] == "COMPLETED"


def test_a_failing_sweep_step_does_not_hold_up_the_others(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> list[str]:
        raise RuntimeError("the store went away for a moment")

    monkeypatch.setattr(transfer_sweep, "end_lapsed_grants", broken)
    monkeypatch.setattr(transfer_sweep, "complete_unconfirmed", broken)
    monkeypatch.setattr(transfer_sweep, "delete_due", lambda node, now=None: ["due"])
    swept = transfer_sweep.sweep_while_serving(pair.bank, transport=pair.transport)
    assert swept == {"terminated": [], "completed": [], "removed": ["due"], "told": []}
    failed = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert failed == ["sweeping transfers: lapsed grants",
                      "sweeping transfers: unconfirmed deliveries"]


def test_a_request_its_provider_never_starts_is_ended_after_the_start_timeout(
    pair: Pair,
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    told: list[tuple[str, Any]] = []

    def provider(node: Node, peer: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        told.append((path, body))
        return 201, {"@context": CTX, "@type": "TransferProcess", "providerPid": "urn:uuid:p9",
                     "consumerPid": body["consumerPid"], "state": "REQUESTED"}

    pid = transfers.request_transfer(pair.bank, agreement_id=agreement, mode="raw", actor="t",
                                     transport=provider)["id"]
    timeout = timedelta(seconds=pair.bank.limits["transfer_start_timeout_seconds"])
    made = datetime.now(UTC)
    assert transfer_sweep.end_unanswered_requests(pair.bank, made + timeout / 2) == []
    later = made + timeout + timedelta(seconds=5)  # a round of the sweep while serving
    swept = transfer_sweep.sweep_while_serving(pair.bank, later, transport=provider)
    assert swept["terminated"] == [pid]
    view = transfers.show_transfer(pair.bank, pid)
    assert view["state"] == "TERMINATED"
    [ended] = [e for e in _entries(pair.bank, "transfer.terminated") if e["pid"] == pid]
    assert ended["code"] == "start_timeout"
    path, body = told[-1]
    assert path.endswith("/transfers/urn:uuid:p9/termination") and body["code"] == "start_timeout"
    assert transfer_sweep.unanswered_requests(pair.bank, made + 2 * timeout) == []


def test_a_start_that_arrives_as_the_timeout_ends_the_request_keeps_the_transfer(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)

    def provider(node: Node, peer: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 201, {"@context": CTX, "@type": "TransferProcess", "providerPid": "urn:uuid:p8",
                     "consumerPid": body["consumerPid"], "state": "REQUESTED"}

    pid = transfers.request_transfer(pair.bank, agreement_id=agreement, mode="raw", actor="t",
                                     transport=provider)["id"]
    # the sweep read it unanswered; the provider's START (late, after a restart) lands before
    # the sweep takes the transfer's lock
    monkeypatch.setattr(transfer_sweep, "unanswered_requests", lambda node, now=None: [pid])
    tax_url = space.member(pair.bank, TAX).url.rstrip("/")
    start = {"@context": CTX, "@type": tp.START, "providerPid": "urn:uuid:p8",
             "consumerPid": pid,
             "dataAddress": {"@type": "DataAddress", "endpointType": transfers.HTTP_ENDPOINT,
                             "endpoint": f"{tax_url}/peer/v1/transfers/urn:uuid:p8/data",
                             "endpointProperties": [{"@type": "EndpointProperty",
                                                     "name": "authorization", "value": "t"}]}}
    reply = transfers.handle_message(pair.bank, space.member(pair.bank, TAX), pid, start,
                                     tp.START)
    assert reply.status == 200, reply.body
    assert transfer_sweep.end_unanswered_requests(pair.bank, transport=provider) == []
    assert transfers.show_transfer(pair.bank, pid)["state"] == "STARTED"
    assert _entries(pair.bank, "transfer.terminated") == []


def test_a_denial_cut_off_by_a_stop_is_denied_once_when_resumed(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataspace.services import transfer_provider

    class _Stop(BaseException):
        """The process dying inside the denial."""

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    pair.request(agreement, "raw")  # the one transfer the agreement allows
    stalled = pair.request(agreement, "raw", run=False)

    def stop(*_a: Any, **_k: Any) -> None:
        raise _Stop

    with monkeypatch.context() as m:
        m.setattr(transfer_provider, "_terminate_in", stop)
        with pytest.raises(_Stop):
            transfer_backlog.resume_requests(pair.tax, [stalled], transport=pair.transport)
    assert transfers.show_transfer(pair.tax, stalled)["state"] == "REQUESTED"
    assert _entries(pair.tax, "transfer.denied") == []  # nothing of the denial stayed
    transfer_backlog.resume_requests(pair.tax, [stalled], transport=pair.transport)
    assert transfers.show_transfer(pair.tax, stalled)["state"] == "TERMINATED"
    assert [e["pid"] for e in _entries(pair.tax, "transfer.denied")] == [stalled]
    denied = [u for u in usage_service.list_usage(pair.tax, agreement_id=agreement)
              if u["status"] == "denied"]
    assert len(denied) == 1


def test_a_request_ended_between_the_decision_and_the_denial_records_no_denial(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataspace.services import transfer_provider

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    pair.request(agreement, "raw")  # the one transfer the agreement allows
    real = transfer_provider._deny

    def ended_first(node: Node, pid: str, *args: Any, **kwargs: Any) -> None:
        # the consumer's termination arrives after the decision, before the denial
        assert transfers.terminate(node, pid, code="ended_by_user", reasons=["not needed"],
                                   actor="t", transport=pair.transport)
        real(node, pid, *args, **kwargs)

    monkeypatch.setattr(transfer_provider, "_deny", ended_first)
    sent = len(pair.sent)
    ended = pair.request(agreement, "raw")
    assert transfers.show_transfer(pair.tax, ended)["state"] == "TERMINATED"
    assert _entries(pair.tax, "transfer.denied") == []
    assert len([e for e in _entries(pair.tax, "transfer.terminated") if e["pid"] == ended]) == 1
    assert len([s for s in pair.sent[sent:] if s[1].endswith("/termination")]) == 1
    assert [u for u in usage_service.list_usage(pair.tax, agreement_id=agreement)
            if u["status"] == "denied"] == []


def test_a_message_this_node_failed_to_judge_is_a_5xx_the_sender_retries(
    pair: Pair, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A locked or unreachable store is this node's failure, not the message's: a 400 would
    make the sender end a valid transfer."""
    from dataspace.errors import StoreError

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    provider_pid, consumer_pid = _seed(pair.bank, Role.CONSUMER, TAX, agreement, "REQUESTED")
    refused_before = len(_entries(pair.bank, "transfer.refused"))
    real = cs.get_transfer

    def locked(*args: Any, **kw: Any) -> Any:
        if kw.get("lock"):
            raise StoreError("database is locked")
        return real(*args, **kw)

    monkeypatch.setattr(cs, "get_transfer", locked)
    with TestClient(create_app(pair.bank), base_url=self_member(pair.bank).url) as client:
        answer = client.post(f"/dsp/transfers/{consumer_pid}/start", auth=PeerAuth(pair.tax.signer),
                             json=_body(tp.START, provider_pid, consumer_pid))
    assert answer.status_code == 503, answer.text
    validate(answer.json(), "TransferError")
    assert len(_entries(pair.bank, "transfer.refused")) == refused_before
    monkeypatch.undo()
    with pair.bank.store.read() as session:
        assert cs.get_transfer(session, consumer_pid, peer=TAX).state == "REQUESTED"


def test_a_consumer_still_pulling_keeps_its_file_when_the_provider_says_it_is_done(
    pair: Pair,
) -> None:
    """Another connector may send a completion once it has served the last byte; the consumer
    completes the pull itself when the data is checked and kept, so that word changes nothing
    yet (completing then made the consumer throw its checked file away)."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    provider_pid, consumer_pid = _seed(pair.bank, Role.CONSUMER, TAX, agreement, "STARTED")
    tax = space.member(pair.bank, TAX)
    reply = transfers.handle_message(pair.bank, tax, consumer_pid,
                                     _body(tp.COMPLETION, provider_pid, consumer_pid),
                                     tp.COMPLETION)
    assert reply.status == 200 and reply.body is not None and reply.body["state"] == "STARTED"
    assert transfers.show_transfer(pair.bank, consumer_pid)["state"] == "STARTED"


def test_refused_pulls_and_catalog_lookups_stay_within_the_members_refusal_budget(
    pair: Pair, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataspace.ledger.entry_budget import EntryBudget
    from dataspace.services import dsp_process

    budgets: dict[str, EntryBudget] = {}
    monkeypatch.setattr(dsp_process, "_budget",
                        lambda node, peer: budgets.setdefault(peer, EntryBudget(per_minute=2)))
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pid = pair.request(pair.agreement("raw-transfer", expires=future), "raw")
    bank = space.member(pair.tax, BANK)
    for _ in range(10):
        with pytest.raises(Forbidden):
            transfers.serve_pull(pair.tax, bank, pid, "Bearer wrong")
    assert 1 <= len(_entries(pair.tax, "transfer.pull_refused")) <= 4  # 2 a minute
    budgets.clear()
    with TestClient(create_app(pair.tax), base_url=self_member(pair.tax).url) as client:
        for n in range(10):
            answer = client.get(f"/dsp/catalog/datasets/urn:uuid:none-{n}",
                                auth=PeerAuth(pair.bank.signer))
            assert answer.status_code == 404
    assert 1 <= len(_entries(pair.tax, "catalog.refused")) <= 4


def test_a_refused_transfer_request_names_the_consumers_pid(pair: Pair) -> None:
    bank = space.member(pair.tax, BANK)
    consumer_pid = cs.new_pid()
    reply = transfers.handle_request(pair.tax, bank, {
        "@context": CTX, "@type": "TransferRequestMessage", "consumerPid": consumer_pid,
        "agreementId": "urn:uuid:no-such-agreement", "format": transfers.format_for("raw"),
        "callbackAddress": bank.url + "/dsp"}, transport=pair.transport)
    assert reply.status == 404 and reply.body is not None
    validate(reply.body, "TransferError")
    assert reply.body["consumerPid"] == consumer_pid and reply.body["providerPid"] == ""


def test_a_start_stating_another_mode_than_the_one_asked_for_is_refused(pair: Pair) -> None:
    """A provider that would send raw rows for a pseudonymized request: the consumer pulls
    nothing, and its ledger never says it received what it asked for."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    provider_pid, consumer_pid = _seed(pair.bank, Role.CONSUMER, TAX, agreement, "REQUESTED")
    with pair.bank.store.write() as session:
        ext = session.get(TransferExtractRow, cs.get_transfer(session, consumer_pid,
                                                              peer=TAX).id)
        assert ext is not None
        ext.mode = "pseudonymized"
    start = _body(tp.START, provider_pid, consumer_pid)
    start["dataAddress"]["endpointProperties"].append(
        {"@type": "EndpointProperty", "name": transfers.NS + "mode", "value": "raw"})
    reply = transfers.handle_message(pair.bank, space.member(pair.bank, TAX), consumer_pid,
                                     start, tp.START)
    assert reply.status == 400 and reply.body is not None
    assert "states mode 'raw', but this node asked for 'pseudonymized'" in str(reply.body)
    assert transfers.show_transfer(pair.bank, consumer_pid)["state"] == "REQUESTED"


def test_a_grant_whose_hold_lapsed_during_its_extract_is_decided_again(
    pair: Pair, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under max_jobs=1: while a slow extract is written its hold lapses and a second
    request takes the slot; the first is then denied, not started beside it."""
    from dataspace.services import transfer_provider

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future, max_jobs=1)
    slow = pair.request(agreement, "raw", run=False)
    real = transfer_provider._write_extract
    second: list[str] = []

    def slow_extract(node: Node, pid: str, *args: Any) -> Any:
        made = real(node, pid, *args)
        if pid == slow:
            with node.store.write() as session:
                ext = session.get(TransferExtractRow, pid)
                assert ext is not None
                ext.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
            second.append(pair.request(agreement, "raw"))  # granted in the lapsed slot
        return made

    monkeypatch.setattr(transfer_provider, "_write_extract", slow_extract)
    transfers.provide(pair.tax, slow, transport=pair.transport)
    assert transfers.show_transfer(pair.tax, second[0])["state"] == "STARTED"
    assert transfers.show_transfer(pair.tax, slow)["state"] == "TERMINATED"
    [denied] = _entries(pair.tax, "transfer.denied")
    assert denied["pid"] == slow and "count" in " ".join(denied["reasons"])


def test_a_suspended_grant_resumes_only_while_its_pull_can_still_run(pair: Pair) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    agreement = pair.agreement("raw-transfer", expires=future)
    bank = space.member(pair.tax, BANK)
    cases = {"live": None, "pulled": "pulled_at", "lapsed": "token_expires_at"}
    for case, field in cases.items():
        provider_pid, consumer_pid = _seed(pair.tax, Role.PROVIDER, BANK, agreement,
                                           "SUSPENDED")
        if field is not None:
            with pair.tax.store.write() as session:
                ext = session.get(TransferExtractRow, provider_pid)
                assert ext is not None
                setattr(ext, field, datetime.now(UTC) - timedelta(seconds=1))
        reply = transfers.handle_message(pair.tax, bank, provider_pid,
                                         _body(tp.START, provider_pid, consumer_pid), tp.START)
        state = transfers.show_transfer(pair.tax, provider_pid)["state"]
        if case == "live":
            assert (reply.status, state) == (200, "STARTED")
        else:
            assert (reply.status, state) == (400, "SUSPENDED"), case
            assert "cannot resume; request a new transfer" in str(reply.body)


def test_a_termination_the_consumer_missed_is_sent_again_until_it_answers(pair: Pair) -> None:
    """A termination was sent three times within seconds, then only logged: a consumer down
    at that moment kept its transfer STARTED, waiting for data that would never come."""
    from dataspace.services import peer_outbox
    from dataspace.services.catalog import DeliveryFailed

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    pid = pair.request(pair.agreement("raw-transfer", expires=future), "raw")
    down: list[str] = []

    def unreachable(node: Node, peer: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        down.append(path)
        raise DeliveryFailed(f"{method} {path} to {peer} failed: connection refused")

    transfers.end_transfer(pair.tax, pid, reason="agreement under review", role="provider",
                           actor="user:alice", transport=unreachable)
    [owed] = peer_outbox.owed(pair.tax)
    assert owed["peer"] == BANK and owed["about"] == f"transfer {pid} termination"
    assert len(down) == 3 and "connection refused" in owed["last_error"]
    now = datetime.now(UTC)
    assert peer_outbox.deliver_owed(pair.tax, now, unreachable) == []  # not due for a minute
    later = now + timedelta(minutes=2)
    assert peer_outbox.deliver_owed(pair.tax, later, unreachable) == []  # still down
    [owed] = peer_outbox.owed(pair.tax)
    assert owed["attempts"] == 2 and len(down) == 4
    assert peer_outbox.deliver_owed(pair.tax, later, unreachable) == []  # backs off: 2 min
    assert len(down) == 4

    pair.sent.clear()
    swept = transfer_sweep.sweep_while_serving(pair.tax, later + timedelta(minutes=3),
                                               transport=pair.transport)
    assert swept["told"] == [owed["id"]] and peer_outbox.owed(pair.tax) == []
    [(peer, path, body)] = pair.sent
    assert peer == BANK and path.endswith("/termination")
    validate(body, "TransferTerminationMessage")
    assert body["code"] == "ended_by_user" and body["reason"] == ["agreement under review"]


def test_a_notice_no_one_answers_for_a_day_is_given_up_with_a_ledger_entry(
    pair: Pair,
) -> None:
    from dataspace.services import peer_outbox
    from dataspace.services.catalog import DeliveryFailed

    def unreachable(node: Node, peer: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        raise DeliveryFailed("connection refused")

    start = datetime.now(UTC)
    body = {"@type": "TransferTerminationMessage", "code": "x"}
    first = peer_outbox.owe(pair.tax, BANK, "/dsp/transfers/p1/termination", body,
                            about="transfer p1 termination", error="down", now=start)
    again = peer_outbox.owe(pair.tax, BANK, "/dsp/transfers/p1/termination", body,
                            about="transfer p1 termination", error="down", now=start)
    assert first == again and len(peer_outbox.owed(pair.tax)) == 1  # owed once
    assert peer_outbox.deliver_owed(pair.tax, start + timedelta(hours=23), unreachable) == []
    settled = peer_outbox.deliver_owed(pair.tax, start + timedelta(days=1, minutes=1),
                                       unreachable)
    assert settled == [first] and peer_outbox.owed(pair.tax) == []
    [gave_up] = _entries(pair.tax, "peer.notice_undelivered")
    assert (gave_up["peer"], gave_up["about"], gave_up["attempts"]) == (
        BANK, "transfer p1 termination", 3)
