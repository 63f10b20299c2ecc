"""`dataspace query` and `dataspace job list|show` on a node that ran (and refused) jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from dataspace.errors import NotFound
from dataspace.services import job_consumer, jobs
from dataspace.services.node import Node


def test_job_list_and_show(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any]
) -> None:
    node, _ = make_node("tax-bureau")
    with pytest.raises(NotFound):
        jobs.run_job(
            node, agreement_id="urn:uuid:x", consumer="bank", sql="SELECT 1", job_id="cli-job-1"
        )
    listed = cli("--node", node.root, "job", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    [job] = json.loads(listed.stdout)
    assert (job["id"], job["state"], job["role"]) == ("cli-job-1", "DENIED", "provider")
    table = cli("--node", node.root, "job", "list")
    assert "cli-job-1" in table.stdout and "DENIED" in table.stdout
    shown = cli("--node", node.root, "job", "show", "cli-job-1")
    assert shown.exit_code == 0 and "no agreement" in shown.stdout
    missing = cli("--node", node.root, "job", "show", "nope", "--json")
    assert missing.exit_code == NotFound.exit_code and "no job" in missing.stderr


def test_query_needs_an_agreement_of_this_node(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any]
) -> None:
    node, _ = make_node("bank")
    result = cli(
        "--node",
        node.root,
        "query",
        "--agreement",
        "urn:uuid:none",
        "SELECT count(*) FROM taxpayers",
    )
    assert result.exit_code == NotFound.exit_code
    assert "no agreement" in result.stderr
    both = cli("--node", node.root, "query", "--agreement", "a", "--json", "--csv", "SELECT 1")
    assert both.exit_code == 2 and "--json" in both.stderr
    bare = cli("--node", node.root, "job")
    assert "list" in bare.stdout + bare.stderr


def test_an_interrupted_query_names_its_job_and_how_to_take_the_answer(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, _ = make_node("bank")
    seen: dict[str, Any] = {}

    def interrupted(*args: Any, **kw: Any) -> Any:
        seen.update(kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(job_consumer, "query", interrupted)
    result = cli("--node", node.root, "query", "--agreement", "agr-1", "SELECT 1")
    assert result.exit_code == 130
    job_id = seen["job_id"]
    assert len(job_id) == 32 and f"job {job_id} may still run at the provider" in result.stderr
    assert f"--agreement agr-1 --job-id {job_id}" in result.stderr


@pytest.mark.parametrize(("out", "says"), [
    ("{tmp}/missing/result.parquet", "does not exist"),
    ("{tmp}", "is a folder"),
    ("{tmp}/result.xlsx", "name a .parquet or .csv file"),
])
def test_an_out_path_that_cannot_be_written_is_refused_before_the_job(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any], tmp_path, out: str,
    says: str,
) -> None:
    """A query's result is paid for and may spend privacy budget, and the provider does not
    send it twice: --out is checked first (here the agreement does not even exist)."""
    node, _ = make_node("bank")
    result = cli("--node", node.root, "query", "--agreement", "urn:uuid:none",
                 "--out", out.format(tmp=tmp_path), "SELECT 1")
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert json.loads(cli("--node", node.root, "job", "list", "--json").stdout) == []


#: every command that writes its result to --out (query's own checks are tested above)
WRITES_OUT = [
    ("psi", "--agreement", "urn:uuid:none", "--on", "id", "--dataset", "d"),
    ("transfer", "request", "--agreement", "urn:uuid:none", "--mode", "raw"),
    ("predict", "--model", "m", "--rows", "j"),
]


@pytest.mark.parametrize("command", WRITES_OUT)
def test_every_out_is_checked_before_the_work(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any], tmp_path,
    command: tuple[str, ...],
) -> None:
    node, _ = make_node("bank")
    result = cli("--node", node.root, *command, "--out", tmp_path / "missing" / "k.parquet")
    assert result.exit_code == 2 and "does not exist" in result.stderr, result.stderr


def test_a_table_is_written_whole_as_its_suffix_says_or_not_at_all(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataspace.cli.common import write_table
    from dataspace.errors import InputError

    rows = pa.table({"行业": ["制造", "零售"], "n": [3, 4]})
    write_table(rows, tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()[0] == '"行业","n"'
    write_table(rows, tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "r.parquet").equals(rows)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(InputError, match="cannot write"):
        write_table(rows, tmp_path / "r.csv" / "r.parquet")  # a file where a folder should be
    assert sorted(tmp_path.iterdir()) == before


def test_empty_sql_is_refused_here_in_our_words(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any]
) -> None:
    node, _ = make_node("bank")
    for sql in ("", "   "):
        result = cli("--node", node.root, "query", "--agreement", "urn:uuid:none", sql)
        assert result.exit_code == 2 and "the SQL is empty" in result.stderr, result.stderr
        assert "openapi" not in result.stderr


def test_a_result_the_out_format_cannot_hold_is_kept_as_sent(tmp_path) -> None:
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.ipc

    from dataspace.cli.query import _write_result
    from dataspace.errors import InputError
    from dataspace.services.job_consumer import QueryOutcome

    table = pa.table({"district": ["A"], "codes": [[1, 2]]})  # a list: no CSV holds it
    sink = pa.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    outcome = QueryOutcome(table, {"job_id": "j1"}, sink.getvalue().to_pybytes())
    here = SimpleNamespace(root=tmp_path / "node")
    (tmp_path / "node").mkdir()
    with pytest.raises(InputError, match="kept, as sent, at") as refused:
        _write_result(here, outcome, tmp_path / "r.csv")  # type: ignore[arg-type]
    assert "try .parquet" in str(refused.value.hint)
    kept = tmp_path / "node" / "received" / "query-j1.arrow"
    assert pyarrow.ipc.open_stream(kept.read_bytes()).read_all().equals(table)
    assert not (tmp_path / "r.csv").exists()


def _printed_meta(meta: dict[str, Any]) -> tuple[str, str]:
    """What print_meta prints for ``meta`` with no rows, and with three."""
    import io

    from dataspace.cli import common
    from dataspace.cli.query import print_meta

    printed = io.StringIO()
    original, common.console.file = common.console.file, printed
    try:
        print_meta(meta)
        print_meta({**meta, "rows": 3})
    finally:
        common.console.file = original
    first, second = printed.getvalue().split("result sha256 00")[:2]
    return first, second


def test_a_dp_answer_states_the_group_threshold_and_why_nothing_came_back() -> None:
    meta = {"job_id": "j", "action": "dp-query", "rows": 0, "epsilon_spent": "0.5",
            "epsilon_left": "0.5", "threshold": 84.0, "result_sha256": "00"}
    first, second = _printed_meta(meta)
    assert "noisy count reaches 84: none did" in first
    assert "noisy count reaches 84" in second and "none did" not in second


def test_an_empty_governed_answer_says_what_the_agreement_withholds() -> None:
    """"0 rows · price 2.5 CNY" and nothing else: the groups below k were withheld, and the
    consumer read it as "no such rows"."""
    meta = {"job_id": "j", "action": "governed-query", "rows": 0, "min_group_size": 10,
            "price": {"amount": "2.5", "currency": "CNY"}, "result_sha256": "00"}
    first, second = _printed_meta(meta)
    assert "no group reached the agreement's minimum of 10 rows" in " ".join(first.split())
    assert "minimum" not in second


@pytest.mark.parametrize(("keys", "says"), [
    (("--peer-key", "tax-bureau"), "is not PEER=COLUMN"),
    (("--peer-key", "grid=code:uscc"), "names grid, which no --with names"),
    (("--peer-key", "tax-bureau=a", "--peer-key", "tax-bureau=b"), "names tax-bureau twice"),
])
def test_a_psi_peer_key_is_checked_before_any_peer_is_called(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any],
    keys: tuple[str, ...], says: str,
) -> None:
    node, _ = make_node("bank")
    result = cli("--node", node.root, "psi", "--agreement", "urn:uuid:none", "--with",
                 "tax-bureau", "--on", "credit_code:uscc", "--dataset", "d", *keys)
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert json.loads(cli("--node", node.root, "job", "list", "--json").stdout) == []


@pytest.mark.parametrize(("command", "says"), [
    (("job", "list", "--state", "BOGUS"), "no job has the state 'BOGUS'"),
    (("job", "list", "--role", "nobody"), "no job has the role 'nobody'"),
    (("transfer", "list", "--role", "nobody"), "no transfer has the role 'nobody'"),
])
def test_a_filter_no_row_can_match_is_refused_not_listed_as_empty(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any],
    command: tuple[str, ...], says: str,
) -> None:
    node, _ = make_node("bank")
    result = cli("--node", node.root, *command)
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert cli("--node", node.root, "job", "list", "--role", "initiator", "--state",
               "running", "--json").stdout.strip() == "[]"  # real ones: an empty list


@pytest.mark.parametrize("command", [("query", "--agreement", "urn:uuid:none", "SELECT 1"),
                                     *WRITES_OUT])
def test_an_out_file_that_exists_is_replaced_only_with_force(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any], tmp_path,
    command: tuple[str, ...],
) -> None:
    """--out overwrote an earlier answer — paid for, perhaps with privacy budget — without a
    word."""
    node, _ = make_node("bank")
    kept = tmp_path / "earlier.parquet"
    kept.write_bytes(b"an earlier answer")
    result = cli("--node", node.root, *command, "--out", kept)
    assert result.exit_code == 2 and "exists" in result.stderr and "--force" in result.stderr
    assert kept.read_bytes() == b"an earlier answer"
    forced = cli("--node", node.root, *command, "--out", kept, "--force")
    assert "exists" not in forced.stderr  # past the check: refused later, for the agreement


def test_with_json_an_error_is_the_apis_envelope_on_stderr(
    make_node: Callable[..., tuple[Node, str]], cli: Callable[..., Any],
) -> None:
    """--json printed results as JSON but errors as prose: a program had to parse both."""
    node, _ = make_node("bank")
    result = cli("--node", node.root, "job", "list", "--state", "BOGUS", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "usage" and "no job has the state 'BOGUS'" in error["message"]
    # "--json" taken as another option's value is no request for JSON
    prose = cli("--node", node.root, "job", "list", "--agreement", "--json", "--state", "BOGUS")
    assert prose.exit_code == 2 and prose.stderr.startswith("error:")
