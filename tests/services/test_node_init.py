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
    disposed: list[str] = []
    real_dispose = Store.dispose

    def recording_dispose(store: Store) -> None:
        disposed.append(store.url)
        real_dispose(store)

    def refused(*args: object, **kwargs: object) -> str:
        raise StoreError("disk full")

    monkeypatch.setattr(Store, "dispose", recording_dispose)
    monkeypatch.setattr(tokens, "issue_in", refused)
    with pytest.raises(StoreError, match="disk full"):
        init_node(tmp_path / "bank", "bank")
    assert not (tmp_path / "bank").exists()
    assert disposed == [f"sqlite:///{tmp_path / 'bank' / 'state.db'}"]
