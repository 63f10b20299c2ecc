"""`dataspace query` and `dataspace job list|show` on a node that ran (and refused) jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from dataspace.errors import NotFound
from dataspace.services import jobs
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
