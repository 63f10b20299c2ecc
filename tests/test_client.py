"""dataspace.Client against a real node's API (in-process transport), errors mapped by code."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

import dataspace
from dataspace.client import QueryResult
from dataspace.compute.errors import QueryRefused, QueryTimeout
from dataspace.errors import AuthError, DataspaceError, Forbidden, NotFound, UsageError
from dataspace.node.app import create_app
from dataspace.policy import PolicyDenied
from dataspace.privacy import BudgetExhausted
from dataspace.services import jobs, tokens
from dataspace.services.job_wire import error_class, error_from_envelope
from dataspace.services.node import Node


@pytest.fixture
def served(make_node: Callable[..., tuple[Node, str]]) -> Iterator[tuple[Node, TestClient, str]]:
    node, admin = make_node("bank")
    with TestClient(create_app(node)) as http:
        yield node, http, admin


def client_for(http: TestClient, token: str) -> dataspace.Client:
    return dataspace.Client("http://testserver", token, transport=http._transport)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("policy_denied", PolicyDenied),
        ("query_refused", QueryRefused),
        ("budget_exhausted", BudgetExhausted),
        ("query_timeout", QueryTimeout),
        ("not_found", NotFound),
        ("forbidden", Forbidden),
        ("unauthorized", AuthError),
        ("no_such_code_anywhere", DataspaceError),
    ],
)
def test_error_codes_map_back_to_the_error_tree(code: str, cls: type[DataspaceError]) -> None:
    assert error_class(code) is cls
    exc = error_from_envelope(
        {"error": {"code": code, "message": "m", "hint": "h", "details": {"reasons": []}}}, 418
    )
    assert type(exc) is cls and exc.code == code
    assert (exc.message, exc.hint, exc.details, exc.http_status) == ("m", "h", {"reasons": []}, 418)


def test_client_reads_its_own_node(served: tuple[Node, TestClient, str]) -> None:
    node, http, admin = served
    with client_for(http, admin) as client:
        assert client.node()["name"] == "bank"
        assert client.datasets() == []
        assert client.jobs() == []
        assert client.ledger_checkpoint().startswith("dataspace/bank\n")
        assert client.usage() == []
        with pytest.raises(NotFound, match="no job"):
            client.job("nope")
        with pytest.raises(NotFound, match="agreement"):
            client.query("urn:uuid:unknown", "SELECT count(*) FROM t")
    with client_for(http, "dst_" + "x" * 43) as stranger, pytest.raises(AuthError):
        stranger.jobs()
    provider = tokens.issue(node, name="p", role="provider", actor="test")
    with client_for(http, provider) as client, pytest.raises(Forbidden):
        client.query("urn:uuid:unknown", "SELECT 1")


def test_jobs_are_listed_and_shown(served: tuple[Node, TestClient, str], tmp_path: Path) -> None:
    node, http, admin = served
    with pytest.raises(NotFound):
        jobs.run_job(
            node, agreement_id="urn:uuid:x", consumer="insurer", sql="SELECT 1", job_id="probe-1"
        )
    with client_for(http, admin) as client:
        [job] = client.jobs(role="provider")
        assert (job["id"], job["state"], job["peer"]) == ("probe-1", "DENIED", "insurer")
        assert client.job("probe-1")["meta"]["error"]["code"] == "not_found"
        assert client.jobs(state="SUCCEEDED") == []


def test_an_issued_bill_is_read_back_through_the_api(
    served: tuple[Node, TestClient, str],
) -> None:
    from datetime import UTC, datetime

    from dataspace.metering import Usage
    from dataspace.services import usage

    node, http, admin = served
    now = datetime.now(UTC)
    usage.record(node, Usage(agreement_id="agr-1", job_id="j1", action="governed-query",
                             consumer="insurer", provider="bank", dataset="d", started_at=now,
                             finished_at=now, status="completed"), actor="test")
    issued = usage.bill(node, "agr-1", issue=True, actor="test")
    with client_for(http, admin) as client:
        [listed] = client.issued_bills(consumer="insurer")
        assert (listed["bill_id"], listed["lines"]) == (issued["bill_id"], 1)
        assert client.issued_bills(consumer="bank") == []
        assert client.issued_bill(issued["bill_id"]) == issued
        with pytest.raises(NotFound, match="no issued bill"):
            client.issued_bill("bill-unknown")


def test_to_pandas_says_what_is_missing() -> None:
    import pyarrow as pa

    result = QueryResult(
        pa.table({"n": [1]}),
        {
            "job_id": "j",
            "epsilon_spent": "0.5",
            "epsilon_left": "1.5",
            "error_bounds": {"n": "2.5"},
            "price": {"amount": "1", "currency": "CNY"},
            "result_sha256": "0" * 64,
        },
    )
    assert (str(result.epsilon_spent), str(result.epsilon_left)) == ("0.5", "1.5")
    assert result.error_bounds == {"n": 2.5} and str(result.price[0]) == "1"  # type: ignore[index]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(DataspaceError, match="needs pandas"):
            result.to_pandas()
    else:
        assert list(result.to_pandas()["n"]) == [1]


@pytest.mark.parametrize("bad", ["../tokens", "x?role=consumer", "#", "a/b"])
def test_an_id_stays_one_path_segment(
    served: tuple[Node, TestClient, str], bad: str
) -> None:
    """c.job("../tokens") fetched /api/v1/tokens with the caller's token and failed with a
    ValueError; "x?role=consumer" added a query; "#" a bare JSONDecodeError."""
    _, http, admin = served
    with client_for(http, admin) as client, pytest.raises(NotFound) as info:
        client.job(bad)
    assert info.value.message.startswith(("no job", "no route GET /api/v1/jobs/"))
    for empty in ("", ".", ".."):  # httpx drops dot segments: the request would go elsewhere
        with client_for(http, admin) as client, pytest.raises(UsageError, match="non-empty"):
            client.job(empty)
