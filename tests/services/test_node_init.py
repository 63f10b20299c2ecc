"""Creating a node that fails part-way leaves nothing behind: no files, no open connections."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dataspace.errors import NodeExists, NodeNotFound, StoreError
from dataspace.ledger import log
from dataspace.scratch import INIT_PREFIX, process_tag
from dataspace.services import tokens
from dataspace.services.node import init_node, open_node
from dataspace.store.db import Store


def test_a_failed_init_closes_the_store_and_removes_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    real_close = Store.close

    def recording_close(store: Store) -> None:
        closed.append(store.url)
        real_close(store)

    def refused(*args: object, **kwargs: object) -> str:
        raise StoreError("disk full")

    monkeypatch.setattr(Store, "close", recording_close)
    monkeypatch.setattr(tokens, "issue_in", refused)
    with pytest.raises(StoreError, match="disk full"):
        init_node(tmp_path / "bank", "bank")
    assert not (tmp_path / "bank").exists()
    assert closed == [f"sqlite:///{tmp_path / 'bank' / 'state.db'}"]


def test_a_closed_node_refuses_transactions_instead_of_reconnecting(tmp_path: Path) -> None:
    node, _ = init_node(tmp_path / "bank", "bank")
    node.close()
    for transaction in (node.store.read, node.store.write, node.store.snapshot):
        with pytest.raises(StoreError, match="closed: the node is shutting down"), transaction():
            pass
    assert node.store.engine.pool.checkedin() == 0  # no connection was opened again


def test_an_init_killed_before_its_end_is_no_node_and_the_next_init_replaces_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "bank"
    killed = subprocess.run(
        [sys.executable, "-c", (
            "import os, signal, sys\n"
            "from pathlib import Path\n"
            "from dataspace.ledger import log\n"
            "from dataspace.services.node import init_node\n"
            "log.sign_checkpoint = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
            "init_node(Path(sys.argv[1]), 'bank')\n"
        ), str(root)],
        capture_output=True, timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    assert (root / "state.db").exists() and not (root / "node.toml").exists()
    with pytest.raises(NodeNotFound, match="its creation did not finish") as refused:
        open_node(root)
    assert "dataspace init" in str(refused.value.hint)
    node, secret = init_node(root, "bank")
    try:
        assert secret and [p.name for p in root.glob(".initialising-*")] == []
        with node.store.read() as session:
            assert [r.entry["action"] for r in log.entries(session, 0, 10)] == [
                "node.created", "token.issued"]
    finally:
        node.close()
    open_node(root).close()


def test_an_init_still_running_in_the_directory_is_not_cleared(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    root.mkdir()
    (root / f"{INIT_PREFIX}{process_tag()}").touch()  # this live process's
    with pytest.raises(NodeExists, match=r"being created in .* right now"):
        init_node(root, "bank")
    assert (root / f"{INIT_PREFIX}{process_tag()}").exists()


def test_a_node_is_not_created_over_a_database_that_holds_another_nodes_log(
    tmp_path: Path,
) -> None:
    first, _ = init_node(tmp_path / "first", "first")
    first.close()
    with pytest.raises(NodeExists, match="already holds a node's log"):
        init_node(tmp_path / "second", "second",
                  database_url=f"sqlite:///{tmp_path / 'first' / 'state.db'}")
    assert not (tmp_path / "second").exists()
    reopened = open_node(tmp_path / "first")
    try:
        with reopened.store.read() as session:
            assert log.size(session) == 2  # untouched
    finally:
        reopened.close()
