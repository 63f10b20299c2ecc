"""Creating a node that fails part-way leaves nothing behind: no files, no open connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataspace.errors import StoreError
from dataspace.services import tokens
from dataspace.services.node import init_node
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
